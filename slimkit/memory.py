"""How much memory a ``compress`` job needs, estimated from file headers before any weight is read.

:func:`estimate` adds up the parts of a job's peak from the shapes in the safetensors headers of a Hugging
Face directory (other kinds of models run without an estimate): the weights as they sit in memory
(the whole model in float32, or streamed: embeddings and head plus one decoder layer), the calibration
and evaluation activations, the float64 input Hessians of one layer (GPTQ, AWQ, SparseGPT), the
scratch of the largest Linear's solve, and the Python/torch/transformers runtime itself.
:func:`plan_memory` compares it with ``--max-memory`` (default: this machine's RAM) and decides: in
memory, streamed layer by layer (asked for with ``--stream``, or chosen because only streaming fits),
streamed with activations spilled to disk, or refused with the estimate's parts, before the model
loads. The report prints the estimate beside the measured peak (:func:`peak_rss_bytes`). The numbers
are estimates: the constants below were fitted to runs on this 2-core machine (benchmarks/memory.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from slimkit.eval.calibration_guard import calibration_free_steps
from slimkit.eval.evaluate import EvalConfig
from slimkit.recipe import Recipe

GB = 1e9
#: Resident memory of the process besides the model and its data: Python, torch, transformers, tokenizers,
#: allocator slack: 0.41 GB right after the imports; 0.6 GB matched the peaks of SmolLM2 smoke runs.
RUNTIME_BYTES = int(0.6 * GB)
#: Methods that accumulate a float64 ``XᵀX`` per Linear input and solve with it.
HESSIAN_METHODS = ("quant.gptq", "quant.awq", "prune.sparsegpt")
#: Linear weights that read the same input inside a layer share one Hessian (Llama names).
SHARED_INPUTS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
_LAYER = re.compile(r"^(?:.*\.)?(?:layers|layer|h)\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class ModelShapes:
    """The sizes the estimate needs: per decoder layer its parameter count and Linear (rows, cols) by name."""

    layer_params: list[int]
    layer_linears: list[dict[str, tuple[int, int]]]
    outer_params: int  # embeddings, final norm, head (a tied head stored once)
    hidden: int
    vocab: int
    file_bytes: int

    @property
    def params(self) -> int:
        return self.outer_params + sum(self.layer_params)


def _shapes(named: list[tuple[str, list[int]]], file_bytes: int) -> ModelShapes:
    """Group ``(name, shape)`` pairs into decoder layers (a weight's shape is (rows, cols))."""
    layers: dict[int, list[tuple[str, list[int]]]] = {}
    outer = 0
    hidden = vocab = 0
    for name, shape in named:
        n = 1
        for d in shape:
            n *= d
        match = _LAYER.match(name)
        if match:
            layers.setdefault(int(match.group(1)), []).append((match.group(2), shape))
        else:
            outer += n
            if len(shape) == 2 and ("embed" in name or name.endswith("wte.weight")):
                vocab, hidden = shape
    order = sorted(layers)
    params = [sum(_numel(s) for _, s in layers[i]) for i in order]
    linears = [{n: (s[0], s[1]) for n, s in layers[i] if len(s) == 2} for i in order]
    return ModelShapes(params, linears, outer, hidden, vocab, file_bytes)


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def model_shapes(spec: str) -> ModelShapes | None:
    """The shapes of the Hugging Face safetensors directory ``spec``, from headers only; None for other kinds
    (GGUF files, slimkit outputs, torch weights files), which run without an estimate."""
    from slimkit.models.lazy_safetensors import SafetensorsIndex

    path = Path(spec).expanduser()
    if not (path.is_dir() and (path / "config.json").is_file() and not (path / "slimkit.json").is_file()
            and any(path.glob("*.safetensors"))):
        return None
    index = SafetensorsIndex.from_directory(path)
    return _shapes([(n, list(i.shape)) for n, i in index.tensors.items()], index.total_bytes())


@dataclass(frozen=True)
class MemoryEstimate:
    """The estimated peak of one way of running a job, in parts (bytes)."""

    mode: str
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v / GB:.2f}" for k, v in self.parts.items() if v)
        return f"about {self.total / GB:.2f} GB {self.mode} ({parts} GB)"


