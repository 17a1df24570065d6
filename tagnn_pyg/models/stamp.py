r"""STAMP (Liu et al., KDD 2018): attention over the session's item embeddings,
anchored on the last click and the session mean, and a trilinear score."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import Tensor
from torch.nn import Linear

from torch_geometric.nn.aggr import MeanAggregation, SumAggregation

from tagnn_pyg.models.scoring import SessionPositions, SessionRecommender, dot_scores
from tagnn_pyg.models.sequence import click_items
from tagnn_pyg.nn.readouts import LastItemReadout
from tagnn_pyg.utils.checks import check_flag

__all__ = ['STAMP']


class STAMP(SessionRecommender):
    r"""STAMP, the Short-Term Attention/Memory Priority model (Liu, Zeng,
    Mokhosi and Zhang, "STAMP: Short-Term Attention/Memory Priority Model for
    Session-based Recommendation", KDD 2018).

    On the embeddings :math:`\mathbf{x}_1, \dots, \mathbf{x}_t` of a session's
    clicks in order (no graph, no RNN):

    .. math::
        \mathbf{m}_s &= \frac{1}{t}\sum_{i=1}^{t} \mathbf{x}_i, \qquad
        \mathbf{m}_t = \mathbf{x}_t

        \alpha_i &= \mathbf{W}_0^{\top} \sigma(\mathbf{W}_1 \mathbf{x}_i
            + \mathbf{W}_2 \mathbf{x}_t + \mathbf{W}_3 \mathbf{m}_s
            + \mathbf{b}_a), \qquad
        \mathbf{m}_a = \sum_{i=1}^{t} \alpha_i \mathbf{x}_i

        \mathbf{h}_s &= \tanh(\mathbf{W}_s \mathbf{m}_a + \mathbf{b}_s), \qquad
        \mathbf{h}_t = \tanh(\mathbf{W}_t \mathbf{m}_t + \mathbf{b}_t)

        z_i &= \langle \mathbf{h}_s, \mathbf{h}_t, \mathbf{x}_i \rangle
            = \sum_{k} h_{s,k}\, h_{t,k}\, x_{i,k}, \qquad i = 1, \dots, m

    with :math:`\sigma` the sigmoid, raw :math:`\alpha_i` (no softmax, as in
    the paper), :math:`\mathbf{W}_0 \in \mathbb{R}^{d}`,
    :math:`\mathbf{W}_{1,2,3} \in \mathbb{R}^{d \times d}` without biases
    besides :math:`\mathbf{b}_a`, and the item embeddings
    :math:`\mathbf{x}_i` (``embedding.weight[i]``) as both inputs and
    candidate vectors. The paper wraps the trilinear product in a sigmoid
    before the softmax (:math:`\hat{\mathbf{z}} = \sigma(\langle\cdot\rangle)`),
    which bounds every logit to :math:`(0, 1)`; by default the raw product goes
    into the cross-entropy, as common implementations of STAMP (e.g.
    RecBole's) do; ``sigmoid=True`` applies the paper's :math:`\sigma`.
    :math:`\mathbf{m}_s` is :class:`~torch_geometric.nn.aggr.MeanAggregation`,
    :math:`\mathbf{m}_t` :class:`~tagnn_pyg.nn.LastItemReadout`, the sum of
    :math:`\alpha_i \mathbf{x}_i` a
    :class:`~torch_geometric.nn.aggr.SumAggregation` over positions, so no
    padding is involved. (The attention differs from
    :class:`~tagnn_pyg.nn.SoftAttentionReadout` by the :math:`\mathbf{W}_3
    \mathbf{m}_s` term, so it is written out here.) STAMP without the
    attention (``attention=False``: :math:`\mathbf{m}_a = \mathbf{m}_s`) is
    the paper's STMP.

    Every parameter starts uniform in :math:`[-1/\sqrt{d}, 1/\sqrt{d}]` (the
    library's convention; the paper draws from normal distributions).

    Args:
        num_items (int): Number of item ids *including* the padding id 0.
        hidden_channels (int, optional): Embedding size :math:`d`.
            (default: :obj:`100`)
        attention (bool, optional): ``False``: STMP, :math:`\mathbf{m}_a =
            \mathbf{m}_s`. (default: :obj:`True`)
        sigmoid (bool, optional): The paper's :math:`\sigma` on the trilinear
            product. (default: :obj:`False`)

    Shapes:
        - **input:** a batch of :class:`~tagnn_pyg.data.SessionData` with
          :math:`B` sessions (only ``x``, ``seq``, ``seq_batch``, ``last`` are
          read), optional ``candidates`` :math:`(B, C)` item ids
        - **output:** :math:`(B, \text{num\_items})` (column 0 =
          :math:`-\infty`) or :math:`(B, C)`
    """

    def __init__(self, num_items: int, hidden_channels: int = 100,
                 attention: bool = True, sigmoid: bool = False) -> None:
        super().__init__(num_items, hidden_channels)
        self.attention = check_flag('attention', attention)
        self.sigmoid = check_flag('sigmoid', sigmoid)
        d = hidden_channels
        self.mean = MeanAggregation()
        self.last = LastItemReadout()
        if self.attention:
            self.sum = SumAggregation()
            self.lin_w1 = Linear(d, d, bias=False)
            self.lin_w2 = Linear(d, d, bias=False)
            self.lin_w3 = Linear(d, d, bias=False)
            self.b_a = torch.nn.Parameter(torch.empty(d))
            self.lin_w0 = Linear(d, 1, bias=False)
        self.mlp_s = Linear(d, d)   # W_s, b_s
        self.mlp_t = Linear(d, d)   # W_t, b_t
        self.reset_parameters()

    def config(self) -> Dict[str, Any]:
        return dict(num_items=self.num_items, hidden_channels=self.hidden_channels,
                    attention=self.attention, sigmoid=self.sigmoid)

    def positions(self, batch: Any) -> SessionPositions:
        r"""The item embedding :math:`\mathbf{x}_i` of every click."""
        return SessionPositions(self.embedding(click_items(batch, self.num_items)), batch.seq_batch,
                                batch.last.numel())

    def session_embedding(self, pos: SessionPositions) -> Tensor:
        r"""``[B, d]`` :math:`\mathbf{h}_s \odot \mathbf{h}_t`."""
        B, x, index = pos.num_sessions, pos.x, pos.index
        m_s = self.mean(x, index, dim_size=B)
        m_t = self.last(x, index, dim_size=B)
        if self.attention:
            anchor = self.lin_w2(m_t) + self.lin_w3(m_s) + self.b_a
            alpha = self.lin_w0(torch.sigmoid(self.lin_w1(x) + anchor[index]))
            m_a = self.sum(alpha * x, index, dim_size=B)
        else:
            m_a = m_s
        return torch.tanh(self.mlp_s(m_a)) * torch.tanh(self.mlp_t(m_t))

    def score(self, pos: SessionPositions, candidates: Optional[Tensor]) -> Tensor:
        z = dot_scores(self.session_embedding(pos), self.embedding.weight, candidates)
        if self.sigmoid:
            z = torch.sigmoid(z).masked_fill(torch.isneginf(z), float('-inf'))
        return z
