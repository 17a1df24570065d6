r"""The non-neural baselines of the SR-GNN / TAGNN / TAGNN++ papers: POP, S-POP
and Item-KNN, with the same interface as the models.

Every baseline is fitted on the training data with ``.fit(train, num_items)``
and then called like a model: ``baseline(batch) -> Tensor[B, num_items]``, where
``batch`` is a PyG :class:`~torch_geometric.data.Batch` of
:class:`~tagnn_pyg.data.SessionData` (the clicks of session :math:`b` are
``batch.x[batch.seq][batch.seq_batch == b]``, its last click
``batch.x[batch.last][b]``). Column :math:`j` of the scores is item id
:math:`j`; column 0 (padding) is :math:`-\infty`. ``baseline(batch,
candidates)`` returns the scores of the given item ids only.

**What "training sessions" are.** ``train`` is either

* a list of whole sessions (``list[list[int]]``, e.g. the SR-GNN
  ``all_train_seq.txt``): every click of every session counts once (this is
  what the papers' baselines use); or
* a :class:`~tagnn_pyg.data.SessionSequences` (or any object with the flat
  ``items``, ``ptr`` and ``targets`` tensors): each sequence together with its
  target is taken as one session ``items[ptr[b]:ptr[b+1]] + [targets[b]]``.
  Given prefix-expanded training sequences (``train.txt``), a click is then
  counted once for every prefix it appears in or ends; pass the whole sessions
  to reproduce the papers.
"""
from __future__ import annotations

import itertools
import warnings
from typing import Any, Dict, Optional, Sequence, Tuple, Type, Union

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.preprocessing import normalize
from torch import Tensor

__all__ = ['POP', 'SPOP', 'ItemKNN', 'BASELINES']

TrainData = Union[Sequence[Sequence[int]], Any]


def _flatten_training(train: TrainData, num_items: int) -> Tuple[np.ndarray, np.ndarray, int]:
    r"""Flatten the training data into the clicks of its sessions.

    Returns:
        ``(items int64 [N], session int64 [N], num_sessions)``: click :math:`i`
        is item ``items[i]`` in session ``session[i]``.
    """
    if isinstance(num_items, bool) or not isinstance(num_items, (int, np.integer)) \
            or num_items < 2:
        raise ValueError(f"num_items must be an int >= 2 (item ids 1..num_items-1 "
                         f"plus the padding id 0), got {num_items!r}")
    if all(hasattr(train, a) for a in ('items', 'ptr', 'targets')):
        items = torch.as_tensor(train.items).cpu().numpy().astype(np.int64)
        ptr = torch.as_tensor(train.ptr).cpu().numpy().astype(np.int64)
        num_sessions = ptr.size - 1
        lengths = np.diff(ptr)
        session = np.repeat(np.arange(num_sessions), lengths)
        if train.targets is not None:
            targets = torch.as_tensor(train.targets).cpu().numpy().astype(np.int64)
            items = np.concatenate([items, targets])
            session = np.concatenate([session, np.arange(num_sessions)])
        what = 'sequence'
    else:
        if isinstance(train, (str, bytes)) or not hasattr(train, '__len__'):
            raise TypeError(f"train must be a list of sessions (list[list[int]]) or a "
                            f"SessionSequences, got {type(train).__name__}")
        for i, s in enumerate(train):
            if not isinstance(s, (list, tuple, np.ndarray, Tensor)):
                raise TypeError(f"training session {i} must be a list of item ids, "
                                f"got {type(s).__name__}: {s!r:.60}")
        lengths = np.fromiter(map(len, train), dtype=np.int64, count=len(train))
        items = np.fromiter(itertools.chain.from_iterable(
            (s.tolist() if isinstance(s, (np.ndarray, Tensor)) else s) for s in train),
            dtype=np.int64, count=int(lengths.sum()))
        num_sessions = len(train)
        session = np.repeat(np.arange(num_sessions), lengths)
        what = 'session'
    if num_sessions == 0 or items.size == 0:
        raise ValueError("train holds no session: baselines need training clicks")
    bad = (items < 1) | (items >= num_items)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"training {what} {int(session[i])} holds item id "
                         f"{int(items[i])}, outside 1..{num_items - 1} (num_items="
                         f"{num_items} counts ids including the padding id 0)")
    return items, session, int(num_sessions)


