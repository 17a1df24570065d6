r"""Many session sequences in one flat CSR container: :class:`SessionSequences`.

A data set of :math:`B` sequences (session prefixes) with :math:`N` clicks in
total is stored as three tensors, in the compressed-sparse-row layout PyG uses
for ``ptr``:

* ``items`` ``[N]`` long: all clicks, sequence after sequence;
* ``ptr`` ``[B + 1]`` long: sequence ``b`` is ``items[ptr[b]:ptr[b + 1]]``;
* ``targets`` ``[B]`` long (or ``None``): the item that followed each sequence.

:func:`expand_prefixes` turns whole sessions into the SR-GNN training examples
(every prefix and the item that followed it) without any per-prefix Python.
"""
from __future__ import annotations

import itertools
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

IndexType = Union[int, slice, Tensor, np.ndarray, Sequence[int]]


def _flatten(seqs: Iterable[Sequence[int]], what: str) -> Tuple[np.ndarray, np.ndarray]:
    r"""Flatten a list of sequences into ``(items int64 [N], lengths int64 [B])``.

    Checks that every record is a list/tuple/array of integers (not a bare int or
    a string), naming the first bad record; does not check lengths or id ranges.
    """
    if isinstance(seqs, (str, bytes)):
        raise ValueError(f"{what} must be a list of sequences, got a string")
    seqs = seqs if isinstance(seqs, (list, tuple)) else list(seqs)
    all_lists = True
    for i, s in enumerate(seqs):  # B cheap type checks, not N
        if isinstance(s, (list, tuple)):
            continue
        all_lists = False
        if not isinstance(s, (np.ndarray, Tensor)) or s.ndim != 1:
            raise ValueError(f"{what} record {i} must be a list of item ids, "
                             f"got {type(s).__name__}: {s!r:.80}")
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    flat: Optional[np.ndarray]
    try:
        if all_lists:
            flat = np.array(list(itertools.chain.from_iterable(seqs)))
        else:
            flat = np.concatenate(
                [np.asarray(s.detach().cpu() if isinstance(s, Tensor) else s)
                 for s in seqs]) if seqs else np.zeros(0, dtype=np.int64)
    except (ValueError, TypeError, OverflowError):
        flat = None
    if flat is not None and flat.size == 0:
        flat = flat.astype(np.int64)
    if (flat is None or flat.dtype == np.bool_
            or not np.issubdtype(flat.dtype, np.integer) or flat.ndim != 1):
        # slow path only on bad input: name the record of the first bad value
        ptr = np.concatenate([[0], np.cumsum(lengths)])
        for j, v in enumerate(itertools.chain.from_iterable(seqs)):
            if isinstance(v, Tensor) and v.dim() == 0 and not v.is_floating_point() \
                    and v.dtype != torch.bool:
                v = int(v)
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                rec = _first_bad_record(ptr, j)
                raise ValueError(f"{what} record {rec} holds {v!r:.40} "
                                 f"({type(v).__name__}): item ids must be integers")
            if not -2**63 <= int(v) < 2**63:
                rec = _first_bad_record(ptr, j)
                raise ValueError(f"{what} record {rec} holds item id {v}, which does "
                                 f"not fit in int64")
        flat = np.array([int(v) for v in itertools.chain.from_iterable(seqs)],
                        dtype=np.int64)
    return flat.astype(np.int64, copy=False), lengths


def _first_bad_record(ptr: np.ndarray, flat_index: int) -> int:
    return int(np.searchsorted(ptr, flat_index, side='right') - 1)


