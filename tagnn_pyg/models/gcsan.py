r"""GC-SAN (Xu et al., IJCAI 2019) as a composition of :mod:`tagnn_pyg.nn` parts."""
from __future__ import annotations

from typing import Any, Dict, Optional

from torch import Tensor

from tagnn_pyg.models.scoring import SessionPositions, SessionRecommender, dot_scores
from tagnn_pyg.nn import GatedSessionConv
from tagnn_pyg.nn.readouts import LastItemReadout
from tagnn_pyg.nn.session_self_attention import SessionSelfAttention

__all__ = ['GCSAN']


class GCSAN(SessionRecommender):
    r"""GC-SAN, the Graph Contextualized Self-Attention Network (Xu, Zhao, Liu,
    Sheng, Xu, Zhuang, Fang and Zhou, "Graph Contextualized Self-Attention
    Network for Session-based Recommendation", IJCAI 2019): SR-GNN's session
    graph and gated GNN, then :math:`k` self-attention blocks over the clicks,
    then a weighted sum of the last click's two representations.

    .. math::
        \mathbf{h} &= \mathrm{GatedSessionConv}^{K}(\mathbf{E}[\mathbf{x}]),
            \qquad \mathbf{H} = [\mathbf{h}_{s_1}, \dots, \mathbf{h}_{s_n}]
            \quad\text{(node states gathered to the clicks)}

        \mathbf{E}^{(k)} &= \mathrm{SessionSelfAttention}^{k}(\mathbf{H}),
            \qquad \mathbf{F} = \mathrm{softmax}\left(\tfrac{(\mathbf{H}
            \mathbf{W}^Q)(\mathbf{H}\mathbf{W}^K)^{\top}}{\sqrt{d}}\right)
            (\mathbf{H}\mathbf{W}^V), \quad
            \mathbf{E} = \mathrm{ReLU}(\mathbf{F}\mathbf{W}_1 + \mathbf{b}_1)
            \mathbf{W}_2 + \mathbf{b}_2 + \mathbf{F}

        \mathbf{S}_f &= \omega\, \mathbf{E}^{(k)}_n + (1 - \omega)\,
            \mathbf{h}_{s_n}, \qquad
        z_t = \mathbf{v}_t^{\top} \mathbf{S}_f, \quad t = 1, \dots, m

    with the raw item embedding :math:`\mathbf{v}_t` (``embedding.weight[t]``)
    and :math:`\omega` = ``weight``. The GNN is SR-GNN's
    (:class:`~tagnn_pyg.nn.GatedSessionConv`, the released code's form, as
    for :class:`SRGNN`), the blocks are
    :class:`~tagnn_pyg.nn.SessionSelfAttention` (see there for the choices:
    no LayerNorm, no residual around the attention, unmasked attention by
    default). :class:`~tagnn_pyg.nn.SessionTransformer` (TAGNN++) is not
    reused: it is always causal, has the residual and LayerNorm of a standard
    Transformer layer around both sub-layers, biased projections and an output
    projection, which the paper's eq. (6)-(7) do not have.

    Every parameter starts uniform in :math:`[-1/\sqrt{d}, 1/\sqrt{d}]` (the
    library's convention; the paper draws from :math:`\mathcal{N}(0, 0.1^2)`
    as SR-GNN's paper says, RecBole from :math:`\mathcal{N}(0, 0.02^2)`).

    Args:
        num_items (int): Number of item ids *including* the padding id 0.
        hidden_channels (int, optional): :math:`d`. (default: :obj:`100`)
        num_steps (int, optional): GNN propagation steps :math:`K`.
            (default: :obj:`1`)
        num_layers (int, optional): Self-attention blocks :math:`k`.
            (default: :obj:`1`)
        weight (float, optional): :math:`\omega \in [0, 1]`. (default: :obj:`0.6`)
        heads (int, optional): Attention heads (:obj:`1`: the paper's).
            (default: :obj:`1`)
        ff_channels (int, optional): Feed-forward width (:obj:`None`:
            :math:`d`, the paper's). (default: :obj:`None`)
        dropout (float, optional): Dropout in the self-attention blocks.
            (default: :obj:`0.0`)
        causal (bool, optional): Causal attention mask (RecBole's).
            (default: :obj:`False`)

    Shapes:
        - **input:** a batch of :class:`~tagnn_pyg.data.SessionData` with
          :math:`B` sessions, optional ``candidates`` :math:`(B, C)` item ids
        - **output:** :math:`(B, \text{num\_items})` (column 0 =
          :math:`-\infty`) or :math:`(B, C)`
    """

    def __init__(self, num_items: int, hidden_channels: int = 100, num_steps: int = 1,
                 num_layers: int = 1, weight: float = 0.6, heads: int = 1,
                 ff_channels: Optional[int] = None, dropout: float = 0.0,
                 causal: bool = False) -> None:
        super().__init__(num_items, hidden_channels)
        if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                or not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight (omega) must be a float in [0, 1], got {weight!r}")
        self.num_steps = num_steps
        self.weight = float(weight)
        self.gnn = GatedSessionConv(hidden_channels, num_steps=num_steps)
        self.self_attention = SessionSelfAttention(
            hidden_channels, num_layers=num_layers, heads=heads, ff_channels=ff_channels,
            dropout=dropout, causal=causal)
        self.last = LastItemReadout()
        self.reset_parameters()

    def config(self) -> Dict[str, Any]:
        sa = self.self_attention
        return dict(num_items=self.num_items, hidden_channels=self.hidden_channels,
                    num_steps=self.num_steps, num_layers=sa.num_layers,
                    weight=self.weight, heads=sa.heads, ff_channels=sa.ff_channels,
                    dropout=sa.dropout, causal=sa.causal)

    def node_features(self, batch: Any) -> Tensor:
        return self.gnn(self.embedding(batch.x), batch.edge_index,
                        getattr(batch, 'edge_weight_in', None),
                        getattr(batch, 'edge_weight_out', None))

    def session_embedding(self, pos: SessionPositions) -> Tensor:
        r"""``[B, d]`` :math:`\mathbf{S}_f = \omega \mathbf{E}^{(k)}_n +
        (1 - \omega) \mathbf{h}_{s_n}`."""
        B = pos.num_sessions
        e = self.self_attention(pos.x, pos.index, dim_size=B)
        e_n = self.last(e, pos.index, dim_size=B)
        h_n = self.last(pos.x, pos.index, dim_size=B)
        return self.weight * e_n + (1.0 - self.weight) * h_n

    def score(self, pos: SessionPositions, candidates: Optional[Tensor]) -> Tensor:
        return dot_scores(self.session_embedding(pos), self.embedding.weight, candidates)