def _hessian_bytes(linears: dict[str, tuple[int, int]]) -> int:
    """float64 ``XᵀX`` of every distinct Linear input of one layer (q/k/v and gate/up share theirs)."""
    inputs: dict[str, int] = {}
    for name, (_, cols) in linears.items():
        group = next((i for i, names in enumerate(SHARED_INPUTS) if any(n in name for n in names)), None)
        inputs[name if group is None else f"shared-{group}"] = cols * cols * 8
    return sum(inputs.values())


def _calibration_parts(shapes: ModelShapes, recipe: Recipe) -> dict[str, int]:
    """Hessians of the largest layer and the scratch of the largest Linear's solve (one at a time)."""
    methods = {s.method for s in recipe.steps}
    linears = [lin for layer in shapes.layer_linears for lin in layer.values()]
    if not linears:
        return {}
    rows, cols = max(linears, key=lambda rc: rc[1] * max(rc[1], rc[0]))
    if methods & set(HESSIAN_METHODS):
        # the solve holds the Hessian, its permuted copy, Cholesky factors and inverse (float64), and
        # about four float32 copies of the weight
        return {"Hessians": max(_hessian_bytes(layer) for layer in shapes.layer_linears),
                "working": 5 * cols * cols * 8 + 4 * rows * cols * 4}
    return {"working": 4 * rows * cols * 4}


def _batch_bytes(shapes: ModelShapes, tokens: int) -> int:
    """Activations inside one layer's forward for ``tokens`` tokens (MLP and attention intermediates)."""
    ffn = max((rc[0] for layer in shapes.layer_linears for rc in layer.values()), default=shapes.hidden)
    return tokens * (3 * ffn + 8 * shapes.hidden) * 4


def estimate(shapes: ModelShapes, recipe: Recipe, *, calib_samples: int, eval_config: EvalConfig, streamed: bool,
             spill: bool = False, calib_guard: bool = True) -> MemoryEstimate:
    """The estimated peak of one ``compress`` job.

    Args:
        shapes: the model's sizes (:func:`model_shapes`).
        recipe: the steps (which decide Hessians and scratch).
        calib_samples: calibration windows (of ``eval_config.seq_len`` tokens, batch 1).
        eval_config: evaluation windows, their length and batch size.
        streamed: one decoder layer at a time instead of the whole model.
        spill: streamed activations on disk, one batch in memory at a time.
        calib_guard: in memory, whether the calibration guard keeps a second copy of the model.
    """
    seq, hidden = eval_config.seq_len, shapes.hidden
    calib = calib_samples * seq * hidden * 4 if any(s.needs_calibration for s in recipe.steps) else 0
    evals = eval_config.windows * seq * hidden * 4
    parts: dict[str, int] = {}
    if streamed:
        parts["weights"] = shapes.outer_params * 4 + 2 * max(shapes.layer_params, default=0) * 4
        kept = 3 * seq * hidden * 4 if spill else calib + 2 * evals  # calib, eval before, eval after
        parts["activations"] = kept + _batch_bytes(shapes, seq) + 3 * 128 * shapes.vocab * 4  # logits, 128 at once
    else:
        guard = calib_guard and calibration_free_steps(recipe.steps) is not None
        parts["weights"] = shapes.params * 4 * (2 if guard else 1) + shapes.file_bytes
        batch = min(eval_config.batch_size, eval_config.windows) * seq  # one evaluation batch's logits at a time
        parts["activations"] = 2 * calib + evals + _batch_bytes(shapes, batch) + 3 * batch * shapes.vocab * 4
    parts.update(_calibration_parts(shapes, recipe))
    parts["runtime"] = RUNTIME_BYTES
    mode = "in memory" if not streamed else "streamed, activations on disk" if spill else "streamed"
    return MemoryEstimate(mode, parts)


def physical_memory() -> int:
    """Total RAM of this machine (``MemTotal``), the default ``--max-memory``."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise OSError("/proc/meminfo: no MemTotal line; give --max-memory")


def peak_rss_bytes() -> int | None:
    """The peak resident memory of this process so far (``VmHWM``), or None where /proc does not say."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def parse_memory(text: str) -> int:
    """Bytes in ``--max-memory`` text: ``16GB``, ``12GiB``, ``500MB`` or a byte count."""
    from slimkit.search.budget import parse_size

    try:
        return parse_size(text)
    except ValueError:
        raise ValueError(f"--max-memory {text!r}: expected a size such as 16GB, 12GiB, 500MB or a byte count") \
            from None