class SessionSequences:
    r"""A list of item sequences (and optional next-item targets) as flat tensors.

    Sequence :math:`b` is ``items[ptr[b]:ptr[b+1]]`` and its target is
    ``targets[b]``. Item ids start at 1 (0 is the padding id), every sequence
    holds at least one click.

    Args:
        items (LongTensor): all clicks, ``[N]``.
        ptr (LongTensor): sequence boundaries, ``[B + 1]``, ``ptr[0] = 0``,
            non-decreasing, ``ptr[-1] = N``.
        targets (LongTensor, optional): next item of each sequence, ``[B]``.
        validate (bool, optional): check the invariants above (default
            ``True``; internal constructors that preserve them pass ``False``).

    Shapes:
        - **items** :math:`(N,)`, **ptr** :math:`(B + 1,)`,
          **targets** :math:`(B,)` or ``None``.

    Example:
        >>> s = SessionSequences.from_lists([[1, 2], [3]], targets=[3, 4])
        >>> s.items, s.ptr, s.targets
        (tensor([1, 2, 3]), tensor([0, 2, 3]), tensor([3, 4]))
        >>> s[1].to_lists()
        [[3]]
    """

    def __init__(self, items: Tensor, ptr: Tensor, targets: Optional[Tensor] = None,
                 validate: bool = True) -> None:
        self.items = torch.as_tensor(items)
        self.ptr = torch.as_tensor(ptr)
        self.targets = None if targets is None else torch.as_tensor(targets)
        if validate:
            self._validate()

    # ------------------------------------------------------------------ checks
    def _validate(self) -> None:
        items, ptr, targets = self.items, self.ptr, self.targets
        for name, t in (('items', items), ('ptr', ptr), ('targets', targets)):
            if t is None:
                continue
            if t.dtype != torch.long:
                raise ValueError(f"SessionSequences.{name} must be a LongTensor, "
                                 f"got dtype {t.dtype}")
            if t.dim() != 1:
                raise ValueError(f"SessionSequences.{name} must be 1-D, got shape "
                                 f"{tuple(t.shape)}")
        if ptr.numel() == 0 or int(ptr[0]) != 0:
            raise ValueError(f"SessionSequences.ptr must start with 0, got "
                             f"{ptr[:3].tolist()}")
        if int(ptr[-1]) != items.numel():
            raise ValueError(f"SessionSequences.ptr must end with the number of "
                             f"clicks {items.numel()}, got {int(ptr[-1])}")
        lengths = ptr[1:] - ptr[:-1]
        if lengths.numel() and bool((lengths < 1).any()):
            b = int(torch.nonzero(lengths < 1)[0])
            raise ValueError(f"sequence {b} is empty: every sequence needs at "
                             f"least one click")
        if items.numel() and bool((items < 1).any()):
            j = int(torch.nonzero(items < 1)[0])
            b = _first_bad_record(ptr.cpu().numpy(), j)
            raise ValueError(f"sequence {b} holds item id {int(items[j])}: item ids "
                             f"start at 1 (0 is the padding id)")
        if targets is not None:
            if targets.numel() != lengths.numel():
                raise ValueError(f"{targets.numel()} targets for {lengths.numel()} "
                                 f"sequences: labels must align with sequences")
            if targets.numel() and bool((targets < 1).any()):
                b = int(torch.nonzero(targets < 1)[0])
                raise ValueError(f"target of sequence {b} is {int(targets[b])}: item "
                                 f"ids start at 1 (0 is the padding id)")

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_lists(cls, seqs: Sequence[Sequence[int]],
                   targets: Optional[Sequence[int]] = None) -> 'SessionSequences':
        r"""Build from Python lists (as stored in the SR-GNN pickles).

        Args:
            seqs (list of list of int): the sequences, item ids >= 1.
            targets (list of int, optional): the next item of each sequence.

        Returns:
            SessionSequences

        Raises:
            ValueError: naming the first bad record (empty sequence, id < 1,
                non-integer id, or ``len(targets) != len(seqs)``).
        """
        flat, lengths = _flatten(seqs, 'sequence list')
        ptr = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
        np.cumsum(lengths, out=ptr[1:])
        tgt = None
        if targets is not None:
            if isinstance(targets, Tensor):
                tgt = targets.detach().cpu().long()
            else:
                arr = np.asarray(list(targets) if not isinstance(targets, np.ndarray)
                                 else targets)
                if arr.size and (arr.dtype == object or arr.dtype == np.bool_
                                 or not np.issubdtype(arr.dtype, np.integer)):
                    bad = next(i for i, v in enumerate(targets)
                               if isinstance(v, bool)
                               or not isinstance(v, (int, np.integer)))
                    raise ValueError(f"target {bad} is {targets[bad]!r}: item ids "
                                     f"must be integers")
                if arr.ndim != 1:
                    raise ValueError(f"targets must be a flat list of item ids, got "
                                     f"shape {arr.shape}")
                tgt = torch.from_numpy(arr.astype(np.int64))
        return cls(torch.from_numpy(flat), torch.from_numpy(ptr), tgt)

    # ----------------------------------------------------------------- access
    def __len__(self) -> int:
        return self.ptr.numel() - 1

    @property
    def num_sequences(self) -> int:
        """Number of sequences :math:`B`."""
        return len(self)

    @property
    def num_clicks(self) -> int:
        """Total number of clicks :math:`N`."""
        return self.items.numel()

    @property
    def lengths(self) -> Tensor:
        """Length of each sequence, ``[B]``."""
        return self.ptr[1:] - self.ptr[:-1]

    @property
    def max_length(self) -> int:
        """Length of the longest sequence (0 when empty)."""
        return int(self.lengths.max()) if len(self) else 0

    @property
    def num_items(self) -> int:
        """Embedding rows needed: max item id over items and targets, plus 1
        (for the padding id 0). ``1`` when empty."""
        m = int(self.items.max()) if self.items.numel() else 0
        if self.targets is not None and self.targets.numel():
            m = max(m, int(self.targets.max()))
        return m + 1

    @property
    def batch(self) -> Tensor:
        """Position-to-sequence index, ``[N]`` (PyG's ``batch`` vector)."""
        return torch.repeat_interleave(torch.arange(len(self), device=self.ptr.device),
                                       self.lengths)

    def _normalise_index(self, index: IndexType) -> Tensor:
        B = len(self)
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            i = int(index)
            if not -B <= i < B:
                raise IndexError(f"sequence index {i} out of range for {B} sequences")
            return torch.tensor([i % B])
        if isinstance(index, slice):
            return torch.arange(B)[index]
        idx = torch.as_tensor(np.asarray(index) if not isinstance(index, Tensor)
                              else index).cpu()
        if idx.dtype == torch.bool:
            if idx.numel() != B:
                raise IndexError(f"boolean mask of length {idx.numel()} for {B} "
                                 f"sequences")
            return torch.nonzero(idx).view(-1)
        if idx.dim() != 1 or idx.dtype.is_floating_point:
            raise IndexError(f"index must be an int, a slice, or a 1-D integer/bool "
                             f"tensor, got {idx.dtype} of shape {tuple(idx.shape)}")
        idx = idx.long()
        if idx.numel() and (int(idx.max()) >= B or int(idx.min()) < -B):
            raise IndexError(f"sequence index out of range for {B} sequences "
                             f"(got min {int(idx.min())}, max {int(idx.max())})")
        return torch.where(idx < 0, idx + B, idx)

    def __getitem__(self, index: IndexType) -> 'SessionSequences':
        r"""Select sequences (an int gives a container of one sequence).

        Args:
            index (int, slice, LongTensor, BoolTensor or sequence of int): which
                sequences, in the order given.

        Returns:
            SessionSequences
        """
        idx = self._normalise_index(index).to(self.ptr.device)
        if isinstance(index, slice) and (index.step is None or index.step == 1):
            # contiguous: plain views
            if idx.numel() == 0:
                return SessionSequences(self.items[:0], self.ptr[:1] * 0,
                                        None if self.targets is None else self.targets[:0],
                                        validate=False)
            a, b = int(idx[0]), int(idx[-1]) + 1
            start = self.ptr[a]
            return SessionSequences(self.items[self.ptr[a]:self.ptr[b]],
                                    self.ptr[a:b + 1] - start,
                                    None if self.targets is None else self.targets[a:b],
                                    validate=False)
        starts = self.ptr[idx]
        lengths = self.ptr[idx + 1] - starts
        ptr = torch.zeros(idx.numel() + 1, dtype=torch.long, device=self.ptr.device)
        torch.cumsum(lengths, 0, out=ptr[1:])
        # position j of the output reads items[starts[b] + (j - ptr[b])]
        offsets = torch.repeat_interleave(starts - ptr[:-1], lengths)
        gather = torch.arange(int(ptr[-1]), device=self.ptr.device) + offsets
        return SessionSequences(self.items[gather], ptr,
                                None if self.targets is None else self.targets[idx],
                                validate=False)

    def to_lists(self) -> List[List[int]]:
        """The sequences as Python lists (targets: ``self.targets.tolist()``).

        Returns:
            list of list of int
        """
        items = self.items.tolist()
        ptr = self.ptr.tolist()
        return [items[a:b] for a, b in zip(ptr[:-1], ptr[1:])]

    def to(self, device: Union[str, torch.device]) -> 'SessionSequences':
        """Move all tensors to ``device``."""
        return SessionSequences(self.items.to(device), self.ptr.to(device),
                                None if self.targets is None else self.targets.to(device),
                                validate=False)

    def equals(self, other: 'SessionSequences') -> bool:
        """Whether ``other`` holds the same sequences and targets."""
        if not isinstance(other, SessionSequences):
            return False
        if (self.targets is None) != (other.targets is None):
            return False
        return (torch.equal(self.ptr, other.ptr) and torch.equal(self.items, other.items)
                and (self.targets is None or torch.equal(self.targets, other.targets)))

    def __repr__(self) -> str:
        t = 'None' if self.targets is None else f'[{self.targets.numel()}]'
        return (f"{self.__class__.__name__}(num_sequences={len(self)}, "
                f"num_clicks={self.num_clicks}, targets={t})")


