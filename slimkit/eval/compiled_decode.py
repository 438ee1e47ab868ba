"""Compiled greedy decoding: a static-shape KV cache and ``torch.compile`` around the one-token decode step.

Eager decoding of a small LLM is dominated by per-op overhead, not arithmetic (facts: transformers'
``generate`` reaches ~14 tok/s on SmolLM2-135M fp32 where streaming its weights would allow far more).
transformers' ``StaticCache`` gives every decode step the same tensor shapes, so inductor compiles the step
once into fused CPU code; the prefill stays eager (its length varies). Inductor's graph cache is on by default,
so a second process reuses the compiled code. Tokens equal the eager greedy loop's (tested on a tiny Llama).

A one-token step multiplies a single row by every weight, and torch's fp32/bf16 GEMV for one row runs on one
thread (measured here: ~13 GB/s cold, the same with one or two threads), so compiling alone gained 1.2× on
SmolLM2. Inductor's ``decompose_mm_pass`` rewrites such a one-row ``mm`` as a multiply-and-sum that inductor
parallelizes over output rows (~25 GB/s measured on a lone 49152×576 weight); its CPU size limit (2048) is
raised to every shape. The pass leaves the tied head (49152×576) as one ``aten::mm`` (10.6 of ~43 ms per
SmolLM2 token in a profile), so a float head is written out as that multiply-and-sum in the step itself; only
the argmax is kept, which the monotone logit transforms some families add (soft-capping, a positive scale)
do not change.
Packed layers keep their kernels: dynamo traces the aten int4/int8 ones as they are, and fbgemm's through a
custom op (``kernels.dynamic_int8_linear``), so the whole step is one graph.
Measured speed: ``benchmarks/llm_deploy.py`` (speed section).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from slimkit.eval.generation import GenerationTiming

#: One-row matmuls become parallel multiply-and-sum reductions at every size (see the module docstring).
INDUCTOR_OPTIONS: dict[str, Any] = {"post_grad_fusion_options": {"decompose_mm_pass": {
    "cpu_max_first_dimension_decomposition": 1, "cpu_max_other_dimension_decomposition": 1 << 30}}}


class CompiledGreedy:
    """Greedy decoding of ``model`` (a transformers causal LM) with a static cache of ``max_len`` positions.

    Args:
        model: the causal LM (float32, bf16 or with slimkit's packed layers).
        max_len: prompt plus generated tokens, at most.
        backend: ``torch.compile`` backend; ``inductor`` compiles, ``eager`` only traces (for tests).
    """

    def __init__(self, model: nn.Module, max_len: int, backend: str = "inductor") -> None:
        from transformers import StaticCache

        self.model, self.max_len = model.eval(), max_len
        config: Any = model.config
        self.cache = StaticCache(config=config, max_cache_len=max_len)
        options = INDUCTOR_OPTIONS if backend == "inductor" else None
        lm: Any = model
        head = lm.get_output_embeddings() if hasattr(lm, "get_decoder") else None
        self._float_head = head if type(head) is nn.Linear else None  # packed heads keep their kernel
        self._decoder: Any = lm.get_decoder() if self._float_head is not None else None
        self._step = torch.compile(self._decode_step, backend=backend, dynamic=False, options=options)

    def _decode_step(self, token: Tensor, position: Tensor) -> Tensor:
        head = self._float_head
        if head is None:
            out = self.model(input_ids=token, position_ids=position, cache=self.cache, use_cache=True)
            return out.logits[:, -1].argmax(dim=-1, keepdim=True)  # (1, 1)
        decoder = self._decoder
        hidden = decoder(input_ids=token, position_ids=position, cache=self.cache, use_cache=True).last_hidden_state
        logits = (hidden[:, -1, None, :] * head.weight).sum(dim=-1)  # (1, vocab), parallel over the vocabulary
        if head.bias is not None:
            logits = logits + head.bias
        return logits.argmax(dim=-1, keepdim=True)

    def tokens(self, input_ids: Tensor) -> Iterator[Tensor]:
        """Greedy next tokens (1, 1) after ``input_ids`` (1, P) until the static cache is full."""
        prompt = input_ids.shape[1]
        self.cache.reset()
        out = self.model(input_ids=input_ids, position_ids=torch.arange(prompt)[None], cache=self.cache,
                         use_cache=True)
        token = out.logits[:, -1:].argmax(dim=-1)  # (1, 1)
        for position in range(prompt, self.max_len + 1):
            yield token
            if position == self.max_len:
                return
            token = self._step(token, torch.tensor([[position]])).clone()

    @torch.inference_mode()
    def run(self, input_ids: Tensor, new_tokens: int) -> GenerationTiming:
        """Prefill ``input_ids`` (1, P) eagerly, then decode ``new_tokens`` tokens with the compiled step."""
        prompt = input_ids.shape[1]
        if prompt + new_tokens > self.max_len:
            raise ValueError(f"{prompt} prompt + {new_tokens} new tokens exceed the static cache ({self.max_len})")
        tokens = self.tokens(input_ids)
        start = time.perf_counter()
        generated = [next(tokens)]
        prefill_ms = (time.perf_counter() - start) * 1000.0
        start = time.perf_counter()
        generated += [next(tokens) for _ in range(new_tokens - 1)]
        decode_ms = (time.perf_counter() - start) * 1000.0
        return GenerationTiming(prompt, max(new_tokens - 1, 1), prefill_ms, decode_ms, torch.cat(generated, dim=1))
