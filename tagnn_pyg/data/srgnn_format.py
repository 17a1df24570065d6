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

Resource bounds (:class:`~tagnn_pyg.data.limits.LoadLimits`: session length,
clicks per file after expansion, largest id against the number of distinct
ids) are checked on the unpickled lists before anything is flattened, expanded
or sized by the largest id.

A folder written by :func:`write_srgnn_folder` (and ``tagnn-pyg prepare``) is
written as a unit and carries ``manifest.json`` (:mod:`tagnn_pyg.data.manifest`);
reading it checks every file against it and refuses a half-written or mixed
folder. A folder without a manifest (the released SR-GNN files) is read as is.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Union

from . import manifest as _manifest
from .limits import DEFAULT_LIMITS, LoadLimits, check_largest_id, check_sequence_sizes
from .safe_pickle import read_limited, safe_pickle_loads
from .sequences import SessionSequences, expand_prefixes

PathLike = Union[str, os.PathLike]
SessionsLike = Union[Sequence[Sequence[int]], SessionSequences]

ALL_TRAIN_SEQ = 'all_train_seq.txt'
TRAIN = 'train.txt'
TEST = 'test.txt'
ITEM_IDS = 'item_ids.json'
STATS = 'stats.json'
#: Every file a prepared folder may hold (checked against its manifest).
MEMBERS = (ALL_TRAIN_SEQ, TRAIN, TEST, ITEM_IDS, STATS)
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
        fingerprint (str, optional): SHA-256 over the names and SHA-256 of
            the files read: equal for equal data, whoever wrote it.
    """
    train_sessions: Optional[List[List[int]]]
    train: SessionSequences
    test: SessionSequences
    num_items: int
    path: Optional[Path] = None
    fingerprint: Optional[str] = None

    def __repr__(self) -> str:
        ts = 'None' if self.train_sessions is None else len(self.train_sessions)
        return (f"SRGNNData(train_sessions={ts}, train={len(self.train)}, "
                f"test={len(self.test)}, num_items={self.num_items})")


def _reword(msg: str) -> str:
    return msg.replace('sequence list record', 'sequence')


def _expand_checked(obj: Any, where: str,
                    limits: LoadLimits = DEFAULT_LIMITS) -> SessionSequences:
    if not isinstance(obj, (list, tuple)):
        raise ValueError(f"{where}: expected a list of sessions, got "
                         f"{type(obj).__name__}")
    check_sequence_sizes(obj, where, limits, expand=True, what='session')
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


def parse_examples(obj: Any, where: str,
                   limits: LoadLimits = DEFAULT_LIMITS) -> SessionSequences:
    r"""Check and convert ``(sequences, labels)`` (from ``train.txt``/``test.txt``).

    Args:
        obj: the unpickled object, a pair ``(list[list[int]], list[int])``.
        where (str): file name used in error messages.
        limits (LoadLimits, optional): resource bounds, checked first.

    Returns:
        SessionSequences: the sequences with ``targets``.

    Raises:
        ValueError: naming ``where`` and the offending record index.
        LimitError: a bound of ``limits`` is exceeded (file, record, limit).
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
    check_sequence_sizes(seqs, where, limits)
    try:
        return SessionSequences.from_lists(seqs, labels)
    except ValueError as e:
        raise ValueError(f"{where}: {_reword(str(e))}") from None


class _FolderReader:
    """Reads the files of one folder: manifest checks, limits, fingerprint."""

    def __init__(self, root: Path, limits: LoadLimits) -> None:
        self.root = root
        self.limits = limits
        self.manifest = _manifest.read_manifest(root)
        _manifest.check_folder(root, self.manifest, MEMBERS)
        self.digests: Dict[str, str] = {}

    def load(self, name: str) -> Any:
        path = self.root / name
        data = read_limited(path, self.limits.max_file_bytes)
        _manifest.verify_file(self.root, self.manifest, name, data)
        self.digests[name] = _manifest.sha256_bytes(data)
        return safe_pickle_loads(data, where=str(path))

    def finish(self) -> str:
        """Verify the other listed files; return the data fingerprint."""
        _manifest.verify_all(self.root, self.manifest, skip=self.digests)
        text = ''.join(f'{n}:{d}\n' for n, d in sorted(self.digests.items()))
        return _manifest.sha256_bytes(text.encode('utf-8'))


