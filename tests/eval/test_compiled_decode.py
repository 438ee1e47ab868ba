"""Compiled greedy decoding with a static KV cache gives the eager greedy loop's tokens."""

import pytest
import torch

import slimkit
from slimkit.eval.compiled_decode import CompiledGreedy
from slimkit.eval.generation import timed_greedy_run
from slimkit.quantize.dequant_call import dequant_layout
from slimkit.quantize.kernel_probe import LayerRoutes
from slimkit.quantize.pack_method import PackConfig
from slimkit.quantize.packed import packed_modules
from tests._models import tiny_llama

PACKED = {"int4": [slimkit.RTNConfig(gguf="q4_0"), PackConfig(kernel="int4-weight")],
          "int8-weight": [slimkit.RTNConfig(bits=8), PackConfig(kernel="int8-weight")],
          "int8-dynamic": [PackConfig(kernel="int8-dynamic")]}


@pytest.mark.parametrize("backend", ["eager", pytest.param("inductor", marks=pytest.mark.heavy)])
def test_static_cache_decoding_gives_the_eager_tokens_run_after_run(backend):
    model = tiny_llama(vocab=256)
    decoder = CompiledGreedy(model, max_len=48, backend=backend)
    for seed in (0, 1):  # the second run reuses the cache and the compiled step
        ids = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(seed))
        expected = timed_greedy_run(model, ids, 10).tokens
        timing = decoder.run(ids, 10)
        assert torch.equal(timing.tokens, expected) and timing.new_tokens == 9


def test_a_run_longer_than_the_static_cache_is_refused():
    decoder = CompiledGreedy(tiny_llama(vocab=256), max_len=16, backend="eager")
    with pytest.raises(ValueError, match="12 prompt \\+ 8 new tokens exceed the static cache \\(16\\)"):
        decoder.run(torch.zeros(1, 12, dtype=torch.long), 8)


@pytest.mark.parametrize("backend", ["eager", pytest.param("inductor", marks=pytest.mark.heavy)])
@pytest.mark.parametrize("kernel", sorted(PACKED))
def test_packed_models_decode_compiled_with_the_eager_tokens(kernel, backend):
    from torch._dynamo.utils import counters

    model = tiny_llama(vocab=256, layers=3)
    for config in PACKED[kernel]:
        slimkit.apply(model, config)
    ids = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(0))
    expected = timed_greedy_run(model, ids, 10).tokens
    torch._dynamo.reset()
    counters.clear()
    assert torch.equal(CompiledGreedy(model, max_len=32, backend=backend).run(ids, 10).tokens, expected)
    # one graph for the whole step: a graph break per layer (the fbgemm call once) made it slower than eager
    assert not counters["graph_break"] and counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize("kernel", ["int4", "int8-dynamic"])
def test_a_dequantizing_route_decodes_compiled_as_one_graph(kernel):
    """The probe may send one-row calls through per-call dequantization: that path must compile too."""
    from torch._dynamo.utils import counters

    model = tiny_llama(vocab=256, layers=3)
    for config in PACKED[kernel]:
        slimkit.apply(model, config)
    for layer in packed_modules(model).values():
        layer._dequant = dequant_layout(layer.scale, layer.zero_point(), layer.scheme, layer.out_features,
                                        layer.in_features)
        layer.routes = LayerRoutes(few_rows="dequant-float32", many_rows="dequant-float32")
    ids = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(0))
    expected = timed_greedy_run(model, ids, 10).tokens
    torch._dynamo.reset()
    counters.clear()
    assert torch.equal(CompiledGreedy(model, max_len=32, backend="eager").run(ids, 10).tokens, expected)
    assert not counters["graph_break"] and counters["stats"]["unique_graphs"] == 1
