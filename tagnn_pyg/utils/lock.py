"""One writer per folder: :class:`FolderLock`.

A run directory (or any folder a command writes as a unit) is owned by one
process at a time. The owner holds an exclusive ``flock`` on ``FOLDER/.lock``
and writes its pid, host name and start time into that file, so that a second
writer fails at once with a message naming the owner. The kernel drops a
``flock`` when its process dies (``kill -9`` included), so a lock left by a dead
process is taken over without any clean-up. Where ``fcntl`` is missing
(Windows), the lock file is created exclusively instead, and a file naming a pid
that no longer runs on this host is taken over as stale.

The lock is re-entrant within one process (the CLI takes it before loading
data, the :class:`~tagnn_pyg.train.Trainer` takes it again): each
:meth:`FolderLock.acquire` needs one :meth:`FolderLock.release`.

Only the standard library is imported (the CLI imports this for ``--help``).
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional, Union

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

PathLike = Union[str, os.PathLike]

LOCK_NAME = '.lock'

_held: Dict[str, 'FolderLock'] = {}
_held_guard = threading.Lock()


class FolderLockedError(RuntimeError):
    """Another live process owns the folder; the message names its pid and host."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return False
    return True


def read_owner(folder: PathLike) -> Optional[Dict[str, Any]]:
    """The owner record in ``FOLDER/.lock`` (``pid``, ``host``, ``started``,
    ``command``), or ``None`` when there is no readable record.

    Args:
        folder (str or PathLike): the folder.

    Returns:
        dict or None
    """
    try:
        text = (Path(folder) / LOCK_NAME).read_text(encoding='utf-8')
        owner = json.loads(text)
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _describe(owner: Optional[Dict[str, Any]]) -> str:
    if not owner:
        return 'another process (no owner record)'
    started = owner.get('started')
    when = (time.strftime(' since %Y-%m-%d %H:%M:%S', time.localtime(started))
            if isinstance(started, (int, float)) else '')
    return f"pid {owner.get('pid')} on host {owner.get('host')}{when}"


class FolderLock:
    r"""Exclusive, re-entrant ownership of a folder by this process.

    Args:
        folder (str or PathLike): the folder (created if missing).
        purpose (str, optional): what the owner does, recorded in the lock file
            and used in messages (e.g. ``'train'``).

    Example:
        >>> with FolderLock('runs/x', 'train'):  # doctest: +SKIP
        ...     ...  # write runs/x

    Raises:
        FolderLockedError: (from :meth:`acquire`) a live process owns the folder.
    """

    def __init__(self, folder: PathLike, purpose: str = 'write') -> None:
        self.folder = Path(folder)
        self.purpose = purpose
        self.path = self.folder / LOCK_NAME
        self.took_over: Optional[Dict[str, Any]] = None
        self._fd: Optional[int] = None
        self._depth = 0
        self._created = False

    @property
    def key(self) -> str:
        return os.path.realpath(self.folder)

    def acquire(self) -> 'FolderLock':
        """Take the lock (or one more level of it, when this process holds it).

        Returns:
            FolderLock: the lock actually held (an earlier instance for the same
            folder when this process already holds it).

        Raises:
            FolderLockedError: a live process owns the folder.
            OSError: the folder cannot be created or written.
        """
        created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        with _held_guard:
            held = _held.get(self.key)
            if held is not None:
                held._depth += 1
                return held
            previous = read_owner(self.folder)
            self._fd = self._lock_flock() if fcntl is not None else self._lock_exclusive()
            self._depth = 1
            self._created = created
            _held[self.key] = self
        if previous and previous.get('pid') != os.getpid():
            self.took_over = previous  # left by an owner that died holding it
        self._write_owner()
        return self

    def release(self) -> None:
        """Release one level; the last one unlocks the folder."""
        with _held_guard:
            if self._depth == 0:
                return
            self._depth -= 1
            if self._depth:
                return
            _held.pop(self.key, None)
            fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if fcntl is None:  # pragma: no cover - Windows
                os.close(fd)
                fd = None
                os.unlink(self.path)
            else:  # an empty record: the owner left cleanly
                os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            if fd is not None:
                os.close(fd)  # closing drops the flock
        self._remove_if_unused()

    def _remove_if_unused(self) -> None:
        """Remove the folder this lock created if nothing but the lock file was
        put in it (a command that failed before writing anything)."""
        if not self._created:
            return
        try:
            if {p.name for p in self.folder.iterdir()} <= {LOCK_NAME}:
                if self.path.exists():
                    os.unlink(self.path)
                self.folder.rmdir()
        except OSError:
            pass

    def __enter__(self) -> 'FolderLock':
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        _held.get(self.key, self).release()

    # -- mechanisms ----------------------------------------------------------

    def _refuse(self) -> FolderLockedError:
        return FolderLockedError(
            f"{self.folder} is in use by {_describe(read_owner(self.folder))} "
            f"(lock {self.path}); wait for it to finish or stop it, or use another "
            f"folder")

    def _lock_flock(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._refuse() from None
        except OSError:
            os.close(fd)
            raise
        return fd

    def _lock_exclusive(self) -> int:
        for _ in range(2):
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = read_owner(self.folder)
                if owner is None or not self._stale(owner):
                    raise self._refuse() from None
                os.unlink(self.path)  # a dead owner's lock: take it over
        raise self._refuse()

    @staticmethod
    def _stale(owner: Dict[str, Any]) -> bool:
        pid = owner.get('pid')
        return (owner.get('host') == socket.gethostname() and isinstance(pid, int)
                and not pid_alive(pid))

    def _write_owner(self) -> None:
        import sys
        record = {'pid': os.getpid(), 'host': socket.gethostname(),
                  'started': time.time(), 'purpose': self.purpose,
                  'command': ' '.join(sys.argv)[:500]}
        data = (json.dumps(record) + '\n').encode('utf-8')
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.write(self._fd, data)


__all__ = ['FolderLock', 'FolderLockedError', 'read_owner', 'pid_alive', 'LOCK_NAME']
