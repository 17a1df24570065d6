r"""A prepared data folder is a unit: staged, committed, and checked on load.

Writing (:func:`write_folder`): every file is first written into a sibling
staging folder ``.<name>.staging-<host>-<pid>-<random>`` together with
``manifest.json`` (the SHA-256 and size of each file). Nothing in the
destination changes until all of it is on disk, so a failure while writing
(a full disk, ``kill -9``) leaves the old folder exactly as it was. Then:

* a new destination is the staging folder renamed (one atomic rename);
* an existing one is committed file by file with the manifest as the commit
  record: first ``manifest.json`` is replaced by one saying ``"state":
  "incomplete"``, then each file is renamed into place (renames write no data),
  old files of the set that the new one lacks are removed, and last the
  complete manifest is renamed in. Files that are not part of the set (a raw
  log, a README) are kept.

Reading (:func:`check_folder`, :func:`verify_file`): a folder without
``manifest.json`` is a foreign SR-GNN folder and is read as it is. With one, an
``incomplete`` manifest, a listed file that is missing or whose bytes do not
match, or a file of the set that the manifest does not list (a mix of two
runs) is refused with a message naming the file.

Only the standard library is imported.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

from ..utils.io import atomic_write_text, fsync_folder
from ..utils.lock import pid_alive

PathLike = Union[str, os.PathLike]

MANIFEST = 'manifest.json'
FORMAT = 'tagnn-pyg-folder'
_STAGING = re.compile(r'\.(?P<name>.+)\.staging-(?P<host>[\w.-]*)-(?P<pid>\d+)-\w+$')


class FolderMismatchError(ValueError):
    """A prepared folder is half-written or mixes files of different writes;
    the message names the folder, the file and what to do."""


def sha256_bytes(data: bytes) -> str:
    """The hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            h.update(block)
    return h.hexdigest()


def _manifest_text(files: Mapping[str, bytes], state: str = 'complete') -> str:
    entries = {name: {'sha256': sha256_bytes(data), 'bytes': len(data)}
               for name, data in sorted(files.items())}
    record = {'format': FORMAT, 'version': 1, 'state': state, 'files': entries,
              'written': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
              'writer': {'pid': os.getpid(), 'host': socket.gethostname()}}
    return json.dumps(record, indent=2) + '\n'


def read_manifest(folder: PathLike) -> Optional[Dict[str, Any]]:
    """The folder's manifest, or ``None`` when it has none (a foreign folder).

    Args:
        folder (str or PathLike): the folder.

    Returns:
        dict or None

    Raises:
        FolderMismatchError: ``manifest.json`` exists but is not a manifest.
    """
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError) as err:
        raise FolderMismatchError(f"{path} is not a readable manifest ({err}); "
                                  f"re-run the command that wrote {folder}") from None
    if not isinstance(record, dict) or record.get('format') != FORMAT \
            or not isinstance(record.get('files'), dict):
        raise FolderMismatchError(f"{path} is not a {FORMAT} manifest; re-run the "
                                  f"command that wrote {folder}")
    return record


def check_folder(folder: PathLike, manifest: Optional[Mapping[str, Any]],
                 members: Iterable[str]) -> None:
    """Refuse a half-written or mixed folder (no-op without a manifest).

    Args:
        folder (str or PathLike): the folder.
        manifest (dict or None): from :func:`read_manifest`.
        members (iterable of str): the file names a writer of this kind of
            folder may write (a present one must be listed).

    Raises:
        FolderMismatchError: the manifest is incomplete, a listed file is
            missing, or a present member is not listed.
    """
    if manifest is None:
        return
    folder = Path(folder)
    if manifest.get('state') != 'complete':
        writer = manifest.get('writer') or {}
        raise FolderMismatchError(
            f"{folder} is half-written: a write by pid {writer.get('pid')} on "
            f"{writer.get('host')} ({manifest.get('written')}) did not finish; re-run "
            f"the command that wrote it (e.g. tagnn-pyg prepare)")
    listed = manifest['files']
    for name in listed:
        if not (folder / name).exists():
            raise FolderMismatchError(f"{folder / name} is missing: the folder's "
                                      f"{MANIFEST} lists it; re-run the command that "
                                      f"wrote {folder}")
    for name in members:
        if name not in listed and (folder / name).exists():
            raise FolderMismatchError(
                f"{folder / name} is not part of the write recorded in {MANIFEST} (a mix "
                f"of two writes); re-run the command that wrote {folder}")


