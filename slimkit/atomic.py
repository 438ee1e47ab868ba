"""Atomic output: a directory or file appears complete or not at all, and a stop never leaves litter behind.

Outputs are built in a hidden temporary sibling and renamed into place, so a crash, a bad recipe,
Ctrl-C or SIGTERM never leaves a half-written model directory or overwrites a user's existing one.
SIGTERM is turned into an exception while an output is being built (:func:`sigterm_raises`), so the
same ``finally`` blocks that clean up after Ctrl-C run for ``kill`` too. Whether an existing
directory *may* be replaced is the format's decision (:func:`slimkit.export.slimkit_format.check_output`);
this module only refuses to replace anything that is not a plain directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType


class Terminated(SystemExit):
    """Raised in the main thread when SIGTERM arrives; exits with the shell's code for it (143)."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(128 + signum)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` instead of killing the process at once.

    Only the main thread can install handlers, and a handler the program installed itself is left
    alone: this replaces only the default (kill immediately, run no cleanup).
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back for a few file operations that must not be split, then deliver them.

    Blocking the signals at the OS level is not enough: any other thread (torch's, OpenMP's) receives
    them and Python still runs the handler in the main thread. So the handlers are swapped for ones
    that only record the signal, and the real handler runs once the block is done.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {int(s): signal.signal(s, lambda signum, frame: caught.append(signum)) for s in stops}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if caught:
            handler = previous[caught[0]]
            if callable(handler):
                handler(caught[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(caught[0])


def check_replaceable(out: Path, overwrite: bool) -> None:
    """Refuse an existing ``out`` unless ``overwrite``, and refuse to replace anything but a directory."""
    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise FileExistsError(f"{out} already exists; choose another --out or pass --overwrite")
    if out.is_symlink() or not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory (a file or a link); slimkit replaces only an "
                              "output directory it wrote, never a file")


@contextmanager
def atomic_directory(out: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``out`` only if the block succeeds.

    The caller decides whether an existing ``out`` may be replaced (``overwrite``, after checking its
    contents); here only directories are ever replaced.
    """
    out = Path(out)
    check_replaceable(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    with sigterm_raises():
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            yield tmp
            _publish_permissions(tmp)
            check_replaceable(out, overwrite)  # the world may have changed while the block ran
            _publish(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first and removed after."""
    if not out.exists():
        tmp.rename(out)
        return
    backup = out.parent / f".{out.name}.old-{os.getpid()}"
    # A stop between the renames would leave neither the old nor the new output, and one right after
    # them the hidden backup: a stop waits until the backup is gone.
    with _signals_deferred():
        out.rename(backup)
        try:
            tmp.rename(out)
        except OSError:
            backup.rename(out)  # put the old output back
            raise
        shutil.rmtree(backup, ignore_errors=True)
    if backup.exists():
        raise OSError(f"wrote {out}, but could not remove the previous output moved aside to {backup}")


def _publish_permissions(root: Path) -> None:
    """mkdtemp makes private (0700) directories; give outputs the user's normal umask permissions."""
    umask = os.umask(0)
    os.umask(umask)
    root.chmod(0o777 & ~umask)
    for p in root.rglob("*"):
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


@contextmanager
def atomic_file(out: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``out`` that replaces ``out`` only if the block succeeds.

    An existing ``out`` is refused unless ``overwrite``; a directory or link is never replaced.
    """
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{out} already exists; choose another --out or pass --overwrite")
        if out.is_symlink() or not out.is_file():
            raise FileExistsError(f"{out} exists and is not a regular file; slimkit replaces only a file it wrote")
    out.parent.mkdir(parents=True, exist_ok=True)
    with sigterm_raises():
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.tmp-", suffix=out.suffix, dir=out.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o666 & ~umask)  # mkstemp makes 0600 files
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)


def directory_bytes(path: Path) -> int:
    """True bytes on disk of every file under ``path`` (or of the file itself)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
