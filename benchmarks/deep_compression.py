"""Benchmark: Deep Compression (Han, Mao & Dally 2016) with slimkit: prune → cluster → fine-tune → Huffman.

``python benchmarks/deep_compression.py --sections lenet300 lenet5 smollm2 minilm`` (2 threads; each LeNet
section is sized for < 15 minutes, smollm2 ~30, minilm ~2). LeNet-300-100 and LeNet-5 are trained in-tool on
Fashion-MNIST: the last ``--val-size`` training images are a validation split, and *every* choice (which
sparsity scale and how many bits per fully connected layer) is made on it, never on the test split, which
only scores the chosen model. The per-layer densities are the paper's (Tables 1 and 2), optionally scaled
down (``--sparsity-scales``: 0.75 keeps three quarters as many weights). The chosen model is the smallest
candidate within 0.5 validation points of the dense control, else the most accurate. The dense control is
the baseline trained for as many more epochs as pruning plus centroid fine-tuning took. Size ratio = fp32
state-dict bytes / bytes of the slimkit directory on disk (``slimkit.json`` with its applied steps
included); a per-stage table (pruning only → + clustering → + Huffman) and a per-layer table (density,
bits, bytes of values / positions / codebook / tables) follow the paper's Tables 1–2. SmolLM2 and MiniLM
rows (4-bit k-means codebooks against RTN / GPTQ int4 at the same bits per weight) are in
``_deep_compression_llm.py``. Writes ``results/deep_compression.{json,md}`` (or ``--results-dir``); every
row carries its run date and commit; ``--resume`` keeps the rows of sections not run now.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS, markdown_table, provenance, resumed_rows, run_metadata
from torch import Tensor, nn

import slimkit
from slimkit.cluster.finetune import CentroidFinetuneConfig
from slimkit.cluster.huffman_step import HuffmanConfig
from slimkit.cluster.record import CodebookRecord, get_share_note, set_share_note
from slimkit.cluster.weight_sharing import KMeansClusterConfig
from slimkit.config import Targets
from slimkit.data.images import fashion_mnist
from slimkit.eval.metrics import accuracy
from slimkit.export.slimkit_format import write_into
from slimkit.export.storage import storage_breakdown
from slimkit.method import StepReport
from slimkit.models.bundle import ModelBundle
from slimkit.models.zoo import build_architecture
from slimkit.prune.gradual import GradualPruneConfig
from slimkit.train.classifier import Teacher, TrainConfig, train_classifier

#: Kept fraction per layer in the paper (Tables 1 and 2), by module name of the nn.Sequential.
PAPER_DENSITY = {"lenet300": ("lenet-300-100", {"1": 0.08, "3": 0.09, "5": 0.26}),
                 "lenet5": ("lenet-5", {"0": 0.66, "3": 0.12, "7": 0.08, "9": 0.19})}
CONV_BITS = 8  # the paper's bits for convolutions; fully connected bits are chosen on the val split
TOLERANCE_POINTS = 0.5
Split = tuple[Tensor, Tensor]


def splits(val_size: int, train_limit: int | None) -> tuple[Split, Split, Split]:
    """(train, val, test): val is carved from the end of the training split; test is the 10k test split."""
    x, y = fashion_mnist("train")
    train = (x[:-val_size], y[:-val_size])
    if train_limit:
        train = (train[0][:train_limit], train[1][:train_limit])
    return train, (x[-val_size:], y[-val_size:]), fashion_mnist("test")


def acc(model: nn.Module, data: Split) -> float:
    with torch.no_grad():
        return round(accuracy(model.eval(), *data) * 100, 2)


def fp32_bytes(model: nn.Module) -> int:
    return sum(t.numel() * 4 for t in model.state_dict().values())


def record(bundle: ModelBundle, report: StepReport) -> None:
    """What ``slimkit compress`` records in ``slimkit.json`` for a step, so the bytes on disk are the tool's."""
    bundle.applied.append({"method": report.method, "config": report.config, "stats": report.stats})


def on_disk(bundle: ModelBundle) -> tuple[int, dict[str, Any]]:
    """Bytes of the slimkit directory and its per-tensor breakdown."""
    with tempfile.TemporaryDirectory(prefix="deep-compression-") as tmp:
        write_into(bundle, Path(tmp))
        breakdown = storage_breakdown(Path(tmp))
        return breakdown.total, breakdown.to_dict()


