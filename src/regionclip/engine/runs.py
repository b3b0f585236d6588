"""Run safety shared by every training command: one run per output folder, and a clean stop on a signal.

* :func:`claim_out_dir` writes ``OUT/.regionclip.lock`` holding ``pid host`` (atomically, ``O_EXCL``). A
  second run pointed at a folder whose lock belongs to a live process is refused with one line naming the
  pid; a lock left by a dead process (same host) is taken over. The same process may claim its folder
  again (resume tests, a command calling ``train`` after writing its config). The lock is removed when the
  process exits.
* :class:`StopOnSignal` turns SIGINT / SIGTERM into a request that the training loop honours at the end of
  the current step: it writes a final resumable checkpoint and raises :class:`TrainingInterrupted` (a
  :class:`~regionclip.errors.RegionCLIPError`: the CLI prints one line and exits with status 2). A second
  signal while the checkpoint is being written restores the default handler, so it interrupts at once.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import threading
from pathlib import Path
from types import FrameType

from regionclip.errors import RegionCLIPError

LOCK_NAME = ".regionclip.lock"
_held: set[Path] = set()


class TrainingInterrupted(RegionCLIPError):
    """Training stopped on SIGINT / SIGTERM after writing a resumable checkpoint."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _release(path: Path) -> None:
    try:
        if path.read_text().split()[0] == str(os.getpid()):
            path.unlink()
    except (OSError, IndexError):
        pass


def claim_out_dir(out_dir: str | Path) -> Path:
    """Take the lock of ``out_dir`` for this process (see the module doc); returns the lock file's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = out_dir / LOCK_NAME
    me = f"{os.getpid()} {socket.gethostname()}\n"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                fields = lock.read_text().split()
                pid, host = int(fields[0]), fields[1] if len(fields) > 1 else socket.gethostname()
            except (OSError, ValueError, IndexError):
                pid, host = -1, socket.gethostname()  # unreadable or half-written: treated as stale
            if pid == os.getpid() and host == socket.gethostname():
                _held.add(lock)
                return lock
            if host != socket.gethostname():
                raise RegionCLIPError(
                    f"{out_dir}: in use by a run on host {host} (pid {pid}, lock file {lock}); choose another "
                    "out_dir, or delete the lock file if that run has ended"
                ) from None
            if pid > 0 and _alive(pid):
                raise RegionCLIPError(
                    f"{out_dir}: in use by another run (pid {pid}, lock file {lock}); wait for it to finish or "
                    "choose another out_dir"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        if lock not in _held:
            _held.add(lock)
            atexit.register(_release, lock)
        return lock
    raise RegionCLIPError(f"{out_dir}: could not take the lock file {lock}")


class StopOnSignal:
    """Context manager: while active, SIGINT / SIGTERM set :attr:`signal_name` instead of interrupting."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name
        for sig, handler in self._previous.items():  # a second signal acts at once
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def steps(self, steps: range):
        """Iterate ``steps`` with the handlers installed; they are restored when the iteration ends or is
        abandoned (an exception in the loop body closes the generator)."""
        with self:
            yield from steps
