r"""The gated session-graph convolution of SR-GNN / TAGNN / TAGNN++ (as released)."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.nn import GRUCell, Linear, Parameter

from torch_geometric.nn.conv import MessagePassing
from torch_geometric.typing import SparseTensor
from torch_geometric.utils import is_torch_sparse_tensor, scatter

__all__ = ['GatedSessionConv', 'sparse_to_weighted_edges']


def _is_sparse(adj: object) -> bool:
    return isinstance(adj, SparseTensor) or (isinstance(adj, Tensor) and
                                             is_torch_sparse_tensor(adj))


def sparse_to_weighted_edges(adj: object,
                             num_nodes: int) -> Tuple[Tensor, Tensor, Tensor]:
    r"""Turn a sparse transition matrix :math:`\mathbf{A}` (``A[u, v]`` = 1 or
    the number of transitions :math:`u \to v`) into ``(edge_index,
    edge_weight_in, edge_weight_out)``: the in-weights are the column
    normalisation :math:`A_{uv} / \sum_{u'} A_{u'v}`, the out-weights the row
    normalisation :math:`A_{uv} / \sum_{v'} A_{uv'}`.

    Note that :math:`\mathbf{A}` is the transition matrix itself (row = source),
    not PyG's transposed ``adj_t`` convention.

    Args:
        adj (torch.sparse.Tensor or torch_sparse.SparseTensor): ``[N, N]``.
        num_nodes (int): :math:`N`, the number of rows of the node features.
    """
    if isinstance(adj, SparseTensor):
        if tuple(adj.sizes()) != (num_nodes, num_nodes):
            raise ValueError(f"sparse transition matrix must have shape "
                             f"[{num_nodes}, {num_nodes}] (one row and column "
                             f"per node), got {list(adj.sizes())}")
        row, col, value = adj.coo()
    elif isinstance(adj, Tensor) and is_torch_sparse_tensor(adj):
        if tuple(adj.shape) != (num_nodes, num_nodes):
            raise ValueError(f"sparse transition matrix must have shape "
                             f"[{num_nodes}, {num_nodes}] (one row and column "
                             f"per node), got {list(adj.shape)}")
        coo = adj.to_sparse_coo().coalesce()
        row, col = coo.indices()
        value = coo.values()
    else:
        raise TypeError(f"expected a torch.sparse tensor or a SparseTensor, "
                        f"got {type(adj).__name__}")
    if value is None:
        value = torch.ones(row.numel(), device=row.device)
    if value.dim() != 1:
        raise ValueError(f"sparse transition matrix must hold scalar values, "
                         f"got values of shape {list(value.shape)}")
    value = value.to(torch.get_default_dtype()) if not value.is_floating_point() \
        else value
    into = scatter(value, col, 0, num_nodes, reduce='sum')
    out_of = scatter(value, row, 0, num_nodes, reduce='sum')
    w_in = value / into[col].masked_fill(into[col] == 0, 1.0)
    w_out = value / out_of[row].masked_fill(out_of[row] == 0, 1.0)
    return torch.stack([row, col]), w_in, w_out


class _OutPropagation(MessagePassing):
    r"""Weighted sum of :math:`x_v` over the out-edges :math:`u \to v` of each
    node :math:`u` (``flow='target_to_source'``)."""

    def __init__(self) -> None:
        super().__init__(aggr='add', flow='target_to_source')

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor) -> Tensor:
        return self.propagate(edge_index, x=x, edge_weight=edge_weight,
                              size=(x.size(0), x.size(0)))

    def message(self, x_j: Tensor, edge_weight: Tensor) -> Tensor:
        return edge_weight.view(-1, 1) * x_j


class GatedSessionConv(MessagePassing):
    r"""The gated graph convolution on session graphs, exactly as the released
    SR-GNN / TAGNN / TAGNN++ code computes it (``GNN.GNNCell``).

    For every node :math:`v` with state :math:`\mathbf{h}_v` and the weighted
    directed edges :math:`u \to v` of the session graph:

    .. math::
        \mathbf{a}^{in}_v &= \sum_{u \to v} w^{in}_{u \to v}
            \left(\mathbf{W}_{in} \mathbf{h}_u + \mathbf{c}_{in}\right)
            + \mathbf{b}_{in}

        \mathbf{a}^{out}_u &= \sum_{u \to v} w^{out}_{u \to v}
            \left(\mathbf{W}_{out} \mathbf{h}_v + \mathbf{c}_{out}\right)
            + \mathbf{b}_{out}

        \mathbf{a}_v &= [\mathbf{a}^{in}_v ; \mathbf{a}^{out}_v]

        \mathbf{r}_v &= \sigma(\mathbf{W}_r \mathbf{a}_v + \mathbf{b}_{ir}
            + \mathbf{U}_r \mathbf{h}_v + \mathbf{b}_{hr})

        \mathbf{z}_v &= \sigma(\mathbf{W}_z \mathbf{a}_v + \mathbf{b}_{iz}
            + \mathbf{U}_z \mathbf{h}_v + \mathbf{b}_{hz})

        \tilde{\mathbf{h}}_v &= \tanh(\mathbf{W}_o \mathbf{a}_v + \mathbf{b}_{io}
            + \mathbf{r}_v \odot (\mathbf{U}_o \mathbf{h}_v + \mathbf{b}_{ho}))

        \mathbf{h}'_v &= (1 - \mathbf{z}_v) \odot \tilde{\mathbf{h}}_v
            + \mathbf{z}_v \odot \mathbf{h}_v

    repeated ``num_steps`` times with the same weights. The last four lines are
    exactly :class:`torch.nn.GRUCell` (input :math:`\mathbf{a}_v`, hidden
    :math:`\mathbf{h}_v`), whose ``weight_ih, weight_hh, bias_ih, bias_hh`` are
    the released ``w_ih, w_hh, b_ih, b_hh``.

    The message biases :math:`\mathbf{c}_{in}, \mathbf{c}_{out}` (the bias of
    the released ``linear_edge_in`` / ``linear_edge_out``) sit *inside* the
    weighted sum, so a node without in-neighbours (the first click) gets
    :math:`\mathbf{a}^{in}_v = \mathbf{b}_{in}` (``b_iah``), while
    :math:`\mathbf{b}_{in}, \mathbf{b}_{out}` are added to every node.

    **Where this differs from the SR-GNN/TAGNN papers' eq. (1)-(5).** The
    papers write one bias :math:`\mathbf{b}` in eq. (1) (the code has four:
    :math:`\mathbf{c}_{in}, \mathbf{c}_{out}` weighted, :math:`\mathbf{b}_{in},
    \mathbf{b}_{out}` not), no gate biases, the reset gate applied *before*
    :math:`\mathbf{U}_o` (:math:`\mathbf{U}_o(\mathbf{r} \odot \mathbf{h})`
    in eq. (4), the code uses :math:`\mathbf{r} \odot (\mathbf{U}_o \mathbf{h} +
    \mathbf{b}_{ho})`), and eq. (5) :math:`(1 - \mathbf{z}) \odot \mathbf{h} +
    \mathbf{z} \odot \tilde{\mathbf{h}}` has :math:`\mathbf{z}` and
    :math:`1 - \mathbf{z}` swapped with respect to the code. This module
    computes the code's form (which produced the published numbers).

    **Edge weights.** The released code uses a binary adjacency, so
    :math:`w^{in}_{u \to v} = 1 / \deg^{in}(v)` and
    :math:`w^{out}_{u \to v} = 1 / \deg^{out}(u)` (over distinct neighbours):
    this is the default when the weights are not given. The SR-GNN paper
    weights transitions by their count (normalised by the summed counts into
    :math:`v` / out of :math:`u`): pass those weights (``SessionData`` with
    ``weighting='count'``) or a count matrix.

    The graph can also be given as a sparse ``[N, N]`` transition matrix
    :math:`\mathbf{A}` (``torch.sparse`` COO/CSR, or ``torch_sparse.SparseTensor``
    when installed) with :math:`A_{uv}` = 1 (binary, released weights) or the
    number of transitions :math:`u \to v` (paper weights); the in-weights are
    then its column normalisation and the out-weights its row normalisation.
    Note: :math:`\mathbf{A}` is indexed ``[source, target]``, not PyG's
    transposed ``adj_t``.

    The out-direction is a second propagation with
    ``flow='target_to_source'`` over the same ``edge_index``.

    Args:
        channels (int): Size :math:`d` of each node state (input = output).
        num_steps (int, optional): Number of propagation steps.
            (default: :obj:`1`, as released)
        bias (bool, optional): If :obj:`False`, no bias anywhere
            (:math:`\mathbf{c}, \mathbf{b}` and the GRU biases).
            (default: :obj:`True`)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **input:**
          node features :math:`(|\mathcal{V}|, d)`,
          edge indices :math:`(2, |\mathcal{E}|)` or sparse transition matrix
          :math:`(|\mathcal{V}|, |\mathcal{V}|)`,
          edge weights :math:`(|\mathcal{E}|)` *(optional)*
        - **output:** node features :math:`(|\mathcal{V}|, d)`
    """

    def __init__(self, channels: int, num_steps: int = 1, bias: bool = True,
                 **kwargs) -> None:
        kwargs.setdefault('aggr', 'add')
        if kwargs.get('flow', 'source_to_target') != 'source_to_target':
            raise ValueError(f"GatedSessionConv propagates in both directions "
                             f"itself; flow must be 'source_to_target', got "
                             f"{kwargs['flow']!r}")
        super().__init__(**kwargs)
        if int(channels) != channels or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        if int(num_steps) != num_steps or num_steps < 1:
            raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
        self.channels = int(channels)
        self.num_steps = int(num_steps)
        self.bias = bool(bias)

        self.lin_in = Linear(channels, channels, bias=bias)    # linear_edge_in
        self.lin_out = Linear(channels, channels, bias=bias)   # linear_edge_out
        if bias:
            self.bias_in = Parameter(torch.empty(channels))    # b_iah
            self.bias_out = Parameter(torch.empty(channels))   # b_oah
        else:
            self.register_parameter('bias_in', None)
            self.register_parameter('bias_out', None)
        self.gru = GRUCell(2 * channels, channels, bias=bias)  # w_ih, w_hh, b_ih, b_hh
        self._out = _OutPropagation()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Every parameter uniform in :math:`[-1/\sqrt{d}, 1/\sqrt{d}]`, as
        released."""
        super().reset_parameters()
        stdv = 1.0 / math.sqrt(self.channels)
        for p in self.parameters():
            torch.nn.init.uniform_(p, -stdv, stdv)

    def _weights(self, edge_index: Tensor, num_nodes: int,
                 edge_weight_in: Optional[Tensor], edge_weight_out: Optional[Tensor],
                 dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
        num_edges = edge_index.size(1)
        ones = None
        if edge_weight_in is None or edge_weight_out is None:
            ones = torch.ones(num_edges, dtype=dtype, device=edge_index.device)
        if edge_weight_in is None:
            deg = scatter(ones, edge_index[1], 0, num_nodes, reduce='sum')
            edge_weight_in = 1.0 / deg[edge_index[1]]
        if edge_weight_out is None:
            deg = scatter(ones, edge_index[0], 0, num_nodes, reduce='sum')
            edge_weight_out = 1.0 / deg[edge_index[0]]
        for name, w in (('edge_weight_in', edge_weight_in),
                        ('edge_weight_out', edge_weight_out)):
            if w.dim() != 1 or w.numel() != num_edges:
                raise ValueError(f"{name} must have shape [{num_edges}] (one "
                                 f"weight per edge), got {list(w.shape)}")
        return edge_weight_in.to(dtype), edge_weight_out.to(dtype)

    def forward(self, x: Tensor, edge_index: object,
                edge_weight_in: Optional[Tensor] = None,
                edge_weight_out: Optional[Tensor] = None) -> Tensor:
        r"""Run ``num_steps`` gated propagation steps.

        Args:
            x (torch.Tensor): Node states :math:`(N, d)`.
            edge_index (torch.Tensor or sparse matrix): ``[2, E]`` edges
                :math:`u \to v` (distinct transitions), or a sparse ``[N, N]``
                transition matrix (then no weights may be given).
            edge_weight_in (torch.Tensor, optional): ``[E]`` weight of each edge
                in the in-message of its target (default
                :math:`1/\deg^{in}(v)`).
            edge_weight_out (torch.Tensor, optional): ``[E]`` weight of each
                edge in the out-message of its source (default
                :math:`1/\deg^{out}(u)`).
        """
        if x.dim() != 2 or x.size(-1) != self.channels:
            raise ValueError(f"x must have shape [num_nodes, {self.channels}], "
                             f"got {list(x.shape)}")
        num_nodes = x.size(0)
        if _is_sparse(edge_index):
            if edge_weight_in is not None or edge_weight_out is not None:
                raise ValueError("edge weights cannot be given together with a "
                                 "sparse transition matrix: they are its "
                                 "column/row normalisation")
            edge_index, edge_weight_in, edge_weight_out = \
                sparse_to_weighted_edges(edge_index, num_nodes)
        elif not (isinstance(edge_index, Tensor) and edge_index.dim() == 2
                  and edge_index.size(0) == 2):
            shape = list(edge_index.shape) if isinstance(edge_index, Tensor) \
                else type(edge_index).__name__
            raise ValueError(f"edge_index must be a [2, num_edges] tensor or a "
                             f"sparse [N, N] matrix, got {shape}")
        w_in, w_out = self._weights(edge_index, num_nodes, edge_weight_in,
                                    edge_weight_out, x.dtype)

        h = x
        for _ in range(self.num_steps):
            m_in = self.propagate(edge_index, x=self.lin_in(h), edge_weight=w_in,
                                  size=(num_nodes, num_nodes))
            m_out = self._out(self.lin_out(h), edge_index, w_out)
            if self.bias_in is not None:
                m_in = m_in + self.bias_in
                m_out = m_out + self.bias_out
            h = self.gru(torch.cat([m_in, m_out], dim=-1), h)
        return h

    def message(self, x_j: Tensor, edge_weight: Tensor) -> Tensor:
        return edge_weight.view(-1, 1) * x_j

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.channels}, '
                f'num_steps={self.num_steps}, bias={self.bias})')
