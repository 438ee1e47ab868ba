"""Loading Hugging Face models: model directories, GGUF files and sentence-transformers.

Everything here is offline: ``local_files_only=True`` is always passed, so a hub id fails fast with
our own message instead of a network timeout. Weights are read from safetensors only
(``use_safetensors=True``): a directory holding only pickles (``pytorch_model.bin``) is refused, since
unpickling can run code. Files that transformers cannot read (an invalid ``config.json``, a malformed
GGUF) become a ``ValueError`` naming the file. The loaders first register slimkit's own architectures
(:func:`register_slim_bert`), so directories holding them load without ``trust_remote_code``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from slimkit.models.bundle import ModelBundle, ModelKind


def _auto_class(kind: ModelKind) -> Any:
    import transformers

    return {
        "causal-lm": transformers.AutoModelForCausalLM,
        "seq-cls": transformers.AutoModelForSequenceClassification,
        "encoder": transformers.AutoModel,
    }[kind]


def register_slim_bert() -> None:
    """Register ``slimkit_bert`` (BERT with pruned heads / per-layer widths) with transformers' Auto classes.

    Done on first use rather than at ``import slimkit``, which would otherwise pay transformers' import
    time (seconds) even for commands that never touch a Hugging Face model. Idempotent.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    from slimkit.models.slim_bert import SlimBertConfig, SlimBertForSequenceClassification, SlimBertModel

    AutoConfig.register(SlimBertConfig.model_type, SlimBertConfig, exist_ok=True)
    AutoModel.register(SlimBertConfig, SlimBertModel, exist_ok=True)
    AutoModelForSequenceClassification.register(SlimBertConfig, SlimBertForSequenceClassification, exist_ok=True)


def hf_kind(config: Any) -> ModelKind:
    """Decide the model kind from a transformers config's ``architectures`` list."""
    archs = getattr(config, "architectures", None) or []
    name = archs[0] if archs else ""
    if name.endswith("ForCausalLM") or name.endswith("LMHeadModel"):
        return "causal-lm"
    if name.endswith("ForSequenceClassification"):
        return "seq-cls"
    return "encoder"


_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _read_config(path: Path) -> Any:
    """The directory's transformers config; a broken ``config.json`` is a ValueError naming the file."""
    from transformers import AutoConfig

    config_file = path / "config.json"
    try:
        if not isinstance(json.loads(config_file.read_text(encoding="utf-8")), dict):
            raise ValueError("it is not a JSON object")
        return AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as err:  # noqa: BLE001 - json, transformers and huggingface_hub raise many types
        raise ValueError(f"{config_file}: not a usable transformers config ({type(err).__name__}: {err})") from None


def check_safetensors_weights(path: Path, auto_class: str) -> None:
    """Refuse a model directory whose weights are only pickle files, saying how to convert them.

    Args:
        path: the directory holding ``config.json`` and the weights.
        auto_class: the transformers class that loads it, for the conversion command.
    """
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted(f.name for f in path.iterdir() if f.suffix in _PICKLE_SUFFIXES)
    if not pickles:
        raise ValueError(f"{path}: no weights found (expected model.safetensors, or model-*.safetensors shards)")
    convert = f"from transformers import {auto_class} as M; M.from_pretrained('{path}').save_pretrained('{path}')"
    raise ValueError(
        f"{path}: the weights are pickle files ({', '.join(pickles)}), and slimkit loads safetensors only, "
        f"because unpickling a file can run arbitrary code. If you trust the file, convert it once with "
        f"python -c \"{convert}\" (writes model.safetensors), then load the directory again.")


def _from_pretrained(auto_class: Any, path: Path) -> Any:
    """``auto_class.from_pretrained`` in float32 from safetensors only; read errors name the directory."""
    check_safetensors_weights(path, auto_class.__name__)
    try:
        return auto_class.from_pretrained(path, local_files_only=True, dtype="float32", use_safetensors=True)
    except Exception as err:  # noqa: BLE001 - safetensors, torch and transformers raise many types
        raise ValueError(f"{path}: transformers cannot load these weights ({type(err).__name__}: {err})") from None


def load_hf_directory(path: Path, source: str) -> ModelBundle:
    """Load a transformers model directory (``config.json`` + safetensors weights) in float32."""
    register_slim_bert()
    kind = hf_kind(_read_config(path))
    model = _from_pretrained(_auto_class(kind), path)
    return ModelBundle(model.eval(), kind, source, _tokenizer_if_present(path))


def _tokenizer_if_present(path: Path) -> Any:
    """The directory's tokenizer, or ``None`` for a weights-only directory."""
    from transformers import AutoTokenizer

    if any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    return None