def expand_prefixes(sessions: Union[Sequence[Sequence[int]], SessionSequences]
                    ) -> SessionSequences:
    r"""SR-GNN prefix expansion: every proper prefix of every session with the
    item that followed it, in the released ``process_seqs`` order.

    The released code does, for each session in order,
    ``for i in range(1, len(seq)): tar = seq[-i]; prefix = seq[:-i]``; so the
    session ``[a, b, c, d]`` gives ``([a, b, c], d)``, ``([a, b], c)``,
    ``([a], b)``. Sessions of length 1 give nothing. Vectorised with numpy
    (no per-prefix Python).

    Args:
        sessions (list of list of int or SessionSequences): whole sessions in
            chronological order, item ids >= 1 (targets, if any, are ignored).

    Returns:
        SessionSequences: the prefixes with their ``targets``.

    Raises:
        ValueError: naming the first bad session (empty, id < 1, non-integer).
    """
    if isinstance(sessions, SessionSequences):
        flat = sessions.items.cpu().numpy().astype(np.int64, copy=False)
        lengths = sessions.lengths.cpu().numpy()
    else:
        try:
            flat, lengths = _flatten(sessions, 'session list')
        except ValueError as e:
            raise ValueError(str(e).replace('session list record', 'session')) from None
        if lengths.size and lengths.min() < 1:
            b = int(np.nonzero(lengths < 1)[0][0])
            raise ValueError(f"session {b} is empty: every session needs at least "
                             f"one click")
        if flat.size and flat.min() < 1:
            ptr0 = np.concatenate([[0], np.cumsum(lengths)])
            j = int(np.nonzero(flat < 1)[0][0])
            raise ValueError(f"session {_first_bad_record(ptr0, j)} holds item id "
                             f"{int(flat[j])}: item ids start at 1 (0 is the padding id)")
    starts = np.zeros(lengths.shape[0], dtype=np.int64)
    if lengths.size > 1:
        np.cumsum(lengths[:-1], out=starts[1:])
    # number of prefixes per session: L - 1; prefix lengths L-1, L-2, ..., 1
    n_pre = np.maximum(lengths - 1, 0)
    P = int(n_pre.sum())
    sess_of = np.repeat(np.arange(lengths.shape[0]), n_pre)        # [P]
    first = np.zeros(lengths.shape[0], dtype=np.int64)              # first prefix of each session
    if lengths.size > 1:
        np.cumsum(n_pre[:-1], out=first[1:])
    k = np.arange(P, dtype=np.int64) - first[sess_of]               # 0..L-2 within session
    pre_len = lengths[sess_of] - 1 - k                              # L-1-k = len(seq[:-(k+1)])
    pre_start = starts[sess_of]
    targets = flat[pre_start + pre_len]                             # seq[-(k+1)]
    ptr = np.zeros(P + 1, dtype=np.int64)
    np.cumsum(pre_len, out=ptr[1:])
    N = int(ptr[-1])
    gather = np.arange(N, dtype=np.int64) + np.repeat(pre_start - ptr[:-1], pre_len)
    items = flat[gather]
    return SessionSequences(torch.from_numpy(items), torch.from_numpy(ptr),
                            torch.from_numpy(np.ascontiguousarray(targets)), validate=False)


