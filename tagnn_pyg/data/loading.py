r"""One way to load a data set by name or folder, shared by the command line,
the examples and the benchmarks.

``--data`` (or the ``data`` argument of :func:`load_session_data`) is either a
folder in the SR-GNN format (``all_train_seq.txt`` and/or ``train.txt``,
``test.txt``; a folder made by ``tagnn-pyg prepare`` also has
``item_ids.json``), or a built-in name looked up under a root folder:

* ``synthetic``: the embedded generated data set (made on first use, with
  :func:`~tagnn_pyg.data.make_synthetic_sessions`);
* ``diginetica``, ``yoochoose1_64``, ``yoochoose1_4``: ``ROOT/NAME`` or
  ``ROOT/NAME/raw`` (the layout of :class:`~tagnn_pyg.data.SessionDataset`);
  a raw click log found there instead is preprocessed first with the SR-GNN
  protocol.

The dataset classes of :mod:`tagnn_pyg.data.datasets` make their raw folders
with the same functions (:func:`prepare_raw_log`, :func:`write_synthetic_folder`).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from .limits import LoadLimits
from .srgnn_format import ALL_TRAIN_SEQ, TEST, TRAIN, read_srgnn_folder

PathLike = Union[str, os.PathLike]

#: The names ``--data`` accepts besides a folder.
BUILTIN_DATA = ('synthetic', 'diginetica', 'yoochoose1_64', 'yoochoose1_4')
#: Default root folder of the built-in data sets.
DEFAULT_ROOT = 'data'
#: Built-in name -> (``prepare`` kind, raw log file name, ``prepare`` options).
RAW_LOGS: Dict[str, Tuple[str, str, Dict[str, Any]]] = {
    'diginetica': ('diginetica', 'train-item-views.csv', {}),
    'yoochoose1_64': ('yoochoose', 'yoochoose-clicks.dat', {'fraction': 64}),
    'yoochoose1_4': ('yoochoose', 'yoochoose-clicks.dat', {'fraction': 4}),
}
ITEM_IDS = 'item_ids.json'

logger = logging.getLogger(__name__)


@dataclass
class LoadedData:
    r"""A data set as training, evaluation and the baselines use it.

    Attributes:
        name (str): what was asked for (a built-in name or the folder).
        train_sessions (list of list of int, optional): whole training sessions
            in date order (``None`` when only prefix-expanded ``train.txt`` exists).
        train (SessionSequences): training prefixes and their next items.
        test (SessionSequences): test prefixes and their next items.
        num_items (int): embedding rows, including the padding id 0.
        item_ids (list, optional): original id of each internal id (element 0,
            the padding id, is ``None``), or ``None`` when the ids are the
            original ones.
        source (str): the folder read.
        fingerprint (str, optional): SHA-256 over the SR-GNN files read (see
            :class:`~tagnn_pyg.data.SRGNNData`).
    """
    name: str
    train_sessions: Optional[List[List[int]]]
    train: Any
    test: Any
    num_items: int
    item_ids: Optional[List[Any]] = None
    source: str = ''
    fingerprint: Optional[str] = None

    def __repr__(self) -> str:
        ts = 'None' if self.train_sessions is None else len(self.train_sessions)
        return (f"LoadedData({self.name!r}, train_sessions={ts}, train={len(self.train)}, "
                f"test={len(self.test)}, num_items={self.num_items}, "
                f"item_ids={'yes' if self.item_ids is not None else 'no'})")

    @classmethod
    def from_folder(cls, folder: PathLike, name: Optional[str] = None,
                    limits: Optional[LoadLimits] = None) -> 'LoadedData':
        r"""Read an SR-GNN folder (and its ``item_ids.json``, when present) within
        ``limits`` (default bounds when ``None``)."""
        folder = Path(folder)
        srgnn = read_srgnn_folder(folder, limits=limits)
        return cls(name=name or str(folder), train_sessions=srgnn.train_sessions,
                   train=srgnn.train, test=srgnn.test, num_items=srgnn.num_items,
                   item_ids=read_item_ids(folder), source=str(folder),
                   fingerprint=srgnn.fingerprint)

    def identity(self) -> Dict[str, Any]:
        r"""What a checkpoint records of its training data (item count, id-mapping
        hash, fingerprint, source): :func:`~tagnn_pyg.data.fingerprint.data_identity`."""
        from .fingerprint import data_identity
        return data_identity(self.num_items, self.item_ids, self.fingerprint, self.source)


def read_item_ids(folder: PathLike) -> Optional[List[Any]]:
    r"""The item-id mapping of a prepared folder (``item_ids.json``: a JSON list
    whose element ``i`` is the original id of internal id ``i``), or ``None``.

    Raises:
        ValueError: the file is not a JSON list (names the file).
    """
    path = Path(folder) / ITEM_IDS
    if not path.exists():
        return None
    try:
        ids = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(ids, list):
        raise ValueError(f"{path} must hold a JSON list of original item ids, got "
                         f"{type(ids).__name__}")
    return ids


def write_synthetic_folder(folder: PathLike, **generator_kwargs: Any) -> Path:
    r"""Write :func:`~tagnn_pyg.data.make_synthetic_sessions` ``(**generator_kwargs)``
    as an SR-GNN folder (with ``generator.json`` naming the options) and return it."""
    from ..utils.io import atomic_write_text
    from .srgnn_format import write_srgnn_folder
    from .synthetic import make_synthetic_sessions

    folder = Path(folder)
    train, test = make_synthetic_sessions(**generator_kwargs)
    write_srgnn_folder(folder, train, test)
    atomic_write_text(folder / 'generator.json',
                      json.dumps(generator_kwargs, indent=2, sort_keys=True) + '\n')
    return folder


def synthetic_folder(folder: PathLike, seed: int = 0) -> Path:
    r"""The embedded synthetic data set (the default options of
    :func:`~tagnn_pyg.data.make_synthetic_sessions`) in ``folder``: generated
    unless it is already there with the same options."""
    folder = Path(folder)
    wanted = {'seed': seed}
    meta = folder / 'generator.json'
    try:
        same = json.loads(meta.read_text(encoding='utf-8')) == wanted
    except (OSError, ValueError):
        same = False
    if not (same and (folder / TEST).exists() and (folder / ALL_TRAIN_SEQ).exists()):
        write_synthetic_folder(folder, **wanted)
    return folder


def prepare_raw_log(name: str, folder: PathLike) -> Optional[Path]:
    r"""Preprocess the raw click log of built-in data set ``name`` found in
    ``folder`` (plain or ``.gz``) into ``folder``, with the SR-GNN protocol.

    Returns:
        Path, optional: the folder, or ``None`` when no raw log is there.
    """
    kind, log_name, options = RAW_LOGS[name]
    folder = Path(folder)
    for log in (folder / log_name, folder / (log_name + '.gz')):
        if log.exists():
            from .preprocess import prepare
            logger.info('preprocessing %s into %s (SR-GNN protocol) ...', log, folder)
            prepare(kind, log, folder, **options)
            return folder
    return None


def builtin_folder(name: str, root: PathLike = DEFAULT_ROOT) -> Path:
    r"""The SR-GNN folder of built-in data set ``name`` under ``root``.

    Raises:
        ValueError: ``name`` is not a built-in name.
        FileNotFoundError: neither SR-GNN files nor a raw log are there; the
            message says what to put where.
    """
    root = Path(root)
    if name == 'synthetic':
        return synthetic_folder(root / 'synthetic')
    if name not in RAW_LOGS:
        raise ValueError(f"unknown built-in data set {name!r}; expected one of "
                         f"{', '.join(BUILTIN_DATA)}")
    candidates = [root / name, root / name / 'raw']
    for folder in candidates:
        if (folder / TEST).exists():
            return folder
    for folder in candidates:
        prepared = prepare_raw_log(name, folder)
        if prepared is not None:
            return prepared
    kind, log_name, _ = RAW_LOGS[name]
    raise FileNotFoundError(
        f"built-in data set {name!r} not found: expected its SR-GNN files "
        f"({ALL_TRAIN_SEQ} and/or {TRAIN}, {TEST}) or the raw {log_name} in "
        f"{root / name} (set the parent folder with --root), or create them with "
        f"'tagnn-pyg prepare {kind} {log_name} {root / name}'")


def resolve_data_folder(data: PathLike, root: Optional[PathLike] = None) -> Path:
    r"""The folder that ``data`` (a folder or a built-in name) stands for.

    Raises:
        FileNotFoundError / NotADirectoryError: naming ``data`` and what was expected.
    """
    text = str(data)
    if text in BUILTIN_DATA and not Path(text).is_dir():
        return builtin_folder(text, root if root is not None else DEFAULT_ROOT)
    folder = Path(data)
    if not folder.exists():
        raise FileNotFoundError(f"--data {text!r} is neither an existing folder nor a "
                                f"built-in data set ({', '.join(BUILTIN_DATA)})")
    if not folder.is_dir():
        raise NotADirectoryError(f"--data {text!r} is a file; expected a folder in the "
                                 f"SR-GNN format ({ALL_TRAIN_SEQ} or {TRAIN}, {TEST})")
    return folder


def load_session_data(data: PathLike, root: Optional[PathLike] = None,
                      limits: Optional[LoadLimits] = None) -> LoadedData:
    r"""Load a data set by built-in name or folder (module docstring).

    Args:
        data (str or PathLike): an SR-GNN folder or one of :data:`BUILTIN_DATA`.
        root (str or PathLike, optional): folder of the built-in data sets
            (default ``./data``).
        limits (LoadLimits, optional): resource bounds checked while reading
            (default: :data:`~tagnn_pyg.data.limits.DEFAULT_LIMITS`).

    Returns:
        LoadedData

    Raises:
        FileNotFoundError, NotADirectoryError, ValueError: naming the data and
            the problem.
    """
    return LoadedData.from_folder(resolve_data_folder(data, root), name=str(data),
                                  limits=limits)


__all__ = ['BUILTIN_DATA', 'DEFAULT_ROOT', 'LoadedData', 'load_session_data',
           'resolve_data_folder', 'builtin_folder', 'synthetic_folder',
           'write_synthetic_folder', 'prepare_raw_log', 'read_item_ids']
