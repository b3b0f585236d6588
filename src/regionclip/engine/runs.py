"""Run safety shared by every training command: one run per output folder, and a clean stop on a signal.

* :func:`claim_out_dir` writes ``OUT/.regionclip.lock`` holding ``pid host`` (created whole, by a hard link of a written temp file). A
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


def _create_with(lock: Path, content: str) -> bool:
    """Create ``lock`` holding ``content`` in one step (hard link of a written temp file): no other process
    ever sees it empty. False if it already exists."""
    tmp = lock.with_name(f"{lock.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(content)
    try:
        os.link(tmp, lock)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _read_lock(lock: Path) -> tuple[int, str] | None:
    """``(pid, host)`` of a lock file; None if it vanished in the meantime."""
    try:
        fields = lock.read_text().split()
    except FileNotFoundError:
        return None
    except OSError:
        return -1, socket.gethostname()
    try:
        return int(fields[0]), fields[1] if len(fields) > 1 else socket.gethostname()
    except (ValueError, IndexError):
        return -1, socket.gethostname()  # not written by claim_out_dir: treated as stale


def claim_out_dir(out_dir: str | Path) -> Path:
    """Take the lock of ``out_dir`` for this process (see the module doc); returns the lock file's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = out_dir / LOCK_NAME
    me = f"{os.getpid()} {socket.gethostname()}\n"
    for _ in range(3):
        if _create_with(lock, me):
            if lock not in _held:
                _held.add(lock)
                atexit.register(_release, lock)
            return lock
        owner = _read_lock(lock)
        if owner is None:  # released between our attempt and the read: try again
            continue
        pid, host = owner
        if pid == os.getpid() and host == socket.gethostname():
            _held.add(lock)
            return lock
        if host != socket.gethostname():
            raise RegionCLIPError(
                f"{out_dir}: in use by a run on host {host} (pid {pid}, lock file {lock}); choose another "
                "out_dir, or delete the lock file if that run has ended"
            )
        if pid > 0 and _alive(pid):
            raise RegionCLIPError(
                f"{out_dir}: in use by another run (pid {pid}, lock file {lock}); wait for it to finish or "
                "choose another out_dir"
            )
        # stale (its process is gone): move it aside atomically, so that of two runs taking over the same
        # stale lock only one succeeds, and a lock created meanwhile by a live run is never deleted
        aside = lock.with_name(f"{lock.name}.stale.{os.getpid()}")
        try:
            os.rename(lock, aside)
        except FileNotFoundError:
            continue
        if _read_lock(aside) != owner:  # we moved a newer lock than the stale one we read: put it back
            os.rename(aside, lock)
            continue
        aside.unlink(missing_ok=True)
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
