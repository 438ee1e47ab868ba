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
