r"""The gated session-graph convolution of SR-GNN, TAGNN and TAGNN++."""

from typing import Optional, Tuple  # noqa: F401 (Optional: the propagate_type below)

import torch
from torch import Tensor
from torch.nn import GRUCell, Linear, Parameter

from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.inits import uniform
from torch_geometric.typing import Adj, OptTensor, SparseTensor
from torch_geometric.utils import (degree, is_torch_sparse_tensor, scatter, spmm,
                                   to_edge_index, to_torch_csr_tensor)

from tagnn_pyg.utils.checks import check_flag

__all__ = ['GatedSessionConv']


class GatedSessionConv(MessagePassing):
    r"""The gated graph convolution on directed session graphs from the
    `"Session-based Recommendation with Graph Neural Networks"
    <https://arxiv.org/abs/1811.00855>`_ paper (SR-GNN), also used by TAGNN and
    TAGNN++: every step aggregates messages along the edges *and* against them,
    and feeds both to a GRU cell,

    .. math::
        \mathbf{m}^{in}_i &= \sum_{j \to i} w^{in}_{j,i} \,
            \mathbf{\Theta}_{in} \mathbf{h}_j + \mathbf{b}_{in}

        \mathbf{m}^{out}_i &= \sum_{i \to j} w^{out}_{i,j} \,
            \mathbf{\Theta}_{out} \mathbf{h}_j + \mathbf{b}_{out}

        \mathbf{h}'_i &= \mathrm{GRU}\left([\mathbf{m}^{in}_i \, \Vert \,
            \mathbf{m}^{out}_i], \mathbf{h}_i\right)

    repeated ``num_steps`` times with shared weights. :math:`\mathrm{GRU}` is
    :class:`torch.nn.GRUCell` (input :math:`[\mathbf{m}^{in} \Vert
    \mathbf{m}^{out}]`, hidden state :math:`\mathbf{h}`):
    :math:`\mathbf{h}' = (1 - \mathbf{z}) \odot \tilde{\mathbf{h}} + \mathbf{z}
    \odot \mathbf{h}` with the reset gate applied to
    :math:`\mathbf{U}_o \mathbf{h} + \mathbf{b}_{ho}`. That is the released
    SR-GNN/TAGNN code's ``GNNCell``; the papers' eq. (4)-(5) write the reset
    gate inside, :math:`\mathbf{U}_o(\mathbf{r} \odot \mathbf{h})`, and swap
    :math:`\mathbf{z}` and :math:`1 - \mathbf{z}`.

    **Edge weights.** :math:`w^{in}_{j,i}` and :math:`w^{out}_{i,j}` default to
    :math:`1 / \deg^{in}(i)` and :math:`1 / \deg^{out}(i)` over distinct
    neighbours: the sums are then means, as with the released code's binary
    adjacency. The SR-GNN paper weights each transition by its count,
    normalised by the counts into :math:`i` (in) or out of :math:`i` (out):
    pass those weights (:class:`~tagnn_pyg.data.SessionData` with
    ``weighting='count'``) or a count matrix.

    **Released message bias** (``message_bias=True``, the default). The
    released code's ``linear_edge_in`` / ``linear_edge_out`` carry a bias
    :math:`\mathbf{c}`, so the messages are affine,
    :math:`\mathbf{\Theta}\mathbf{h}_j + \mathbf{c}`, and :math:`\mathbf{c}`
    enters the weighted sum (a node without in-neighbours, such as the first
    click, gets :math:`\mathbf{m}^{in}_i = \mathbf{b}_{in}`), while
    :math:`\mathbf{b}_{in}, \mathbf{b}_{out}` (``b_iah``, ``b_oah``) are added to
    every node. ``message_bias=False`` gives the formula above, the papers'
    eq. (1) with one bias per direction.

    Args:
        channels (int): Size :math:`d` of each node state (input = output).
        num_steps (int, optional): Number of propagation steps.
            (default: :obj:`1`, as released)
        bias (bool, optional): If set to :obj:`False`, the layer learns no
            bias at all (no :math:`\mathbf{c}`, :math:`\mathbf{b}` or GRU
            biases). (default: :obj:`True`)
        message_bias (bool, optional): If set to :obj:`False`, the messages
            :math:`\mathbf{\Theta}\mathbf{h}_j` have no bias :math:`\mathbf{c}`
            inside the weighted sums (see above). (default: :obj:`True`, as
            released)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing` (``flow`` must stay
            ``'source_to_target'``: the layer propagates both ways itself).

    The graph is given as ``edge_index`` (edges :math:`j \to i`, distinct
    transitions) with optional ``edge_weight_in`` / ``edge_weight_out``, or as a
    sparse matrix in PyG's ``adj_t`` convention, ``adj_t[target, source]``
    (:class:`torch.sparse.Tensor` or :class:`torch_sparse.SparseTensor`), i.e.
    the transpose of the transition matrix, holding :math:`1` per transition
    (released weights) or transition counts (paper weights): the layer
    normalises it, rows for the in-weights and columns for the out-weights.
    The out-direction is a second :meth:`propagate` over the reversed graph
    (``edge_index.flip(0)``, or the transposed matrix): the same as
    ``flow='target_to_source'``, which PyG does not offer for sparse input.

    Shapes:
        - **input:**
          node features :math:`(|\mathcal{V}|, d)`,
          edge indices :math:`(2, |\mathcal{E}|)` or sparse ``adj_t``
          :math:`(|\mathcal{V}|, |\mathcal{V}|)`,
          edge weights ``edge_weight_in``, ``edge_weight_out``
          :math:`(|\mathcal{E}|)` *(optional)*
        - **output:** node features :math:`(|\mathcal{V}|, d)`
    """

    def __init__(self, channels: int, num_steps: int = 1, bias: bool = True,
                 message_bias: bool = True, **kwargs) -> None:
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
        self.bias = check_flag('bias', bias)
        self.message_bias = check_flag('message_bias', message_bias) and self.bias

        self.lin_in = Linear(channels, channels, bias=self.message_bias)  # linear_edge_in
        self.lin_out = Linear(channels, channels, bias=self.message_bias)  # linear_edge_out
        if bias:
            self.bias_in = Parameter(torch.empty(channels))    # b_iah
            self.bias_out = Parameter(torch.empty(channels))   # b_oah
        else:
            self.register_parameter('bias_in', None)
            self.register_parameter('bias_out', None)
        self.gru = GRUCell(2 * channels, channels, bias=bias)  # w_ih, w_hh, b_ih, b_hh
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Every parameter uniform in :math:`[-1/\sqrt{d}, 1/\sqrt{d}]`, as
        released (:class:`~torch.nn.GRUCell`'s own initialisation is that
        one)."""
        super().reset_parameters()
        uniform(self.channels, self.bias_in)
        uniform(self.channels, self.bias_out)
        uniform(self.channels, self.lin_in)
        uniform(self.channels, self.lin_out)
        self.gru.reset_parameters()

    def forward(self, x: Tensor, edge_index: Adj, edge_weight_in: OptTensor = None,
                edge_weight_out: OptTensor = None) -> Tensor:
        r"""Run ``num_steps`` gated propagation steps.

        Args:
            x (torch.Tensor): Node states :math:`(N, d)`.
            edge_index (torch.Tensor or SparseTensor): ``[2, E]`` edges
                :math:`j \to i`, or a sparse ``adj_t[target, source]``
                :math:`(N, N)` (then no weights may be given).
            edge_weight_in (torch.Tensor, optional): ``[E]`` weight of each edge
                in the in-message of its target (default :math:`1/\deg^{in}(i)`).
            edge_weight_out (torch.Tensor, optional): ``[E]`` weight of each
                edge in the out-message of its source (default
                :math:`1/\deg^{out}(j)`).
        """
        if x.dim() != 2 or x.size(-1) != self.channels:
            raise ValueError(f"x must have shape [num_nodes, {self.channels}], "
                             f"got {list(x.shape)}")
        if not torch.jit.is_scripting() and not isinstance(edge_index,
                                                           (Tensor, SparseTensor)):
            raise TypeError(f"edge_index must be a [2, num_edges] tensor or a sparse "
                            f"adj_t (torch.sparse or SparseTensor), got "
                            f"{type(edge_index).__name__}")
        if isinstance(edge_index, Tensor) and not is_torch_sparse_tensor(edge_index):
            w_in, w_out = self._edge_weights(edge_index, x, edge_weight_in,
                                             edge_weight_out)
            adj_in, adj_out = edge_index, edge_index.flip([0])
        else:
            if edge_weight_in is not None or edge_weight_out is not None:
                raise ValueError("edge weights cannot be given together with a "
                                 "sparse adj_t: they are its row/column "
                                 "normalisation")
            adj_in, adj_out = self._normalise_adj_t(edge_index, x)
            w_in = w_out = None

        h = x
        for _ in range(self.num_steps):
            # propagate_type: (x: Tensor, edge_weight: Optional[Tensor])
            m_in = self.propagate(adj_in, x=self.lin_in(h), edge_weight=w_in)
            m_out = self.propagate(adj_out, x=self.lin_out(h), edge_weight=w_out)
            if self.bias_in is not None and self.bias_out is not None:
                m_in = m_in + self.bias_in
                m_out = m_out + self.bias_out
            h = self.gru(torch.cat([m_in, m_out], dim=-1), h)
        return h

    def _edge_weights(self, edge_index: Tensor, x: Tensor, edge_weight_in: OptTensor,
                      edge_weight_out: OptTensor) -> Tuple[Tensor, Tensor]:
        r"""The given weights (checked), or the defaults :math:`1/\deg^{in}(i)`
        and :math:`1/\deg^{out}(j)`, in the dtype of ``x``."""
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError(f"edge_index must be a [2, num_edges] tensor or a "
                             f"sparse [N, N] adj_t, got {list(edge_index.shape)}")
        num_nodes, num_edges = x.size(0), edge_index.size(1)
        if edge_weight_in is None:
            edge_weight_in = 1.0 / degree(edge_index[1], num_nodes, x.dtype)[edge_index[1]]
        if edge_weight_out is None:
            edge_weight_out = 1.0 / degree(edge_index[0], num_nodes, x.dtype)[edge_index[0]]
        if edge_weight_in.dim() != 1 or edge_weight_in.numel() != num_edges:
            raise ValueError(f"edge_weight_in must have shape [{num_edges}] (one "
                             f"weight per edge), got {list(edge_weight_in.shape)}")
        if edge_weight_out.dim() != 1 or edge_weight_out.numel() != num_edges:
            raise ValueError(f"edge_weight_out must have shape [{num_edges}] (one "
                             f"weight per edge), got {list(edge_weight_out.shape)}")
        return edge_weight_in.to(x.dtype), edge_weight_out.to(x.dtype)

    def _normalise_adj_t(self, adj_t: Adj, x: Tensor) -> Tuple[Adj, Adj]:
        r"""The in- and out-propagation matrices of a sparse ``adj_t`` (both in
        ``adj_t`` layout): ``adj_t`` with its rows normalised, and its
        transpose with the rows normalised (the columns of ``adj_t``)."""
        num_nodes = x.size(0)
        if isinstance(adj_t, SparseTensor):
            size = [adj_t.size(0), adj_t.size(1)]
        else:
            size = [adj_t.size(0), adj_t.size(1)]
            if adj_t.layout == torch.sparse_coo:
                adj_t = adj_t.coalesce()
        if size != [num_nodes, num_nodes]:
            raise ValueError(f"adj_t must have shape [{num_nodes}, {num_nodes}] "
                             f"(one row and column per node), got {size}")
        edge_index, value = to_edge_index(adj_t)       # [target; source]
        if value.dim() != 1:
            raise ValueError(f"adj_t must hold scalar values, got values of shape "
                             f"{list(value.shape)}")
        value = value.to(x.dtype)
        target, source = edge_index[0], edge_index[1]
        into = scatter(value, target, 0, num_nodes, reduce='sum')[target]
        out_of = scatter(value, source, 0, num_nodes, reduce='sum')[source]
        w_in = value / into.masked_fill(into == 0, 1.0)
        w_out = value / out_of.masked_fill(out_of == 0, 1.0)
        if isinstance(adj_t, SparseTensor):
            return (SparseTensor(row=target, col=source, value=w_in,
                                 sparse_sizes=(num_nodes, num_nodes)),
                    SparseTensor(row=source, col=target, value=w_out,
                                 sparse_sizes=(num_nodes, num_nodes)))
        return (to_torch_csr_tensor(edge_index, w_in, (num_nodes, num_nodes)),
                to_torch_csr_tensor(edge_index.flip([0]), w_out,
                                    (num_nodes, num_nodes)))

    def message(self, x_j: Tensor, edge_weight: OptTensor) -> Tensor:
        return x_j if edge_weight is None else edge_weight.view(-1, 1) * x_j

    def message_and_aggregate(self, adj_t: Adj, x: Tensor) -> Tensor:
        return spmm(adj_t, x, reduce=self.aggr)

    def __repr__(self) -> str:
        extra = '' if self.message_bias or not self.bias else ', message_bias=False'
        return (f'{self.__class__.__name__}({self.channels}, '
                f'num_steps={self.num_steps}, bias={self.bias}{extra})')