def _popularity(items: np.ndarray, num_items: int) -> Tensor:
    return torch.from_numpy(np.bincount(items, minlength=num_items).astype(np.float64))


class _Baseline(torch.nn.Module):
    r"""Shared plumbing: fitted state as buffers (``.to(device)`` moves it), the
    model call interface and input checks."""

    def __init__(self) -> None:
        super().__init__()
        self.num_items: int = 0

    @property
    def fitted(self) -> bool:
        return self.num_items > 0

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(f"{self.__class__.__name__} is not fitted: call "
                               f".fit(train, num_items) first")

    def _last_items(self, batch: Any) -> Tensor:
        last = batch.x[batch.last].view(-1)
        return self._check_ids(last, 'last click')

    def _check_ids(self, ids: Tensor, what: str) -> Tensor:
        if ids.device.type == 'cpu' and ids.numel():  # no sync needed on the CPU
            bad = (ids < 1) | (ids >= self.num_items)
            if bool(bad.any()):
                v = int(ids[bad][0])
                raise ValueError(f"{what} holds item id {v}, outside 1.."
                                 f"{self.num_items - 1} known to "
                                 f"{self.__class__.__name__} (fitted with num_items="
                                 f"{self.num_items})")
        return ids

    def scores(self, batch: Any) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, batch: Any, candidates: Optional[Tensor] = None) -> Tensor:
        r"""Scores of all items, or of the ``candidates`` item ids.

        Args:
            batch (Batch): a batch of :class:`~tagnn_pyg.data.SessionData`.
            candidates (LongTensor, optional): item ids to score per session.

        Shapes:
            - **output** :math:`(B, \text{num\_items})` (column 0 is
              :math:`-\infty`), or :math:`(B, C)` with candidates :math:`(B, C)`.
        """
        self._check_fitted()
        out = self.scores(batch)
        out[:, 0] = float('-inf')
        if candidates is not None:
            if candidates.dim() != 2 or candidates.size(0) != out.size(0):
                raise ValueError(f"candidates must be [batch={out.size(0)}, C] item "
                                 f"ids, got shape {tuple(candidates.shape)}")
            out = out.gather(1, self._check_ids(candidates, 'candidates'))
        return out

    def extra_repr(self) -> str:
        return f'num_items={self.num_items}' if self.fitted else 'unfitted'


