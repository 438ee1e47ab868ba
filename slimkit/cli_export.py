"""The bodies of ``slimkit export`` and ``slimkit list-formats``: option parsing and what they print.

Kept beside :mod:`slimkit.cli` (which only declares the commands) so the command file stays one screenful
per command. Everything that can be wrong is checked by :func:`slimkit.export.formats.check_export` before
the model is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from rich.text import Text

from slimkit.export.formats import check_export, export_formats, export_model
from slimkit.progress import console


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; each value is read as a YAML scalar (``bits=4`` is an int, ``check=[ort,tvm]`` a list)."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option {pair!r}: expected KEY=VALUE")
        options[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return options


def run_export(model: str, fmt: str, out: Path, options: list[str] | None, overwrite: bool) -> None:
    """Check, load, export (checked by the format's reader) and print what was measured."""
    from slimkit.models.loading import load_model

    opts = check_export(fmt, out, parse_options(options), overwrite=overwrite)
    result = export_model(load_model(model), fmt, out, opts, overwrite=overwrite)
    for check in result.checks:
        latency = (f", {check.latency_ms:.2f} ms vs PyTorch {check.torch_latency_ms:.2f} ms"
                   if check.latency_ms is not None and check.torch_latency_ms is not None else "")
        console.print(Text(f"checked in {check.runtime}: max |diff| {check.max_abs_diff:.3g}, mean "
                           f"{check.mean_abs_diff:.3g} (tolerance {check.tolerance:.3g}){latency}"), highlight=False)
    for note in result.notes:
        console.print(Text(f"note: {note}"), highlight=False)
    console.print(Text.assemble(("wrote ", "bold green"), f"{out} ({result.bytes:,} bytes, {fmt})"),
                  highlight=False, soft_wrap=True)


def field_summary(name: str, field: Any) -> str:
    """``name=default`` or ``name (required)`` for a pydantic field (list-methods and list-formats)."""
    return f"{name} (required)" if field.is_required() else f"{name}={field.default!r}"


def print_formats() -> None:
    """One line per export format: suffix, packages it needs, options with defaults; then its description."""
    for name, f in sorted(export_formats().items()):
        fields = ", ".join(field_summary(k, v) for k, v in f.options.model_fields.items())
        needs = ", ".join(pip for _, pip in f.requires) or "nothing extra"
        console.print(Text.assemble((name, "bold"), f"  ({f.suffix}; needs {needs}) {fields}"), highlight=False)
        if f.description:
            console.print(Text(f"    {f.description}"), highlight=False)