def item_counts(sessions: Union['SessionSequences', Sequence[Sequence[int]]],
                num_items: int) -> Tensor:
    r"""Clicks per internal item id (``[num_items]``, float), the popularity
    that the serving fallback (:class:`~tagnn_pyg.serve.Recommender`) ranks by
    and that the trainer stores in its checkpoints (``item_counts``).

    Args:
        sessions: a :class:`~tagnn_pyg.data.SessionSequences` (its prefixes'
            clicks and targets are counted) or a list of sessions of internal
            ids (whole sessions, e.g. ``LoadedData.train_sessions``).
        num_items (int): embedding rows, padding id 0 included.
    """
    if hasattr(sessions, 'items') and isinstance(getattr(sessions, 'items'), Tensor):
        flat = sessions.items
        if getattr(sessions, 'targets', None) is not None:
            flat = torch.cat([flat, sessions.targets])
    else:
        flat = torch.tensor([int(i) for s in sessions for i in s], dtype=torch.long)
    counts = torch.bincount(flat.long().cpu(), minlength=num_items).to(torch.float64)
    if counts.numel() > num_items:
        raise ValueError(f"the sessions hold item id {int(flat.max())}, beyond "
                         f"num_items - 1 = {num_items - 1}")
    counts[0] = 0
    return counts