class POP(_Baseline):
    r"""Global popularity: every session gets the same ranking, items by their
    number of clicks in the training sessions.

    .. math::
        z_{b,j} = \mathrm{pop}(j) = \sum_{s \in \mathcal{S}_{train}}
        \bigl|\{\, k : s_k = j \,\}\bigr|

    i.e. the count of item :math:`j` over all clicks of all training sessions
    (targets included: with whole sessions, every click counts once; see the
    module docstring for :class:`~tagnn_pyg.data.SessionSequences`). Items never
    clicked in training score 0.

    Shapes:
        - **input** a batch of :math:`B` sessions
        - **output** :math:`(B, \text{num\_items})`, float32 counts, column 0
          :math:`-\infty`
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer('popularity', torch.zeros(0))

    def fit(self, train: TrainData, num_items: int) -> 'POP':
        r"""Count the training clicks.

        Args:
            train (list of sessions or SessionSequences): the training data.
            num_items (int): number of score columns (item ids incl. padding 0).
        """
        items, _, _ = _flatten_training(train, num_items)
        self.popularity = _popularity(items, num_items).to(
            torch.float32).to(self.popularity.device)
        self.num_items = int(num_items)
        return self

    def scores(self, batch: Any) -> Tensor:
        num_sessions = batch.last.numel()
        return self.popularity.view(1, -1).repeat(num_sessions, 1)


class SPOP(_Baseline):
    r"""Session popularity (S-POP): the items of the current session first, by
    their number of clicks in it, ties among them and all other items by their
    global training popularity (as :class:`POP`).

    The score is an exact integer that encodes this lexicographic order:

    .. math::
        z_{b,j} = c_b(j) \cdot U + \rho(j)

    where :math:`c_b(j)` is the number of clicks on :math:`j` in session
    :math:`b`, :math:`\rho(j) \in \{0, \dots, U - 1\}` is the dense rank of
    :math:`\mathrm{pop}(j)` among the :math:`U` distinct popularity values
    (equal popularity, equal :math:`\rho`), so every item clicked in the
    session scores above every item that was not. Scores are float32 while
    they are exact integers (:math:`(L + 1) U < 2^{24}` with :math:`L` the
    clicks in the batch), float64 otherwise.

    Shapes:
        - **input** a batch of :math:`B` sessions
        - **output** :math:`(B, \text{num\_items})`, column 0 :math:`-\infty`
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer('popularity', torch.zeros(0))
        self.register_buffer('pop_rank', torch.zeros(0))
        self.num_levels: int = 0

    def fit(self, train: TrainData, num_items: int) -> 'SPOP':
        r"""Count the training clicks (see :class:`POP`).

        Args:
            train (list of sessions or SessionSequences): the training data.
            num_items (int): number of score columns (item ids incl. padding 0).
        """
        items, _, _ = _flatten_training(train, num_items)
        pop = _popularity(items, num_items)
        levels, rank = torch.unique(pop, sorted=True, return_inverse=True)
        device = self.popularity.device
        self.popularity = pop.to(torch.float32).to(device)
        self.pop_rank = rank.to(torch.float64).to(device)
        self.num_levels = int(levels.numel())
        self.num_items = int(num_items)
        return self

    def scores(self, batch: Any) -> Tensor:
        items = self._check_ids(batch.x[batch.seq], 'session')
        index = batch.seq_batch
        num_sessions = batch.last.numel()
        exact32 = (items.numel() + 1) * self.num_levels < 2**24
        dtype = torch.float32 if exact32 else torch.float64
        out = self.pop_rank.to(dtype).view(1, -1).repeat(num_sessions, 1)
        flat = index * self.num_items + items
        out.view(-1).index_add_(
            0, flat, torch.full(flat.shape, float(self.num_levels), dtype=dtype,
                                device=out.device))
        return out


