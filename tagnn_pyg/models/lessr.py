r"""LESSR (Chen & Wong, KDD 2020): EOPA and SGAT layers with dense
connections and an attention readout, as the authors' released code."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import Tensor
from torch.nn import Linear, PReLU

from torch_geometric.nn.aggr import Aggregation
from torch_geometric.nn.norm import BatchNorm
from torch_geometric.utils import scatter, softmax

from tagnn_pyg.models.scoring import (SessionPositions, SessionRecommender,
                                      check_session_batch, dot_scores)
from tagnn_pyg.nn.eopa_conv import (EOPAConv, check_dropout, check_positive_int,
                                    eop_multigraph, static_eop_multigraph)
from tagnn_pyg.nn.readouts import last_position, resolve_index
from tagnn_pyg.nn.shortcut_gat_conv import (ShortcutGATConv, node_sessions,
                                             shortcut_graph, static_shortcut_graph)
from tagnn_pyg.utils.checks import check_flag
from tagnn_pyg.utils.static_dense import stable_argsort

__all__ = ['LESSR', 'LESSRAttentionReadout']


class LESSRAttentionReadout(Aggregation):
    r"""LESSR's attention readout with the last item (the released
    ``AttnReadout``), over the *nodes* of each session (distinct items, each
    once), the last clicked item's node as the query:

    .. math::
        \mathbf{h}_i &= \mathrm{drop}(\mathrm{BN}(\mathbf{x}_i)), \qquad
        e_i = \mathbf{w}^{\top}\sigma(\mathbf{W}_u \mathbf{h}_i
            + \mathbf{W}_v \mathbf{h}_{last} + \mathbf{b})

        \alpha_i &= \mathrm{softmax}_i(e_i), \qquad
        \mathbf{s}_g = \mathrm{PReLU}\Big(\mathbf{W}_{out}
            \sum_i \alpha_i \mathbf{h}_i\Big)

    (``fc_u`` without bias, ``fc_v`` with :math:`\mathbf{b}`, ``fc_e``,
    ``fc_out``; ``fc_out`` is the identity when ``out_channels`` equals
    ``in_channels``, as released). The last element of each segment of
    ``index`` is the query: :class:`LESSR` orders each session's nodes so
    that its last clicked item comes last.

    Args:
        in_channels (int): Input feature size.
        hidden_channels (int): Attention size.
        out_channels (int): Output size.
        batch_norm (bool, optional): (default: :obj:`True`)
        dropout (float, optional): (default: :obj:`0.0`)
        act (bool, optional): PReLU on the output. (default: :obj:`True`)

    Shapes:
        - **input:** node features :math:`(N, C_{in})`, ``index`` :math:`(N)`
          (sorted, the query last in each segment)
        - **output:** :math:`(B, C_{out})`
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 batch_norm: bool = True, dropout: float = 0.0, act: bool = True) -> None:
        super().__init__()
        self.in_channels = check_positive_int('in_channels', in_channels)
        self.hidden_channels = check_positive_int('hidden_channels', hidden_channels)
        self.out_channels = check_positive_int('out_channels', out_channels)
        self.dropout = check_dropout('dropout', dropout)
        self.batch_norm = BatchNorm(in_channels, allow_single_element=True) \
            if batch_norm else None
        self.lin_u = Linear(in_channels, hidden_channels, bias=False)   # fc_u
        self.lin_v = Linear(in_channels, hidden_channels, bias=True)    # fc_v
        self.lin_e = Linear(hidden_channels, 1, bias=False)             # fc_e
        self.lin_out = Linear(in_channels, out_channels, bias=False) \
            if out_channels != in_channels else None                    # fc_out
        self.act = PReLU(out_channels) if act else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.batch_norm is not None:
            self.batch_norm.reset_parameters()
        for lin in (self.lin_u, self.lin_v, self.lin_e, self.lin_out):
            if lin is not None:
                lin.reset_parameters()
        if self.act is not None:
            self.act.reset_parameters()

    def forward(self, x: Tensor, index: Optional[Tensor] = None,
                ptr: Optional[Tensor] = None, dim_size: Optional[int] = None,
                dim: int = -2) -> Tensor:
        self.assert_two_dimensional_input(x, dim)
        assert dim_size is not None  # set by Aggregation.__call__
        index = resolve_index(x, index, ptr)
        h = x if self.batch_norm is None else self.batch_norm(x)
        h = torch.nn.functional.dropout(h, self.dropout, self.training)
        last = last_position(index, dim_size).clamp(min=0)
        e = self.lin_e(torch.sigmoid(self.lin_u(h) + self.lin_v(h[last])[index]))
        alpha = softmax(e, index, None, dim_size, dim=0)
        out = scatter(alpha * h, index, 0, dim_size, reduce='sum')
        if self.lin_out is not None:
            out = self.lin_out(out)
        return out if self.act is None else self.act(out)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, {self.hidden_channels}, '
                f'{self.out_channels})')


