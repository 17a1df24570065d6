"""Atomic file writes: a reader never sees a half-written file.

Data is written to a temporary file in the destination's folder, flushed and
``fsync``-ed, then moved over the destination with :func:`os.replace` (atomic on
POSIX and Windows when both paths are on one file system). On any error the
temporary file is removed and the destination is left as it was.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union

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
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        kwargs = {} if mode == 'wb' else {'encoding': encoding or 'utf-8', 'newline': ''}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; use normal permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