@dataclass(frozen=True)
class MemoryPlan:
    """How ``compress`` runs a job: in memory or streamed (activations spilled or not), and the estimate."""

    stream: bool
    spill: bool
    limit: int
    estimate: MemoryEstimate | None  # of the chosen way; None when the model's kind has no estimate
    in_memory: MemoryEstimate | None = None
    reason: str = ""  # why streaming was chosen when it was not asked for

    def note(self) -> str:
        """The report's line: the estimate (of the way the job ran) and the limit it was checked against."""
        if self.estimate is None:
            return f"memory: no estimate for this kind of model (limit {self.limit / GB:.2f} GB)"
        return f"memory estimate: {self.estimate.describe()}; limit {self.limit / GB:.2f} GB"


def plan_memory(spec: str, recipe: Recipe, *, calib_samples: int, eval_config: EvalConfig, stream: bool,
                max_memory: int | None, calib_guard: bool = True) -> MemoryPlan:
    """Decide before loading anything whether ``spec`` compresses in memory or streamed, or refuse.

    With ``stream`` the job streams (refused when the model or recipe cannot, or when even a streamed run
    with activations on disk exceeds the limit). Without it, a job whose in-memory estimate exceeds the
    limit streams when it can and fits, else is refused with both estimates.

    Raises:
        ValueError: the job cannot run within ``max_memory`` (default: physical RAM), or cannot stream, or
            ``max_memory`` was given for a model whose memory cannot be estimated before loading.
    """
    limit = max_memory if max_memory is not None else physical_memory()
    shapes = model_shapes(spec)
    in_memory = estimate(shapes, recipe, calib_samples=calib_samples, eval_config=eval_config, streamed=False,
                         calib_guard=calib_guard) if shapes else None
    if in_memory is None and max_memory is not None and not stream:
        raise ValueError(f"--max-memory: {spec} is not a Hugging Face safetensors directory, the only kind whose "
                         "memory slimkit can estimate before loading it, so the limit could not be honoured; save "
                         "the model as one (save_pretrained) or leave --max-memory out")
    if not stream and (in_memory is None or in_memory.total <= limit):
        return MemoryPlan(False, False, limit, in_memory, in_memory)
    why_not = _why_not_streamable(spec, recipe)
    if stream and why_not:
        raise ValueError(f"--stream: {why_not}")
    if why_not or shapes is None:
        assert in_memory is not None
        raise ValueError(f"{spec}: the job needs {in_memory.describe()}, more than the {limit / GB:.2f} GB limit "
                         f"(--max-memory, default this machine's RAM), and cannot stream instead: {why_not}")
    for spill in (False, True):
        streamed = estimate(shapes, recipe, calib_samples=calib_samples, eval_config=eval_config, streamed=True,
                            spill=spill)
        if streamed.total <= limit:
            reason = "" if stream else (f"in memory it needs {in_memory.describe() if in_memory else '?'}, more "
                                        f"than the {limit / GB:.2f} GB limit")
            return MemoryPlan(True, spill, limit, streamed, in_memory, reason)
    raise ValueError(f"{spec}: even streamed one layer at a time with activations on disk, the job needs "
                     f"{streamed.describe()}, more than the {limit / GB:.2f} GB limit (--max-memory); use fewer "
                     "calibration or evaluation windows, or a machine with more memory")


def _why_not_streamable(spec: str, recipe: Recipe) -> str | None:
    """Why ``spec`` with ``recipe`` cannot stream (from headers and config only), or None when it can."""
    from slimkit.stream.support import check_recipe, open_source

    try:
        open_source(spec)
        check_recipe(recipe, "the recipe")
    except ValueError as err:
        return str(err)
    return None


def memory_note(plan: MemoryPlan | None) -> str:
    """The report's memory line: the plan's estimate beside the peak resident memory measured so far."""
    peak = peak_rss_bytes()
    measured = f"measured peak RSS {peak / GB:.2f} GB" if peak is not None else "peak RSS not measurable here"
    return f"{plan.note() if plan else 'memory: not estimated'}; {measured}."
