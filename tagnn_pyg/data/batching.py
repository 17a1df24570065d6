r"""Vectorised construction of session-graph batches.

:func:`build_session_batch` turns many session prefixes, stored flat (CSR:
``items`` and ``ptr``), into one :class:`~torch_geometric.data.Batch` of
:class:`~tagnn_pyg.data.SessionData` graphs with a fixed number of tensor
operations, whatever the number of sessions: no Python loop over sessions, and
it runs wherever the tensors live (CPU or CUDA). The result equals, field by
field, ``Batch.from_data_list([SessionData.from_sequence(s) for s in ...])``
and supports the same PyG batch API (``num_graphs``, ``batch``, ``ptr``,
``batch[i]``, ``to_data_list()``).

:class:`SessionLoader` iterates such batches over a
:class:`~tagnn_pyg.data.SessionSequences` container, with reproducible
shuffling, optional device placement of the flat storage and an optional
background thread that builds the next batches while the current one is used.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Dict, Iterator, Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data import Batch

from .sequences import SessionSequences
from .session_data import EdgeWeighting, SessionData, check_edge_weighting


DeviceLike = Union[str, torch.device, None]

__all__ = ['build_session_batch', 'SessionLoader']


def _check_flat(items: Tensor, ptr: Tensor, targets: Optional[Tensor]) -> None:
    """Shape/dtype checks that need no device synchronisation."""
    if not isinstance(items, Tensor) or not isinstance(ptr, Tensor):
        raise TypeError(f"items and ptr must be tensors, got "
                        f"{type(items).__name__} and {type(ptr).__name__}")
    if items.dim() != 1:
        raise ValueError(f"items must be 1-D [N], got shape {tuple(items.shape)}")
    if ptr.dim() != 1 or ptr.numel() < 2:
        raise ValueError(f"ptr must be 1-D [B+1] with B >= 1 sessions, got shape "
                         f"{tuple(ptr.shape)}")
    for name, t in (('items', items), ('ptr', ptr), ('targets', targets)):
        if t is not None and (t.is_floating_point() or t.is_complex()
                              or t.dtype == torch.bool):
            raise ValueError(f"{name} must be an integer tensor, got dtype {t.dtype}")
    if targets is not None and (targets.dim() != 1
                                or targets.numel() != ptr.numel() - 1):
        raise ValueError(f"targets must have shape [B] = [{ptr.numel() - 1}] "
                         f"(one per session), got {tuple(targets.shape)}")


def _check_values(items: Tensor, ptr: Tensor, targets: Optional[Tensor]) -> None:
    """Value checks (one host synchronisation); errors name the bad value."""
    lengths = ptr[1:] - ptr[:-1]
    flags = torch.stack([
        ptr[0] != 0,
        ptr[-1] != items.numel(),
        (lengths < 1).any(),
        (items < 1).any() if items.numel() else torch.zeros((), dtype=torch.bool,
                                                            device=items.device),
        (targets < 1).any() if targets is not None else torch.zeros(
            (), dtype=torch.bool, device=items.device),
    ]).tolist()
    if flags[0] or flags[1]:
        raise ValueError(f"ptr must start at 0 and end at items.numel() = "
                         f"{items.numel()}, got ptr[0] = {int(ptr[0])}, "
                         f"ptr[-1] = {int(ptr[-1])}")
    if flags[2]:
        i = int(torch.nonzero(lengths < 1)[0])
        raise ValueError(f"session {i} has {int(lengths[i])} clicks "
                         f"(ptr[{i}] = {int(ptr[i])}, ptr[{i + 1}] = {int(ptr[i + 1])}): "
                         f"every session needs at least one click")
    if flags[3]:
        j = int(torch.nonzero(items < 1)[0])
        s = int(torch.searchsorted(ptr, torch.tensor(j, device=ptr.device),
                                   right=True)) - 1
        raise ValueError(f"session {s} holds item id {int(items[j])} (flat position "
                         f"{j}): item ids start at 1 (0 is the padding id)")
    if flags[4]:
        assert targets is not None
        i = int(torch.nonzero(targets < 1)[0])
        raise ValueError(f"target {i} is item id {int(targets[i])}: target item "
                         f"ids must be >= 1 (0 is padding)")


_BATCH_CLS: Optional[type] = None


def _new_batch(fields: Dict[str, Tensor], batch: Tensor, ptr: Tensor) -> Batch:
    """``Batch(_base_cls=SessionData, **fields)`` without the metaclass's
    per-call signature inspection (the class is resolved once)."""
    global _BATCH_CLS
    if _BATCH_CLS is None:
        _BATCH_CLS = type(Batch(_base_cls=SessionData))
    return type.__call__(_BATCH_CLS, **fields, batch=batch, ptr=ptr)


def build_session_batch(
    items: Tensor,
    ptr: Tensor,
    targets: Optional[Tensor] = None,
    weighting: EdgeWeighting = 'binary',
    device: DeviceLike = None,
    validate: bool = True,
) -> Batch:
    r"""Build the batched session graphs of ``B`` session prefixes at once.

    For session :math:`b` with clicks :math:`s_{b,1}, \dots, s_{b,L_b}` the
    nodes are its distinct items in increasing id order, one directed edge per
    distinct transition :math:`s_{b,k} \to s_{b,k+1}`, with weights as in
    :class:`~tagnn_pyg.data.SessionData`:

    .. math::
        w^{in}_{u \to v} = \frac{c_{u \to v}}{\sum_{u'} c_{u' \to v}}, \qquad
        w^{out}_{u \to v} = \frac{c_{u \to v}}{\sum_{v'} c_{u \to v'}},

    with :math:`c_{u \to v} = 1` (``'binary'``, released code) or the number of
    occurrences of the transition (``'count'``, SR-GNN paper).

    Everything is computed for all sessions together: nodes are the unique
    ``(session, item)`` keys (sorted, so per session by item id), ``seq`` is
    the inverse of that ``unique``, edges are the unique
    ``(source node, target node)`` keys of consecutive clicks of the same
    session, degrees and counts come from ``scatter_add``/``bincount``.
    The cost is a few sorts of ``N`` keys; there is no Python loop over
    sessions. ``torch.unique`` synchronises with the device once per call.

    The returned batch equals ``Batch.from_data_list([SessionData.from_sequence(
    items[ptr[b]:ptr[b+1]], targets[b], weighting) for b in range(B)])`` field by
    field (``x``, ``edge_index``, ``edge_weight_in``, ``edge_weight_out``,
    ``seq``, ``seq_batch``, ``last``, ``y``, ``batch``, ``ptr``) and carries the
    same slicing metadata, so ``batch.num_graphs``, ``batch[i]``,
    ``batch.index_select(...)`` and ``batch.to_data_list()`` work as usual.

    Args:
        items (LongTensor): the clicks of all sessions, concatenated.
        ptr (LongTensor): session boundaries; session ``b`` is
            ``items[ptr[b]:ptr[b+1]]``. ``ptr[0] = 0``, ``ptr[-1] = N``.
        targets (LongTensor, optional): the next item of each session (``y``).
        weighting (str, optional): ``'binary'`` (default) or ``'count'``.
        device (torch.device or str, optional): where to build the batch
            (the inputs are moved there first; default: where ``items`` is).
        validate (bool, optional): check values (non-empty sessions, ids >= 1,
            consistent ``ptr``); costs one host synchronisation.
            (default: :obj:`True`)

    Shapes:
        - **input:** items :math:`(N)`, ptr :math:`(B + 1)`, targets :math:`(B)`
        - **output:** a batch with ``x`` :math:`(V)`, ``edge_index``
          :math:`(2, E)`, ``edge_weight_in``/``edge_weight_out`` :math:`(E)`,
          ``seq``/``seq_batch`` :math:`(N)`, ``last``/``y`` :math:`(B)`,
          ``batch`` :math:`(V)`, ``ptr`` :math:`(B + 1)`, where :math:`V` is the
          total number of distinct (session, item) pairs.

    Example:
        >>> items = torch.tensor([1, 2, 1, 3, 5, 5, 5])
        >>> ptr = torch.tensor([0, 4, 7])
        >>> b = build_session_batch(items, ptr, targets=torch.tensor([4, 6]))
        >>> b.x, b.seq, b.last, b.edge_index
        (tensor([1, 2, 3, 5]), tensor([0, 1, 0, 2, 3, 3, 3]), tensor([2, 3]),
         tensor([[0, 0, 1, 3], [1, 2, 0, 3]]))
    """
    check_edge_weighting(weighting)
    _check_flat(items, ptr, targets)
    items, ptr, targets = _to_device(items, ptr, targets, device)
    if validate:
        _check_values(items, ptr, targets)
    seq_batch = session_index(ptr, items.numel())
    x, node_batch, seq = _session_nodes(items, seq_batch)
    row, col, w_in, w_out = _session_edges(seq, seq_batch, x.numel(), weighting)
    fields: Dict[str, Tensor] = dict(
        x=x,
        edge_index=torch.stack([row, col]),
        edge_weight_in=w_in,
        edge_weight_out=w_out,
        seq=seq,
        seq_batch=seq_batch,
        last=seq[ptr[1:] - 1],
    )
    if targets is not None:
        fields['y'] = targets.long()
    return _collated(fields, node_batch, ptr)


def _to_device(items: Tensor, ptr: Tensor, targets: Optional[Tensor],
               device: DeviceLike) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """``items``, ``ptr`` (long) and ``targets`` on ``device`` (default: ``items``')."""
    dev = torch.device(device) if device is not None else items.device
    items = items.to(dev, non_blocking=True).long()
    ptr = ptr.to(dev, non_blocking=True).long()
    if targets is not None:
        targets = targets.to(dev, non_blocking=True)
    return items, ptr, targets


def session_index(ptr: Tensor, num_clicks: int) -> Tensor:
    r"""The session of each click, from the session boundaries ``ptr``
    (non-empty sessions): :func:`torch_geometric.index.ptr2index` computed by
    marking session starts and a cumulative sum, because ``repeat_interleave``'s
    CPU kernel opens a parallel region even for a few hundred elements and
    stalls on a busy machine.

    Shapes:
        - **input:** ptr :math:`(B + 1)`
        - **output:** :math:`(N)`
    """
    starts = torch.zeros(num_clicks, dtype=torch.long, device=ptr.device)
    starts[ptr[1:-1]] = 1
    return torch.cumsum(starts, 0)


def _session_nodes(items: Tensor, seq_batch: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Nodes = unique (session, item) keys, sorted by session then item id:
    (``x``, session of each node, node of each click)."""
    width = items.max() + 1
    node_key, seq = torch.unique(seq_batch * width + items, sorted=True,
                                 return_inverse=True)
    return node_key % width, torch.div(node_key, width, rounding_mode='floor'), seq


def _session_edges(seq: Tensor, seq_batch: Tensor, num_nodes: int,
                   weighting: EdgeWeighting) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Edges = unique (source node, target node) keys of consecutive clicks in the
    same session (global node ids already sort by session, then by local id):
    (``row``, ``col``, in-weights, out-weights)."""
    same = seq_batch[1:] == seq_batch[:-1]
    pair = seq[:-1][same] * num_nodes + seq[1:][same]
    edge_key, counts = torch.unique(pair, sorted=True, return_counts=True)
    row = torch.div(edge_key, num_nodes, rounding_mode='floor')
    col = edge_key - row * num_nodes
    if weighting == 'binary':
        counts = torch.ones_like(counts)
    into = torch.zeros(num_nodes, dtype=torch.long, device=seq.device)
    into.scatter_add_(0, col, counts)
    out_of = torch.zeros(num_nodes, dtype=torch.long, device=seq.device)
    out_of.scatter_add_(0, row, counts)
    # Integer counts: float32 division is exactly the rounded float64 ratio
    # that SessionData computes, so the weights are bit-identical.
    cnt = counts.to(torch.float32)
    return row, col, cnt / into[col].to(torch.float32), cnt / out_of[row].to(torch.float32)


def _collated(fields: Dict[str, Tensor], node_batch: Tensor, click_ptr: Tensor) -> Batch:
    """A :class:`Batch` of ``fields`` with the slicing and increment metadata that
    ``Batch.from_data_list`` would give it (so ``batch[i]``, ``index_select`` and
    ``to_data_list`` work)."""
    device = node_batch.device
    num_graphs = click_ptr.numel() - 1
    row = fields['edge_index'][0]
    zero = torch.zeros(1, dtype=torch.long, device=device)
    node_ptr = torch.cat([zero, torch.cumsum(
        torch.bincount(node_batch, minlength=num_graphs), 0)])
    edge_ptr = torch.cat([zero, torch.cumsum(
        torch.bincount(node_batch[row], minlength=num_graphs), 0)])
    graph_ptr = torch.arange(num_graphs + 1, device=device)
    node_inc = node_ptr[:-1]
    zeros_b = torch.zeros(num_graphs, dtype=torch.long, device=device)
    slice_dict: Dict[str, Tensor] = dict(
        x=node_ptr, edge_index=edge_ptr, edge_weight_in=edge_ptr,
        edge_weight_out=edge_ptr, seq=click_ptr, seq_batch=click_ptr,
        last=graph_ptr,
    )
    inc_dict: Dict[str, Tensor] = dict(
        x=zeros_b, edge_index=node_inc, edge_weight_in=zeros_b,
        edge_weight_out=zeros_b, seq=node_inc, seq_batch=graph_ptr[:-1],
        last=node_inc,
    )
    if 'y' in fields:
        slice_dict['y'] = graph_ptr
        inc_dict['y'] = zeros_b
    batch = _new_batch(fields, node_batch, node_ptr)
    batch._num_graphs = num_graphs
    batch._slice_dict = slice_dict
    batch._inc_dict = inc_dict
    return batch


class SessionLoader:
    r"""Iterate :func:`build_session_batch` batches over a flat sequence storage.

    Each epoch takes the sessions in order (or in a random permutation when
    ``shuffle=True``), gathers all of them into one permuted flat storage with
    a single vectorised gather (``sequences[perm]``), and then builds each
    batch of ``batch_size`` sessions from a contiguous slice of it. With
    ``device='cuda'`` the flat storage is moved to the GPU once and every
    batch is built there.

    Shuffling is reproducible: the permutation of epoch ``e`` is drawn from a
    generator seeded with ``seed + e`` (``seed`` defaults to one draw from
    PyTorch's global RNG at construction, so ``torch.manual_seed`` fixes it).
    The epoch advances by one after each complete pass; :meth:`set_epoch` sets
    it explicitly, so a resumed run sees the same order. If ``generator`` is
    given instead, permutations are drawn from it in sequence (its state then
    decides the order).

    Args:
        sequences (SessionSequences): the sessions and (optionally) targets.
        batch_size (int): sessions per batch.
        shuffle (bool, optional): random order each epoch. (default: :obj:`False`)
        drop_last (bool, optional): drop the last incomplete batch.
            (default: :obj:`False`)
        weighting (str, optional): ``'binary'`` or ``'count'`` edge weights.
        device (torch.device or str, optional): where batches are built and
            returned (default: CPU / where the storage lives).
        generator (torch.Generator, optional): source of the permutations
            (CPU generator).
        pin_memory (bool, optional): pin the batches built on the CPU (only
            useful with a CUDA device when ``device`` is the CPU and the
            batches are later copied with ``non_blocking=True``).
        prefetch (int, optional): build up to this many batches ahead in a
            background thread (``0``: build in the caller's thread).
        seed (int, optional): base seed of the per-epoch permutations.
        shard (tuple, optional): ``(rank, world_size)``: yield only this
            process's part of every batch, for distributed training.
            ``batch_size`` then stays the *global* batch: the order and the
            batches are those of one process, and each batch of ``B`` sessions
            is cut into ``world_size`` contiguous parts whose sizes differ by at
            most one (:func:`tagnn_pyg.distributed.shard_bounds`); rank ``r``
            gets part ``r``, or ``None`` where its part is empty (a last batch
            smaller than ``world_size``). :meth:`global_batch_size` gives ``B``.
    """

    def __init__(
        self,
        sequences: SessionSequences,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        weighting: EdgeWeighting = 'binary',
        device: DeviceLike = None,
        generator: Optional[torch.Generator] = None,
        pin_memory: bool = False,
        prefetch: int = 0,
        seed: Optional[int] = None,
        shard: Optional[Tuple[int, int]] = None,
    ) -> None:
        if shard is not None:
            from ..distributed import shard_bounds
            rank, world = shard
            shard_bounds(0, rank, world)  # raises for a bad (rank, world_size)
            shard = (int(rank), int(world))
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch must be an int >= 0, got {prefetch!r}")
        check_edge_weighting(weighting)
        if seed is not None and generator is not None:
            raise ValueError("give either seed or generator, not both")
        if not isinstance(sequences, SessionSequences):
            raise TypeError(f"sequences must be a SessionSequences, got "
                            f"{type(sequences).__name__}")
        if len(sequences) == 0:
            raise ValueError("sequences is empty: nothing to load")
        items, ptr, targets = sequences.items, sequences.ptr, sequences.targets
        _check_flat(items, ptr, targets)
        _check_values(items.long(), ptr.long(), targets)
        self.sequences = sequences
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.weighting = weighting
        self.pin_memory = pin_memory
        self.prefetch = prefetch
        self.generator = generator
        self.shard = shard
        self.device = torch.device(device) if device is not None else items.device
        if seed is None and generator is None:
            seed = int(torch.empty((), dtype=torch.int64).random_())
        self.seed = seed
        self.epoch = 0
        self._start = 0   # batches of the next iteration to skip (set_epoch)
        # The flat storage lives on the target device (moved once); a copy of
        # the pointer stays on the CPU so that slicing batches needs no syncs.
        self._storage = sequences.to(self.device)
        self._ptr_cpu = ptr.long().cpu()

    @property
    def num_sessions(self) -> int:
        return self._ptr_cpu.numel() - 1

    def __len__(self) -> int:
        n, b = self.num_sessions, self.batch_size
        return n // b if self.drop_last else (n + b - 1) // b

    def global_batch_size(self, k: int) -> int:
        """Number of sessions in batch ``k`` of an epoch, over all shards."""
        return min((k + 1) * self.batch_size, self.num_sessions) - k * self.batch_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Set the epoch whose permutation the next iteration uses, and skip its
        first ``start`` batches in that iteration (to resume an epoch in the
        middle: the remaining batches are exactly those of an uninterrupted
        iteration)."""
        if isinstance(start, bool) or not isinstance(start, int) \
                or not 0 <= start <= len(self):
            raise ValueError(f"start must be a batch index in [0, {len(self)}], "
                             f"got {start!r}")
        self.epoch = int(epoch)
        self._start = start

    def permutation(self, epoch: Optional[int] = None) -> Tensor:
        """The session order of ``epoch`` (default: the current epoch)."""
        n = self.num_sessions
        if not self.shuffle:
            return torch.arange(n)
        if self.seed is not None:
            e = self.epoch if epoch is None else int(epoch)
            gen = torch.Generator().manual_seed(self.seed + e)
        else:
            gen = self.generator
        return torch.randperm(n, generator=gen)

    def _epoch_storage(self) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        store = self._storage
        if not self.shuffle:
            return store.items, self._ptr_cpu, store.targets
        store = store[self.permutation()]
        return store.items, store.ptr.cpu(), store.targets

    def _batches(self) -> Iterator[Optional[Batch]]:
        items, ptr_cpu, targets = self._epoch_storage()
        ptr_list = ptr_cpu.tolist()
        on_device = items.device
        start, self._start = self._start, 0
        from ..distributed import shard_bounds
        for k in range(start, len(self)):
            lo, hi = k * self.batch_size, min((k + 1) * self.batch_size,
                                              self.num_sessions)
            if self.shard is not None:
                part = shard_bounds(hi - lo, *self.shard)
                lo, hi = lo + part[0], lo + part[1]
                if lo == hi:
                    yield None
                    continue
            a, b = ptr_list[lo], ptr_list[hi]
            bptr = ptr_cpu[lo:hi + 1] - a
            batch = build_session_batch(
                items[a:b], bptr.to(on_device, non_blocking=True),
                targets[lo:hi] if targets is not None else None,
                weighting=self.weighting, validate=False)
            if self.pin_memory and on_device.type == 'cpu' \
                    and torch.cuda.is_available():
                batch = batch.pin_memory()
            yield batch

    def __iter__(self) -> Iterator[Optional[Batch]]:
        it = self._batches() if self.prefetch == 0 else _threaded(self._batches(),
                                                                 self.prefetch)
        for batch in it:
            yield batch
        if self.seed is not None:
            self.epoch += 1

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_sessions} sessions, '
                f'batch_size={self.batch_size}, shuffle={self.shuffle}, '
                f'device={self.device})')


_END = object()


def _threaded(it: Iterator[Any], size: int) -> Iterator[Any]:
    """Run iterator ``it`` in a daemon thread, ``size`` items ahead."""
    q: 'queue.Queue[Any]' = queue.Queue(maxsize=size)
    stop = threading.Event()

    def put(obj: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(obj, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for obj in it:
                if not put(obj):
                    return
            put(_END)
        except BaseException as exc:  # forwarded to the consumer
            put(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            obj = q.get()
            if obj is _END:
                return
            if isinstance(obj, BaseException):
                raise obj
            yield obj
    finally:
        stop.set()
