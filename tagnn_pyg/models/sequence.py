r"""Clicks in order for the sequence models (NARM, STAMP, GRU4Rec): no graph.

A batch of :class:`~tagnn_pyg.data.SessionData` already holds each session's
clicks in order, ``batch.x[batch.seq]`` (item ids) with ``batch.seq_batch``
(session of each click, sorted by PyG batching). The recurrent models pad them
to ``[B, L_max]`` with :func:`torch_geometric.utils.to_dense_batch` and run the
GRU on a :func:`~torch.nn.utils.rnn.pack_padded_sequence`, so a padded slot
never enters a session's states, and scatter the states back to positions. The
exported copy of a model (``static_length`` set) pads to a fixed length instead
and runs the GRU unpacked (:func:`gru_positions`).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch_geometric.utils import to_dense_batch

from tagnn_pyg.models.scoring import check_session_batch
from tagnn_pyg.utils.static_dense import StaticDenseBatch

__all__ = ['check_rate', 'click_items', 'dense_clicks', 'gru_positions']


def check_rate(name: str, p: float) -> float:
    r"""A dropout rate in :math:`[0, 1)`, as a float."""
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {p!r}")
    return p


def click_items(batch: Any, num_items: Optional[int] = None) -> Tensor:
    r"""``[L]`` the item id of every click, in click order (``x[seq]``); the
    batch checked by :func:`~tagnn_pyg.models.scoring.check_session_batch`."""
    check_session_batch(batch, num_items)
    return batch.x[batch.seq]


def dense_clicks(x: Tensor, index: Tensor, num_sessions: int) -> Tuple[Tensor, Tensor]:
    r"""Position features ``[L, *]`` -> ``([B, L_max, *], mask [B, L_max])``,
    session ``b``'s clicks left-aligned in row ``b`` (zeros after them).

    Raises:
        ValueError: a session without clicks (a GRU has no state to give it).
    """
    dense, mask = to_dense_batch(x, index, batch_size=num_sessions)
    if num_sessions > 0 and (mask.size(1) == 0 or not bool(mask[:, 0].all())):
        raise ValueError("every session needs at least one click")
    return dense, mask


def gru_positions(gru: torch.nn.GRU, x: Tensor, index: Tensor,
                  num_sessions: int, static_length: Optional[int] = None) -> Tensor:
    r"""Run the batch-first ``gru`` over each session's clicks in order and
    return its top-layer state at every click, ``[L, H]`` (same order as
    ``x``). Sessions are packed (:func:`~torch.nn.utils.rnn.pack_padded_sequence`),
    so neither padding nor the other sessions change a session's states.

    With ``static_length`` :math:`L` (export) the sessions are padded to
    exactly :math:`L` steps
    (:class:`~tagnn_pyg.utils.static_dense.StaticDenseBatch`) and the GRU runs
    unpacked over them: the clicks are left-aligned, so the padding comes
    after every real step and a (unidirectional) GRU's state at a click is the
    same as the packed one.

    Shapes:
        - **input:** ``x`` :math:`(L, d_{in})`, ``index`` :math:`(L)` sorted
        - **output:** :math:`(L, H)`
    """
    if static_length is not None:
        if gru.bidirectional:
            raise ValueError("static_length needs a unidirectional GRU (padding comes "
                             "after the clicks)")
        slots = StaticDenseBatch(index, num_sessions, static_length)
        if not torch.compiler.is_compiling() and bool((slots.counts == 0).any()):
            raise ValueError("every session needs at least one click")
        out, _ = gru(slots.to_dense(x))
        return slots.from_dense(out)
    dense, mask = dense_clicks(x, index, num_sessions)
    lengths = mask.sum(dim=1).cpu()
    packed = pack_padded_sequence(dense, lengths, batch_first=True, enforce_sorted=False)
    out, _ = gru(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=dense.size(1))
    return out[mask]
