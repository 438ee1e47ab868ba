"""The slimkit output directory of a streamed run, written without holding the compressed model.

It is the same format :func:`slimkit.export.slimkit_format.write_into` writes (``slimkit.json``,
``slimkit.safetensors``, config and tokenizer files), so ``slimkit.load`` reads it like any other output.
Only the tensors differ in where they come from: the embeddings, final norm and head are in memory, each
decoder layer's encoded tensors are byte ranges of its checkpoint file, copied chunk by chunk
(:func:`slimkit.models.lazy_safetensors.write_safetensors`). The bytes-on-disk breakdown of the report
is computed from the file headers alone (:func:`storage_from_headers`), not by loading the tensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from slimkit.atomic import directory_bytes
from slimkit.export.header import FORMAT, FORMAT_VERSION, HEADER_FILE, WEIGHTS_FILE
from slimkit.export.registry import ALIAS, codec_named
from slimkit.export.slimkit_format import REPORT_FILES, compact_step
from slimkit.models import hf
from slimkit.models.bundle import ModelBundle
from slimkit.models.lazy_safetensors import DTYPES, read_header, write_safetensors
from slimkit.stream.runner import StreamResult


def write_output(directory: Path, bundle: ModelBundle, result: StreamResult) -> None:
    """Write the streamed model into the empty ``directory`` (the caller makes it atomic).

    Args:
        directory: the temporary output directory.
        bundle: the skeleton (for its config), tokenizer, source and the applied steps.
        result: the tensors and codec entries of the streamed run.
    """
    hf.save_hf_skeleton(bundle, directory)
    write_safetensors(directory / WEIGHTS_FILE, result.sources, {"format": FORMAT})
    header: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": bundle.kind,
                              "source": bundle.source, "origin": bundle.root_source, "arch": bundle.arch,
                              "applied": [compact_step(step) for step in bundle.applied], "tensors": result.entries}
    header["files"] = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    (directory / HEADER_FILE).write_text(json.dumps(header, separators=(",", ":")))


def storage_from_headers(directory: Path) -> dict[str, Any]:
    """The report's bytes-on-disk breakdown (as :func:`slimkit.export.storage.storage_breakdown` gives it),
    with each stored tensor stood in for by a meta tensor of its shape and dtype: no data is read."""
    header = json.loads((directory / HEADER_FILE).read_text(encoding="utf-8"))
    infos, _ = read_header(directory / WEIGHTS_FILE)
    tensors: dict[str, Tensor] = {n: torch.empty(i.shape, dtype=DTYPES[i.dtype], device="meta")
                                  for n, i in infos.items()}
    out: dict[str, Any] = {}
    for name, entry in header["tensors"].items():
        if entry["codec"] == ALIAS:
            continue
        parts = codec_named(entry["codec"], name).breakdown(name, entry, tensors)
        shape = entry.get("shape") or (list(tensors[name].shape) if name in tensors else None)
        out[name] = {"codec": entry["codec"], "shape": shape, **parts}
    files = sum(directory_bytes(p) for p in directory.iterdir() if p.name not in REPORT_FILES)
    stored = sum(sum(v for k, v in t.items() if k not in ("codec", "shape")) for t in out.values())
    return {"total_bytes": files, "overhead_bytes": files - stored, "tensors": out}
