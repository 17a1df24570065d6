r"""Read and write the SR-GNN data format (the pickled ``*.txt`` files).

The format used by SR-GNN, TAGNN, TAGNN++, GCE-GNN and their followers is a
folder with three Python pickles:

* ``all_train_seq.txt``: ``list[list[int]]``, the training sessions in date
  order (item ids from 1);
* ``train.txt``: ``(list[list[int]], list[int])``, every prefix of every
  training session and the item that followed it (see
  :func:`~tagnn_pyg.data.expand_prefixes`);
* ``test.txt``: ``(list[list[int]], list[int])``, the same for the test sessions.

Files are read only through :func:`~tagnn_pyg.data.safe_pickle.safe_pickle_load`
(lists, tuples and ints; anything else is refused and nothing runs) and
validated: non-empty sequences, positive integer ids, as many labels as
sequences. Errors name the file and the record index.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Literal, Optional, Sequence, Union

from ..utils.io import atomic_write_bytes
from .safe_pickle import safe_pickle_load
from .sequences import SessionSequences, expand_prefixes

PathLike = Union[str, os.PathLike]
SessionsLike = Union[Sequence[Sequence[int]], SessionSequences]

ALL_TRAIN_SEQ = 'all_train_seq.txt'
TRAIN = 'train.txt'
TEST = 'test.txt'
PICKLE_PROTOCOL = 4


@dataclass
class SRGNNData:
    r"""The content of an SR-GNN data folder.

    Attributes:
        train_sessions (list of list of int, optional): the whole training
            sessions in date order, from ``all_train_seq.txt`` (``None`` when the
            folder has only ``train.txt``).
        train (SessionSequences): training prefixes and their next items
            (prefix expansion of ``train_sessions``, or ``train.txt``).
        test (SessionSequences): test prefixes and their next items.
        num_items (int): embedding rows, including the padding id 0: the
            largest item id in the training and test files plus 1.
        path (Path): the folder read.
    """
    train_sessions: Optional[List[List[int]]]
    train: SessionSequences
    test: SessionSequences
    num_items: int
    path: Optional[Path] = None

    def __repr__(self) -> str:
        ts = 'None' if self.train_sessions is None else len(self.train_sessions)
        return (f"SRGNNData(train_sessions={ts}, train={len(self.train)}, "
                f"test={len(self.test)}, num_items={self.num_items})")


def _reword(msg: str) -> str:
    return msg.replace('sequence list record', 'sequence')


def _expand_checked(obj: Any, where: str) -> SessionSequences:
    if not isinstance(obj, (list, tuple)):
        raise ValueError(f"{where}: expected a list of sessions, got "
                         f"{type(obj).__name__}")
    try:
        return expand_prefixes(obj)  # validates: names the session index
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def parse_sessions(obj: Any, where: str) -> List[List[int]]:
    r"""Check that ``obj`` (from ``all_train_seq.txt``) is a list of non-empty
    sessions of positive int ids.

    Args:
        obj: the unpickled object.
        where (str): file name used in error messages.

    Returns:
        list of list of int: ``obj`` as a list.

    Raises:
        ValueError: naming ``where`` and the offending session index.
    """
    _expand_checked(obj, where)
    return list(obj)


def parse_examples(obj: Any, where: str) -> SessionSequences:
    r"""Check and convert ``(sequences, labels)`` (from ``train.txt``/``test.txt``).

    Args:
        obj: the unpickled object, a pair ``(list[list[int]], list[int])``.
        where (str): file name used in error messages.

    Returns:
        SessionSequences: the sequences with ``targets``.

    Raises:
        ValueError: naming ``where`` and the offending record index.
    """
    if not isinstance(obj, (list, tuple)) or len(obj) != 2:
        raise ValueError(f"{where}: expected a pair (sequences, labels), got "
                         f"{type(obj).__name__}"
                         + (f" of length {len(obj)}" if isinstance(obj, (list, tuple))
                            else ''))
    seqs, labels = obj
    if not isinstance(seqs, (list, tuple)) or not isinstance(labels, (list, tuple)):
        raise ValueError(f"{where}: expected (list of sequences, list of labels), got "
                         f"({type(seqs).__name__}, {type(labels).__name__})")
    if len(seqs) != len(labels):
        raise ValueError(f"{where}: {len(seqs)} sequences but {len(labels)} labels: "
                         f"labels must align with sequences")
    try:
        return SessionSequences.from_lists(seqs, labels)
    except ValueError as e:
        raise ValueError(f"{where}: {_reword(str(e))}") from None


def read_srgnn_folder(path: PathLike,
                      train_from: Literal['auto', 'all_train_seq', 'train'] = 'auto'
                      ) -> SRGNNData:
    r"""Read an SR-GNN data folder safely.

    Args:
        path (str or PathLike): folder with ``test.txt`` and ``all_train_seq.txt``
            and/or ``train.txt``.
        train_from (str, optional): where the training prefixes come from:
            ``'auto'`` (default: ``train.txt`` when present, as the released
            training code reads it, else the prefix expansion of
            ``all_train_seq.txt``), ``'all_train_seq'`` or ``'train'``. The two
            agree except for the released Yoochoose fractions, whose ``train.txt``
            may hold only the last prefixes of the first session.
            ``train_sessions`` is read from ``all_train_seq.txt`` whenever it exists.

    Returns:
        SRGNNData

    Raises:
        FileNotFoundError: the folder or a needed file is missing.
        UnsafePickleError: a file holds anything but lists, tuples and ints.
        ValueError: invalid content, naming the file and record index.
    """
    if train_from not in ('auto', 'all_train_seq', 'train'):
        raise ValueError(f"train_from must be 'auto', 'all_train_seq' or 'train', got "
                         f"{train_from!r}")
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"SR-GNN data folder not found: {root}")
    all_path, train_path, test_path = root / ALL_TRAIN_SEQ, root / TRAIN, root / TEST
    if not test_path.exists():
        raise FileNotFoundError(f"{root} has no {TEST}: an SR-GNN folder needs "
                                f"{TEST} and {ALL_TRAIN_SEQ} or {TRAIN}")
    use_train_txt = (train_from == 'train'
                     or (train_from == 'auto' and train_path.exists()))
    if train_from == 'auto' and not train_path.exists() and not all_path.exists():
        raise FileNotFoundError(f"{root} has neither {ALL_TRAIN_SEQ} nor {TRAIN}")
    if train_from == 'train' and not train_path.exists():
        raise FileNotFoundError(f"{root} has no {TRAIN}")
    if train_from == 'all_train_seq' and not all_path.exists():
        raise FileNotFoundError(f"{root} has no {ALL_TRAIN_SEQ}")

    train_sessions = None
    train: Optional[SessionSequences] = None
    if all_path.exists():
        obj = safe_pickle_load(all_path)
        expanded = _expand_checked(obj, str(all_path))
        train_sessions = list(obj)
        if not use_train_txt:
            train = expanded
    if use_train_txt:
        train = parse_examples(safe_pickle_load(train_path), str(train_path))
    assert train is not None
    test = parse_examples(safe_pickle_load(test_path), str(test_path))
    num_items = max(train.num_items, test.num_items)
    if train_sessions is not None and use_train_txt:
        num_items = max(num_items, max((max(s) for s in train_sessions), default=0) + 1)
    return SRGNNData(train_sessions=train_sessions, train=train, test=test,
                     num_items=num_items, path=root)


def _as_sessions(sessions: SessionsLike, what: str) -> SessionSequences:
    # validated, and normalised to Python ints when pickled (numpy scalars would
    # make a pickle that the safe loader refuses)
    if isinstance(sessions, SessionSequences):
        return SessionSequences(sessions.items.cpu(), sessions.ptr.cpu())
    if not isinstance(sessions, (list, tuple)):
        raise ValueError(f"{what} must be a list of sessions or SessionSequences, "
                         f"got {type(sessions).__name__}")
    try:
        return SessionSequences.from_lists(sessions)
    except ValueError as e:
        raise ValueError(f"{what}: " + str(e).replace('sequence list record', 'session')
                         .replace('sequence', 'session')) from None


def _dump_examples(seqs: SessionSequences) -> bytes:
    return pickle.dumps((seqs.to_lists(), seqs.targets.tolist()), protocol=PICKLE_PROTOCOL)


def write_srgnn_folder(path: PathLike, train_sessions: SessionsLike,
                       test_sessions: SessionsLike,
                       train: Optional[SessionSequences] = None) -> Path:
    r"""Write an SR-GNN data folder: ``all_train_seq.txt``, ``train.txt``,
    ``test.txt``, each atomically (temporary file + :func:`os.replace`).

    ``train.txt`` and ``test.txt`` hold the prefix expansion
    (:func:`~tagnn_pyg.data.expand_prefixes`) of the given sessions, in the
    released ``process_seqs`` order.

    Args:
        path (str or PathLike): the folder (created if missing).
        train_sessions (list of list of int or SessionSequences): training
            sessions in date order, item ids >= 1.
        test_sessions (list of list of int or SessionSequences): test sessions.
        train (SessionSequences, optional): training examples to write to
            ``train.txt`` instead of the expansion of ``train_sessions`` (the
            released Yoochoose fractions keep only the last prefixes of their
            first session).

    Returns:
        Path: the folder.

    Raises:
        ValueError: an empty session or an id < 1, naming the session index.
    """
    root = Path(path)
    tr = _as_sessions(train_sessions, 'train_sessions')
    te = _as_sessions(test_sessions, 'test_sessions')
    tr_ex = expand_prefixes(tr) if train is None else train
    te_ex = expand_prefixes(te)
    if tr_ex.targets is None:
        raise ValueError("train examples need targets (the next item of each prefix)")
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(root / ALL_TRAIN_SEQ, pickle.dumps(tr.to_lists(), protocol=PICKLE_PROTOCOL))
    atomic_write_bytes(root / TRAIN, _dump_examples(tr_ex))
    atomic_write_bytes(root / TEST, _dump_examples(te_ex))
    return root


__all__ = ['SRGNNData', 'read_srgnn_folder', 'write_srgnn_folder', 'parse_sessions',
           'parse_examples']
