"""Atomic outputs: replaced only when the block succeeds, never a file, and SIGTERM cleans up like Ctrl-C."""

import os
import signal

import pytest

from slimkit.atomic import Terminated, atomic_directory, sigterm_raises


def test_a_failing_block_leaves_the_old_output_and_no_litter(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(out, overwrite=True) as tmp:
        (tmp / "a.txt").write_text("new")
        raise RuntimeError("boom")
    assert (out / "a.txt").read_text() == "old" and os.listdir(tmp_path) == ["out"]


def test_overwrite_replaces_a_directory_and_removes_the_old_copy(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("old")
    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(os.listdir(out)) == ["b.txt"] and os.listdir(tmp_path) == ["out"]


@pytest.mark.parametrize("make", ["file", "link"])
def test_a_file_or_link_is_never_replaced(tmp_path, make):
    out = tmp_path / "out"
    if make == "file":
        out.write_text("user data")
    else:
        (tmp_path / "target").mkdir()
        out.symlink_to(tmp_path / "target")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(FileExistsError, match="not a directory"), atomic_directory(out, overwrite=True):
        pass
    assert sorted(os.listdir(tmp_path)) == before  # no hidden .out.old-PID or .out.tmp-* left behind
    if make == "file":
        assert out.read_text() == "user data"


def test_sigterm_raises_inside_the_block_and_cleans_the_temporary_directory(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(Terminated) as err, atomic_directory(out) as tmp:
        (tmp / "x").write_text("partial")
        os.kill(os.getpid(), signal.SIGTERM)
    assert err.value.code == 128 + signal.SIGTERM
    assert os.listdir(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the default is back


def test_a_handler_the_program_installed_is_left_alone():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda *a: seen.append(a[0]))
    try:
        with sigterm_raises():
            os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_stop_while_replacing_waits_until_the_old_copy_is_gone(tmp_path, monkeypatch):
    import slimkit.atomic

    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("old")
    real_rmtree = slimkit.atomic.shutil.rmtree

    def stop_then_remove(path, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the old output is being removed
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(slimkit.atomic.shutil, "rmtree", stop_then_remove)
    with pytest.raises(Terminated), atomic_directory(out, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("new")
    assert os.listdir(tmp_path) == ["out"] and os.listdir(out) == ["b.txt"]  # no hidden .out.old-PID
