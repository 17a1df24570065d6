r"""What all session recommenders share: the item table, the scoring interface
and the path from a batch of :class:`~tagnn_pyg.data.SessionData` to position
features.

Scores are inner products with the *raw* item embeddings
:math:`\mathbf{v}_t` = ``embedding.weight[t]`` (not GNN outputs), as released.
Only items :math:`1, \dots, m` are scored; column 0 (the padding id) is
:math:`-\infty`, so it never enters a top-k, and the training loss is
``cross_entropy(scores[:, 1:], y - 1)`` as in the released code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from torch import Tensor

from tagnn_pyg.nn.inits import released_uniform
from tagnn_pyg.utils.checks import require_fields
from tagnn_pyg.utils.device import host_reads_are_free

__all__ = ['SessionRecommender', 'SessionPositions', 'pad_padding_column',
           'check_candidates', 'check_session_batch', 'dot_scores']


def pad_padding_column(item_scores: Tensor) -> Tensor:
    r"""``[B, m]`` scores of items :math:`1..m` -> ``[B, m + 1]`` scores by item
    id, with column 0 (padding) set to :math:`-\infty`."""
    pad = item_scores.new_full((item_scores.size(0), 1), float('-inf'))
    return torch.cat([pad, item_scores], dim=1)


def check_candidates(candidates: Tensor, num_sessions: int, num_items: int) -> None:
    r"""Validate a ``[B, C]`` tensor of candidate item ids."""
    if not isinstance(candidates, Tensor):
        raise TypeError(f"candidates must be a LongTensor [num_sessions, C], got "
                        f"{type(candidates).__name__}")
    if candidates.dtype not in (torch.long, torch.int):
        raise ValueError(f"candidates must hold integer item ids, got dtype "
                         f"{candidates.dtype}")
    if candidates.dim() != 2 or candidates.size(0) != num_sessions:
        raise ValueError(f"candidates must have shape [{num_sessions}, C] (one row "
                         f"per session), got {list(candidates.shape)}")
    if host_reads_are_free(candidates.device) and candidates.numel() > 0:
        lo, hi = int(candidates.min()), int(candidates.max())
        if lo < 0 or hi >= num_items:
            raise ValueError(f"candidate item ids must lie in [0, {num_items - 1}], "
                             f"got values in [{lo}, {hi}]")


def dot_scores(query: Tensor, weight: Tensor, candidates: Optional[Tensor] = None
               ) -> Tensor:
    r"""Inner products :math:`\mathbf{q}_b \cdot \mathbf{v}_t`.

    Args:
        query (Tensor): ``[B, d]`` one vector per session.
        weight (Tensor): ``[M, d]`` the whole item table (row = item id).
        candidates (LongTensor, optional): ``[B, C]`` item ids.

    Returns:
        ``[B, M]`` (column 0 = :math:`-\infty`) or ``[B, C]`` (candidate id 0
        = :math:`-\infty`).
    """
    if candidates is None:
        return pad_padding_column(query @ weight[1:].t())
    out = (weight[candidates] * query.unsqueeze(1)).sum(-1)
    return out.masked_fill(candidates == 0, float('-inf'))


def check_session_batch(batch: Any, num_items: Optional[int] = None) -> None:
    r"""Raise if ``batch`` lacks a :class:`~tagnn_pyg.data.SessionData` field
    the models read (``x``, ``seq``, ``seq_batch``, ``last``) or, given
    ``num_items`` and where reading the tensor costs no device sync, holds an
    item id outside :math:`[0, \text{num\_items} - 1]`."""
    require_fields(batch, 'x', 'seq', 'seq_batch', 'last')
    x = batch.x
    if num_items is not None and x.numel() > 0 and host_reads_are_free(x.device):
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi >= num_items:
            raise ValueError(f"the batch holds item ids in [{lo}, {hi}], but the model "
                             f"has num_items={num_items} (ids 0..{num_items - 1}); "
                             f"were the sessions encoded for another item table?")


@dataclass
class SessionPositions:
    r"""Per-click features of a batch of sessions, in click order.

    Attributes:
        x (Tensor): ``[L, d]`` position features.
        index (LongTensor): ``[L]`` session of each position (PyG batching
            keeps it sorted).
        num_sessions (int): :math:`B`.
        pad_count (Tensor, optional): ``[B]`` padded slots per session, set
            only when emulating the released code's padding
            (:class:`~tagnn_pyg.models.TAGNN` with ``released_padding=True``).
        pad_x (Tensor, optional): ``[d]`` or ``[B, d]`` the feature of a
            padded slot (the GNN state of the padding item; for TAGNN++ the
            layer's output at the padding node), set with ``pad_count``.
    """
    x: Tensor
    index: Tensor
    num_sessions: int
    pad_count: Optional[Tensor] = None
    pad_x: Optional[Tensor] = None


class SessionRecommender(torch.nn.Module):
    r"""Base class of :class:`SRGNN`, :class:`TAGNN`, :class:`TAGNNPlusPlus`
    and the sequence baselines :class:`NARM`, :class:`STAMP`, :class:`GRU4Rec`
    (which override :meth:`positions` to read the clicks in order, no graph).

    Holds the item table ``embedding`` (``num_items`` rows including the padding
    id 0; its rows are both the input embeddings and the output item vectors)
    and implements the interface the trainer relies on:

    * ``model(batch) -> Tensor[B, num_items]`` (column :math:`j` = item id
      :math:`j`, column 0 = :math:`-\infty`);
    * ``model(batch, candidates=LongTensor[B, C]) -> Tensor[B, C]``;
    * ``model.config()``: JSON-serialisable constructor arguments, so that
      ``type(model)(**model.config())`` rebuilds the architecture.

    Subclasses implement :meth:`score` on :class:`SessionPositions`.
    """

    def __init__(self, num_items: int, hidden_channels: int) -> None:
        super().__init__()
        if not isinstance(num_items, int) or isinstance(num_items, bool) or num_items < 2:
            raise ValueError(f"num_items counts item ids including the padding id 0 "
                             f"and must be an int >= 2, got {num_items!r}")
        if not isinstance(hidden_channels, int) or isinstance(hidden_channels, bool) \
                or hidden_channels < 1:
            raise ValueError(f"hidden_channels must be a positive int, got "
                             f"{hidden_channels!r}")
        self.num_items = num_items
        self.hidden_channels = hidden_channels
        self.embedding = torch.nn.Embedding(num_items, hidden_channels)

    # -- construction ------------------------------------------------------
    def config(self) -> Dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def reset_parameters(self) -> None:
        r"""Every parameter uniform in :math:`[-1/\sqrt{d}, 1/\sqrt{d}]`, as
        released (``SessionGraph.reset_parameters``): the
        :mod:`tagnn_pyg.nn` layers reset themselves, the rest is drawn by
        :func:`torch_geometric.nn.inits.uniform`
        (:func:`~tagnn_pyg.nn.inits.released_uniform`)."""
        released_uniform(self.hidden_channels, self)

    # -- forward -----------------------------------------------------------
    def node_features(self, batch: Any) -> Tensor:
        r"""``[N, d]`` node features before they are gathered to positions
        (the item embeddings here; subclasses add the GNN)."""
        return self.embedding(batch.x)

    def positions(self, batch: Any) -> SessionPositions:
        r"""Gather node features to click positions (``h[seq]``)."""
        check_session_batch(batch, self.num_items)
        h = self.node_features(batch)
        return SessionPositions(h[batch.seq], batch.seq_batch, batch.last.numel())

    def score(self, pos: SessionPositions, candidates: Optional[Tensor]) -> Tensor:
        raise NotImplementedError  # pragma: no cover

    def forward(self, batch: Any, candidates: Optional[Tensor] = None) -> Tensor:
        r"""Scores of all items (``[B, num_items]``, column 0 = :math:`-\infty`)
        or of the given ``candidates`` (``[B, C]`` item ids -> ``[B, C]``)."""
        pos = self.positions(batch)
        if candidates is not None:
            check_candidates(candidates, pos.num_sessions, self.num_items)
            candidates = candidates.long()
        return self.score(pos, candidates)

    @torch.no_grad()
    def recommend(self, batch: Any, k: int = 20) -> Tensor:
        r"""``[B, k]`` item ids of the top-``k`` scores (never the padding id)."""
        if not 1 <= k < self.num_items:
            raise ValueError(f"k must lie in [1, {self.num_items - 1}], got {k}")
        return self.forward(batch).topk(k, dim=-1).indices

    def extra_repr(self) -> str:
        return ', '.join(f'{k}={v!r}' for k, v in self.config().items())