def train(model: nn.Module, data: Split, epochs: int, seed: int, on_step: Any = None,
          teacher: Teacher | None = None) -> None:
    train_classifier(model, *data, TrainConfig(epochs=epochs, lr=1e-3, seed=seed), on_step=on_step, teacher=teacher)


def prune(baseline: ModelBundle, density: dict[str, float], scale: float, data: Split, epochs: int,
          teacher: Teacher | None) -> ModelBundle:
    """Gradual magnitude pruning of each layer to ``scale`` × its paper density, inside ``epochs`` of training."""
    bundle = copy.copy(baseline)
    bundle.model, bundle.applied = copy.deepcopy(baseline.model), []
    ctls = [slimkit.prepare(bundle.model, GradualPruneConfig(final_sparsity=round(1 - d * scale, 4), end=0.6,
                                                             targets=Targets(include=(name,))))
            for name, d in density.items()]
    train(bundle.model, data, epochs, seed=1, on_step=lambda p: [c.step(p) for c in ctls], teacher=teacher)
    for c in ctls:
        c.step(1.0)
        record(bundle, c.finalize())
    return bundle


def cluster(pruned: ModelBundle, fc_bits: int, data: Split, epochs: int, teacher: Teacher | None) -> ModelBundle:
    """k-means (conv 8 bits, fully connected ``fc_bits``) then ``epochs`` of centroid fine-tuning."""
    bundle = copy.copy(pruned)
    bundle.model, bundle.applied = copy.deepcopy(pruned.model), list(pruned.applied)
    for types, bits in ((("Conv2d",), CONV_BITS), (("Linear",), fc_bits)):
        if any(type(m).__name__ in types for m in bundle.model.modules()):
            record(bundle, slimkit.apply(bundle.model, KMeansClusterConfig(bits=bits, targets=Targets(
                module_types=types))))
    ctl = slimkit.prepare(bundle.model, CentroidFinetuneConfig())
    train(bundle.model, data, epochs, seed=2, on_step=ctl.step, teacher=teacher)
    record(bundle, ctl.finalize())
    return bundle


def stage_row(section: str, stage: str, bundle: ModelBundle, data: dict[str, Split], dense: int,
              control_acc: float | None) -> dict[str, Any]:
    size, breakdown = on_disk(bundle)
    test = acc(bundle.model, data["test"])
    return {"section": section, "table": "stages", "stage": stage, "test_accuracy": test,
            "delta_vs_control": None if control_acc is None else round(test - control_acc, 2),
            "bytes_on_disk": size, "size_ratio": round(dense / size, 2), "header_bytes": breakdown["overhead_bytes"],
            "breakdown": breakdown, **provenance()}


def layer_rows(section: str, stages: dict[str, dict[str, Any]], model: nn.Module, bits: dict[str, int]) -> list[
        dict[str, Any]]:
    """Per weight: density, codebook bits and bytes at each stage; bits per kept weight after Huffman."""
    rows = []
    for name, param in model.named_parameters():
        if not name.endswith("weight"):
            continue
        kept = int((param != 0).sum())
        parts = {stage: stages[stage]["breakdown"]["tensors"][name] for stage in stages}
        coded = parts["+ Huffman"]
        size = {stage: sum(v for k, v in p.items() if k in ("values", "positions", "codebook", "tables"))
                for stage, p in parts.items()}
        rows.append({"section": section, "table": "layers", "layer": name, "shape": list(param.shape),
                     "params": param.numel(), "density": round(kept / param.numel(), 4), "bits": bits[name],
                     "bytes_pruned": size["pruning only"], "bytes_clustered": size["+ clustering"],
                     "bytes_huffman": size["+ Huffman"], "huffman_values": coded["values"],
                     "huffman_positions": coded["positions"], "huffman_codebook": coded["codebook"],
                     "huffman_tables": coded["tables"],
                     "bits_per_kept_weight": round(8 * size["+ Huffman"] / max(kept, 1), 2), **provenance()})
    return rows


