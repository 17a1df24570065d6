r"""LESSR's shortcut graph attention (SGAT) and its shortcut graph."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.nn import Linear, PReLU

from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.norm import BatchNorm
from torch_geometric.utils import softmax

from tagnn_pyg.nn.eopa_conv import check_dropout, check_positive_int
from tagnn_pyg.utils.static_dense import StaticDenseBatch

__all__ = ['ShortcutGATConv', 'shortcut_graph', 'static_shortcut_graph']


def node_sessions(seq: Tensor, seq_batch: Tensor, num_nodes: int) -> Tensor:
    r"""``[N]`` the session of every node, from the session of the clicks on it."""
    return seq_batch.new_zeros(num_nodes).scatter_(0, seq, seq_batch)


def _first_last(seq: Tensor, num_nodes: int) -> Tuple[Tensor, Tensor]:
    r"""``([N], [N])`` the position of the first and of the last click on each
    node (``L`` and ``-1`` for a node never clicked)."""
    L = seq.numel()
    pos = torch.arange(L, device=seq.device)
    first = torch.full((num_nodes, ), L, dtype=torch.long, device=seq.device)
    first = first.scatter_reduce(0, seq, pos, reduce='amin')
    last = torch.full((num_nodes, ), -1, dtype=torch.long, device=seq.device)
    return first, last.scatter_reduce(0, seq, pos, reduce='amax')


def shortcut_graph(seq: Tensor, seq_batch: Tensor, num_nodes: int) -> Tensor:
    r"""The *shortcut graph* of LESSR (Chen & Wong, KDD 2020) from a batch of
    click sequences: an edge :math:`u \to v` whenever some click on
    :math:`v` comes at or after some click on :math:`u` in the same session,
    each pair once, as the released ``seq_to_shortcut_graph`` (its pairs
    :math:`(s_i, s_j)`, :math:`j \ge i`, deduplicated). With :math:`j = i`
    every node gets a self-loop.

    Vectorised, no per-session loop and no :math:`O(L^2)` list of click
    pairs: :math:`u \to v` exists exactly when the *first* click on :math:`u`
    is not after the *last* click on :math:`v`, so the function forms every
    ordered node pair of each session (:math:`\sum_b n_b^2` of them) and keeps
    those with :math:`\mathrm{first}(u) \le \mathrm{last}(v)`. Columns come
    ordered by (session, source, target); the attention does not depend on
    the order.

    Example:
        >>> seq = torch.tensor([1, 0, 1, 2, 0])   # items [5, 3, 5, 7, 3], nodes [3, 5, 7]
        >>> shortcut_graph(seq, torch.zeros(5, dtype=torch.long), 3)
        tensor([[0, 0, 0, 1, 1, 1, 2, 2],
                [0, 1, 2, 0, 1, 2, 0, 2]])

    Args:
        seq (torch.Tensor): ``[L]`` node index of every click (batched).
        seq_batch (torch.Tensor): ``[L]`` session of every click.
        num_nodes (int): :math:`N`; every node must be clicked at least once
            (as in :class:`~tagnn_pyg.data.SessionData`).

    Shapes:
        - **output:** ``edge_index`` :math:`(2, |\mathcal{E}|)`
    """
    if seq.dim() != 1 or seq_batch.shape != seq.shape:
        raise ValueError(f"seq and seq_batch must be 1-D of one length, got "
                         f"{list(seq.shape)} and {list(seq_batch.shape)}")
    L = seq.numel()
    first, last = _first_last(seq, num_nodes)
    if L > 0 and not bool((last >= 0).all()):
        raise ValueError(f"every one of the {num_nodes} nodes must be clicked at least "
                         f"once in seq")
    if L == 0:
        return seq.new_empty(2, 0)
    session = node_sessions(seq, seq_batch, num_nodes)
    nodes = torch.sort(session, stable=True).indices          # nodes grouped by session
    counts = torch.bincount(session)                          # n_b
    ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)[:-1]])
    pair_counts = counts * counts
    pair_ptr = torch.cat([counts.new_zeros(1), pair_counts.cumsum(0)[:-1]])
    pair_session = torch.repeat_interleave(torch.arange(counts.numel(), device=seq.device),
                                           pair_counts)
    k = torch.arange(pair_session.numel(), device=seq.device) - pair_ptr[pair_session]
    n = counts[pair_session]
    u = nodes[ptr[pair_session] + torch.div(k, n, rounding_mode='floor')]
    v = nodes[ptr[pair_session] + k % n]
    keep = first[u] <= last[v]
    return torch.stack([u[keep], v[keep]], dim=0)


def static_shortcut_graph(seq: Tensor, seq_batch: Tensor, num_nodes: int,
                          num_sessions: int, length: int) -> Tuple[Tensor, Tensor]:
    r""":func:`shortcut_graph` with a number of columns that comes from the sizes
    (what ``torch.export`` needs): every target node :math:`v` gets the
    :math:`L` = ``length`` candidate sources of its session's node slots
    (:class:`~tagnn_pyg.utils.static_dense.StaticDenseBatch` over the nodes
    grouped by session, :math:`n_b \le L` nodes each), and ``edge_mask``
    keeps the real ones with :math:`\mathrm{first}(u) \le \mathrm{last}(v)`.
    The kept columns are the edges of :func:`shortcut_graph`; pass
    ``edge_mask`` to :class:`ShortcutGATConv`. A session of more than
    :math:`L` distinct items raises a :class:`ValueError` in eager mode; in a
    traced graph its columns are incomplete, and the caller must discard its
    outputs (:class:`~tagnn_pyg.models.LESSR` sets them to NaN).

    Args:
        seq (torch.Tensor): ``[L_c]`` node index of every click (batched).
        seq_batch (torch.Tensor): ``[L_c]`` session of every click.
        num_nodes (int): :math:`N` (every node clicked at least once).
        num_sessions (int): :math:`B`, from a tensor size.
        length (int): :math:`L`, at least the most nodes of a session.

    Shapes:
        - **output:** ``edge_index`` :math:`(2, N L)` (column :math:`vL + l`:
          slot :math:`l` of :math:`v`'s session to :math:`v`), ``edge_mask``
          :math:`(N L)`
    """
    first, last = _first_last(seq, num_nodes)
    session = node_sessions(seq, seq_batch, num_nodes)
    slots = StaticDenseBatch(session, num_sessions, length, what='session/distinct items')
    nodes = torch.arange(num_nodes, device=seq.device)
    u = slots.to_dense(nodes)[session]                        # [N, L] sources
    v = nodes.view(-1, 1).expand(-1, length)
    mask = slots.mask[session] & (first[u] <= last[v])
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=0), mask.reshape(-1)


class ShortcutGATConv(MessagePassing):
    r"""The shortcut graph attention layer (SGAT) of LESSR, from the
    `"Handling Information Loss of Graph Neural Networks for Session-based
    Recommendation" <https://dl.acm.org/doi/10.1145/3394486.3403170>`_ paper
    (Chen & Wong, KDD 2020), as the authors' released ``SGAT`` module
    computes it, on a shortcut graph (:func:`shortcut_graph`):

    .. math::
        \mathbf{h}_i &= \mathrm{drop}(\mathrm{BN}(\mathbf{x}_i))

        e_{u,v} &= \mathbf{p}^{\top} \sigma\big(\mathbf{W}_q \mathbf{h}_u
            + \mathbf{b}_q + \mathbf{W}_k \mathbf{h}_v\big), \qquad
        \alpha_{u,v} = \mathrm{softmax}_{u \in \mathcal{N}^{in}(v)}(e_{u,v})

        \mathbf{x}'_v &= \mathrm{PReLU}\Big(\sum_{u \in \mathcal{N}^{in}(v)}
            \alpha_{u,v} \, \mathbf{W}_v \mathbf{h}_u\Big)

    for edges :math:`u \to v`, :math:`\sigma` the logistic sigmoid. The
    paper's :math:`\mathbf{p}^{\top}\sigma(\mathbf{W}_1 \mathbf{x}_v +
    \mathbf{W}_2 \mathbf{x}_u + \mathbf{b})` in the code's names: the query
    map ``fc_q`` (:math:`\mathbf{W}_q`, with the bias) acts on the *source*
    :math:`u`, ``fc_k`` (:math:`\mathbf{W}_k`) on the target :math:`v`,
    ``fc_v`` (:math:`\mathbf{W}_v`) gives the values and ``fc_e``
    (:math:`\mathbf{p}`) the score; none but ``fc_q`` has a bias. The softmax
    is PyG's :func:`~torch_geometric.utils.softmax` over each target's
    in-edges; a node without in-edges gets :math:`\mathbf{0}` before the
    activation (never in a shortcut graph, which has every self-loop).

    Args:
        in_channels (int): Size :math:`C_{in}` of each input feature.
        out_channels (int): Size :math:`C_{out}` of each output feature.
        hidden_channels (int, optional): Size of the attention space
            (:math:`\mathbf{W}_q, \mathbf{W}_k` outputs).
            (default: ``out_channels``, as in the released model)
        batch_norm (bool, optional): Batch-normalise the input
            (:class:`torch_geometric.nn.norm.BatchNorm`,
            ``allow_single_element=True``). (default: :obj:`True`)
        dropout (float, optional): Dropout on the normalised input (the
            released ``feat_drop``). (default: :obj:`0.0`)
        act (bool, optional): Apply :class:`torch.nn.PReLU` with one slope
            per output channel. (default: :obj:`True`)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing` (``aggr`` stays
            ``'add'``).

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, C_{in})`, edge
          indices :math:`(2, |\mathcal{E}|)` (edges :math:`u \to v`),
          ``edge_mask`` :math:`(|\mathcal{E}|)` *(optional: masked edges get
          zero attention, as if absent; every node needs an unmasked in-edge)*
        - **output:** node features :math:`(|\mathcal{V}|, C_{out})`
    """

    def __init__(self, in_channels: int, out_channels: int,
                 hidden_channels: Optional[int] = None, batch_norm: bool = True,
                 dropout: float = 0.0, act: bool = True, **kwargs) -> None:
        if kwargs.setdefault('aggr', 'add') != 'add':
            raise ValueError(f"ShortcutGATConv sums attention-weighted messages; aggr "
                             f"must be 'add', got {kwargs['aggr']!r}")
        super().__init__(**kwargs)
        self.in_channels = check_positive_int('in_channels', in_channels)
        self.out_channels = check_positive_int('out_channels', out_channels)
        self.hidden_channels = check_positive_int(
            'hidden_channels', out_channels if hidden_channels is None else hidden_channels)
        self.dropout = check_dropout('dropout', dropout)
        self.batch_norm = BatchNorm(in_channels, allow_single_element=True) \
            if batch_norm else None
        H = self.hidden_channels
        self.lin_q = Linear(in_channels, H, bias=True)               # fc_q (source)
        self.lin_k = Linear(in_channels, H, bias=False)              # fc_k (target)
        self.lin_v = Linear(in_channels, out_channels, bias=False)   # fc_v
        self.lin_e = Linear(H, 1, bias=False)                        # fc_e, p
        self.act = PReLU(out_channels) if act else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""PyTorch's own initialisation of every part, as released."""
        super().reset_parameters()
        if self.batch_norm is not None:
            self.batch_norm.reset_parameters()
        for lin in (self.lin_q, self.lin_k, self.lin_v, self.lin_e):
            lin.reset_parameters()
        if self.act is not None:
            self.act.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor,
                edge_mask: Optional[Tensor] = None) -> Tensor:
        r"""Attend over each node's in-neighbours.

        Args:
            x (torch.Tensor): Node features :math:`(N, C_{in})`.
            edge_index (torch.Tensor): ``[2, E]`` edges :math:`u \to v`.
            edge_mask (torch.Tensor, optional): ``[E]`` bool, ``False`` for
                the edges to ignore (:func:`static_shortcut_graph`); a node
                whose in-edges are all masked gets zeros.
        """
        if x.dim() != 2 or x.size(-1) != self.in_channels:
            raise ValueError(f"x must have shape [num_nodes, {self.in_channels}], "
                             f"got {list(x.shape)}")
        if not isinstance(edge_index, Tensor) or edge_index.is_sparse \
                or edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError(f"edge_index must be a dense [2, num_edges] tensor, got "
                             f"{getattr(edge_index, 'shape', type(edge_index).__name__)}")
        h = x if self.batch_norm is None else self.batch_norm(x)
        h = torch.nn.functional.dropout(h, self.dropout, self.training)
        if edge_mask is not None and (edge_mask.dtype != torch.bool
                                      or edge_mask.shape != (edge_index.size(1), )):
            raise ValueError(f"edge_mask must be a bool tensor of shape "
                             f"[{edge_index.size(1)}] (one per edge), got "
                             f"{edge_mask.dtype} {list(edge_mask.shape)}")
        # propagate_type: (q: Tensor, k: Tensor, v: Tensor, edge_mask: Optional[Tensor])
        out = self.propagate(edge_index, q=self.lin_q(h), k=self.lin_k(h),
                             v=self.lin_v(h), edge_mask=edge_mask,
                             size=(x.size(0), x.size(0)))
        return out if self.act is None else self.act(out)

    def message(self, q_j: Tensor, k_i: Tensor, v_j: Tensor, edge_mask: Optional[Tensor],
                index: Tensor, ptr: Optional[Tensor], size_i: Optional[int]) -> Tensor:
        e = self.lin_e(torch.sigmoid(q_j + k_i))                    # [E, 1]
        if edge_mask is None:
            return softmax(e, index, ptr, size_i, dim=0) * v_j
        keep = edge_mask.view(-1, 1)
        out = softmax(e.masked_fill(~keep, float('-inf')), index, ptr, size_i, dim=0) * v_j
        # zero, not 0 * v_j: a masked edge from a NaN source must not reach its target
        return out.masked_fill(~keep, 0.0)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, {self.out_channels}, '
                f'hidden_channels={self.hidden_channels}, '
                f'batch_norm={self.batch_norm is not None}, dropout={self.dropout}, '
                f'act={self.act is not None})')