def _check_ids(parts: Sequence[Tuple[str, SessionSequences]], limits: LoadLimits) -> int:
    """Largest id against distinct ids over all files; returns ``num_items``."""
    import torch

    tensors = [t for _, s in parts for t in (s.items, s.targets) if t is not None]
    distinct = int(torch.unique(torch.cat(tensors)).numel()) if tensors else 0
    where, seqs = max(parts, key=lambda p: p[1].num_items)
    largest = seqs.num_items - 1
    check_largest_id(largest, distinct, where, _record_of(seqs, largest), limits)
    return largest + 1


def _record_of(seqs: SessionSequences, item: int) -> str:
    import torch

    hits = torch.nonzero(seqs.items == item)
    if hits.numel():
        b = int(torch.searchsorted(seqs.ptr, hits[0], right=True)) - 1
        return f"sequence {b}"
    return f"the target of sequence {int(torch.nonzero(seqs.targets == item)[0])}"


def read_srgnn_folder(path: PathLike,
                      train_from: Literal['auto', 'all_train_seq', 'train'] = 'auto',
                      limits: Optional[LoadLimits] = None) -> SRGNNData:
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
        limits (LoadLimits, optional): resource bounds (default
            :data:`~tagnn_pyg.data.limits.DEFAULT_LIMITS`).

    Returns:
        SRGNNData

    Raises:
        FileNotFoundError: the folder or a needed file is missing.
        UnsafePickleError: a file holds anything but lists, tuples and ints.
        FolderMismatchError: the folder's manifest is incomplete or does not
            match its files (half-written, or a mix of two writes).
        LimitError: a file exceeds a bound of ``limits`` (file, record, limit).
        ValueError: invalid content, naming the file and record index.
    """
    if train_from not in ('auto', 'all_train_seq', 'train'):
        raise ValueError(f"train_from must be 'auto', 'all_train_seq' or 'train', got "
                         f"{train_from!r}")
    limits = limits if limits is not None else DEFAULT_LIMITS
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"SR-GNN data folder not found: {root}")
    all_path, train_path, test_path = root / ALL_TRAIN_SEQ, root / TRAIN, root / TEST
    reader = _FolderReader(root, limits)
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
    parts: List[Tuple[str, SessionSequences]] = []
    if all_path.exists():
        obj = reader.load(ALL_TRAIN_SEQ)
        expanded = _expand_checked(obj, str(all_path), limits)
        train_sessions = list(obj)
        parts.append((str(all_path), expanded))
        if not use_train_txt:
            train = expanded
    if use_train_txt:
        train = parse_examples(reader.load(TRAIN), str(train_path), limits)
        parts.append((str(train_path), train))
    assert train is not None
    test = parse_examples(reader.load(TEST), str(test_path), limits)
    parts.append((str(test_path), test))
    num_items = _check_ids(parts, limits)
    return SRGNNData(train_sessions=train_sessions, train=train, test=test,
                     num_items=num_items, path=root, fingerprint=reader.finish())


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
                       train: Optional[SessionSequences] = None,
                       extra_files: Optional[Mapping[str, bytes]] = None) -> Path:
    r"""Write an SR-GNN data folder: ``all_train_seq.txt``, ``train.txt``,
    ``test.txt`` and ``manifest.json``, as one unit
    (:func:`tagnn_pyg.data.manifest.write_folder`: staged in a sibling folder,
    then committed; a failure leaves an existing folder as it was).

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
        extra_files (dict, optional): more files of the unit, name -> bytes
            (``item_ids.json``, ``stats.json``).

    Returns:
        Path: the folder.

    Raises:
        ValueError: an empty session or an id < 1, naming the session index.
        OSError: a file could not be written (naming it); the folder is then
            unchanged.
    """
    root = Path(path)
    tr = _as_sessions(train_sessions, 'train_sessions')
    te = _as_sessions(test_sessions, 'test_sessions')
    tr_ex = expand_prefixes(tr) if train is None else train
    te_ex = expand_prefixes(te)
    if tr_ex.targets is None:
        raise ValueError("train examples need targets (the next item of each prefix)")
    files = {ALL_TRAIN_SEQ: pickle.dumps(tr.to_lists(), protocol=PICKLE_PROTOCOL),
             TRAIN: _dump_examples(tr_ex), TEST: _dump_examples(te_ex),
             **dict(extra_files or {})}
    return _manifest.write_folder(root, files, MEMBERS)


__all__ = ['SRGNNData', 'read_srgnn_folder', 'write_srgnn_folder', 'parse_sessions',
           'parse_examples']
