r"""NARM (Li et al., CIKM 2017): a GRU over the clicks with a global and an
attentive local encoder, and a bilinear decoder."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import Tensor

from tagnn_pyg.models.scoring import SessionPositions, SessionRecommender, dot_scores
from tagnn_pyg.models.sequence import check_rate, click_items, gru_positions
from tagnn_pyg.nn.readouts import LastItemReadout, SoftAttentionReadout

__all__ = ['NARM']


class NARM(SessionRecommender):
    r"""NARM, the Neural Attentive Recommendation Machine (Li, Ren, Chen, Ren,
    Lian and Ma, "Neural Attentive Session-based Recommendation", CIKM 2017).

    One GRU reads the session's clicks :math:`x_1, \dots, x_t` in order (no
    graph); its last state is the *global* encoding, an attention over all its
    states the *local* one, and a bilinear map scores the items:

    .. math::
        \mathbf{h}_j &= \mathrm{GRU}(\mathbf{e}_{x_j}, \mathbf{h}_{j-1}),
            \qquad \mathbf{c}^{g}_t = \mathbf{h}_t

        \alpha_{tj} &= \mathbf{v}^{\top}\sigma(\mathbf{A}_1 \mathbf{h}_t
            + \mathbf{A}_2 \mathbf{h}_j), \qquad
        \mathbf{c}^{l}_t = \sum_{j=1}^{t} \alpha_{tj} \mathbf{h}_j

        \mathbf{c}_t &= [\mathbf{c}^{g}_t; \mathbf{c}^{l}_t], \qquad
        z_i = \mathbf{e}_i^{\top} \mathbf{B}\, \mathbf{c}_t,
            \quad i = 1, \dots, m

    with the item embeddings :math:`\mathbf{e}_i` (``embedding.weight[i]``,
    size ``embedding_channels``) as both the GRU's input and the decoder's
    item vectors, :math:`\mathbf{B} \in \mathbb{R}^{D \times 2H}`, and the
    softmax cross-entropy over :math:`z` as the loss (the paper's). The local
    encoder is :class:`~tagnn_pyg.nn.SoftAttentionReadout` with
    ``softmax=False, bias=False`` (raw :math:`\alpha`, no biases, as the
    paper's :math:`q(\mathbf{h}_t, \mathbf{h}_j)`), the global one
    :class:`~tagnn_pyg.nn.LastItemReadout` on the GRU states. Dropout as in
    the paper: ``embedding_dropout`` between the embeddings and the GRU,
    ``dropout`` on :math:`\mathbf{c}_t` before :math:`\mathbf{B}`.

    Every parameter starts uniform in :math:`[-1/\sqrt{H}, 1/\sqrt{H}]`
    (the library's convention; PyTorch's own GRU initialisation).

    Args:
        num_items (int): Number of item ids *including* the padding id 0.
        hidden_channels (int, optional): GRU size :math:`H`. (default: :obj:`100`)
        embedding_channels (int, optional): Item embedding size :math:`D`.
            (default: :obj:`50`)
        embedding_dropout (float, optional): Dropout on the GRU's input
            embeddings. (default: :obj:`0.25`)
        dropout (float, optional): Dropout on :math:`\mathbf{c}_t`.
            (default: :obj:`0.5`)

    Shapes:
        - **input:** a batch of :class:`~tagnn_pyg.data.SessionData` with
          :math:`B` sessions (only ``x``, ``seq``, ``seq_batch``, ``last`` are
          read), optional ``candidates`` :math:`(B, C)` item ids
        - **output:** :math:`(B, \text{num\_items})` (column 0 =
          :math:`-\infty`) or :math:`(B, C)`
    """

    def __init__(self, num_items: int, hidden_channels: int = 100,
                 embedding_channels: int = 50, embedding_dropout: float = 0.25,
                 dropout: float = 0.5) -> None:
        super().__init__(num_items, hidden_channels)
        if not isinstance(embedding_channels, int) or isinstance(embedding_channels, bool) \
                or embedding_channels < 1:
            raise ValueError(f"embedding_channels must be a positive int, got "
                             f"{embedding_channels!r}")
        self.embedding_channels = embedding_channels
        self.embedding_dropout = check_rate('embedding_dropout', embedding_dropout)
        self.dropout = check_rate('dropout', dropout)
        H, D = hidden_channels, embedding_channels
        self.embedding = torch.nn.Embedding(num_items, D)
        self.gru = torch.nn.GRU(D, H, batch_first=True)
        self.global_readout = LastItemReadout()
        self.local_readout = SoftAttentionReadout(H, softmax=False, bias=False)
        self.lin_b = torch.nn.Linear(2 * H, D, bias=False)   # B
        #: Fixed steps per session (export only; ``None``: packed sessions).
        self.static_length: Optional[int] = None
        self.reset_parameters()

    def config(self) -> Dict[str, Any]:
        return dict(num_items=self.num_items, hidden_channels=self.hidden_channels,
                    embedding_channels=self.embedding_channels,
                    embedding_dropout=self.embedding_dropout, dropout=self.dropout)

    def positions(self, batch: Any) -> SessionPositions:
        r"""The GRU state :math:`\mathbf{h}_j` at every click."""
        items = click_items(batch, self.num_items)
        x = self.embedding(items)
        x = torch.nn.functional.dropout(x, self.embedding_dropout, self.training)
        B = batch.last.numel()
        return SessionPositions(gru_positions(self.gru, x, batch.seq_batch, B,
                                              self.static_length),
                                batch.seq_batch, B)

    def session_embedding(self, pos: SessionPositions) -> Tensor:
        r"""``[B, 2H]`` :math:`\mathbf{c}_t = [\mathbf{c}^g_t; \mathbf{c}^l_t]`."""
        B = pos.num_sessions
        c_g = self.global_readout(pos.x, pos.index, dim_size=B)
        c_l = self.local_readout(pos.x, pos.index, dim_size=B, last=c_g)
        return torch.cat([c_g, c_l], dim=-1)

    def score(self, pos: SessionPositions, candidates: Optional[Tensor]) -> Tensor:
        c = torch.nn.functional.dropout(self.session_embedding(pos), self.dropout,
                                        self.training)
        return dot_scores(self.lin_b(c), self.embedding.weight, candidates)
