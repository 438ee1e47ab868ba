"""Pieces every benchmark script shares: run metadata and resuming from a previous results file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch


def run_metadata(**settings: Any) -> dict[str, Any]:
    """The settings of a run plus the torch version, thread count and UTC date."""
    return {**settings, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def resumed_rows(saved: Path, resume: bool) -> list[dict[str, Any]]:
    """Rows of an earlier run to keep (``--resume``), or none."""
    return json.loads(saved.read_text())["rows"] if resume and saved.exists() else []
