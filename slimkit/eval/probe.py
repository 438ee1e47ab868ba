"""A small, fixed set of held-out inputs that scores how far a perturbed model drifts from the original.

Sensitivity analysis runs hundreds of evaluations, so each must be cheap. The probe reads the data's
validation split (text: the ``val`` documents, which neither calibration nor the evaluation split use;
images: the last ``samples`` training images, while calibration takes the first ones) and scores a model
by one of two proxies:

* ``divergence`` (default): the mean KL divergence of the model's output distribution from the
  original's (next-token distributions of a causal LM, class probabilities of a classifier), or
  1 − cosine similarity for embedding models. It is smooth where a small budget's accuracy or
  perplexity is noisy or flat, and its ranking is checked against the metric's in the tests;
* ``metric``: the model kind's own metric on the probe inputs (perplexity, accuracy, embedding cosine),
  as the relative loss against the original (positive is worse).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from slimkit.data.images import image_data
from slimkit.data.spec import DataSpec
from slimkit.data.text import documents, sentences, token_windows
from slimkit.models.bundle import ModelBundle

Proxy = Literal["divergence", "metric"]
_DISTRIBUTION_KINDS = ("causal-lm", "torch", "seq-cls")


class Probe:
    """Fixed probe inputs for one model, the original's outputs on them, and a counter of evaluations."""

    def __init__(self, bundle: ModelBundle, spec: DataSpec, proxy: Proxy = "divergence", windows: int = 4,
                 seq_len: int = 256, samples: int = 256) -> None:
        self.kind, self.proxy, self.spec = bundle.kind, proxy, spec
        self.evaluations = 0  # model evaluations run (the reference included); a fully cached analysis runs none
        self._bundle_tokenizer = bundle.tokenizer
        self._reference: Tensor | None = None
        self._reference_metric: float | None = None
        self._inputs = self._read_inputs(bundle, spec, windows, seq_len, samples)

    def _read_inputs(self, bundle: ModelBundle, spec: DataSpec, windows: int, seq_len: int,
                     samples: int) -> Tensor | list[str]:
        if self.kind == "torch":
            if spec.is_text:
                raise ValueError(f"a torch classifier is probed on images, not {spec}")
            x, self._labels = image_data(spec.kind, spec.arg, "train")
            x, self._labels = x[-samples:], self._labels[-samples:]
            return x
        if not spec.is_text:
            raise ValueError(f"a {self.kind} model is probed on text, not {spec}")
        docs = documents(spec, "val")
        if self.kind == "causal-lm":
            return token_windows(bundle.tokenizer, docs, seq_len, windows)
        return sentences(docs, samples)

    @torch.no_grad()
    def _outputs(self, bundle: ModelBundle) -> Tensor:
        """Logits (causal LM (n, T, V), classifier (n, classes)) or embeddings (n, D) on the probe inputs."""
        model, inputs = bundle.model, self._inputs
        self.evaluations += 1
        if self.kind == "causal-lm":
            assert isinstance(inputs, Tensor)
            return torch.cat([model(input_ids=b).logits.float() for b in inputs.split(2)])
        if self.kind == "torch":
            assert isinstance(inputs, Tensor)
            return torch.cat([model(b).float() for b in inputs.split(256)])
        if self.kind == "sentence-transformer":
            return model.encode(inputs, convert_to_tensor=True, batch_size=32).float()  # type: ignore[operator]
        enc = self._bundle_tokenizer(inputs, return_tensors="pt", padding=True, truncation=True, max_length=256)
        out = model(**enc)
        if hasattr(out, "logits"):
            return out.logits.float()
        mask = enc["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
        return (out.last_hidden_state * mask).sum(1) / mask.sum(1)  # mean pooling, (B, C)

    def _metric(self, outputs: Tensor) -> float:
        """The kind's metric on the probe inputs, from the model's outputs."""
        if self.kind == "causal-lm":
            assert isinstance(self._inputs, Tensor)
            logits = outputs[:, :-1]  # (n, T-1, V)
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), self._inputs[:, 1:].reshape(-1))
            return math.exp(min(float(nll), 700.0))
        if self.kind == "torch":
            return float((outputs.argmax(-1) == self._labels).float().mean())
        assert self._reference is not None
        if self.kind == "seq-cls":  # agreement with the original's predictions
            return float((outputs.argmax(-1) == self._reference.argmax(-1)).float().mean())
        return float(F.cosine_similarity(self._reference.double(), outputs.double(), dim=-1).mean())

    def reference(self, bundle: ModelBundle) -> None:
        """Record the original model's outputs (call once, before any perturbation)."""
        self._reference = self._outputs(bundle)
        self._reference_metric = self._metric(self._reference)

    @property
    def metric_name(self) -> str:
        if self.proxy == "divergence":
            return "KL divergence" if self.kind in _DISTRIBUTION_KINDS else "1 - cosine"
        return {"causal-lm": "perplexity", "torch": "accuracy", "seq-cls": "agreement"}.get(self.kind, "cosine")

    def score(self, bundle: ModelBundle) -> float:
        """How much worse ``bundle`` is than the reference: 0 for the original, larger is worse."""
        if self._reference is None or self._reference_metric is None:
            raise RuntimeError("Probe.score before Probe.reference: the original's outputs are the baseline")
        out = self._outputs(bundle)
        if self.proxy == "metric":
            value, base = self._metric(out), self._reference_metric
            change = (value - base) / abs(base) if base else value - base
            return change if self.kind == "causal-lm" else -change
        if self.kind not in _DISTRIBUTION_KINDS:
            return 1.0 - float(F.cosine_similarity(self._reference.double(), out.double(), dim=-1).mean())
        ref = F.log_softmax(self._reference.double(), dim=-1)
        new = F.log_softmax(out.double(), dim=-1)
        kl = float(F.kl_div(new, ref, log_target=True, reduction="none").sum(-1).mean())  # nats per output
        return max(kl, 0.0)  # KL >= 0; a nearly unchanged group can round to -1e-9
