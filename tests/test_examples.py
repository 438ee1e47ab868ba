"""Examples are what users copy: each one runs to the end."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.real_model
def test_quantize_smollm2_example(tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLES / "quantize_smollm2.py"), str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "perplexity" in result.stdout and (tmp_path / "out" / "slimkit.safetensors").exists()


FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION.exists(), reason="apt-get install dataset-fashion-mnist")


@needs_fashion
@pytest.mark.parametrize(("script", "expected"), [
    ("gradual_pruning_fashion_mnist.py", "sparsity 0.9"),
    ("qat_fashion_mnist.py", "accuracy"),
])
def test_fashion_mnist_examples_run_with_one_epoch(tmp_path, script, expected):
    result = subprocess.run([sys.executable, str(EXAMPLES / script), str(tmp_path / "out"), "1"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert expected in result.stdout and (tmp_path / "out" / "slimkit.safetensors").exists()