class LESSR(SessionRecommender):
    r"""LESSR, "Lossless Edge-order preserving aggregation and Shortcut graph
    attention for Session-based Recommendation" (Chen & Wong, "Handling
    Information Loss of Graph Neural Networks for Session-based
    Recommendation", KDD 2020), as the authors' released ``lessr.py``
    computes it:

    .. math::
        \mathbf{x}^{(0)} &= \mathbf{E}[\text{items}], \qquad
        \mathbf{x}^{(l)} = [\mathbf{o}^{(l)} ; \mathbf{x}^{(l-1)}], \qquad
        \mathbf{o}^{(l)} = \begin{cases}
            \mathrm{EOPA}(\mathbf{x}^{(l-1)}, \mathcal{G}_{EOP}) & l \text{ odd} \\
            \mathrm{SGAT}(\mathbf{x}^{(l-1)}, \mathcal{G}_{S}) & l \text{ even}
            \end{cases}

        \mathbf{s}_g &= \mathrm{Readout}(\mathbf{x}^{(L)}, \mathbf{x}^{(L)}_{last}),
            \qquad
        \mathbf{s} = \mathbf{W}_{sr}\,\mathrm{drop}(\mathrm{BN}(
            [\mathbf{x}^{(L)}_{last} ; \mathbf{s}_g]))

        z_t &= \mathbf{s}^{\top} \mathbf{v}_t, \qquad t = 1, \dots, m

    with :class:`~tagnn_pyg.nn.EOPAConv` on the EOP multigraph
    (:func:`~tagnn_pyg.nn.eop_multigraph`) and
    :class:`~tagnn_pyg.nn.ShortcutGATConv` on the shortcut graph
    (:func:`~tagnn_pyg.nn.shortcut_graph`), alternating from EOPA (released
    default 3 layers: EOPA, SGAT, EOPA). **Dense connections:** every layer
    reads the concatenation of the embedding and all earlier outputs, newest
    first as released (``th.cat([out, feat])``), so layer :math:`l` has
    :math:`l \cdot d` inputs and :math:`d` outputs. The readout
    (:class:`LESSRAttentionReadout`) attends over each session's nodes
    (distinct items) with the node of the last click as query; the session
    vector concatenates the last node's features :math:`\mathbf{x}_{last}`
    (:math:`(L+1)d`) and :math:`\mathbf{s}_g` (:math:`d`). Every layer and the
    readout carry the released batch norm on their input, ``dropout`` (the
    released ``feat_drop``) and a PReLU; ``W_sr`` has no bias.

    **Item table.** As released, ``nn.Embedding(max_norm=1)``: every forward
    first renormalises *in place* (no gradient) each item vector whose norm
    exceeds ``max_norm`` (:func:`torch.embedding_renorm_`, what the released
    ``self.embedding(self.indices)`` does to the whole table), then uses the
    table both as input embeddings and as the output item vectors
    :math:`\mathbf{v}_t`. ``max_norm=None`` turns it off. Item 0 is padding:
    its column is :math:`-\infty` and it is not in the loss.

    **Graphs.** Both graphs are built inside the model from the batch's
    ``seq`` / ``seq_batch`` (:class:`~tagnn_pyg.data.SessionData`'s nodes are
    the session's distinct items, id-sorted as ``np.unique`` in the released
    code; ``edge_index`` with its deduplicated SR-GNN edges is not read),
    vectorised over the batch: the same batches, loaders, checkpoints,
    serving and DDP paths as every other model, with no transform to keep in
    step with the data. The cost is :math:`\sum_b n_b^2` candidate pairs per
    batch for the shortcut graph (:math:`n_b` distinct items of session
    :math:`b`).

    **Positions.** :meth:`positions` returns the final node features of each
    session's nodes (not its clicks: the readout is over distinct items, as
    released), ordered so that the last clicked item's node closes each
    session's segment; :meth:`session_embedding` maps them to :math:`\mathbf{s}`.

    **Initialisation:** PyTorch's defaults, as released (embedding
    :math:`\mathcal{N}(0, 1)` then renormalised, linear maps Kaiming-uniform,
    GRUs :math:`\pm 1/\sqrt{\text{size}}`, batch norm :math:`(1, 0)`, PReLU
    0.25), not the library's :math:`\pm 1/\sqrt{d}` of the SR-GNN family.

    **Batch norm** uses batch statistics in training (over the batch's nodes
    for the layers and the readout, over its sessions for the final one) and
    running statistics in evaluation, so scores are batch-independent only in
    ``eval()`` mode. A training batch of a single node or session uses the
    running statistics for that norm (PyG's ``allow_single_element``), where
    the released code (``drop_last=True``) never meets one.

    Args:
        num_items (int): Number of item ids *including* the padding id 0.
        hidden_channels (int, optional): Embedding size :math:`d` (the
            released ``embedding_dim``). (default: :obj:`32`)
        num_layers (int, optional): Number of EOPA/SGAT layers :math:`L`.
            (default: :obj:`3`)
        dropout (float, optional): The released ``feat_drop``, on each
            layer's and the readout's normalised input and on the session
            vector before ``W_sr``. (default: :obj:`0.2`, the released
            ``main.py``; the ``LESSR`` class itself defaults to 0)
        batch_norm (bool, optional): The batch norms. (default: :obj:`True`)
        max_norm (float, optional): Renormalise item vectors to this norm
            (``None``: never). (default: :obj:`1.0`)

    Shapes:
        - **input:** a batch of :class:`~tagnn_pyg.data.SessionData` with
          :math:`B` sessions (``x``, ``seq``, ``seq_batch``, ``last`` are
          read), optional ``candidates`` :math:`(B, C)` item ids
        - **output:** :math:`(B, \text{num\_items})` (column 0 =
          :math:`-\infty`) or :math:`(B, C)`
    """

    def __init__(self, num_items: int, hidden_channels: int = 32, num_layers: int = 3,
                 dropout: float = 0.2, batch_norm: bool = True,
                 max_norm: Optional[float] = 1.0) -> None:
        super().__init__(num_items, hidden_channels)
        self.num_layers = check_positive_int('num_layers', num_layers)
        self.dropout = check_dropout('dropout', dropout)
        self.batch_norm = check_flag('batch_norm', batch_norm)
        if max_norm is not None:
            if isinstance(max_norm, bool) or not float(max_norm) > 0:
                raise ValueError(f"max_norm must be a positive number or None, got "
                                 f"{max_norm!r}")
            max_norm = float(max_norm)
        self.max_norm = max_norm
        d = hidden_channels
        self.embedding = torch.nn.Embedding(num_items, d, max_norm=max_norm)
        self.layers = torch.nn.ModuleList()
        width = d
        for i in range(self.num_layers):
            if i % 2 == 0:
                layer: torch.nn.Module = EOPAConv(width, d, batch_norm=self.batch_norm,
                                                  dropout=self.dropout)
            else:
                layer = ShortcutGATConv(width, d, d, batch_norm=self.batch_norm,
                                        dropout=self.dropout)
            self.layers.append(layer)
            width += d
        self.readout = LESSRAttentionReadout(width, d, d, batch_norm=self.batch_norm,
                                             dropout=self.dropout)
        width += d
        self.norm = BatchNorm(width, allow_single_element=True) if self.batch_norm \
            else None
        self.lin_sr = Linear(width, d, bias=False)                      # fc_sr
        #: Fixed slots per session (export only; ``None``: data-dependent graphs).
        self.static_length: Optional[int] = None
        self.reset_parameters()

    def config(self) -> Dict[str, Any]:
        return dict(num_items=self.num_items, hidden_channels=self.hidden_channels,
                    num_layers=self.num_layers, dropout=self.dropout,
                    batch_norm=self.batch_norm, max_norm=self.max_norm)

    def reset_parameters(self) -> None:
        r"""PyTorch's own initialisation, as released (see the class
        docstring)."""
        self.embedding.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters()
        self.readout.reset_parameters()
        if self.norm is not None:
            self.norm.reset_parameters()
        self.lin_sr.reset_parameters()

    def renorm_items(self) -> None:
        r"""Renormalise, in place and without gradient, every item vector
        whose norm exceeds ``max_norm`` (the released ``nn.Embedding(max_norm=1)``
        applied to the whole table)."""
        if self.max_norm is None:
            return
        weight = self.embedding.weight
        with torch.no_grad():
            ids = torch.arange(weight.size(0), device=weight.device)
            torch.embedding_renorm_(weight, ids, self.max_norm, 2.0)

    def item_table(self) -> Tensor:
        r"""``[num_items, d]`` the item vectors as the model uses them: the
        table itself, which :meth:`node_features` renormalises in place; with
        :attr:`static_length` set (export) the same renormalisation
        (:math:`\mathbf{v} \cdot \frac{\text{max\_norm}}{\|\mathbf{v}\| +
        10^{-7}}` for the rows above ``max_norm``, as
        :func:`torch.embedding_renorm_`) computed without changing the table."""
        weight = self.embedding.weight
        if self.static_length is None or self.max_norm is None:
            return weight
        norm = weight.norm(dim=1, keepdim=True)
        scale = torch.where(norm > self.max_norm, self.max_norm / (norm + 1e-7),
                            torch.ones_like(norm))
        return weight * scale

    def node_features(self, batch: Any) -> Tensor:
        r"""``[N, (L + 1) d]`` node features after the densely connected
        layers. With :attr:`static_length` :math:`L` set (export) the graphs
        have sizes that come from the batch's sizes
        (:func:`~tagnn_pyg.nn.static_eop_multigraph`,
        :func:`~tagnn_pyg.nn.static_shortcut_graph`, with edge masks; EOPA's
        fixed message slots, which :func:`~tagnn_pyg.serve.export.export_model`
        sets too): the same values."""
        B = batch.last.numel()
        if self.static_length is None:
            self.renorm_items()
            x = self.embedding(batch.x)
            mg = eop_multigraph(batch.seq, batch.seq_batch)
            sg = shortcut_graph(batch.seq, batch.seq_batch, x.size(0)) \
                if self.num_layers > 1 else None
            mg_mask = mask = None
        else:
            x = self.item_table()[batch.x]
            mg, mg_mask = static_eop_multigraph(batch.seq, batch.seq_batch)
            sg, mask = static_shortcut_graph(batch.seq, batch.seq_batch, x.size(0), B,
                                             self.static_length) \
                if self.num_layers > 1 else (None, None)
        for i, layer in enumerate(self.layers):
            out = layer(x, mg, edge_mask=mg_mask) if i % 2 == 0 \
                else layer(x, sg, edge_mask=mask)
            x = torch.cat([out, x], dim=1)
        if self.static_length is not None:
            # traced, a session of more distinct items than slots cannot raise: NaN
            session = node_sessions(batch.seq, batch.seq_batch, x.size(0))
            nodes = session.new_zeros(B).scatter_add_(0, session, torch.ones_like(session))
            too_long = (nodes > self.static_length)[session].view(-1, 1)
            x = torch.where(too_long, torch.full_like(x, float('nan')), x)
        return x

    def positions(self, batch: Any) -> SessionPositions:
        r"""Each session's node features, the last clicked item's node last
        in its segment (``index`` = the node's session, sorted)."""
        check_session_batch(batch, self.num_items)
        h = self.node_features(batch)
        N, B = h.size(0), batch.last.numel()
        session = node_sessions(batch.seq, batch.seq_batch, N)
        is_last = torch.zeros(N, dtype=torch.long, device=h.device)
        is_last[batch.last.view(-1)] = 1
        order = stable_argsort(session * 2 + is_last)
        return SessionPositions(h[order], session[order], B)

    def session_embedding(self, pos: SessionPositions) -> Tensor:
        r"""``[B, d]`` the session vector :math:`\mathbf{s}`."""
        B = pos.num_sessions
        s_g = self.readout(pos.x, pos.index, dim_size=B)
        s_l = pos.x[last_position(pos.index, B).clamp(min=0)]
        s = torch.cat([s_l, s_g], dim=1)
        if self.norm is not None:
            s = self.norm(s)
        s = torch.nn.functional.dropout(s, self.dropout, self.training)
        return self.lin_sr(s)

    def score(self, pos: SessionPositions, candidates: Optional[Tensor]) -> Tensor:
        return dot_scores(self.session_embedding(pos), self.item_table(), candidates)
