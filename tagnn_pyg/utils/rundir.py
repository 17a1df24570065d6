"""A run directory is a unit: a new run does not silently replace an old one.

:func:`start_new_run` refuses a folder that already holds a run (finished or
not) unless told to overwrite it, in which case the old run's files are removed
first, so that the folder never mixes two runs (an old ``best.pt`` or
``metrics.json`` beside a new ``last.pt``). Resuming is not a new run and does not
come here.

Only the standard library is imported (the CLI checks this before loading data).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import List, Optional, Union

PathLike = Union[str, os.PathLike]

#: Files (and folders) a run writes into its directory.
RUN_FILES = ('best.pt', 'last.pt', 'metrics.json', 'log.csv', 'log.jsonl', 'train.log',
             'demo.json', 'tensorboard')
#: Patterns of files derived from a run's checkpoints (stale once it is replaced).
DERIVED_PATTERNS = ('evaluate-*.json', )


class RunExistsError(RuntimeError):
    """The run directory already holds a run; the message says how to continue it
    (``--resume``) or replace it (``--overwrite``)."""


def _run_entries(folder: Path) -> List[Path]:
    found = [folder / name for name in RUN_FILES if (folder / name).exists()]
    for pattern in DERIVED_PATTERNS:
        found += sorted(folder.glob(pattern))
    return found


def describe_run(folder: PathLike) -> Optional[str]:
    """What kind of run ``folder`` holds, or ``None`` when it holds none.

    Args:
        folder (str or PathLike): the run directory.

    Returns:
        str or None: e.g. ``'a finished run (3 epochs)'`` or ``'an unfinished run
        (last.pt, no metrics.json)'``.
    """
    folder = Path(folder)
    if not folder.is_dir() or not any((folder / n).exists() for n in RUN_FILES[:3]):
        return None
    metrics = folder / 'metrics.json'
    if metrics.exists():
        try:
            epochs = json.loads(metrics.read_text(encoding='utf-8')).get('epochs_run')
        except (OSError, ValueError, AttributeError):
            epochs = None
        return 'a finished run' + (f' ({epochs} epochs)' if epochs is not None else '')
    return 'an unfinished run (last.pt or best.pt, no metrics.json)'


def check_new_run(folder: PathLike, overwrite: bool = False) -> None:
    """Refuse to start a new run in a folder that holds one, unless ``overwrite``.

    Args:
        folder (str or PathLike): the run directory.
        overwrite (bool, optional): allow replacing the existing run.

    Raises:
        RunExistsError: ``folder`` holds a run and ``overwrite`` is false.
    """
    what = describe_run(folder)
    if what is not None and not overwrite:
        raise RunExistsError(
            f"{folder} already holds {what}: continue it with --resume, replace it "
            f"with --overwrite, or choose another --out")


def clear_run(folder: PathLike) -> List[Path]:
    """Remove the files of the run in ``folder`` (other files are kept).

    Args:
        folder (str or PathLike): the run directory.

    Returns:
        list of Path: what was removed.
    """
    removed = _run_entries(Path(folder))
    for entry in removed:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return removed


def start_new_run(folder: PathLike, overwrite: bool = False) -> List[Path]:
    """:func:`check_new_run`, then :func:`clear_run` (call it holding the
    folder's :class:`~tagnn_pyg.utils.lock.FolderLock`).

    Args:
        folder (str or PathLike): the run directory.
        overwrite (bool, optional): allow replacing an existing run.

    Returns:
        list of Path: the old run's files that were removed.

    Raises:
        RunExistsError: ``folder`` holds a run and ``overwrite`` is false.
    """
    check_new_run(folder, overwrite)
    return clear_run(folder)


__all__ = ['RunExistsError', 'RUN_FILES', 'describe_run', 'check_new_run', 'clear_run',
           'start_new_run']
