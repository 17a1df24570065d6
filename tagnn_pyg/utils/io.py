"""Atomic file writes: a reader never sees a half-written file.

Data is written to a temporary file in the destination's folder, flushed and
``fsync``-ed, then moved over the destination with :func:`os.replace` (atomic on
POSIX and Windows when both paths are on one file system), and the folder is
``fsync``-ed so that the rename itself survives a power cut. On any error the
temporary file is removed, the destination is left as it was, and the
:class:`OSError` names the destination (not the temporary file).

Temporaries are named ``.<name>.<random>.tmp``; :func:`remove_stale_temporaries`
deletes those a killed process left behind (call it while owning the folder).
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import IO, Iterator, List, Union

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_writer(path: PathLike, mode: str = 'wb',
                  encoding: Union[str, None] = None) -> Iterator[IO]:
    """Context manager yielding a file object whose content replaces ``path``
    atomically when the block exits without an exception.

    Args:
        path (str or PathLike): destination file; its folder must exist.
        mode (str, optional): ``'wb'`` (default) or ``'w'`` (text).
        encoding (str, optional): text encoding for ``mode='w'`` (default UTF-8).

    Raises:
        OSError: of the original kind (``ENOSPC``, ``EACCES``, ...) naming
            ``path``; ``path`` is unchanged.

    Returns:
        Iterator[IO]: the open temporary file (use it inside the ``with`` block).

    Example:
        >>> with atomic_writer('out.bin') as f:  # doctest: +SKIP
        ...     f.write(b'data')
    """
    if mode not in ('wb', 'w'):
        raise ValueError(f"atomic_writer mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    fd, tmp = _temporary(path.parent, path.name)
    try:
        kwargs = {} if mode == 'wb' else {'encoding': encoding or 'utf-8', 'newline': ''}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; use normal permissions
        os.replace(tmp, path)
    except OSError as err:
        _remove_quietly(tmp)
        raise renamed_os_error(err, path) from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    fsync_folder(path.parent)


def _remove_quietly(path: PathLike) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _temporary(folder: Path, name: str) -> tuple:
    try:
        return tempfile.mkstemp(prefix=f'.{name}.', suffix='.tmp', dir=folder)
    except OSError as err:
        raise renamed_os_error(err, folder / name) from None


def renamed_os_error(err: OSError, path: PathLike) -> OSError:
    """The same kind of :class:`OSError` (same class and errno) naming ``path``,
    so that a failure on a temporary file reports the file the user asked for.

    Args:
        err (OSError): the original error.
        path (str or PathLike): the destination to name.

    Returns:
        OSError: a new error of ``type(err)``.
    """
    if err.errno is None:
        return err
    return type(err)(err.errno, err.strerror or os.strerror(err.errno), str(path))


def fsync_folder(folder: PathLike) -> None:
    """``fsync`` a folder, making renames and deletions in it durable.

    A no-op where folders cannot be opened (Windows) or synced (some network
    file systems).

    Args:
        folder (str or PathLike): the folder.
    """
    if os.name != 'posix':
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise renamed_os_error(err, folder) from None
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: PathLike) -> List[Path]:
    """Delete the ``.<name>.<random>.tmp`` files that :func:`atomic_writer` left
    in ``folder`` when its process was killed mid-write.

    Only call it while owning the folder (e.g. holding its
    :class:`~tagnn_pyg.utils.lock.FolderLock`): another writer's temporary would
    be deleted too.

    Args:
        folder (str or PathLike): the folder (missing: nothing to do).

    Returns:
        list of Path: the files removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.glob('.*.tmp'):
        if entry.is_file() and not entry.is_symlink():
            _remove_quietly(entry)
            removed.append(entry)
    return removed


def describe_os_error(err: OSError) -> str:
    """One line naming the path and the cause of an :class:`OSError`, e.g.
    ``cannot write runs/x/last.pt: No space left on device (ENOSPC)``.

    Args:
        err (OSError): the error.

    Returns:
        str: the line.
    """
    code = errno.errorcode.get(err.errno or -1)
    cause = err.strerror or str(err) or type(err).__name__
    if code:
        cause = f"{cause} ({code})"
    if err.filename is None:
        return cause
    where = f"{err.filename}" + (f" -> {err.filename2}" if err.filename2 else '')
    return f"{where}: {cause}"


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + :func:`os.replace`).

    Args:
        path (str or PathLike): destination file; its folder must exist.
        data (bytes): the full content.

    Returns:
        Path: ``path``.
    """
    with atomic_writer(path, 'wb') as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str, encoding: str = 'utf-8') -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`).

    Args:
        path (str or PathLike): destination file; its folder must exist.
        text (str): the full content.
        encoding (str, optional): text encoding (default UTF-8).

    Returns:
        Path: ``path``.
    """
    with atomic_writer(path, 'w', encoding=encoding) as f:
        f.write(text)
    return Path(path)


class SafeFileHandler(logging.FileHandler):
    """A :class:`logging.FileHandler` that reports a failing write (disk full,
    file removed, ...) once, as one line on stderr naming the file and the cause,
    and then stops writing to it, instead of printing a ``--- Logging error ---``
    traceback for every record.

    Args:
        filename (str or PathLike): the log file.
        encoding (str, optional): its encoding (default UTF-8).
    """

    def __init__(self, filename: PathLike, encoding: str = 'utf-8') -> None:
        super().__init__(filename, encoding=encoding)
        self.failed: Union[str, None] = None

    def emit(self, record: logging.LogRecord) -> None:  # noqa: D102
        if self.failed is None:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: D102,N802
        err = sys.exc_info()[1]
        if self.failed is not None:
            return
        cause = (describe_os_error(renamed_os_error(err, self.baseFilename))
                 if isinstance(err, OSError) else f"{self.baseFilename}: {err}")
        self.failed = cause
        sys.stderr.write(f"tagnn-pyg: warning: cannot write the log {cause}; "
                         f"further log lines go to stderr only\n")
