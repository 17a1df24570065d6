r"""TAGNN++ (Mitheran et al., 2021): TAGNN with a Transformer layer over the
clicks, as a composition of :mod:`tagnn_pyg.nn` parts."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from tagnn_pyg.models.scoring import SessionPositions, check_session_batch
from tagnn_pyg.models.tagnn import TAGNN
from tagnn_pyg.nn.session_transformer import SessionTransformer
from tagnn_pyg.utils.checks import check_flag

__all__ = ['TAGNNPlusPlus', 'TAGNNPP_LAYERS', 'TAGNNPP_INITS']

TAGNNPP_LAYERS = ('paper', 'released')
TAGNNPP_INITS = ('uniform', 'transformer-default')


class TAGNNPlusPlus(TAGNN):
    r"""TAGNN++: gated GNN, then a causal self-attention layer over each
    session's clicks (in click order), then TAGNN's readouts and
    target-attentive score.

    .. math::
        \mathbf{h} &= \mathrm{GatedSessionConv}(\mathbf{E}[\mathbf{x}]),
            \qquad \mathbf{v}^{(0)}_i = \mathbf{h}_{seq_i}
            \;(+\, \mathbf{p}_i \text{ with positional embeddings})

        \mathbf{v}_i &= \mathrm{SessionTransformer}(\mathbf{v}^{(0)})_i

    with, for ``layer='paper'`` (section III-B: multi-head attention, add &
    LayerNorm, feed-forward, add & LayerNorm, dropout),

    .. math::
        \mathbf{a} = \mathrm{LN}(\mathbf{v}^{(0)} + \mathrm{MHA}_{causal}
        (\mathbf{v}^{(0)})), \qquad
        \mathbf{v} = \mathrm{LN}(\mathbf{a} + \mathrm{FFN}(\mathbf{a})),

    and for ``layer='released'`` the released code's form
    :math:`\mathbf{v} = \mathrm{MHA}_{causal}(\mathbf{v}^{(0)}) +
    \mathrm{LN}(\mathbf{v}^{(0)})` (no feed-forward, no positional embeddings,
    non-hybrid score). The scores are TAGNN's (:class:`TAGNN`, default
    ``score='released'``) computed from these :math:`\mathbf{v}_i`:
    :math:`z_t = \mathbf{v}_t^{\top}(\mathbf{W}'_3[\mathbf{s}_{global};
    \mathbf{s}_{local}] + \mathbf{b}'_3 + \mathbf{s}^t_{target})`.

    **Deviations of** ``layer='released'`` **from the released code.** The
    released layer runs over the *id-sorted node list* of each padded session
    graph (the padding node 0 included, with a causal mask over that id order)
    before the clicks are gathered; here it runs over the clicks in click order,
    padding-free, with the causal mask in click order (the released ordering
    has no sequential meaning and depends on item ids). Dropout (0.1) acts on
    the attention weights as in ``torch.nn.MultiheadAttention``.

    **Exact emulation of the released code:** ``layer='released',
    released_padding=True`` (presets ``tagnnpp-released-padded-*``). Session
    :math:`s` (:math:`n_s` clicks) is padded to :math:`L` =
    ``model.pad_length`` (the longest session of the data set being iterated,
    as the released ``Dataset``; required, see :func:`~tagnn_pyg.models.tagnn.
    padded_like_released`). Its node list is then, as ``np.unique`` of the
    padded clicks gives it,

    .. math::
        \mathcal{N}_s = (\underbrace{0}_{\text{if } n_s < L}, u_1 < u_2 <
        \dots < u_k),

    the padding item 0 (an isolated node: its state is the GNN of item 0 with
    no neighbours) followed by the distinct items in increasing id order. The
    layer :math:`\mathrm{MHA}_{causal}(\mathbf{h}) + \mathrm{LN}(\mathbf{h})`
    runs over :math:`\mathcal{N}_s` with the causal mask in that order (node
    :math:`j` attends to nodes :math:`\le j`), and the clicks take the output
    of their node. The :math:`L - n_s` padded slots carry the output
    :math:`\mathbf{v}_{pad}` of node 0, and both softmaxes run over them as in
    ``TAGNN(released_padding=True)``: each adds :math:`e^0` to the target
    attention's denominator and :math:`e^{\alpha_{pad}}` to the soft
    attention's. The released batches also append copies of node 0 to each
    node list up to the batch's largest; they come after every real node in
    the causal order, so they change nothing and are not built. No
    ``[B, L, d]`` or ``[B, m, d]`` tensor is built; the attention runs over
    the :math:`\le n_s + 1` nodes of each session.

    **Initialisation.** The released ``reset_parameters`` draws *every*
    parameter, the attention projections and the LayerNorm gains and biases
    included, uniformly from :math:`[-1/\sqrt{d}, 1/\sqrt{d}]`
    (``init='uniform'``, default). ``init='transformer-default'`` keeps the
    :class:`~tagnn_pyg.nn.SessionTransformer`'s own initialisation (unit
    LayerNorm gains, ...) for the Transformer's parameters.

    Adaptive gradient clipping is a training option
    (:class:`tagnn_pyg.optim.AGC`, the ``agc`` key of the presets).

    Args:
        num_items (int): Number of item ids *including* the padding id 0.
        hidden_channels (int, optional): :math:`d`. (default: :obj:`100`)
        heads (int, optional): Attention heads (:math:`d` must be divisible by
            it; checked by :class:`~tagnn_pyg.nn.SessionTransformer`, unused
            without it). (default: :obj:`2`)
        num_steps (int, optional): GNN propagation steps. (default: :obj:`1`)
        dropout (float, optional): Transformer dropout, in :math:`[0, 1)`.
            (default: :obj:`0.1`)
        use_gnn (bool, optional): ``False`` for the "-GNN" ablation (item
            embeddings go straight to the Transformer). (default: :obj:`True`)
        use_transformer (bool, optional): ``False`` for the "-Transformer"
            ablation (TAGNN). (default: :obj:`True`)
        positional (bool, optional): Learned positional embeddings ("-PE"
            ablation: ``False``). ``None``: ``True`` for ``layer='paper'``,
            ``False`` for ``layer='released'``. (default: :obj:`None`)
        layer (str, optional): ``'paper'`` or ``'released'``.
            (default: ``'paper'``)
        hybrid (bool, optional): As in :class:`TAGNN`; ``None``: ``True`` for
            ``layer='paper'``, ``False`` (released ``nonhybrid=True``) for
            ``layer='released'``. (default: :obj:`None`)
        score (str, optional): ``'released'`` or ``'paper'``, as in
            :class:`TAGNN`. (default: ``'released'``)
        session (str, optional): As in :class:`TAGNN`. (default: ``'full'``)
        max_length (int, optional): Longest session the positional table
            covers (positions count from the first click). (default: :obj:`512`)
        init (str, optional): ``'uniform'`` or ``'transformer-default'``.
            (default: ``'uniform'``)
        chunk_size (int, optional): As in :class:`TAGNN`.
        released_padding (bool, optional): Emulate the released code exactly
            (see above; needs ``layer='released'`` unless
            ``use_transformer=False``, where it is TAGNN's option).
            (default: :obj:`False`)

    Shapes:
        - **input:** a batch of :class:`~tagnn_pyg.data.SessionData` with
          :math:`B` sessions, optional ``candidates`` :math:`(B, C)` item ids
        - **output:** :math:`(B, \text{num\_items})` (column 0 =
          :math:`-\infty`) or :math:`(B, C)`
    """

    def __init__(self, num_items: int, hidden_channels: int = 100, heads: int = 2,
                 num_steps: int = 1, dropout: float = 0.1, use_gnn: bool = True,
                 use_transformer: bool = True, positional: Optional[bool] = None,
                 layer: str = 'paper', hybrid: Optional[bool] = None,
                 score: str = 'released', session: str = 'full',
                 max_length: int = 512, init: str = 'uniform',
                 chunk_size: Optional[int] = None,
                 released_padding: bool = False) -> None:
        released_padding = check_flag('released_padding', released_padding)
        use_gnn = check_flag('use_gnn', use_gnn)
        use_transformer = check_flag('use_transformer', use_transformer)
        if hybrid is not None:
            hybrid = check_flag('hybrid', hybrid)
        if positional is not None:
            positional = check_flag('positional', positional)
        if layer not in TAGNNPP_LAYERS:
            raise ValueError(f"layer must be one of {TAGNNPP_LAYERS}, got {layer!r}")
        if init not in TAGNNPP_INITS:
            raise ValueError(f"init must be one of {TAGNNPP_INITS}, got {init!r}")
        if released_padding and use_transformer and layer != 'released':
            raise ValueError(f"released_padding emulates the released TAGNN++ code, "
                             f"whose attention layer is layer='released'; got "
                             f"layer={layer!r}")
        if hybrid is None:
            hybrid = layer == 'paper'
        if positional is None:
            positional = layer == 'paper'
        if released_padding and use_transformer and positional:
            raise ValueError("released_padding emulates the released TAGNN++ code, "
                             "which adds no positional embeddings (a node list has no "
                             "click positions); got positional=True")
        super().__init__(num_items, hidden_channels, num_steps=num_steps, score=score,
                         session=session, hybrid=hybrid, chunk_size=chunk_size,
                         released_padding=released_padding, _use_gnn=use_gnn)
        self.heads = int(heads)
        self.dropout = float(dropout)
        self.use_gnn = use_gnn
        self.use_transformer = use_transformer
        self.positional = positional
        self.layer = layer
        self.max_length = int(max_length)
        self.init = init
        self.transformer: Optional[SessionTransformer] = None
        if self.use_transformer:
            # heads and dropout as given: the layer checks them (without it they are unused)
            self.transformer = SessionTransformer(
                hidden_channels, heads=heads, dropout=dropout,
                positional=self.positional, feed_forward=layer == 'paper',
                max_length=self.max_length,
                norm='post' if layer == 'paper' else 'released')
        # TAGNN.__init__ has drawn its parameters once already; drawing them all again here
        # (the Transformer's too) keeps the initial weights a seed gave in earlier versions.
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Uniform :math:`[-1/\sqrt{d}, 1/\sqrt{d}]` everywhere (released),
        or the Transformer's own initialisation with
        ``init='transformer-default'``."""
        super().reset_parameters()
        if getattr(self, 'init', 'uniform') == 'transformer-default' \
                and getattr(self, 'transformer', None) is not None:
            self.transformer.reset_parameters()

    def config(self) -> Dict[str, Any]:
        return dict(num_items=self.num_items, hidden_channels=self.hidden_channels,
                    heads=self.heads, num_steps=self.num_steps, dropout=self.dropout,
                    use_gnn=self.use_gnn, use_transformer=self.use_transformer,
                    positional=self.positional, layer=self.layer, hybrid=self.hybrid,
                    score=self.score_form, session=self.session,
                    max_length=self.max_length, init=self.init,
                    chunk_size=self.chunk_size, released_padding=self.released_padding)

    def positions(self, batch: Any) -> SessionPositions:
        if self.released_padding and self.transformer is not None:
            return self._released_positions(batch)
        pos = super().positions(batch)
        if self.transformer is not None:
            pos.x = self.transformer(pos.x, pos.index, dim_size=pos.num_sessions)
        return pos

    def _released_positions(self, batch: Any) -> SessionPositions:
        r"""The released computation: the layer over each session's padded,
        id-sorted node list, then the clicks and padded slots gathered from
        its output (see the class docstring)."""
        check_session_batch(batch, self.num_items)
        h = self.node_features(batch)           # [N, d] states of the batch's nodes
        index, num_nodes, B = batch.seq_batch, batch.x.numel(), batch.last.numel()
        pad_count = self.pad_counts(index, B)
        # session of each node, from the clicks that point at it
        node_session = batch.x.new_zeros(num_nodes).scatter_(0, batch.seq, index)
        padded = (pad_count > 0).nonzero().view(-1)          # sessions with node 0
        feats = torch.cat([h, self.padding_state().expand(padded.numel(), -1)])
        session = torch.cat([node_session, padded])
        item = torch.cat([batch.x, batch.x.new_zeros(padded.numel())])
        # order of the released node lists: by session, then by item id (0 first)
        order = torch.sort(session * self.num_items + item)[1]
        out = torch.empty_like(feats)
        out[order] = self.transformer(feats[order], session[order], dim_size=B)
        pad_x = out.new_zeros(B, out.size(-1))
        pad_x[padded] = out[num_nodes:]
        return SessionPositions(out[:num_nodes][batch.seq], index, B, pad_count, pad_x)
