r"""TAGNN (Yu et al., SIGIR 2020) as a composition of :mod:`tagnn_pyg.nn` parts."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.nn.aggr import MeanAggregation

from tagnn_pyg.models.scoring import (SessionPositions, SessionRecommender, dot_scores,
                                      pad_padding_column)
from tagnn_pyg.nn import GatedSessionConv
from tagnn_pyg.nn.readouts import LastItemReadout, SoftAttentionReadout
from tagnn_pyg.nn.target_attention import TargetAttention
from tagnn_pyg.utils.checks import check_flag

__all__ = ['TAGNN', 'TAGNN_SCORES', 'TAGNN_SESSIONS', 'padded_like_released']

TAGNN_SCORES = ('released', 'paper')
TAGNN_SESSIONS = ('full', 'local', 'mean', 'attention', 'local+attention')


class TAGNN(SessionRecommender):
    r"""TAGNN: gated GNN + target-aware attention over the session's clicks.

    Positions :math:`\mathbf{v}_i` (the GNN states of the clicked items, in click
    order), the last click :math:`\mathbf{v}_{s_n}`, candidate items
    :math:`\mathbf{v}_t` = ``embedding.weight[t]`` (raw embeddings), :math:`t =
    1..m`:

    .. math::
        \beta_{i,t} &= \mathrm{softmax}_i\left(\mathbf{v}_t^{\top}\mathbf{W}
            \mathbf{v}_i\right), \qquad
        \mathbf{s}^t_{target} = \sum_i \beta_{i,t} \mathbf{v}_i
            \qquad\text{(eq. 6-7)}

        \alpha_i &= \mathrm{softmax}_i\left(\mathbf{q}^{\top}\sigma(\mathbf{W}_1
            \mathbf{v}_{s_n} + \mathbf{W}_2 \mathbf{v}_i + \mathbf{c})\right),
            \qquad
        \mathbf{s}_{global} = \sum_i \alpha_i \mathbf{v}_i, \qquad
        \mathbf{s}_{local} = \mathbf{v}_{s_n}

    (the softmax over :math:`\alpha` is the released code's; SR-GNN has none).
    The score of item :math:`t`:

    * ``score='released'`` (default; the code that produced the published
      numbers):
      :math:`z_t = \mathbf{v}_t^{\top}\left(\mathbf{W}'_3[\mathbf{s}_{global};
      \mathbf{s}_{local}] + \mathbf{b}'_3 + \mathbf{s}^t_{target}\right)`,
      or with ``hybrid=False``
      :math:`z_t = \mathbf{v}_t^{\top}(\mathbf{s}_{global} + \mathbf{s}^t_{target})`;
    * ``score='paper'`` (eq. 10):
      :math:`z_t = \mathbf{v}_t^{\top}\mathbf{W}_3[\mathbf{s}^t_{target};
      \mathbf{s}_{local}; \mathbf{s}_{global}]`, :math:`\mathbf{W}_3 \in
      \mathbb{R}^{d \times 3d}` without bias.

    Both are computed as :math:`z_t = c_t + \sum_i \beta_{i,t}\,(\mathbf{u}_t
    \cdot \mathbf{v}_i)` with :math:`\mathbf{u}_t = \mathbf{v}_t` (released) or
    :math:`\mathbf{u}_t = \mathbf{W}_{3a}^{\top}\mathbf{v}_t` (paper,
    :math:`\mathbf{W}_3 = [\mathbf{W}_{3a} | \mathbf{W}_{3b} | \mathbf{W}_{3c}]`)
    and :math:`c_t` the inner product of :math:`\mathbf{v}_t` with the
    target-independent part, by :class:`~tagnn_pyg.nn.TargetAttention`, which
    never builds the ``[B, m, d]`` tensor of the released code. Attention is
    per session.

    The released code's softmaxes also run over padded slots: it pads every
    session to the longest one of the data set it iterates (69 clicks for
    Diginetica's training set, 40 for its test set), each slot adding
    :math:`e^0` to the target attention's denominator and
    :math:`e^{\alpha_{pad}}` (the GNN state of the padding item) to the soft
    attention's. ``released_padding=True`` emulates exactly that, for
    reproduction studies: session :math:`s` of length :math:`n_s` gets
    :math:`L - n_s` padded slots, with :math:`L` = ``model.pad_length``
    (set to the longest session of the data being iterated by the trainer and
    :func:`~tagnn_pyg.train.evaluate`, see :func:`padded_like_released`); a
    model whose ``pad_length`` is unset refuses to score (a batch does not know
    its data set's longest session). A session's scores then depend on
    :math:`L`, as in the released code.

    The paper's ablations (section 3.3) drop the target term and keep one
    session representation (``session=``): ``'local'`` (TAGNN-L,
    :math:`z_t = \mathbf{v}_t^{\top}\mathbf{s}_{local}`), ``'mean'``
    (TAGNN-Avg, mean of the :math:`\mathbf{v}_i`), ``'attention'`` (TAGNN-Att,
    :math:`\mathbf{s}_{global}`), ``'local+attention'`` (TAGNN-L+Att,
    :math:`\mathbf{W}'_3[\mathbf{s}_{global}; \mathbf{s}_{local}] +
    \mathbf{b}'_3`). ``score`` and ``hybrid`` only affect ``session='full'``.

    Args:
        num_items (int): Number of item ids *including* the padding id 0.
        hidden_channels (int, optional): :math:`d`. (default: :obj:`100`)
        num_steps (int, optional): GNN propagation steps. (default: :obj:`1`)
        score (str, optional): ``'released'`` or ``'paper'`` (eq. 10).
            (default: ``'released'``)
        session (str, optional): ``'full'`` (TAGNN) or one of the ablations
            above. (default: ``'full'``)
        hybrid (bool, optional): With ``score='released'``, use
            :math:`\mathbf{W}'_3[\mathbf{s}_{global}; \mathbf{s}_{local}] +
            \mathbf{b}'_3` (``True``, released default) or
            :math:`\mathbf{s}_{global}` alone (``--nonhybrid``).
            (default: :obj:`True`)
        chunk_size (int, optional): Items per chunk in
            :class:`~tagnn_pyg.nn.TargetAttention` (bounds peak memory);
            ``None`` keeps its default.
        released_padding (bool, optional): Emulate the released code's
            softmaxes over padded slots (see above; ``session`` ``'full'``,
            ``'attention'`` or ``'local+attention'``). (default: :obj:`False`)

    Shapes:
        - **input:** a batch of :class:`~tagnn_pyg.data.SessionData` with
          :math:`B` sessions, optional ``candidates`` :math:`(B, C)` item ids
        - **output:** :math:`(B, \text{num\_items})` (column 0 =
          :math:`-\infty`) or :math:`(B, C)`
    """

    def __init__(self, num_items: int, hidden_channels: int = 100, num_steps: int = 1,
                 score: str = 'released', session: str = 'full', hybrid: bool = True,
                 chunk_size: Optional[int] = None, released_padding: bool = False,
                 *, _use_gnn: bool = True) -> None:
        # ``_use_gnn=False`` (not part of config()): TAGNNPlusPlus(use_gnn=False), the
        # "-GNN" ablation, which would otherwise build a GNN only to discard it.
        super().__init__(num_items, hidden_channels)
        released_padding = check_flag('released_padding', released_padding)
        hybrid = check_flag('hybrid', hybrid)
        _use_gnn = check_flag('use_gnn', _use_gnn)
        if score not in TAGNN_SCORES:
            raise ValueError(f"score must be one of {TAGNN_SCORES}, got {score!r}")
        if session not in TAGNN_SESSIONS:
            raise ValueError(f"session must be one of {TAGNN_SESSIONS}, got {session!r}")
        if released_padding and session in ('local', 'mean'):
            raise ValueError(f"released_padding emulates padded slots in the attention "
                             f"softmaxes; session={session!r} has none")
        self.released_padding = released_padding
        #: Length every session is padded to with ``released_padding``: the
        #: longest session of the data set being iterated. Required (``None``
        #: raises); set by :func:`padded_like_released`.
        self.pad_length: Optional[int] = None
        self.num_steps = int(num_steps)
        self.score_form = score
        self.session = session
        self.hybrid = hybrid
        self.chunk_size = chunk_size
        d = hidden_channels
        full = session == 'full'

        self.gnn: Optional[GatedSessionConv] = (
            GatedSessionConv(d, num_steps=self.num_steps) if _use_gnn else None)
        uses_local = session in ('full', 'local', 'local+attention')
        uses_global = session in ('full', 'attention', 'local+attention')
        self.local_readout = LastItemReadout() if uses_local else None
        self.global_readout = SoftAttentionReadout(d, softmax=True) if uses_global else None
        self.mean_readout = MeanAggregation() if session == 'mean' else None
        # released W3' (linear_transform, with bias) over [s_global; s_local]
        needs_transform = session == 'local+attention' or (
            full and score == 'released' and self.hybrid)
        self.lin_transform = torch.nn.Linear(2 * d, d) if needs_transform else None
        # paper W3 over [s_target; s_local; s_global], eq. (10), no bias
        self.lin_score = (torch.nn.Linear(3 * d, d, bias=False)
                          if full and score == 'paper' else None)
        if full:
            kw = {} if chunk_size is None else {'chunk_size': chunk_size}
            self.target_attention: Optional[TargetAttention] = TargetAttention(d, **kw)
        else:
            self.target_attention = None
        self.reset_parameters()

    def config(self) -> Dict[str, Any]:
        return dict(num_items=self.num_items, hidden_channels=self.hidden_channels,
                    num_steps=self.num_steps, score=self.score_form, session=self.session,
                    hybrid=self.hybrid, chunk_size=self.chunk_size,
                    released_padding=self.released_padding)

    # -- encoder -----------------------------------------------------------
    def node_features(self, batch: Any) -> Tensor:
        x = self.embedding(batch.x)
        if self.gnn is None:
            return x
        return self.gnn(x, batch.edge_index, getattr(batch, 'edge_weight_in', None),
                        getattr(batch, 'edge_weight_out', None))

    def positions(self, batch: Any) -> SessionPositions:
        pos = super().positions(batch)
        if self.released_padding:
            self._add_padding(pos)
        return pos

    def _add_padding(self, pos: SessionPositions) -> None:
        r"""Set ``pos.pad_count`` (:math:`L - n_s`) and ``pos.pad_x`` (the GNN
        state of an isolated padding node, as in the released batches)."""
        pos.pad_count = self.pad_counts(pos.index, pos.num_sessions)
        pos.pad_x = self.padding_state()

    def pad_counts(self, index: Tensor, num_sessions: int) -> Tensor:
        r"""``[B]`` padded slots :math:`L - n_s` of every session, with
        :math:`L` = :attr:`pad_length` and :math:`n_s` the session's clicks.

        Raises:
            ValueError: when :attr:`pad_length` is unset (the released code pads
                to the longest session of the *data set*, which a batch cannot
                know), or shorter than a session of the batch.
        """
        if self.pad_length is None:
            raise ValueError(
                f"{type(self).__name__}(released_padding=True) pads every session to "
                f"the longest session of the data set being iterated, as the released "
                f"code does, but model.pad_length is unset: set model.pad_length to "
                f"that length (SessionSequences.max_length, e.g. 69 for Diginetica's "
                f"training set and 40 for its test set), or call the model inside "
                f"padded_like_released(model, sequences) (the trainer and evaluate() "
                f"do this)")
        lengths = torch.bincount(index, minlength=num_sessions)
        longest = int(lengths.max()) if lengths.numel() else 0
        if longest > self.pad_length:
            raise ValueError(f"pad_length={self.pad_length} is shorter than the "
                             f"longest session of the batch ({longest} clicks)")
        return self.pad_length - lengths

    def padding_state(self) -> Tensor:
        r"""``[d]`` the node state of the padding item 0 as an isolated node
        (no edges), which the released batches carry in every padded slot."""
        pad = self.embedding.weight[:1]                    # item 0, one node, no edges
        if self.gnn is not None:
            none = torch.zeros(2, 0, dtype=torch.long, device=pad.device)
            pad = self.gnn(pad, none)
        return pad[0]

    # -- readouts ----------------------------------------------------------
    def session_terms(self, pos: SessionPositions) -> Tuple[Tensor, Optional[Tensor]]:
        r"""The target-independent session vector :math:`\mathbf{q}` (so that
        :math:`c_t = \mathbf{v}_t \cdot \mathbf{q}`) and, with
        ``score='paper'``, :math:`\mathbf{W}_{3a}` (else ``None``)."""
        B = pos.num_sessions
        s_local = (self.local_readout(pos.x, pos.index, dim_size=B)
                   if self.local_readout is not None else None)
        s_global = None
        if self.global_readout is not None:
            s_global = self.global_readout(pos.x, pos.index, dim_size=B, last=s_local,
                                           pad_count=pos.pad_count, pad_x=pos.pad_x)
        if self.session == 'local':
            return s_local, None
        if self.session == 'mean':
            return self.mean_readout(pos.x, pos.index, dim_size=B), None
        if self.session == 'attention':
            return s_global, None
        if self.lin_score is not None:  # paper eq. (10)
            d = self.hidden_channels
            w = self.lin_score.weight                      # [d, 3d]
            q = torch.cat([s_local, s_global], dim=-1) @ w[:, d:].t()
            return q, w[:, :d]
        if self.lin_transform is not None:
            return self.lin_transform(torch.cat([s_global, s_local], dim=-1)), None
        return s_global, None                              # released, non-hybrid

    def score(self, pos: SessionPositions, candidates: Optional[Tensor]) -> Tensor:
        q, w3a = self.session_terms(pos)
        weight = self.embedding.weight
        if self.target_attention is None:
            return dot_scores(q, weight, candidates)
        if candidates is None:
            target = weight[1:]
            value = None if w3a is None else target @ w3a
            term = self._target_term(pos, target, value, None)
            if torch.is_grad_enabled():
                return pad_padding_column(torch.addmm(term.to(q.dtype), q, target.t()))
            # inference: one [B, num_items] buffer, no intermediate copies
            scores = term.new_empty(term.size(0), self.num_items)
            scores[:, 0] = float('-inf')
            scores[:, 1:] = term
            del term
            scores[:, 1:].addmm_(q.to(scores.dtype), target.t().to(scores.dtype))
            return scores
        base = dot_scores(q, weight, candidates)
        B, C = candidates.shape
        target = weight[candidates.reshape(-1)]            # [B*C, d]
        value = None if w3a is None else target @ w3a
        rows = torch.arange(B * C, device=candidates.device).view(B, C)
        term = self._target_term(pos, target, value, rows)
        return base + term      # candidate id 0 stays -inf through `base`

    def _target_term(self, pos: SessionPositions, target: Tensor, value: Optional[Tensor],
                     candidates: Optional[Tensor]) -> Tensor:
        return self.target_attention(pos.x, pos.index, dim_size=pos.num_sessions,
                                     target=target, value=value, candidates=candidates,
                                     pad_count=pos.pad_count)


@contextmanager
def padded_like_released(model: Any, sequences: Any) -> Iterator[None]:
    r"""While iterating ``sequences``, pad like the released code: set
    ``model.pad_length`` to their longest session when ``model`` emulates the
    released padding (``released_padding=True``), and restore it afterwards.
    Does nothing for any other model."""
    if not getattr(model, 'released_padding', False):
        yield
        return
    before = model.pad_length
    model.pad_length = int(sequences.max_length)
    try:
        yield
    finally:
        model.pad_length = before