def verify_file(folder: PathLike, manifest: Optional[Mapping[str, Any]], name: str,
                data: Optional[bytes] = None) -> None:
    """Check one file's bytes against the manifest (no-op without a manifest or
    for unlisted files).

    Args:
        folder (str or PathLike): the folder.
        manifest (dict or None): from :func:`read_manifest`.
        name (str): the file's name.
        data (bytes, optional): its content when already read (else it is read).

    Raises:
        FolderMismatchError: size or SHA-256 differ from the manifest.
    """
    if manifest is None or name not in manifest['files']:
        return
    path = Path(folder) / name
    entry = manifest['files'][name]
    size = len(data) if data is not None else path.stat().st_size
    digest = None
    if size == entry.get('bytes'):
        digest = sha256_bytes(data) if data is not None else sha256_file(path)
    if digest != entry.get('sha256'):
        raise FolderMismatchError(
            f"{path} does not match {Path(folder) / MANIFEST} ({size:,} bytes, "
            f"expected {entry.get('bytes'):,} with SHA-256 {str(entry.get('sha256'))[:12]}"
            f"...): changed or mixed with another write; re-run the command that wrote "
            f"{folder}")


def verify_all(folder: PathLike, manifest: Optional[Mapping[str, Any]],
               skip: Iterable[str] = ()) -> None:
    """:func:`verify_file` for every listed file except ``skip``."""
    if manifest is None:
        return
    for name in manifest['files']:
        if name not in skip:
            verify_file(folder, manifest, name)


# ------------------------------------------------------------------ writing


def _staging_name(dest: Path) -> str:
    host = re.sub(r'[^\w.-]', '_', socket.gethostname())
    return f".{dest.name}.staging-{host}-{os.getpid()}-{os.urandom(4).hex()}"


def remove_stale_staging(dest: PathLike) -> List[Path]:
    """Delete staging folders of ``dest`` left by dead processes on this host.

    Args:
        dest (str or PathLike): the destination folder.

    Returns:
        list of Path: the folders removed.
    """
    dest = Path(dest)
    host = re.sub(r'[^\w.-]', '_', socket.gethostname())
    removed = []
    for entry in dest.parent.glob(f'.{dest.name}.staging-*'):
        m = _STAGING.match(entry.name)
        if m and m['name'] == dest.name and m['host'] == host \
                and not pid_alive(int(m['pid'])) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _write_staged(staging: Path, files: Mapping[str, bytes]) -> None:
    from ..utils.io import atomic_write_bytes
    for name, data in files.items():
        atomic_write_bytes(staging / name, data)
    atomic_write_text(staging / MANIFEST, _manifest_text(files))


def _commit_into(staging: Path, dest: Path, files: Mapping[str, bytes],
                 members: Iterable[str]) -> None:
    atomic_write_text(dest / MANIFEST, _manifest_text(files, state='incomplete'))
    for name in files:
        os.replace(staging / name, dest / name)
    for name in members:
        if name not in files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dest / name)
    os.replace(staging / MANIFEST, dest / MANIFEST)
    fsync_folder(dest)


def write_folder(dest: PathLike, files: Mapping[str, bytes],
                 members: Iterable[str] = ()) -> Path:
    """Write ``files`` into ``dest`` as one unit (module docstring).

    Args:
        dest (str or PathLike): the folder (created if missing).
        files (dict): file name -> content.
        members (iterable of str, optional): every name this kind of folder may
            hold; old ones not in ``files`` are removed on commit.

    Returns:
        Path: ``dest``.

    Raises:
        OSError: naming the file that could not be written; ``dest`` is then
            unchanged.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise NotADirectoryError(20, 'Not a directory (expected a folder)', str(dest))
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(dest)
    staging = dest.parent / _staging_name(dest)
    staging.mkdir()
    try:
        _write_staged(staging, files)
        if not dest.exists():
            os.rename(staging, dest)
            fsync_folder(dest.parent)
            return dest
        _commit_into(staging, dest, files, set(members) | set(files))
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return dest


__all__ = ['MANIFEST', 'FolderMismatchError', 'read_manifest', 'check_folder',
           'verify_file', 'verify_all', 'write_folder',
           'remove_stale_staging', 'sha256_bytes', 'sha256_file']
