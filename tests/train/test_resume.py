"""Training that survives kill -9: the rerun continues from the last checkpoint and ends exactly where an
uninterrupted run with the same seed ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import slimkit
from slimkit.pipeline import compress
from slimkit.recipe import recipe_from_dict
from tests._models import lenet_bundle

ROOT = Path(__file__).resolve().parents[2]
RECIPE = {"version": 1, "steps": [{"method": "prune.gradual", "final_sparsity": 0.7, "end": 0.5, "frequency": 0.1}],
          "train": {"data": "digits", "epochs": 12, "lr": 0.003, "seed": 5, "checkpoint_every": 5, "eval_every": 40,
                    "regularizer": {"kind": "l1", "lam": 1e-6}},
          "eval": {"data": "digits", "latency": {"enabled": False}}}
CHILD = """
import sys
from slimkit.pipeline import compress
from slimkit.recipe import recipe_from_dict
from tests._models import lenet_bundle
compress(lenet_bundle(in_features=64), recipe_from_dict({recipe}, "resume.yaml"), sys.argv[1])
"""


def _checkpoint_step(directory: Path) -> int:
    try:
        return int(json.loads((directory / "run-1" / "last" / "meta.json").read_text())["step"])  # first training run
    except (OSError, ValueError, KeyError):
        return 0


def _kill_after_checkpoint(out: Path, step: int) -> int:
    """Run the recipe in a child process and SIGKILL it once a checkpoint past ``step`` exists."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(recipe=repr(RECIPE)), str(out)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = out.parent / f"{out.name}.training"
    deadline = time.monotonic() + 240
    while _checkpoint_step(checkpoints) < step and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    return _checkpoint_step(checkpoints)


def test_a_killed_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(tmp_path):
    killed_at = _kill_after_checkpoint(tmp_path / "resumed", step=30)
    assert killed_at >= 30 and not (tmp_path / "resumed").exists()
    recipe = recipe_from_dict(RECIPE, "resume.yaml")
    resumed = compress(lenet_bundle(in_features=64), recipe, tmp_path / "resumed")
    stats = resumed.steps[0].stats
    assert stats["train_resumed_from_step"] >= killed_at and stats["train_resumed_from_step"] % 5 == 0
    assert stats["train_steps"] == 12 * 11  # 1294 images once validation is held out
    straight = compress(lenet_bundle(in_features=64), recipe, tmp_path / "straight")
    assert straight.steps[0].stats["train_resumed_from_step"] is None
    a, b = (slimkit.load(str(tmp_path / name)).model.state_dict() for name in ("resumed", "straight"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit the same weights and masks
    assert resumed.after.value == straight.after.value
    assert not (tmp_path / "resumed.training").exists()


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    from slimkit.train.checkpoint import Checkpoints, RunState

    objective = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(objective.parameters())
    Checkpoints(tmp_path / "ck", "run-a").save_last(objective, opt, RunState(step=3))
    with pytest.raises(ValueError, match="different training run.*delete the directory"):
        Checkpoints(tmp_path / "ck", "run-b").load_last(objective, opt)
    state, _ = Checkpoints(tmp_path / "ck", "run-a").load_last(objective, opt)
    assert state.step == 3
