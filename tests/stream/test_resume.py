"""A streamed run survives kill -9: rerunning the same command continues after the last finished layer and
writes the same bytes as an uninterrupted run; a checkpoint of another job is refused, never reused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slimkit.pipeline import compress
from slimkit.recipe import recipe_from_dict
from slimkit.stream.runner import StreamedRun
from tests.stream.test_pipeline import EVAL, save_model

ROOT = Path(__file__).resolve().parents[2]
RECIPE = {"version": 1, "steps": [{"method": "quant.gptq", "bits": 4, "group_size": 32}], "eval": EVAL}
LAYERS = 6
# The child slows each layer down so that the kill lands in the middle of the run, not after it.
CHILD = """
import sys, time
from slimkit.pipeline import compress
from slimkit.recipe import recipe_from_dict
from slimkit.stream.runner import StreamedRun
layer = StreamedRun._layer
def slow_layer(self, checkpoints, i):
    layer(self, checkpoints, i)
    time.sleep(0.5)
StreamedRun._layer = slow_layer
compress(sys.argv[1], recipe_from_dict({recipe}, "resume.yaml"), sys.argv[2], calib_samples=4, stream=True)
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("tiny6") / "model", layers=LAYERS)


def _kill_after_layer(model_dir: Path, out: Path, layer: int) -> None:
    """Run the streamed job in a child process and SIGKILL it once layer ``layer`` is checkpointed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(recipe=repr(RECIPE)), str(model_dir), str(out)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out.parent / f"{out.name}.stream" / f"layer-{layer:05d}" / "state.json"
    deadline = time.monotonic() + 240
    while not state.is_file() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run ended before it could be killed"


def test_a_killed_streamed_run_resumes_and_writes_the_same_bytes(model_dir, tmp_path):
    _kill_after_layer(model_dir, tmp_path / "resumed", layer=2)
    work = tmp_path / "resumed.stream"
    finished = sorted(p.name for p in work.glob("layer-*"))
    assert finished[:3] == ["layer-00000", "layer-00001", "layer-00002"] and len(finished) < LAYERS
    assert not (tmp_path / "resumed").exists()
    recipe = recipe_from_dict(RECIPE, "resume.yaml")
    resumed = compress(str(model_dir), recipe, tmp_path / "resumed", calib_samples=4, stream=True)
    assert any(f"layers 0–{len(finished) - 1} came from the checkpoint" in n for n in resumed.notes)
    straight = compress(str(model_dir), recipe, tmp_path / "straight", calib_samples=4, stream=True)
    for name in ("slimkit.safetensors", "slimkit.json"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
    assert resumed.steps[0].stats == straight.steps[0].stats  # GPTQ's loss summed over all layers, exactly
    assert resumed.after.value == straight.after.value
    assert not work.exists()


def _stop_before_the_output(monkeypatch):
    def stop(self, checkpoints, resumed_from):
        raise RuntimeError("stopped after the last layer")

    monkeypatch.setattr(StreamedRun, "_finish", stop)


@pytest.mark.parametrize("change", ["recipe", "calibration data"])
def test_a_checkpoint_of_another_job_is_refused(model_dir, tmp_path, monkeypatch, change):
    recipe = recipe_from_dict(RECIPE, "a.yaml")
    with monkeypatch.context() as patch:
        _stop_before_the_output(patch)
        with pytest.raises(RuntimeError, match="stopped"):
            compress(str(model_dir), recipe, tmp_path / "out", calib_samples=4, stream=True)
    assert (tmp_path / "out.stream" / f"layer-{LAYERS - 1:05d}" / "state.json").is_file()  # a finished checkpoint
    other, samples = (recipe_from_dict({**RECIPE, "steps": [{**RECIPE["steps"][0], "bits": 3}]}), 4) \
        if change == "recipe" else (recipe, 5)
    with pytest.raises(ValueError, match="different streamed job .* delete the directory"):
        compress(str(model_dir), other, tmp_path / "out", calib_samples=samples, stream=True)
    report = compress(str(model_dir), recipe, tmp_path / "out", calib_samples=4, stream=True)  # the same job reuses it
    assert any(f"layers 0–{LAYERS - 1} came from the checkpoint" in n for n in report.notes)


def test_a_work_directory_that_is_not_a_streamed_runs_is_refused(model_dir, tmp_path):
    (tmp_path / "out.stream").mkdir()
    (tmp_path / "out.stream" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a slimkit streamed run's work directory"):
        compress(str(model_dir), recipe_from_dict(RECIPE), tmp_path / "out", calib_samples=4, stream=True)
    assert (tmp_path / "out.stream" / "notes.txt").read_text() == "mine"