def load_gguf_tokenizer(path: Path) -> Any:
    """The Hugging Face tokenizer transformers builds from a GGUF file's own vocabulary (the token ids
    llama.cpp uses for the same file)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)


def load_gguf_file(path: Path, source: str) -> ModelBundle:
    """Load a GGUF causal LM through transformers' ``gguf_file=`` loader (dequantized to float32).

    The header is checked first (:func:`slimkit.models.gguf_check.check_gguf_file`); whatever transformers
    still cannot read (an unsupported architecture, say) becomes a ValueError naming the file.
    """
    from transformers import AutoModelForCausalLM

    from slimkit.models.gguf_check import check_gguf_file

    check_gguf_file(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True,
                                                     dtype="float32")
        tokenizer = load_gguf_tokenizer(path)
    except Exception as err:  # noqa: BLE001 - transformers' GGUF path raises many types
        raise ValueError(f"{path}: transformers cannot load this GGUF file ({type(err).__name__}: {err})") from None
    # The config remembers the GGUF origin; once dequantized the model is a plain float model.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]
    return ModelBundle(model.eval(), "causal-lm", source, tokenizer)


def load_sentence_transformer(path: Path, source: str) -> ModelBundle:
    """Load a sentence-transformers directory (``modules.json``) on the CPU."""
    from sentence_transformers import SentenceTransformer

    register_slim_bert()
    for entry in _st_modules(path):
        if entry["type"].endswith("Transformer"):
            check_safetensors_weights(path / entry["path"], "AutoModel")
    try:
        model = SentenceTransformer(str(path), device="cpu", local_files_only=True,
                                    model_kwargs={"use_safetensors": True})
    except Exception as err:  # noqa: BLE001 - sentence-transformers and transformers raise many types
        raise ValueError(f"{path}: sentence-transformers cannot load this model "
                         f"({type(err).__name__}: {err})") from None
    return ModelBundle(model.eval(), "sentence-transformer", source, model.tokenizer)


def _st_modules(path: Path) -> list[dict[str, Any]]:
    """The entries of ``modules.json`` (type and sub-directory of each pipeline module)."""
    modules_file = path / "modules.json"
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        if not isinstance(modules, list) or not all(isinstance(m.get("type"), str) and isinstance(m.get("path"), str)
                                                    for m in modules):
            raise ValueError("expected a list of {\"type\": ..., \"path\": ...} entries")
    except (ValueError, AttributeError) as err:
        raise ValueError(f"{modules_file}: not a usable sentence-transformers module list ({err})") from None
    return modules


def save_hf_skeleton(bundle: ModelBundle, out: Path) -> None:
    """Write everything of an HF model but its weights: config and tokenizer files."""
    config: Any = bundle.model.config
    config.save_pretrained(out)
    if bundle.tokenizer is not None:
        bundle.tokenizer.save_pretrained(out)


def save_st_skeleton(bundle: ModelBundle, out: Path) -> None:
    """Write a sentence-transformers pipeline without its weight files (slimkit stores those)."""
    bundle.model.save(str(out))  # type: ignore[operator]
    for pattern in ("model.safetensors", "pytorch_model.bin"):
        for weights in out.rglob(pattern):
            weights.unlink()


def rebuild_hf(path: Path, kind: ModelKind) -> tuple[nn.Module, Any]:
    """Build an HF model of the saved config with fresh weights, plus its tokenizer."""
    from transformers import AutoConfig

    register_slim_bert()
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    model = _auto_class(kind).from_config(config, dtype="float32")
    return model.eval(), _tokenizer_if_present(path)


def rebuild_sentence_transformer(path: Path) -> nn.Module:
    """Build a sentence-transformers pipeline from a weightless skeleton.

    sentence-transformers can only load a directory that has weights, so the skeleton is copied to a
    temporary directory where each Transformer module gets freshly initialised weights; the caller
    then loads the real state dict over them.
    """
    import shutil
    import tempfile

    from sentence_transformers import SentenceTransformer
    from transformers import AutoConfig, AutoModel

    register_slim_bert()
    modules = json.loads((path / "modules.json").read_text())
    with tempfile.TemporaryDirectory(prefix="slimkit-st-") as tmp:
        work = Path(tmp) / "model"
        shutil.copytree(path, work, ignore=shutil.ignore_patterns("slimkit.safetensors"))
        for entry in modules:
            if entry["type"].endswith("Transformer"):
                sub = work / entry["path"]
                AutoModel.from_config(AutoConfig.from_pretrained(sub)).save_pretrained(sub)
        return SentenceTransformer(str(work), device="cpu", local_files_only=True).eval()
