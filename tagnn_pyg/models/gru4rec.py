r"""GRU4Rec (Hidasi et al., ICLR 2016): a GRU over the clicks, its last state
scores the items; trained here with full cross-entropy over all items."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import Tensor

from tagnn_pyg.models.scoring import SessionPositions, SessionRecommender, dot_scores
from tagnn_pyg.models.sequence import check_rate, click_items, gru_positions
from tagnn_pyg.nn.readouts import LastItemReadout

__all__ = ['GRU4Rec']


class GRU4Rec(SessionRecommender):
    r"""GRU4Rec (Hidasi, Karatzoglou, Baltrunas and Tikk, "Session-based
    Recommendations with Recurrent Neural Networks", ICLR 2016), trained like
    every model of the library: one prefix, one prediction, softmax
    cross-entropy over all items. This is not the set-up behind the published
    GRU4Rec row of the SR-GNN / TAGNN tables (29.45 / 8.33 on Diginetica),
    which comes from the original session-parallel training with sampled
    ranking losses (see the differences below); expect this form to score far
    higher.

    .. math::
        \mathbf{h}_j &= \mathrm{GRU}(\mathbf{e}_{x_j}, \mathbf{h}_{j-1}),
            \qquad j = 1, \dots, t \quad (\text{stacked } L \text{ times})

        z_i &= \mathbf{e}_i^{\top} \mathbf{W}_o \mathbf{h}_t,
            \qquad i = 1, \dots, m

    where the GRU is the paper's (PyTorch's :class:`torch.nn.GRU`:
    :math:`\mathbf{r}_j = \sigma(\mathbf{W}_r \mathbf{e}_{x_j} + \mathbf{U}_r
    \mathbf{h}_{j-1})`, :math:`\mathbf{z}_j = \sigma(\mathbf{W}_z
    \mathbf{e}_{x_j} + \mathbf{U}_z \mathbf{h}_{j-1})`,
    :math:`\hat{\mathbf{h}}_j = \tanh(\mathbf{W} \mathbf{e}_{x_j} +
    \mathbf{r}_j \odot \mathbf{U} \mathbf{h}_{j-1})`, :math:`\mathbf{h}_j =
    (1 - \mathbf{z}_j) \odot \hat{\mathbf{h}}_j + \mathbf{z}_j \odot
    \mathbf{h}_{j-1}`, biases included), :math:`\mathbf{h}_t` its top-layer
    state after the last click (:class:`~tagnn_pyg.nn.LastItemReadout` on the
    states) and :math:`\mathbf{W}_o \in \mathbb{R}^{D \times H}`.

    Differences from the paper, by design: the paper feeds one-hot items and
    has its own output weights and biases, trained session-parallel with
    sampled TOP1 / BPR ranking losses; here an item embedding
    :math:`\mathbf{e}_i` (``embedding.weight[i]``, size
    ``embedding_channels``) is both input and output item vector (as in the
    other models, so scores are inner products with ``embedding``), and every
    prefix of a session is one training example with the cross-entropy over
    all items, like every other model here. ``dropout`` acts on :math:`\mathbf{h}_t`
    (the paper's hidden-layer dropout), ``embedding_dropout`` on the GRU's
    inputs.

    Every parameter starts uniform in :math:`[-1/\sqrt{H}, 1/\sqrt{H}]`
    (the library's convention; PyTorch's own for a GRU).

    Args:
        num_items (int): Number of item ids *including* the padding id 0.
        hidden_channels (int, optional): GRU size :math:`H`. (default: :obj:`100`)
        embedding_channels (int, optional): Item embedding size :math:`D`
            (default: :obj:`None`, :math:`H`)
        num_layers (int, optional): Stacked GRU layers. (default: :obj:`1`)
        dropout (float, optional): Dropout on :math:`\mathbf{h}_t`.
            (default: :obj:`0.0`)
        embedding_dropout (float, optional): Dropout on the input embeddings.
            (default: :obj:`0.0`)

    Shapes:
        - **input:** a batch of :class:`~tagnn_pyg.data.SessionData` with
          :math:`B` sessions (only ``x``, ``seq``, ``seq_batch``, ``last`` are
          read), optional ``candidates`` :math:`(B, C)` item ids
        - **output:** :math:`(B, \text{num\_items})` (column 0 =
          :math:`-\infty`) or :math:`(B, C)`
    """

    def __init__(self, num_items: int, hidden_channels: int = 100,
                 embedding_channels: Optional[int] = None, num_layers: int = 1,
                 dropout: float = 0.0, embedding_dropout: float = 0.0) -> None:
        super().__init__(num_items, hidden_channels)
        if embedding_channels is None:
            embedding_channels = hidden_channels
        for name, value in (('embedding_channels', embedding_channels),
                            ('num_layers', num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.embedding_channels = embedding_channels
        self.num_layers = num_layers
        self.dropout = check_rate('dropout', dropout)
        self.embedding_dropout = check_rate('embedding_dropout', embedding_dropout)
        H, D = hidden_channels, embedding_channels
        self.embedding = torch.nn.Embedding(num_items, D)
        self.gru = torch.nn.GRU(D, H, num_layers=num_layers, batch_first=True)
        self.last = LastItemReadout()
        self.lin_out = torch.nn.Linear(H, D, bias=False)   # W_o
        #: Fixed steps per session (export only; ``None``: packed sessions).
        self.static_length: Optional[int] = None
        self.reset_parameters()

    def config(self) -> Dict[str, Any]:
        return dict(num_items=self.num_items, hidden_channels=self.hidden_channels,
                    embedding_channels=self.embedding_channels,
                    num_layers=self.num_layers, dropout=self.dropout,
                    embedding_dropout=self.embedding_dropout)

    def positions(self, batch: Any) -> SessionPositions:
        r"""The GRU's top-layer state :math:`\mathbf{h}_j` at every click."""
        x = self.embedding(click_items(batch, self.num_items))
        x = torch.nn.functional.dropout(x, self.embedding_dropout, self.training)
        B = batch.last.numel()
        return SessionPositions(gru_positions(self.gru, x, batch.seq_batch, B,
                                              self.static_length),
                                batch.seq_batch, B)

    def score(self, pos: SessionPositions, candidates: Optional[Tensor]) -> Tensor:
        h_t = self.last(pos.x, pos.index, dim_size=pos.num_sessions)
        h_t = torch.nn.functional.dropout(h_t, self.dropout, self.training)
        return dot_scores(self.lin_out(h_t), self.embedding.weight, candidates)
