r"""Session-based recommendation data sets as PyG :class:`InMemoryDataset`\ s.

Every data set is a folder in the SR-GNN format (``root/raw/`` holding
``all_train_seq.txt`` or ``train.txt``, and ``test.txt``; see
:mod:`tagnn_pyg.data.srgnn_format`) with a processed cache in
``root/processed/``. Processing is vectorised: all graphs of a split are built
at once with :func:`~tagnn_pyg.data.build_session_batch` and stored in PyG's
collated layout (one :class:`~tagnn_pyg.data.SessionData` storage plus
``slices``), so ``dataset[i]``, slicing and
:class:`torch_geometric.loader.DataLoader` work as for any PyG data set, and
:attr:`SessionDataset.sequences` gives the same split as a flat
:class:`~tagnn_pyg.data.SessionSequences` for the fast
:class:`~tagnn_pyg.data.SessionLoader`.

The cache is keyed on the content (SHA-256) of the raw files that are read and
on the options (edge weighting, validation split): it is rebuilt when either
changes, and stale files of the same options are removed. Files are written
atomically (temporary file + rename).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import os.path as osp
from typing import Any, Callable, Dict, List, Literal, Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.data import InMemoryDataset

from torch_geometric.data.separate import separate

from ..utils.io import atomic_write_text, atomic_writer
from .batching import build_session_batch, session_index
from .sequences import SessionSequences, expand_prefixes
from .session_data import EdgeWeighting, SessionData, check_edge_weighting
from .split import random_prefix_split, temporal_session_split
from .loading import RAW_LOGS, prepare_raw_log, write_synthetic_folder
from .srgnn_format import ALL_TRAIN_SEQ, TEST, TRAIN, SRGNNData, read_srgnn_folder

__all__ = ['SessionDataset', 'Diginetica', 'Yoochoose', 'SyntheticSessions',
           'sequences_to_storage', 'storage_to_sequences']

#: Bump when the processed layout changes (part of the cache key).
#: 2: the flat sequences of each split are stored beside its graphs.
PROCESS_VERSION = 2
SPLITS = ('train', 'valid', 'test')
VALID_MODES = ('temporal', 'random', None)


def sequences_to_storage(sequences: SessionSequences,
                         weighting: EdgeWeighting = 'binary'
                         ) -> Tuple[SessionData, Dict[str, Tensor]]:
    r"""All graphs of ``sequences`` in PyG's collated (un-incremented) layout.

    The result is what ``InMemoryDataset.collate([SessionData.from_sequence(s,
    t, weighting) for s, t in ...])`` returns, built with one
    :func:`~tagnn_pyg.data.build_session_batch` call and a few index
    subtractions (node indices back to per-graph local indices).

    Args:
        sequences (SessionSequences): the sequences and their targets.
        weighting (str, optional): ``'binary'`` or ``'count'``.

    Returns:
        (storage, slices): a :class:`SessionData` holding the concatenated
        fields and the per-key slice pointers.

    Shapes:
        - **input:** :math:`B` sequences with :math:`N` clicks
        - **output:** ``x`` :math:`(V)`, ``edge_index`` :math:`(2, E)`,
          ``seq``/``seq_batch`` :math:`(N)`, ``last``/``y`` :math:`(B)`;
          ``slices[key]`` :math:`(B + 1)`.
    """
    if len(sequences) == 0:
        raise ValueError("cannot store an empty split: 0 sequences")
    batch = build_session_batch(sequences.items, sequences.ptr, sequences.targets,
                                weighting=weighting)
    node_start = batch.ptr[:-1]
    row, col = batch.edge_index
    edge_graph = batch.batch[row]
    storage = SessionData(
        x=batch.x,
        edge_index=torch.stack([row - node_start[edge_graph],
                                col - node_start[edge_graph]]),
        edge_weight_in=batch.edge_weight_in,
        edge_weight_out=batch.edge_weight_out,
        seq=batch.seq - node_start[batch.seq_batch],
        seq_batch=torch.zeros_like(batch.seq_batch),
        last=batch.last - node_start,
    )
    if sequences.targets is not None:
        storage.y = batch.y
    slices = {key: value for key, value in batch._slice_dict.items()}
    return storage, slices


def storage_to_sequences(storage: SessionData, slices: Dict[str, Tensor]
                         ) -> SessionSequences:
    r"""Recover the flat sequences (``items = x[seq]`` per graph) of a stored split.

    Args:
        storage (SessionData): collated fields (local node indices).
        slices (dict): per-key slice pointers.

    Returns:
        SessionSequences with ``targets`` = ``y`` when stored.
    """
    click_ptr = slices['seq']
    node_ptr = slices['x']
    graph = session_index(click_ptr, storage.seq.numel())
    items = storage.x[storage.seq + node_ptr[graph]]
    targets = storage.y if 'y' in storage else None
    return SessionSequences(items, click_ptr.clone(), targets, validate=False)


def _callable_key(fn: Optional[Callable]) -> str:
    """A stable description of a pre-transform / pre-filter for the cache key:
    its ``repr`` when it defines one (PyG transforms do), else its qualified name."""
    if fn is None:
        return ''
    if type(fn).__repr__ is not object.__repr__ and not callable(getattr(fn, '__code__', None)):
        return repr(fn)
    return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


class SessionDataset(InMemoryDataset):
    r"""A session-based recommendation data set in the SR-GNN format.

    ``root/raw/`` holds ``test.txt`` and ``all_train_seq.txt`` (whole training
    sessions in date order) and/or ``train.txt`` (training prefixes); every
    example is a session prefix with its next item, as a
    :class:`~tagnn_pyg.data.SessionData` graph. The training prefixes are those
    of :func:`~tagnn_pyg.data.read_srgnn_folder` (``train.txt`` when present,
    as the released code reads it, else the prefix expansion of
    ``all_train_seq.txt``).

    Validation (``valid``):

    * ``None``: no validation split; ``train`` is every training prefix (the
      papers' protocol).
    * ``'temporal'`` (recommended for model selection): the most recent
      ``valid_fraction`` of the training *sessions* (whole sessions, needs
      ``all_train_seq.txt``), see :func:`~tagnn_pyg.data.temporal_session_split`;
      ``train`` then holds the prefixes of the older sessions only.
    * ``'random'``: the released code's random ``valid_fraction`` of the
      training prefixes (seed ``valid_seed``), see
      :func:`~tagnn_pyg.data.random_prefix_split`.

    The processed cache (``root/processed/``) is keyed on the SHA-256 of the
    raw files read and on the options; it is rebuilt when they change or with
    ``force_reload=True``.

    Args:
        root (str): the data set folder (``root/raw``, ``root/processed``).
        split (str, optional): ``'train'``, ``'valid'`` or ``'test'``.
        weighting (str, optional): edge weights, ``'binary'`` (released code,
            default) or ``'count'`` (SR-GNN paper).
        valid (str, optional): ``'temporal'``, ``'random'`` or ``None``.
        valid_fraction (float, optional): share held out for validation.
        valid_seed (int, optional): seed of ``valid='random'``.
        force_reload (bool, optional): rebuild the processed cache.
        transform (callable, optional): applied to every example on access.
        pre_transform (callable, optional): applied to every example once,
            before it is saved (the processed cache is keyed on it). Without
            ``pre_transform`` and ``pre_filter`` all graphs of a split are built
            in one vectorised pass; with either, each example is separated,
            transformed and collated again (slower, as in PyG).
        pre_filter (callable, optional): keeps an example when it returns
            ``True``; applied before ``pre_transform``.
        log (bool, optional): print progress while processing.

    Shapes:
        - **example:** ``x`` :math:`(n)`, ``edge_index`` :math:`(2, E)`,
          ``seq``/``seq_batch`` :math:`(L)`, ``last``/``y`` :math:`(1)`.

    Example:
        >>> ds = SessionDataset('data/my_shop', split='train')  # doctest: +SKIP
        >>> ds[0], ds.num_items, ds.sequences                    # doctest: +SKIP
    """

    #: Name used in messages.
    name = 'SR-GNN folder'

    def __init__(
        self,
        root: str,
        split: Literal['train', 'valid', 'test'] = 'train',
        weighting: EdgeWeighting = 'binary',
        valid: Optional[Literal['temporal', 'random']] = None,
        valid_fraction: float = 0.1,
        valid_seed: int = 0,
        force_reload: bool = False,
        transform: Optional[Callable] = None,
        pre_transform: Optional[Callable] = None,
        pre_filter: Optional[Callable] = None,
        log: bool = True,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        check_edge_weighting(weighting)
        if valid not in VALID_MODES:
            raise ValueError(f"valid must be one of {VALID_MODES}, got {valid!r}")
        if split == 'valid' and valid is None:
            raise ValueError("split='valid' needs a validation split: pass "
                             "valid='temporal' or valid='random'")
        if valid is not None and (isinstance(valid_fraction, bool)
                                  or not isinstance(valid_fraction, (int, float))
                                  or not 0 < valid_fraction < 1):
            raise ValueError(f"valid_fraction must be strictly between 0 and 1, got "
                             f"{valid_fraction!r}")
        self.split = split
        self.weighting = weighting
        self.valid = valid
        self.valid_fraction = float(valid_fraction)
        self.valid_seed = int(valid_seed)
        self._fingerprint: Optional[Dict[str, Any]] = None
        self._sequences: Optional[SessionSequences] = None
        self._pre_key = _callable_key(pre_transform) + _callable_key(pre_filter)
        super().__init__(root, transform=transform, pre_transform=pre_transform,
                         pre_filter=pre_filter, log=log, force_reload=force_reload)
        self.load(self._graph_path(split), data_cls=SessionData)
        with open(self.processed_paths[-1]) as f:
            self.meta: Dict[str, Any] = json.load(f)

    # ------------------------------------------------------------ file names
    @property
    def raw_file_names(self) -> List[str]:
        raw = self.raw_dir
        if osp.exists(osp.join(raw, TRAIN)) and not osp.exists(osp.join(raw, ALL_TRAIN_SEQ)):
            return [TRAIN, TEST]
        return [ALL_TRAIN_SEQ, TEST]

    def _options(self) -> Dict[str, Any]:
        return {'weighting': self.weighting, 'valid': self.valid,
                'valid_fraction': self.valid_fraction if self.valid else None,
                'valid_seed': self.valid_seed if self.valid == 'random' else None,
                'pre': self._pre_key or None, 'version': PROCESS_VERSION}

    def _option_tag(self) -> str:
        if self.valid is None:
            v = 'novalid'
        elif self.valid == 'temporal':
            v = f'temporal{self.valid_fraction:g}'
        else:
            v = f'random{self.valid_fraction:g}s{self.valid_seed}'
        return f'{self.weighting}-{v}-v{PROCESS_VERSION}'

    @property
    def processed_dir(self) -> str:
        # a pre-transform / pre-filter gets a cache folder of its own (PyG keeps
        # one pre_transform.pt per folder)
        base = osp.join(self.root, 'processed')
        if not self._pre_key:
            return base
        return osp.join(base, f"pre-{hashlib.sha256(self._pre_key.encode()).hexdigest()[:12]}")

    def fingerprint(self) -> Dict[str, Any]:
        """Size, modification time and SHA-256 of each SR-GNN file in ``raw/``
        (``all_train_seq.txt``, ``train.txt``, ``test.txt``, those present: all
        may be read by :func:`~tagnn_pyg.data.read_srgnn_folder`)."""
        if self._fingerprint is None:
            files = {}
            for name in self.raw_file_names:
                path = osp.join(self.raw_dir, name)
                if not osp.exists(path):
                    raise FileNotFoundError(f"{self.name}: raw file missing: {path}")
            for name in (ALL_TRAIN_SEQ, TRAIN, TEST):
                path = osp.join(self.raw_dir, name)
                if not osp.exists(path):
                    continue
                st = os.stat(path)
                files[name] = {'size': st.st_size, 'mtime_ns': st.st_mtime_ns,
                               'sha256': _sha256(path)}
            self._fingerprint = files
        return self._fingerprint

    def _raw_key(self) -> str:
        blob = json.dumps({k: v['sha256'] for k, v in self.fingerprint().items()},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def _split_paths(self) -> List[str]:
        return ['train', 'valid', 'test'] if self.valid else ['train', 'test']

    @property
    def processed_file_names(self) -> List[str]:
        stem = f'{self._option_tag()}-{self._raw_key()}'
        splits = self._split_paths()
        return ([f'{s}-{stem}.pt' for s in splits]
                + [f'{s}-sequences-{stem}.pt' for s in splits] + [f'meta-{stem}.json'])

    def _graph_path(self, split: str) -> str:
        return self.processed_paths[self._split_paths().index(split)]

    def _sequences_path(self, split: str) -> str:
        splits = self._split_paths()
        return self.processed_paths[len(splits) + splits.index(split)]

    def download(self) -> None:
        raise FileNotFoundError(
            f"{self.name}: no SR-GNN files in {self.raw_dir}: place "
            f"{ALL_TRAIN_SEQ} (or {TRAIN}) and {TEST} there "
            f"(see `tagnn-pyg prepare` to make them from raw logs)")

    # ------------------------------------------------------------ processing
    def _make_splits(self, data: SRGNNData) -> Dict[str, SessionSequences]:
        if self.valid is None:
            return {'train': data.train, 'test': data.test}
        if self.valid == 'temporal':
            if data.train_sessions is None:
                raise ValueError(
                    f"{self.name}: valid='temporal' needs whole training sessions "
                    f"({ALL_TRAIN_SEQ}) in {self.raw_dir}, which has only {TRAIN}; "
                    f"use valid='random' or provide {ALL_TRAIN_SEQ}")
            tr, va = temporal_session_split(data.train_sessions, self.valid_fraction)
            return {'train': expand_prefixes(tr), 'valid': expand_prefixes(va),
                    'test': data.test}
        tr_seq, va_seq = random_prefix_split(data.train, self.valid_fraction,
                                             seed=self.valid_seed)
        return {'train': tr_seq, 'valid': va_seq, 'test': data.test}

    def process(self) -> None:
        data = read_srgnn_folder(self.raw_dir)
        parts = self._make_splits(data)
        sizes = {}
        for split in self._split_paths():
            storage, slices = sequences_to_storage(parts[split], self.weighting)
            if self.pre_filter is not None or self.pre_transform is not None:
                storage, slices = self._pre_process(storage, slices)
            sequences = storage_to_sequences(storage, slices)
            sizes[split] = len(sequences)
            with atomic_writer(self._graph_path(split)) as f:
                # (dict of tensors, slices): InMemoryDataset.load's layout, which
                # torch.load reads with weights_only=True (no pickled classes).
                torch.save((storage.to_dict(), slices), f)
            with atomic_writer(self._sequences_path(split)) as f:
                torch.save({'items': sequences.items, 'ptr': sequences.ptr,
                            'targets': sequences.targets}, f)
        meta = {
            'dataset': self.__class__.__name__,
            'num_items': int(data.num_items),
            'num_sequences': sizes,
            'num_train_sessions': (None if data.train_sessions is None
                                   else len(data.train_sessions)),
            'options': self._options(),
            'raw_files': self.fingerprint(),
        }
        atomic_write_text(self.processed_paths[-1], json.dumps(meta, indent=2) + '\n')
        self._remove_stale()

    def _pre_process(self, storage: SessionData, slices: Dict[str, Tensor]
                     ) -> Tuple[SessionData, Dict[str, Tensor]]:
        """``pre_filter`` and ``pre_transform`` example by example (PyG's way)."""
        examples = [separate(SessionData, storage, i, slices, decrement=False)
                    for i in range(slices['seq'].numel() - 1)]
        if self.pre_filter is not None:
            examples = [d for d in examples if self.pre_filter(d)]
        if self.pre_transform is not None:
            examples = [self.pre_transform(d) for d in examples]
        if not examples:
            raise ValueError(f"{self.name}: pre_filter removed every example of a split")
        return self.collate(examples)

    def _remove_stale(self) -> None:
        """Delete processed files of the same options made from other raw files."""
        keep = set(self.processed_paths)
        for path in glob.glob(osp.join(self.processed_dir, f'*-{self._option_tag()}-*')):
            if path not in keep:
                try:
                    os.remove(path)
                except OSError:  # pragma: no cover - a concurrent reader/writer
                    pass

    # ---------------------------------------------------------------- access
    @property
    def num_items(self) -> int:
        """Embedding rows needed, including the padding id 0 (max item id + 1
        over the training and test files)."""
        return int(self.meta['num_items'])

    @property
    def sequences(self) -> SessionSequences:
        """This split (or this subset, after indexing) as flat
        :class:`SessionSequences` with targets, for :class:`SessionLoader`."""
        if self._sequences is None:
            flat = torch.load(self._sequences_path(self.split), weights_only=True)
            self._sequences = SessionSequences(flat['items'], flat['ptr'], flat['targets'],
                                               validate=False)
        indices = self.indices()
        if isinstance(indices, range) and indices == range(self.len()):
            return self._sequences
        return self._sequences[torch.as_tensor(list(indices), dtype=torch.long)]

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({len(self)}, split={self.split!r}, '
                f'num_items={self.num_items})')


class Diginetica(SessionDataset):
    r"""DIGINETICA (CIKM Cup 2016 personalised e-commerce search challenge), item
    views, preprocessed with the SR-GNN protocol: 186,670 training sessions
    (719,470 training prefixes), 60,858 test prefixes, item ids 1..43,097
    (43,098 embedding rows with the padding id).

    The data is not freely downloadable (the organisers require registration):
    get ``train-item-views.csv`` from the official page
    https://competitions.codalab.org/competitions/11161 (CIKM Cup 2016 Track 2),
    then either run ``tagnn-pyg prepare diginetica train-item-views.csv
    ROOT/raw`` or place the file in ``ROOT/raw/`` (it is then preprocessed on
    first use), or place SR-GNN-format files (``all_train_seq.txt``,
    ``test.txt``) in ``ROOT/raw/``.

    Args:
        root (str): folder with ``raw/`` (and ``processed/``, created).
        **kwargs: see :class:`SessionDataset`.
    """
    name = 'Diginetica'
    builtin = 'diginetica'
    raw_log = RAW_LOGS['diginetica'][1]

    def download(self) -> None:
        if prepare_raw_log(self.builtin, self.raw_dir) is not None:
            return
        raise FileNotFoundError(
            f"{self.name}: no data in {self.raw_dir}. DIGINETICA needs an account to "
            f"download: get {self.raw_log} from "
            f"https://competitions.codalab.org/competitions/11161 and put it in "
            f"{self.raw_dir} (or put the SR-GNN files {ALL_TRAIN_SEQ} and {TEST} "
            f"there)")


class Yoochoose(SessionDataset):
    r"""YOOCHOOSE (RecSys Challenge 2015) clicks with the SR-GNN protocol, the
    most recent ``1/fraction`` of the training sessions: ``fraction=64``
    (116,167 sessions, 369,859 training prefixes, 55,898 test prefixes, item
    ids up to 37,483) or ``fraction=4``.

    Get ``yoochoose-clicks.dat`` from the official challenge page
    https://recsys.acm.org/recsys15/challenge/ (the data set is distributed
    through it under the organisers' terms), then either run
    ``tagnn-pyg prepare yoochoose yoochoose-clicks.dat ROOT/raw --fraction 64``
    or place the file in ``ROOT/raw/`` (preprocessed on first use), or place
    SR-GNN-format files there.

    Args:
        root (str): folder with ``raw/`` (and ``processed/``, created).
        fraction (int, optional): ``64`` (default) or ``4``.
        **kwargs: see :class:`SessionDataset`.
    """
    name = 'Yoochoose'
    raw_log = RAW_LOGS['yoochoose1_64'][1]

    def __init__(self, root: str, fraction: int = 64, **kwargs: Any) -> None:
        if fraction not in (4, 64):
            raise ValueError(f"fraction must be 64 (1/64) or 4 (1/4), got {fraction!r}")
        self.fraction = fraction
        super().__init__(root, **kwargs)

    def download(self) -> None:
        if prepare_raw_log(f'yoochoose1_{self.fraction}', self.raw_dir) is not None:
            return
        raise FileNotFoundError(
            f"{self.name}: no data in {self.raw_dir}. Get {self.raw_log} from "
            f"https://recsys.acm.org/recsys15/challenge/ and put it in "
            f"{self.raw_dir} (or put the SR-GNN files {ALL_TRAIN_SEQ} and {TEST} "
            f"of the 1/{self.fraction} split there)")


class SyntheticSessions(SessionDataset):
    r"""The embedded synthetic data set of :func:`~tagnn_pyg.data.make_synthetic_sessions`
    (latent interests, Zipf popularity, item-to-item transitions), written in
    the SR-GNN format to ``root/raw/synthetic-<key>/`` on first use, where
    ``<key>`` identifies the generator options (so different options never share
    raw files or caches).

    Args:
        root (str): folder for ``raw/`` and ``processed/``.
        num_items (int, optional): number of items.
        num_train_sessions (int, optional): training sessions.
        num_test_sessions (int, optional): test sessions (before dropping
            unseen items).
        seed (int, optional): generator seed.
        generator_options (dict, optional): further keyword arguments of
            :func:`make_synthetic_sessions`.
        **kwargs: see :class:`SessionDataset` (``split``, ``valid``, ...).
    """
    name = 'SyntheticSessions'

    def __init__(self, root: str, num_items: int = 1000,
                 num_train_sessions: int = 10000, num_test_sessions: int = 2000,
                 seed: int = 0, generator_options: Optional[Dict[str, Any]] = None,
                 **kwargs: Any) -> None:
        self.generator_kwargs = dict(num_items=num_items,
                                     num_train_sessions=num_train_sessions,
                                     num_test_sessions=num_test_sessions, seed=seed,
                                     **(generator_options or {}))
        blob = json.dumps(self.generator_kwargs, sort_keys=True)
        self._gen_key = hashlib.sha256(blob.encode()).hexdigest()[:12]
        super().__init__(root, **kwargs)

    @property
    def raw_dir(self) -> str:
        return osp.join(self.root, 'raw', f'synthetic-{self._gen_key}')

    @property
    def processed_dir(self) -> str:
        return osp.join(super().processed_dir, f'synthetic-{self._gen_key}')

    def download(self) -> None:
        write_synthetic_folder(self.raw_dir, **self.generator_kwargs)
