"""Quantize SmolLM2-135M to int8 with the Python API, measure perplexity before and after, and save.

Run: python examples/quantize_smollm2.py [OUT_DIR]
"""

import sys
import tempfile
from pathlib import Path

import slimkit
from slimkit.atomic import directory_bytes
from slimkit.data.spec import parse_data_spec
from slimkit.data.text import documents, token_windows
from slimkit.eval.metrics import perplexity

bundle = slimkit.load("smollm2-135m")
windows = token_windows(bundle.tokenizer, documents(parse_data_spec("pydoc"), "eval"), seq_len=512, count=4)

ppl_before = perplexity(bundle.model, windows)
report = slimkit.apply(bundle.model, slimkit.RTNConfig(bits=8, granularity="channel"))
ppl_after = perplexity(bundle.model, windows)

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "smollm2-int8"
slimkit.save(bundle, out)
print(f"{report.method}: {report.stats}")
print(f"perplexity {ppl_before:.3f} -> {ppl_after:.3f}; saved {directory_bytes(out) / 1e6:.1f} MB to {out}")