def lenet_section(section: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    arch, density = PAPER_DENSITY[section]
    base_epochs, prune_epochs, ft_epochs = args.epochs[section], args.prune_epochs[section], args.finetune_epochs
    train_split, val, test = splits(args.val_size, args.train_limit)
    data = {"train": train_split, "val": val, "test": test}
    torch.manual_seed(0)
    baseline = ModelBundle(build_architecture(arch), "torch", arch, arch={"name": arch, "kwargs": {}})
    train(baseline.model, train_split, base_epochs, seed=0)
    dense = fp32_bytes(baseline.model)
    control = copy.deepcopy(baseline)
    train(control.model, train_split, prune_epochs + ft_epochs, seed=1)
    # With --distill-alpha > 0, pruning and centroid fine-tuning learn from the dense control (the best dense
    # model there is), which stays the labels-only reference every candidate is judged against.
    teacher = Teacher(control.model, args.distill_temperature, args.distill_alpha) if args.distill_alpha > 0 else None
    control_val = acc(control.model, val)
    rows = [stage_row(section, f"dense baseline ({base_epochs} epochs)", baseline, data, dense, None),
            stage_row(section, f"dense control (+{prune_epochs + ft_epochs} epochs"
                      f"{', the teacher of the compressed models' if teacher else ''})", control, data, dense, None)]
    control_acc = rows[-1]["test_accuracy"]
    candidates: list[tuple[dict[str, Any], ModelBundle, ModelBundle]] = []
    for scale in args.sparsity_scales:
        pruned = prune(baseline, density, scale, train_split, prune_epochs, teacher)
        for bits in args.fc_bits:
            clustered = cluster(pruned, bits, train_split, ft_epochs, teacher)
            coded = copy.copy(clustered)
            coded.applied = list(clustered.applied)
            record(coded, slimkit.apply(coded.model, HuffmanConfig()))
            size, _ = on_disk(coded)
            row = {"section": section, "table": "candidates", "sparsity_scale": scale, "fc_bits": bits,
                   "val_accuracy": acc(coded.model, val), "control_val_accuracy": control_val,
                   "bytes_on_disk": size, "size_ratio": round(dense / size, 2), **provenance()}
            print(row, flush=True)
            candidates.append((row, pruned, coded))
    within = [c for c in candidates if c[0]["val_accuracy"] >= control_val - TOLERANCE_POINTS]
    chosen = min(within, key=lambda c: c[0]["bytes_on_disk"]) if within else \
        max(candidates, key=lambda c: c[0]["val_accuracy"])
    chosen[0]["chosen"] = True
    row, pruned, coded = chosen
    clustered_only = copy.deepcopy(coded)  # the same weights stored with the fixed-width codebook codec
    for module in clustered_only.model.modules():
        note = get_share_note(module, "weight")
        if note is not None and note.codebook is not None:
            set_share_note(module, "weight", CodebookRecord(note.codebook))
    clustered_only.applied = clustered_only.applied[:-1]
    stages = {"pruning only": stage_row(section, "pruning only", pruned, data, dense, control_acc),
              "+ clustering": stage_row(section, "+ clustering", clustered_only, data, dense, control_acc),
              "+ Huffman": stage_row(section, "+ Huffman", coded, data, dense, control_acc)}
    for stage_name, r in stages.items():
        r["stage"] = f"{stage_name} (scale {row['sparsity_scale']}, fc {row['fc_bits']} bits)"
    bits = {name: (CONV_BITS if isinstance(m, nn.Conv2d) else row["fc_bits"]) for name, m in
            ((f"{n}.weight", m) for n, m in coded.model.named_modules()) if isinstance(m, nn.Conv2d | nn.Linear)}
    layers = layer_rows(section, stages, coded.model, bits)
    return rows + list(stages.values()) + [c[0] for c in candidates] + layers


def _columns(*keys: str) -> list[tuple[str, Any]]:
    return [(k, (lambda r, k=k: r.get(k))) for k in (*keys, "date", "commit")]


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    from _deep_compression_llm import llm_markdown

    out = ["# Deep Compression benchmark", "", f"torch {meta['torch']}, {meta['threads']} threads. Size ratio = fp32 "
           "state-dict bytes / bytes of the slimkit directory on disk (headers included). Every row carries its run "
           "date and commit.", ""]
    for section, title in (("lenet300", "LeNet-300-100"), ("lenet5", "LeNet-5")):
        mine = [r for r in rows if r["section"] == section]
        if not mine:
            continue
        target = 40 if section == "lenet300" else 39
        out += [f"## {title} on Fashion-MNIST (target: ≥ {target}× smaller, ≤ {TOLERANCE_POINTS} points below the "
                "dense control)", "", "Test accuracy (10k test split) per stage of the chosen candidate; "
                "`delta_vs_control` against the dense model trained as many more epochs.", ""]
        out += markdown_table(_columns("stage", "test_accuracy", "delta_vs_control", "bytes_on_disk", "size_ratio",
                                       "header_bytes"), [r for r in mine if r["table"] == "stages"]) + [""]
        out += ["Per layer (chosen candidate): bytes per stage, and the Huffman stage split into values (cluster "
                "indices), positions, codebook and code tables.", ""]
        out += markdown_table(_columns("layer", "shape", "density", "bits", "bytes_pruned", "bytes_clustered",
                                       "bytes_huffman", "huffman_values", "huffman_positions", "huffman_codebook",
                                       "huffman_tables", "bits_per_kept_weight"),
                              [r for r in mine if r["table"] == "layers"]) + [""]
        out += ["Candidates, judged on the validation split only:", ""]
        out += markdown_table(_columns("sparsity_scale", "fc_bits", "val_accuracy", "control_val_accuracy",
                                       "bytes_on_disk", "size_ratio", "chosen"),
                              [r for r in mine if r["table"] == "candidates"]) + [""]
        out += verdict(mine, target)
    return "\n".join(out + llm_markdown(rows, _columns)) + "\n"


def verdict(rows: list[dict[str, Any]], target: float) -> list[str]:
    final = next(r for r in rows if r["table"] == "stages" and r["stage"].startswith("+ Huffman"))
    ok = final["size_ratio"] >= target and final["delta_vs_control"] >= -TOLERANCE_POINTS
    return [f"**{'MET' if ok else 'MISSED'}**: {final['size_ratio']}× smaller (target {target}×), "
            f"{final['delta_vs_control']:+.2f} points against the control (target ≥ −{TOLERANCE_POINTS}).", ""]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", nargs="+", default=["lenet300", "lenet5", "smollm2", "minilm"],
                   choices=["lenet300", "lenet5", "smollm2", "minilm"])
    p.add_argument("--epochs", type=int, nargs=2, default=[10, 4], metavar=("LENET300", "LENET5"),
                   help="baseline training epochs")
    p.add_argument("--prune-epochs", type=int, nargs=2, default=[10, 4], metavar=("LENET300", "LENET5"))
    p.add_argument("--finetune-epochs", type=int, default=2, help="centroid fine-tuning epochs")
    p.add_argument("--sparsity-scales", type=float, nargs="+", default=[1.0, 0.75])
    p.add_argument("--fc-bits", type=int, nargs="+", default=[5, 4])
    p.add_argument("--distill-alpha", type=float, default=0.0,
                   help="> 0: pruning and centroid fine-tuning distil from the dense control (labels-only)")
    p.add_argument("--distill-temperature", type=float, default=4.0)
    p.add_argument("--val-size", type=int, default=10_000)
    p.add_argument("--train-limit", type=int, default=None, help="use only this many training images (smoke runs)")
    p.add_argument("--eval-windows", type=int, default=10**9, help="SmolLM2 pydoc eval windows (default: all)")
    p.add_argument("--calib-windows", type=int, default=32)
    p.add_argument("--sentences", type=int, default=256, help="MiniLM evaluation sentences")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--resume", action="store_true", help="keep the saved rows of sections not run now")
    args = p.parse_args()
    args.epochs = dict(zip(("lenet300", "lenet5"), args.epochs, strict=True))
    args.prune_epochs = dict(zip(("lenet300", "lenet5"), args.prune_epochs, strict=True))
    return args


def main() -> None:
    from _deep_compression_llm import minilm_rows, smollm2_rows

    args = parse_args()
    torch.set_num_threads(2)
    saved = args.results_dir / "deep_compression.json"
    rows = [r for r in resumed_rows(saved, args.resume) if r["section"] not in args.sections]
    for section in args.sections:
        if section in PAPER_DENSITY:
            rows += lenet_section(section, args)
        elif section == "smollm2":
            rows += smollm2_rows(args.eval_windows, args.calib_windows)
        else:
            rows += minilm_rows(args.sentences)
        write(rows, args)  # after every section, so a long run keeps what it measured
    print(markdown(rows, run_metadata()))


def write(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    meta = run_metadata(**{k: v for k, v in vars(args).items() if k != "results_dir"} | {"resume": args.resume})
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "deep_compression.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2,
                                                                        default=str) + "\n")
    (args.results_dir / "deep_compression.md").write_text(markdown(rows, meta))


if __name__ == "__main__":
    main()
