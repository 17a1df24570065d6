r"""Padding sessions to a fixed number of slots, so that no size depends on the
data (what ``torch.export`` and ONNX need).

:func:`torch_geometric.utils.to_dense_batch` pads every session of a batch to
the batch's longest, ``int(counts.max())``: a data-dependent size that an
exported graph cannot keep. :class:`StaticDenseBatch` pads every session to a
fixed :math:`L` instead. The layers that pad sessions
(:class:`~tagnn_pyg.nn.SessionTransformer`,
:class:`~tagnn_pyg.nn.SessionSelfAttention`, the GRU of
:func:`~tagnn_pyg.models.sequence.gru_positions`) use it when their
``static_length`` is set, which :func:`tagnn_pyg.serve.export.export_model`
does on the copy it exports.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ['StaticDenseBatch', 'stable_argsort']


def stable_argsort(key: Tensor) -> Tensor:
    r"""The stable ascending order of the integer ``key`` (ties keep their
    positions), as a sort of the unique keys ``key * n + position``: ONNX has no
    stable sort.

    Shapes:
        - **input:** :math:`(n)` → **output:** :math:`(n)`
    """
    n = key.numel()
    return torch.sort(key * n + torch.arange(n, device=key.device)).indices


class StaticDenseBatch:
    r"""The positions of :math:`B` sessions placed in exactly :math:`L` slots per
    session.

    With the counts :math:`n_b = \sum_i [\mathrm{index}_i = b]` (a
    ``scatter_add`` into ``zeros(B)``) and their exclusive cumulative sum
    :math:`o_b`, the :math:`i`-th position in session order goes to slot

    .. math::
        \mathrm{slot}_i = L \cdot \mathrm{index}_i + (i - o_{\mathrm{index}_i})

    of a ``[B * L, *]`` zero tensor (``index_copy``); :attr:`mask` is
    :math:`l < n_b`, and :meth:`from_dense` gathers the outputs back from the
    same slots into the input order. Session :math:`b`'s clicks are
    left-aligned in row :math:`b`, as with
    :func:`~torch_geometric.utils.to_dense_batch`, which gives the same values
    on the batch's longest :math:`L`.

    A session longer than :math:`L` raises a :class:`ValueError` in eager
    mode; in a traced (exported) graph, where no data-dependent check can
    raise, its slots are clamped to its own row (no other session is
    affected) and :meth:`from_dense` returns NaN for its positions: callers
    must refuse such sessions first, as the
    :class:`~tagnn_pyg.serve.Recommender` of an exported file does.

    Args:
        index (torch.Tensor): Session of each position :math:`(N)`; the
            positions of a session in click order (sessions may interleave).
        num_sessions (int): :math:`B`, from a tensor size (such as
            ``last.size(0)``), not from ``index.max() + 1``, which is
            data-dependent.
        length (int): :math:`L`, the slots per session.
        what (str, optional): How the error for a group longer than :math:`L`
            names the groups and their positions. (default:
            :obj:`'session/clicks'`)

    Attributes:
        counts (torch.Tensor): :math:`n_b`, shape :math:`(B)`.
        mask (torch.Tensor): :math:`(B, L)`, ``True`` at real clicks.

    Shapes:
        - **input:** ``index`` :math:`(N)`
        - :meth:`to_dense`: :math:`(N, *) \to (B, L, *)`
        - :meth:`from_dense`: :math:`(B, L, *) \to (N, *)`
    """

    def __init__(self, index: Tensor, num_sessions: Optional[int], length: int,
                 what: str = 'session/clicks') -> None:
        if num_sessions is None:
            raise ValueError("static_length needs dim_size (the number of sessions B, "
                             "from a tensor size such as last.size(0)): B = "
                             "index.max() + 1 is data-dependent")
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"static_length must be a positive int, got {length!r}")
        B, L, N = num_sessions, length, index.numel()
        self.num_sessions, self.length = B, L
        steps_n = torch.arange(N, device=index.device)
        self.perm = stable_argsort(index)                  # by session, click order kept
        self.counts = index.new_zeros(B).scatter_add_(0, index, torch.ones_like(index))
        if not torch.compiler.is_compiling() and N > 0:
            longest = int(self.counts.max())
            if longest > L:
                group, unit = what.split('/')
                raise ValueError(f"a {group} has {longest} {unit}, more than "
                                 f"static_length={L}; refuse longer sessions before "
                                 f"scoring (sessions are never truncated)")
        offset = self.counts.cumsum(0) - self.counts      # first position of each session
        sorted_index = index[self.perm]
        rank = steps_n - offset[sorted_index]
        self.slot = sorted_index * L + rank.clamp(max=L - 1)
        self.too_long = (self.counts > L)[sorted_index]
        steps = torch.arange(L, device=index.device)
        self.mask = steps[None, :] < self.counts[:, None]

    def to_dense(self, x: Tensor) -> Tensor:
        r"""Position features :math:`(N, *)` -> :math:`(B, L, *)` (zeros at
        padded slots)."""
        rest = x.shape[1:]
        dense = x.new_zeros((self.num_sessions * self.length, ) + rest)
        dense = dense.index_copy(0, self.slot, x[self.perm])
        return dense.view((self.num_sessions, self.length) + rest)

    def from_dense(self, dense: Tensor) -> Tensor:
        r""":math:`(B, L, *)` -> the features of the real slots :math:`(N, *)`, in
        the input order (NaN for the positions of a session longer than
        :math:`L`; floating features only, integer ones are returned as they
        are)."""
        rest = dense.shape[2:]
        gathered = dense.reshape((self.num_sessions * self.length, ) + rest)
        gathered = gathered.index_select(0, self.slot)
        if gathered.is_floating_point():
            poisoned = self.too_long.view((-1, ) + (1, ) * len(rest))
            gathered = torch.where(poisoned, torch.full_like(gathered, float('nan')),
                                   gathered)
        return torch.zeros_like(gathered).index_copy(0, self.perm, gathered)