class ItemKNN(_Baseline):
    r"""Item-based nearest neighbours (Sarwar et al., 2001) as in the papers:
    items similar to the session's **last** click, similarity being the cosine
    of the items' occurrence vectors over the training sessions.

    With :math:`X \in \{0, 1\}^{\text{num\_items} \times |\mathcal{S}|}`,
    :math:`X_{j,s} = 1` iff item :math:`j` occurs in training session :math:`s`
    (a repeat counts once),

    .. math::
        \mathrm{sim}(i, j) = \frac{X_i \cdot X_j}{\lVert X_i \rVert\,
        \lVert X_j \rVert} = \frac{|S_i \cap S_j|}{\sqrt{|S_i|\,|S_j|}},
        \qquad z_{b,j} = \mathrm{sim}(\text{last}_b, j),

    :math:`S_i` being the set of training sessions containing :math:`i`. The
    last item itself gets 0 (``exclude_self=True``, as in the GRU4Rec
    baseline code), and with ``k`` only the :math:`k` most similar items of each
    item keep their similarity. Items with no co-occurrence score 0 (and tie,
    counted against the model by :mod:`tagnn_pyg.metrics`).

    The similarity matrix is built with SciPy sparse products (rows
    L2-normalised with :func:`sklearn.preprocessing.normalize`) and kept as
    CSR buffers; scoring gathers the last items' rows, vectorised.

    Args:
        k (int, optional): keep only the :math:`k` nearest neighbours of each
            item (all by default).
        exclude_self (bool, optional): score the last item itself 0 rather than
            its self-similarity 1. (default: :obj:`True`)

    Shapes:
        - **input** a batch of :math:`B` sessions
        - **output** :math:`(B, \text{num\_items})`, float32, column 0 :math:`-\infty`
    """

    def __init__(self, k: Optional[int] = None, exclude_self: bool = True) -> None:
        super().__init__()
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer))
                              or k < 1):
            raise ValueError(f"k must be a positive number of neighbours or None, "
                             f"got {k!r}")
        self.k = None if k is None else int(k)
        self.exclude_self = bool(exclude_self)
        self.register_buffer('crow', torch.zeros(1, dtype=torch.long))
        self.register_buffer('col', torch.zeros(0, dtype=torch.long))
        self.register_buffer('value', torch.zeros(0))

    def fit(self, train: TrainData, num_items: int) -> 'ItemKNN':
        r"""Build the item-item cosine similarity matrix.

        Args:
            train (list of sessions or SessionSequences): the training data.
            num_items (int): number of score columns (item ids incl. padding 0).
        """
        items, session, num_sessions = _flatten_training(train, num_items)
        occ = sp.csr_matrix((np.ones(items.size, dtype=np.float64), (items, session)),
                            shape=(num_items, num_sessions))
        occ.data[:] = 1.0  # duplicates were summed: binary occurrence
        occ = normalize(occ, norm='l2', axis=1)
        sim = (occ @ occ.T).tocsr()
        if self.exclude_self:
            sim.setdiag(0.0)
        sim.eliminate_zeros()
        sim.sort_indices()
        if self.k is not None:
            sim = self._top_k(sim, self.k)
        device = self.value.device
        self.crow = torch.from_numpy(sim.indptr.astype(np.int64)).to(device)
        self.col = torch.from_numpy(sim.indices.astype(np.int64)).to(device)
        self.value = torch.from_numpy(sim.data.astype(np.float32)).to(device)
        self.num_items = int(num_items)
        return self

    @staticmethod
    def _top_k(sim: sp.csr_matrix, k: int) -> sp.csr_matrix:
        r"""Keep the ``k`` largest entries of every row (ties: lower item id)."""
        rows = np.repeat(np.arange(sim.shape[0]), np.diff(sim.indptr))
        order = np.lexsort((sim.indices, -sim.data, rows))
        start = sim.indptr[rows[order]]
        keep = order[(np.arange(order.size) - start) < k]
        out = sp.csr_matrix((sim.data[keep], (rows[keep], sim.indices[keep])),
                            shape=sim.shape)
        out.sort_indices()
        return out

    @property
    def similarity(self) -> Tensor:
        r"""The item-item similarity as a sparse CSR tensor
        :math:`(\text{num\_items}, \text{num\_items})`."""
        self._check_fitted()
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter('ignore', UserWarning)
            return torch.sparse_csr_tensor(self.crow, self.col, self.value,
                                           size=(self.num_items, self.num_items),
                                           check_invariants=True)

    def scores(self, batch: Any) -> Tensor:
        last = self._last_items(batch)
        num_sessions = last.numel()
        start = self.crow[last]
        count = self.crow[last + 1] - start
        rows = torch.repeat_interleave(torch.arange(num_sessions, device=last.device),
                                       count)
        first = (torch.cumsum(count, 0) - count)[rows]
        pos = torch.arange(rows.numel(), device=last.device) - first + start[rows]
        out = torch.zeros(num_sessions, self.num_items, dtype=self.value.dtype,
                          device=last.device)
        out[rows, self.col[pos]] = self.value[pos]
        return out

    def extra_repr(self) -> str:
        return (f'k={self.k}, exclude_self={self.exclude_self}, '
                + super().extra_repr())


BASELINES: Dict[str, Type[_Baseline]] = {'pop': POP, 'spop': SPOP, 'itemknn': ItemKNN}
