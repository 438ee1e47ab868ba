"""The import direction of the package, read from every module's source with ``ast`` (function-level imports too).

Code runs one way, model → targets → method → export → report: ``models`` imports no layer above it,
the format (``export``) knows no method family (families register their codecs and module restorers in
``export.registry``, the one ``export`` module they may import, which itself imports nothing from slimkit),
the shared calibration code in ``calib`` knows no family, and no family borrows from another
(quantization and pruning meet only in neutral modules such as ``calib.hessian``). The families of the
future (``distill``, ``cluster``) are held to the same rules as soon as they exist.
"""

import ast
from pathlib import Path

import pytest

import slimkit

PACKAGE = Path(slimkit.__file__).parent
FAMILIES = ("quantize", "prune", "distill", "cluster", "lowrank")
ABOVE_MODELS = ("export", "calib", "train", "eval", "report", "data", "api", "method", "pipeline", "cli", "recipe",
                "preflight", "builtin_methods", "stream", "memory", *FAMILIES)
REGISTRY = "slimkit.export.registry"


def _module_name(file: Path) -> str:
    parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(file: Path) -> list[tuple[int, str]]:
    """``(line, imported slimkit module)`` for every import statement of ``file``."""
    found = []
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{file}:{node.lineno}: relative import; slimkit spells imports in full")
        elif isinstance(node, ast.ImportFrom) and node.module == "slimkit":
            found += [(node.lineno, f"slimkit.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name == "slimkit" or name.startswith("slimkit.")]


GRAPH = {_module_name(f): (f, _imports(f)) for f in sorted(PACKAGE.rglob("*.py"))}


def _area(module: str) -> str:
    """``slimkit.quantize.gptq`` -> ``quantize``; ``slimkit.method`` -> ``method``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _in(module: str, area: str) -> bool:
    return module == f"slimkit.{area}" or module.startswith(f"slimkit.{area}.")


def violations(importer_area: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    """``file:line imports module`` for each import from ``importer_area`` into a ``forbidden`` area."""
    found = []
    for module, (file, imports) in GRAPH.items():
        if _area(module) != importer_area:
            continue
        for line, name in imports:
            if any(_in(name, area) for area in forbidden) and name not in allowed:
                found.append(f"{file.relative_to(PACKAGE.parent)}:{line} imports {name}")
    return found


def test_the_graph_holds_every_module():
    assert {"slimkit.export.registry", "slimkit.models.loading", "slimkit.calib.hessian"} <= set(GRAPH)
    assert ("slimkit.export.registry" in {n for _, n in GRAPH["slimkit.quantize.int_codec"][1]})


def test_models_imports_no_layer_above_it():
    assert violations("models", ABOVE_MODELS) == []


def test_the_format_imports_no_method_family():
    assert violations("export", (*FAMILIES, "calib", "train", "eval", "report", "pipeline", "cli", "recipe")) == []


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_imports_no_other_family_and_only_the_registry_of_the_format(family):
    others = tuple(f for f in FAMILIES if f != family)
    assert violations(family, (*others, "export", "pipeline", "cli", "report"), allowed=(REGISTRY,)) == []


def test_calibration_code_knows_no_family():
    assert violations("calib", (*FAMILIES, "export", "pipeline", "cli")) == []


@pytest.mark.parametrize("core", ["method", "config", "targets", "hooks", "numerics"])
def test_the_core_imports_no_family_or_format(core):
    assert violations(core, (*FAMILIES, "export", "calib", "models", "pipeline", "cli")) == []


def test_the_registry_imports_nothing_from_slimkit():
    file, imports = GRAPH[REGISTRY]
    assert imports == [], f"{file} must stay importable by every family without pulling in the format"


def test_the_rules_would_catch_a_violation(monkeypatch):
    # models/loading.py imported the format like this before loaders were registered
    monkeypatch.setitem(GRAPH, "slimkit.models._probe",
                        (PACKAGE / "models" / "_probe.py", [(3, "slimkit.export.slimkit_format")]))
    assert violations("models", ABOVE_MODELS) == ["slimkit/models/_probe.py:3 imports slimkit.export.slimkit_format"]
