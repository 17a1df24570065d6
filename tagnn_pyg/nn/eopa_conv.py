r"""LESSR's edge-order preserving aggregation (EOPA) and its EOP multigraph."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.nn import GRU, Linear, PReLU
from torch.nn.utils.rnn import pack_padded_sequence

from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.norm import BatchNorm
from torch_geometric.utils import to_dense_batch

from tagnn_pyg.utils.static_dense import StaticDenseBatch, stable_argsort

__all__ = ['EOPAConv', 'eop_multigraph', 'static_eop_multigraph']


def check_positive_int(name: str, value: int) -> int:
    r"""``value`` as an int, or a :class:`ValueError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_dropout(name: str, p: float) -> float:
    r"""A dropout rate in :math:`[0, 1)`, as a float."""
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {p!r}")
    return p


def eop_multigraph(seq: Tensor, seq_batch: Tensor) -> Tensor:
    r"""The *edge-order preserving* (EOP) multigraph of LESSR (Chen & Wong,
    KDD 2020) from a batch of click sequences: one edge
    :math:`s_k \to s_{k+1}` per pair of consecutive clicks of a session,
    **multi-edges kept** (a transition clicked twice gives two edges), the
    columns in click order, as the released ``seq_to_eop_multigraph``.

    Vectorised, no per-session loop: ``seq`` holds the node index of every
    click (:class:`~tagnn_pyg.data.SessionData`'s ``seq``, batched), and
    consecutive positions belong to one session exactly when their
    ``seq_batch`` agree (PyG batching keeps each session's clicks contiguous
    and in order).

    Example:
        >>> seq = torch.tensor([1, 0, 1, 2, 0])   # items [5, 3, 5, 7, 3], nodes [3, 5, 7]
        >>> eop_multigraph(seq, torch.zeros(5, dtype=torch.long))
        tensor([[1, 0, 1, 2],
                [0, 1, 2, 0]])

    Shapes:
        - **input:** ``seq`` :math:`(L)`, ``seq_batch`` :math:`(L)`
        - **output:** ``edge_index`` :math:`(2, L - B)`, column :math:`k` the
          transition out of click :math:`k` (its order)
    """
    if seq.dim() != 1 or seq_batch.shape != seq.shape:
        raise ValueError(f"seq and seq_batch must be 1-D of one length, got "
                         f"{list(seq.shape)} and {list(seq_batch.shape)}")
    same = seq_batch[1:] == seq_batch[:-1]
    return torch.stack([seq[:-1][same], seq[1:][same]], dim=0)


def static_eop_multigraph(seq: Tensor, seq_batch: Tensor) -> Tuple[Tensor, Tensor]:
    r""":func:`eop_multigraph` with one column per click, so that no size depends
    on the data (what ``torch.export`` needs): column :math:`k` is
    :math:`s_k \to s_{(k+1) \bmod L}`, and ``edge_mask`` keeps the columns
    whose two clicks are consecutive in one session. The kept columns are the
    edges of :func:`eop_multigraph`, in the same order; pass ``edge_mask`` to
    :class:`EOPAConv`. Every click is the target of exactly one column, so a
    node has as many in-columns as clicks.

    Shapes:
        - **input:** ``seq`` :math:`(L)`, ``seq_batch`` :math:`(L)`
        - **output:** ``edge_index`` :math:`(2, L)`, ``edge_mask`` :math:`(L)`
    """
    if seq.dim() != 1 or seq_batch.shape != seq.shape:
        raise ValueError(f"seq and seq_batch must be 1-D of one length, got "
                         f"{list(seq.shape)} and {list(seq_batch.shape)}")
    steps = torch.arange(seq.numel(), device=seq.device)
    same = (seq_batch.roll(-1) == seq_batch) & (steps < seq.numel() - 1)
    return torch.stack([seq, seq.roll(-1)], dim=0), same


class EOPAConv(MessagePassing):
    r"""The edge-order preserving aggregation layer (EOPA) of LESSR, from the
    `"Handling Information Loss of Graph Neural Networks for Session-based
    Recommendation" <https://dl.acm.org/doi/10.1145/3394486.3403170>`_ paper
    (Chen & Wong, KDD 2020), as the authors' released ``EOPA`` module
    computes it, on an EOP multigraph (:func:`eop_multigraph`):

    .. math::
        \mathbf{h}_i &= \mathrm{BN}(\mathbf{x}_i)

        \mathbf{a}_i &= \mathrm{GRU}\big(\mathrm{drop}(\mathbf{h}_{j_1}),
            \dots, \mathrm{drop}(\mathbf{h}_{j_{k_i}})\big)

        \mathbf{x}'_i &= \mathrm{PReLU}\big(\mathbf{W}_{self}\,\mathbf{h}_i
            + \mathbf{W}_{neigh}\,\mathbf{a}_i\big)

    where :math:`(j_1 \to i), \dots, (j_{k_i} \to i)` are the in-edges of
    node :math:`i` in edge order (multi-edges repeat their source),
    :math:`\mathrm{GRU}` is a :class:`torch.nn.GRU` (hidden size
    ``in_channels``, zero initial state) and :math:`\mathbf{a}_i` its state
    after the last message; a node without in-edges gets
    :math:`\mathbf{a}_i = \mathbf{0}` (DGL's zero fill in the released code).
    :math:`\mathbf{W}_{self} \mathbf{h} + \mathbf{W}_{neigh} \mathbf{a}`
    is the paper's :math:`\mathbf{W}[\mathbf{h}; \mathbf{a}]` as two
    bias-free linear maps (``fc_self``, ``fc_neigh``). As released, batch norm
    (``BN``) acts on the layer's input, and dropout (``drop``) only on the
    GRU's inputs (``fc_self`` sees the normalised features undropped).

    **Order.** The messages of a node enter its GRU in the order of the
    edges: by ``edge_order`` when it is given, else by column of
    ``edge_index`` (the released DGL code relies on DGL keeping edge ids in
    the mailbox; :func:`eop_multigraph` writes the columns in click order).
    The edges are stable-sorted by (target, order), padded to
    ``[N, max in-degree, C]`` with :func:`~torch_geometric.utils.to_dense_batch`
    and run through the GRU as one
    :func:`~torch.nn.utils.rnn.pack_padded_sequence` (nodes without
    in-edges left out), so a node's state never sees padding.
    :class:`torch_geometric.nn.aggr.GRUAggregation` is not used: it reads
    the GRU output at the last *padded* slot, so a node with fewer in-edges
    than the maximum would take extra GRU steps over zeros, and a node
    without in-edges would get the GRU's bias response instead of zero.

    **Static length (export).** With :attr:`static_length` set to :math:`L`
    (:func:`tagnn_pyg.serve.export.export_model` sets it on the copy it
    exports), every node's messages are padded to exactly :math:`L` steps
    (:class:`~tagnn_pyg.utils.static_dense.StaticDenseBatch`; a node of a
    session of :math:`n \le L` clicks has at most :math:`n` in-edges), the
    GRU runs unpacked over them and :math:`\mathbf{a}_i` is read at the
    node's last real step (the messages are left-aligned, so it is the packed
    state), zeros for a node without messages: the same values, no size
    that depends on the data. A node with more than :math:`L` in-edges raises
    a :class:`ValueError` in eager mode and gets NaN in a traced graph.

    Args:
        in_channels (int): Size :math:`C_{in}` of each input feature (and of
            the GRU state).
        out_channels (int): Size :math:`C_{out}` of each output feature.
        batch_norm (bool, optional): Batch-normalise the input
            (:class:`torch_geometric.nn.norm.BatchNorm` with
            ``allow_single_element=True``: a training batch of one node
            uses the running statistics instead of failing).
            (default: :obj:`True`, as released)
        dropout (float, optional): Dropout on the GRU's inputs (the
            released ``feat_drop``). (default: :obj:`0.0`)
        act (bool, optional): Apply :class:`torch.nn.PReLU` with one slope
            per output channel (the released ``activation``; ``False``: no
            activation). (default: :obj:`True`)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing` (``aggr`` is the
            GRU, ``flow`` must be ``'source_to_target'``).

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, C_{in})`, edge
          indices :math:`(2, |\mathcal{E}|)` (edges :math:`j \to i`,
          multi-edges allowed), ``edge_order`` :math:`(|\mathcal{E}|)`
          *(optional)*
        - **output:** node features :math:`(|\mathcal{V}|, C_{out})`
    """

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True,
                 dropout: float = 0.0, act: bool = True, **kwargs) -> None:
        if kwargs.get('aggr') is not None:
            raise ValueError(f"EOPAConv aggregates with its GRU; aggr cannot be set, "
                             f"got {kwargs['aggr']!r}")
        if kwargs.get('flow', 'source_to_target') != 'source_to_target':
            raise ValueError(f"EOPAConv needs flow='source_to_target', got "
                             f"{kwargs['flow']!r}")
        kwargs['aggr'] = None
        super().__init__(**kwargs)
        self.in_channels = check_positive_int('in_channels', in_channels)
        self.out_channels = check_positive_int('out_channels', out_channels)
        self.dropout = check_dropout('dropout', dropout)
        self.batch_norm = BatchNorm(in_channels, allow_single_element=True) \
            if batch_norm else None
        self.gru = GRU(in_channels, in_channels, batch_first=True)
        self.lin_self = Linear(in_channels, out_channels, bias=False)    # fc_self
        self.lin_neigh = Linear(in_channels, out_channels, bias=False)   # fc_neigh
        self.act = PReLU(out_channels) if act else None
        #: Fixed message slots per node (export only; ``None``: packed messages).
        self.static_length: Optional[int] = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""PyTorch's own initialisation of every part, as released (batch
        norm :math:`\gamma = 1, \beta = 0` and fresh running statistics, GRU
        uniform in :math:`\pm 1/\sqrt{C_{in}}`, linear maps Kaiming-uniform,
        PReLU slopes 0.25)."""
        super().reset_parameters()
        if self.batch_norm is not None:
            self.batch_norm.reset_parameters()
        self.gru.reset_parameters()
        self.lin_self.reset_parameters()
        self.lin_neigh.reset_parameters()
        if self.act is not None:
            self.act.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_order: Optional[Tensor] = None,
                edge_mask: Optional[Tensor] = None) -> Tensor:
        r"""Aggregate each node's ordered in-neighbours with the GRU.

        Args:
            x (torch.Tensor): Node features :math:`(N, C_{in})`.
            edge_index (torch.Tensor): ``[2, E]`` edges :math:`j \to i`.
            edge_order (torch.Tensor, optional): ``[E]`` sort key of each edge
                among the in-edges of its target (default: the column order).
            edge_mask (torch.Tensor, optional): ``[E]`` bool, ``False`` for the
                edges to ignore (:func:`static_eop_multigraph`).
        """
        if x.dim() != 2 or x.size(-1) != self.in_channels:
            raise ValueError(f"x must have shape [num_nodes, {self.in_channels}], "
                             f"got {list(x.shape)}")
        if not isinstance(edge_index, Tensor) or edge_index.is_sparse \
                or edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError(f"edge_index must be a dense [2, num_edges] tensor (an "
                             f"ordered multigraph has no sparse form), got "
                             f"{getattr(edge_index, 'shape', type(edge_index).__name__)}")
        if edge_order is not None:
            if edge_order.shape != (edge_index.size(1), ):
                raise ValueError(f"edge_order must have shape [{edge_index.size(1)}] "
                                 f"(one key per edge), got {list(edge_order.shape)}")
        if edge_mask is not None and (edge_mask.dtype != torch.bool
                                      or edge_mask.shape != (edge_index.size(1), )):
            raise ValueError(f"edge_mask must be a bool tensor of shape "
                             f"[{edge_index.size(1)}] (one per edge), got "
                             f"{edge_mask.dtype} {list(edge_mask.shape)}")
        if edge_mask is not None and self.static_length is None:
            edge_index = edge_index[:, edge_mask]
            edge_order = edge_order[edge_mask] if edge_order is not None else None
            edge_mask = None
        if edge_order is not None:
            perm = torch.sort(edge_order, stable=True).indices
            edge_index = edge_index[:, perm]
            edge_mask = edge_mask[perm] if edge_mask is not None else None
        # stable sort by target: within a target the edges keep their order (and, on
        # the static path, the masked edges come after the kept ones)
        key = edge_index[1] * 2
        if edge_mask is not None:
            key = key + (~edge_mask).long()
        perm = stable_argsort(key)
        edge_index = edge_index[:, perm]
        edge_mask = edge_mask[perm] if edge_mask is not None else None

        h = x if self.batch_norm is None else self.batch_norm(x)
        m = torch.nn.functional.dropout(h, self.dropout, self.training)
        # propagate_type: (x: Tensor, edge_mask: Optional[Tensor])
        agg = self.propagate(edge_index, x=m, edge_mask=edge_mask,
                             size=(x.size(0), x.size(0)))
        out = self.lin_self(h) + self.lin_neigh(agg)
        return out if self.act is None else self.act(out)

    def aggregate(self, inputs: Tensor, index: Tensor, ptr: Optional[Tensor] = None,
                  dim_size: Optional[int] = None,
                  edge_mask: Optional[Tensor] = None) -> Tensor:
        r"""The GRU over each node's messages in order (``index`` sorted);
        the state after the last one, zeros for a node without messages."""
        if self.static_length is not None:
            return self._aggregate_static(inputs, index, dim_size, edge_mask)
        num_nodes = int(dim_size) if dim_size is not None else int(index.max()) + 1
        out = inputs.new_zeros(num_nodes, self.in_channels)
        if inputs.size(0) == 0:
            return out
        dense, mask = to_dense_batch(inputs, index, batch_size=num_nodes)
        lengths = mask.sum(dim=1)
        has = lengths > 0
        packed = pack_padded_sequence(dense[has], lengths[has].cpu(), batch_first=True,
                                      enforce_sorted=False)
        _, h_n = self.gru(packed)          # [1, nodes with messages, C_in], input order
        return out.index_put((has.nonzero().view(-1), ), h_n[0])

    def _aggregate_static(self, inputs: Tensor, index: Tensor, dim_size: Optional[int],
                          edge_mask: Optional[Tensor]) -> Tensor:
        r"""The GRU over exactly :attr:`static_length` message slots per node
        (its kept messages first, then the masked ones, which come after the
        state that is read and so change nothing); NaN for a node with more
        in-edges than slots (the eager check raises first)."""
        slots = StaticDenseBatch(index, dim_size, self.static_length, what='node/in-edges')
        states, _ = self.gru(slots.to_dense(inputs))         # [N, L, C_in]
        kept = slots.counts if edge_mask is None else \
            torch.zeros_like(slots.counts).scatter_add_(0, index, edge_mask.long())
        last = (kept - 1).clamp(min=0, max=self.static_length - 1)
        h_n = states.gather(1, last.view(-1, 1, 1).expand(-1, 1, states.size(-1)))[:, 0]
        h_n = torch.where((kept > 0).view(-1, 1), h_n, torch.zeros_like(h_n))
        # traced, a node with more in-edges than slots cannot raise: NaN, never wrong
        too_long = (slots.counts > self.static_length).view(-1, 1)
        return torch.where(too_long, torch.full_like(h_n, float('nan')), h_n)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, {self.out_channels}, '
                f'batch_norm={self.batch_norm is not None}, dropout={self.dropout}, '
                f'act={self.act is not None})')
