r"""What every baseline shares: the training data flattened into clicks, CSR row
gathering, and :class:`Baseline`, the fitted-state / model-call plumbing."""
from __future__ import annotations

import itertools
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from tagnn_pyg.utils.checks import require_fields
from tagnn_pyg.utils.device import host_reads_are_free

__all__ = ['Baseline', 'TrainData', 'flatten_training', 'expand_rows', 'click_counts']

TrainData = Union[Sequence[Sequence[int]], Any]


def flatten_training(train: TrainData, num_items: int) -> Tuple[np.ndarray, np.ndarray, int]:
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
        for name in ('items', 'targets'):
            value = getattr(train, name)
            if value is not None and torch.as_tensor(value).is_floating_point():
                raise TypeError(f"train.{name} must hold integer item ids, got dtype "
                                f"{torch.as_tensor(value).dtype}")
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
        flat = list(itertools.chain.from_iterable(
            (s.tolist() if isinstance(s, (np.ndarray, Tensor)) else s) for s in train))
        at = next((j for j, v in enumerate(flat) if isinstance(v, bool)
                   or not isinstance(v, (int, np.integer))), None)
        if at is not None:
            odd = flat[at]
            i = int(np.searchsorted(np.cumsum(lengths), at, side='right'))
            raise TypeError(f"training session {i} holds {odd!r} "
                            f"({type(odd).__name__}); item ids must be ints")
        items = np.asarray(flat, dtype=np.int64)
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


def expand_rows(ptr: Tensor, rows: Tensor) -> Tuple[Tensor, Tensor]:
    r"""The entries of the given rows of a CSR structure, concatenated.

    Args:
        ptr (LongTensor): row pointers :math:`(R + 1)`.
        rows (LongTensor): row ids to gather :math:`(Q)` (repeats allowed).

    Returns:
        ``(owner, index)``, both :math:`(\sum_q \mathrm{len}(\text{rows}_q))`:
        entry ``index[e]`` of the CSR value/column arrays belongs to query
        ``owner[e]``; queries in order, each row's entries in storage order.
    """
    start = ptr[rows]
    count = ptr[rows + 1] - start
    owner = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device),
                                    count)
    first = (torch.cumsum(count, 0) - count)[owner]
    index = torch.arange(owner.numel(), device=rows.device) - first + start[owner]
    return owner, index


def click_counts(items: np.ndarray, num_items: int) -> Tensor:
    return torch.from_numpy(np.bincount(items, minlength=num_items).astype(np.float64))


class Baseline(torch.nn.Module):
    r"""The base class of every baseline: fitted state as buffers (so
    ``.to(device)`` moves it), the model call ``baseline(batch, candidates=None)``
    and the input checks.

    A subclass implements ``fit(train, num_items) -> self`` (setting
    ``self.num_items``) and ``scores(batch) -> Tensor[B, num_items]``;
    :meth:`forward` masks the padding column and gathers the candidates."""

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
        r"""``[B]`` each session's last click, checked."""
        require_fields(batch, 'x', 'last')
        last = batch.x[batch.last].view(-1)
        return self._check_ids(last, 'last click')

    def _clicks(self, batch: Any) -> Tuple[Tensor, Tensor, int]:
        r"""``(items [L], session [L], B)``: every click of the batch, checked."""
        require_fields(batch, 'x', 'seq', 'seq_batch', 'last')
        items = self._check_ids(batch.x[batch.seq], 'session')
        return items, batch.seq_batch, batch.last.numel()

    def _check_ids(self, ids: Tensor, what: str) -> Tensor:
        if host_reads_are_free(ids.device) and ids.numel():
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
            if not isinstance(candidates, Tensor) or candidates.is_floating_point() \
                    or candidates.dtype == torch.bool:
                what = (f'dtype {candidates.dtype}' if isinstance(candidates, Tensor)
                        else type(candidates).__name__)
                raise TypeError(f"candidates must be a LongTensor of item ids, got "
                                f"{what}")
            if candidates.dim() != 2 or candidates.size(0) != out.size(0):
                raise ValueError(f"candidates must be [batch={out.size(0)}, C] item "
                                 f"ids, got shape {tuple(candidates.shape)}")
            out = out.gather(1, self._check_ids(candidates, 'candidates'))
        return out

    def extra_repr(self) -> str:
        return f'num_items={self.num_items}' if self.fitted else 'unfitted'

