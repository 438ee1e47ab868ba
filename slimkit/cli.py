"""The ``slimkit`` command line: compress, analyze, train, eval, bench, export, demo, list-methods, list-formats.

Every command turns expected failures (bad recipe or data spec, missing model package, corrupt file,
unwritable output, full disk) into one clear paragraph on stderr and exit code 2, never a traceback.
User text and error messages are printed as plain text, never parsed as rich markup (``hf:NAME[/CONFIG]``
would be read as a closing tag). SIGTERM stops a command like Ctrl-C does, removing partial outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.markdown import Markdown
from rich.text import Text
from safetensors import SafetensorError

from slimkit.atomic import sigterm_raises
from slimkit.cli_measure import run_bench, run_eval, run_generate
from slimkit.progress import console

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="slimkit: make trained networks smaller and faster, and measure what was lost.")
T = TypeVar("T")
# OSError covers a full disk (ENOSPC), a read-only or unwritable output and missing files;
# SafetensorError a damaged weights file that a model loader read directly.
EXPECTED_ERRORS = (ValueError, OSError, KeyError, ImportError, RuntimeError, SafetensorError)
DEMO_MODEL = "smollm2-135m"
DATA_HELP = ("data spec: pydoc, text:PATH, hf:NAME[/CONFIG][:SPLIT] (namespaced: hf:ORG/NAME/CONFIG, "
             "hf:ORG/NAME/ for the default config), fashion-mnist[:DIR], digits")
RUNTIME_HELP = "torch, or llama.cpp to run .gguf files in llama.cpp (needs llama-cpp-python)"


def _message(err: BaseException) -> str:
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    if isinstance(err, OSError) and err.strerror and err.filename:
        return f"{err.filename}: {err.strerror}"  # not "[Errno 28] No space left on device: '...'"
    return str(err)


def _run(fn: Callable[[], T]) -> T:
    try:
        with sigterm_raises():
            return fn()
    except EXPECTED_ERRORS as err:
        console.print(Text.assemble(("error: ", "bold red"), _message(err)), highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _compress(model: str, recipe_path: Path, out: Path, calib: list[str] | None, eval_data: str | None,
              calib_samples: int, overwrite: bool, calib_guard: bool, stream: bool = False,
              max_memory: str | None = None) -> None:
    from slimkit.memory import parse_memory
    from slimkit.pipeline import compress
    from slimkit.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    report = compress(model, recipe, out, calib=calib, eval_data=eval_data, calib_samples=calib_samples,
                      overwrite=overwrite, calib_guard=calib_guard, stream=stream,
                      max_memory=parse_memory(max_memory) if max_memory else None)
    console.print(Markdown(report.to_markdown()))
    console.print(Text.assemble(("wrote ", "bold green"), f"{out} (model, slimkit.json, report.md, report.json, "
                                "report.png, report.html)"))


@app.command()
def compress(
    model: Annotated[str, typer.Argument(help="packaged name (smollm2-135m, minilm-l6), model dir or .gguf")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory (written atomically)")],
    recipe: Annotated[Path | None, typer.Option("--recipe", "-r", help="YAML recipe file (or give a budget)")] = None,
    calib: Annotated[list[str] | None, typer.Option(
        help=f"calibration {DATA_HELP}; repeat it for a mix sampled in proportion, with an optional @WEIGHT "
             "per part (--calib text:mine.txt@3 --calib pydoc)")] = None,
    eval_data: Annotated[str | None, typer.Option("--eval", help=f"evaluation {DATA_HELP}")] = None,
    calib_samples: Annotated[int, typer.Option(min=1, help="calibration samples (windows/sentences/images)")] = 32,
    overwrite: Annotated[bool, typer.Option(help="replace an existing slimkit output directory (only one "
                                                 "holding nothing but the files slimkit wrote)")] = False,
    calib_guard: Annotated[bool, typer.Option(help="also measure the calibration-free counterpart of calibrated "
                                                   "steps (RTN for GPTQ/AWQ, magnitude for SparseGPT/Wanda) on "
                                                   "the eval data and warn if the calibrated model is worse")] = True,
    target_size: Annotated[str | None, typer.Option(help="budget instead of a recipe: the largest size on disk, "
                                                         "e.g. 40MB (per-layer settings are searched)")] = None,
    max_metric_loss: Annotated[str | None, typer.Option(help="budget instead of a recipe: the largest relative "
                                                             "metric loss on the eval data, e.g. 1%")] = None,
    try_: Annotated[list[str] | None, typer.Option("--try", help="with a budget: settings a layer group may take, "
                                                   "KNOB=V1,V2 with KNOB bits, group_size, codebook or sparsity "
                                                   "(repeatable; default bits=2,3,4,8)")] = None,
    max_trials: Annotated[int, typer.Option(min=1, help="with a budget: compress-and-evaluate trials at most")] = 8,
    finetune_epochs: Annotated[int | None, typer.Option(min=1, help="with a budget: train every trial this many "
                                                    "epochs after its pruning (train.finetune, masks and grids "
                                                    "fixed) on the eval data's training split")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="with a budget: sensitivity cache directory (default "
                                                        "$SLIMKIT_CACHE or ~/.cache/slimkit)")] = None,
    stream: Annotated[bool, typer.Option(help="Hugging Face causal LM directory: one decoder layer in memory at a "
                                              "time, checkpointed in OUT.stream (rerun to resume)")] = False,
    max_memory: Annotated[str | None, typer.Option(help="memory the job may use, e.g. 16GB (default: this machine's "
                                                        "RAM); a larger estimate streams if it can, else is refused")
                          ] = None,
) -> None:
    """Apply a recipe to MODEL, or search per-layer settings that meet a budget; save to OUT and report.

    With --target-size and/or --max-metric-loss the layer groups' sensitivity is analysed (cached), settings
    are chosen by sensitivity per byte saved and verified on the eval data, and the chosen recipe is saved as
    OUT/recipe.yaml. The model name, recipe, data specs and output location are checked before the model loads.
    """
    budget = target_size is not None or max_metric_loss is not None
    if budget == (recipe is not None):
        console.print(Text.assemble(("error: ", "bold red"), "give either --recipe or a budget (--target-size and/or "
                                    "--max-metric-loss), not both and not neither"), highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    if recipe is None:
        from slimkit.search.commands import run_budget_compress

        if stream or max_memory:
            console.print(Text("error: --stream and --max-memory apply to --recipe", style="bold red"))
            raise typer.Exit(2)
        _run(lambda: run_budget_compress(model, out, target_size, max_metric_loss, try_, max_trials, calib, eval_data,
                                         calib_samples, overwrite, calib_guard, cache_dir, finetune_epochs))
        return
    if try_ or finetune_epochs:
        console.print(Text.assemble(("error: ", "bold red"), "--try and --finetune-epochs shape a budget search; "
                                    "with --recipe the recipe says what to apply"), highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    _run(lambda: _compress(model, recipe, out, calib, eval_data, calib_samples, overwrite, calib_guard, stream,
                           max_memory))


@app.command()
def analyze(
    model: Annotated[str, typer.Argument(help="model spec or slimkit output directory")],
    try_: Annotated[list[str], typer.Option("--try", help="settings to score, KNOB=V1,V2 with KNOB bits, group_size, "
                                                           "codebook or sparsity (repeatable)")],
    data: Annotated[str | None, typer.Option(help=f"{DATA_HELP}; its validation part is used (default: pydoc / "
                                                  "fashion-mnist)")] = None,
    proxy: Annotated[str, typer.Option(help="divergence (KL to the original's outputs, 1 - cosine for embeddings) "
                                            "or metric (the model's own metric)")] = "divergence",
    windows: Annotated[int, typer.Option(min=1, help="causal LMs: token windows probed")] = 4,
    seq_len: Annotated[int, typer.Option(min=2, help="causal LMs: tokens per window")] = 256,
    samples: Annotated[int, typer.Option(min=1, help="images or sentences probed")] = 256,
    per_layer: Annotated[bool, typer.Option(help="one group per Linear/Conv instead of attention / FFN per "
                                                 "transformer block")] = False,
    cache_dir: Annotated[Path | None, typer.Option(help="cache directory (default $SLIMKIT_CACHE or "
                                                        "~/.cache/slimkit)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")] = False,
) -> None:
    """Layer sensitivity: apply each setting to one layer group at a time and score the drift from the original.

    Results are cached on disk (keyed by the weights, data and probe budget), so a rerun or a budget search
    (`slimkit compress --target-size ...`) reuses them.
    """
    def run() -> None:
        from slimkit.eval.sensitivity import SensitivityConfig
        from slimkit.search.commands import run_analyze

        if proxy not in ("divergence", "metric"):
            raise ValueError(f"--proxy {proxy!r}: choose divergence or metric")
        config = SensitivityConfig(proxy=proxy, windows=windows, seq_len=seq_len, samples=samples,  # type: ignore[arg-type]
                                   per_layer=per_layer)
        run_analyze(model, data, try_, config, cache_dir, as_json)

    _run(run)


def _train(arch: str, data: str, out: Path, epochs: int, batch_size: int, lr: float, seed: int,
           overwrite: bool) -> None:
    from slimkit.export.slimkit_format import check_output, save
    from slimkit.preflight import check_data_spec
    from slimkit.train.baseline import check_architecture, train_architecture
    from slimkit.train.classifier import TrainConfig

    if not lr > 0:  # also refuses NaN
        raise ValueError(f"--lr must be a positive number, got {lr}")
    check_output(out, overwrite)  # everything that can be wrong is found before the training run
    check_architecture(arch)
    check_data_spec(data)
    bundle, test_accuracy = train_architecture(arch, data, TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr,
                                                                       seed=seed))
    save(bundle, out, overwrite=overwrite)
    console.print(Text.assemble(("wrote ", "bold green"), f"{out}: {arch} trained {epochs} epochs on {data}, test "
                                f"accuracy {test_accuracy:.4f}. Compress it with `slimkit compress {out} --recipe "
                                "RECIPE --out DIR`"), highlight=False, soft_wrap=True)


@app.command()
def train(
    arch: Annotated[str, typer.Argument(help="registered architecture, optionally with arguments: lenet-300-100, "
                                             "lenet-5, small-cnn, mlp[in_features=64,hidden=[32]]")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory (written atomically)")],
    data: Annotated[str, typer.Option(help="labelled images: fashion-mnist[:DIR] or digits")] = "fashion-mnist",
    epochs: Annotated[int, typer.Option(min=1, help="passes over the training split")] = 10,
    batch_size: Annotated[int, typer.Option(min=1, help="images per optimizer step")] = 128,
    lr: Annotated[float, typer.Option(help="AdamW learning rate (cosine-decayed to 0), positive")] = 1e-3,
    seed: Annotated[int, typer.Option(help="seed of the initial weights and the batch order")] = 0,
    overwrite: Annotated[bool, typer.Option(help="replace an existing slimkit output directory")] = False,
) -> None:
    """Train ARCH from scratch on DATA's training split and save it in the slimkit format (test accuracy printed).

    The output, architecture and data are checked before training; the input shape is checked against the data.
    """
    _run(lambda: _train(arch, data, out, epochs, batch_size, lr, seed, overwrite))


@app.command("eval")
def eval_command(
    model: Annotated[str, typer.Argument(help="model spec or slimkit output directory")],
    data: Annotated[str | None, typer.Option(help=f"{DATA_HELP} (default: pydoc / fashion-mnist)")] = None,
    windows: Annotated[int, typer.Option(min=1, help="perplexity windows of 512 tokens")] = 16,
    latency: Annotated[bool, typer.Option(help="measure CPU latency too")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")] = False,
    runtime: Annotated[str, typer.Option(help=RUNTIME_HELP)] = "torch",
) -> None:
    """Evaluate a model: metric, size on disk, parameters, sparsity, latency.

    With --runtime llama.cpp, a .gguf file is scored by llama.cpp itself (perplexity from its logits of every
    position, prefill/decode tok/s), on the same token windows as the torch path.
    """
    _run(lambda: run_eval(model, data, windows, latency, as_json, runtime))


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory (an earlier demo output there "
                                                          "is replaced)")] = Path("slimkit-demo"),
) -> None:
    """Compress SmolLM2-135M to int8 with the default recipe and print the before/after report."""
    recipe_file = resources.files("slimkit") / "recipes" / "demo.yaml"
    with resources.as_file(recipe_file) as recipe_path:
        # overwrite=True replaces only a slimkit output; anything else at OUT is refused (check_output).
        _run(lambda: _compress(DEMO_MODEL, recipe_path, out, None, None, 32, True, True))


@app.command()
def bench(
    model: Annotated[str, typer.Argument(help="model spec or slimkit output directory to measure")],
    compare: Annotated[str | None, typer.Option(help="reference model, e.g. the original")] = None,
    prompt_len: Annotated[int, typer.Option(min=1, help="prompt tokens for the prefill (causal LMs)")] = 512,
    new_tokens: Annotated[int, typer.Option(min=2, help="greedy decode tokens (causal LMs)")] = 128,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")] = False,
    runtime: Annotated[str, typer.Option(help=RUNTIME_HELP)] = "torch",
) -> None:
    """Measure speed on this CPU: prefill and decode tok/s at batch 1 (LMs) or latency per batch size.

    With --compare, both models are measured side by side (language models round-robin, three runs
    each, the fastest kept) and a WARNING line is printed wherever MODEL is slower than the reference.
    With --runtime llama.cpp, every .gguf file (MODEL, the reference, or a packaged GGUF model) runs in
    llama.cpp and any other model in slimkit's PyTorch loop, so the two runtimes can be compared.
    """
    _run(lambda: run_bench(model, compare, prompt_len, new_tokens, as_json, runtime))


@app.command()
def generate(
    model: Annotated[str, typer.Argument(help="packaged name, model directory, slimkit output or .gguf file")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="text to continue")],
    max_new_tokens: Annotated[int, typer.Option(help="tokens to generate at most")] = 64,
    runtime: Annotated[str, typer.Option(help="torch, or llama.cpp for a .gguf file (needs llama-cpp-python)")
                       ] = "torch",
    compiled: Annotated[bool, typer.Option("--compile", help="static KV cache + torch.compile'd decode step "
                                           "(compiles first: minutes on a real model)")] = False,
) -> None:
    """Stream greedy text from MODEL (original or compressed) and report prefill/decode tok/s at the end."""
    _run(lambda: run_generate(model, prompt, max_new_tokens, runtime, compiled))


@app.command("export")
def export_command(
    model: Annotated[str, typer.Argument(help="slimkit output directory or any model spec")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="export format (see `slimkit list-formats`)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="file (or directory) to write, atomically")],
    option: Annotated[list[str] | None, typer.Option(help="format option KEY=VALUE (repeatable)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing file")] = False,
) -> None:
    """Convert MODEL to another runtime's format; the file is checked by that runtime's own reader.

    A file that does not match the PyTorch model within the format's tolerance is an error (nothing is written).
    """
    from slimkit.cli_export import run_export

    _run(lambda: run_export(model, fmt, out, option, overwrite))


@app.command("list-formats")
def list_formats() -> None:
    """List the export formats, their options and the packages they need."""
    from slimkit.cli_export import print_formats

    print_formats()


@app.command("list-methods")
def list_methods() -> None:
    """List the registered compression methods and their config fields."""
    import slimkit  # noqa: F401 - registers the methods
    from slimkit.cli_export import field_summary
    from slimkit.method import method_name, registered_configs

    for cls in registered_configs():
        fields = ", ".join(field_summary(k, v) for k, v in cls.model_fields.items()
                           if k not in ("method", "version", "targets"))
        console.print(Text.assemble((method_name(cls), "bold"), f"  ({cls.__name__}) {fields}"), highlight=False)
        doc = (cls.__doc__ or "").strip().splitlines()
        if doc:
            console.print(Text(f"    {doc[0]}"), highlight=False)


def main() -> None:
    import slimkit  # noqa: F401 - registers the built-in methods

    app()
