r"""Causal self-attention over each session's clicks (TAGNN++)."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor
from torch.nn import Dropout, Embedding, LayerNorm, Linear, MultiheadAttention

from torch_geometric.utils import to_dense_batch

from tagnn_pyg.nn.readouts import resolve_index
from tagnn_pyg.utils.checks import check_flag
from tagnn_pyg.utils.static_dense import StaticDenseBatch

__all__ = ['SessionTransformer']

NORMS = ('post', 'released')


class SessionTransformer(torch.nn.Module):
    r"""One Transformer layer over the clicks of every session, in click order,
    with a causal mask (a click attends to itself and earlier clicks only), as in
    TAGNN++.

    The positions (:math:`N` clicks of :math:`B` sessions, position-to-session
    ``index``) are gathered into a padded ``[B, L, d]`` batch with
    :func:`torch_geometric.utils.to_dense_batch`, run through
    :class:`torch.nn.MultiheadAttention` with the causal mask and a key-padding
    mask, and scattered back to the positions in their original order, so no
    padded slot and no other session ever affects a session's output.

    With ``positional=True`` a learned embedding :math:`\mathbf{p}_l` of the
    click position :math:`l` (0 = first click) is added first:
    :math:`\mathbf{x}_l \leftarrow \mathbf{x}_l + \mathbf{p}_l`.

    ``norm='post'`` (default; the TAGNN++ paper, a standard post-LayerNorm
    Transformer layer as in Vaswani et al.):

    .. math::
        \mathbf{h} &= \mathrm{LN}_1\left(\mathbf{x} + \mathrm{Dropout}(
            \mathrm{MHA}(\mathbf{x}, \mathbf{x}, \mathbf{x}))\right)

        \mathbf{y} &= \mathrm{LN}_2\left(\mathbf{h} + \mathrm{Dropout}(
            \mathbf{W}_2\, \mathrm{Dropout}(\mathrm{ReLU}(\mathbf{W}_1 \mathbf{h}
            + \mathbf{b}_1)) + \mathbf{b}_2)\right)

    (the second line only with ``feed_forward=True``; the paper does not give the
    feed-forward width, ``ff_channels`` defaults to :math:`4d` as in Vaswani et
    al.).

    ``norm='released'`` (the released TAGNN++ code's combination, no
    feed-forward):

    .. math::
        \mathbf{y} = \mathrm{MHA}(\mathbf{x}, \mathbf{x}, \mathbf{x})
            + \mathrm{LN}(\mathbf{x}).

    The released code runs that layer over the id-sorted *node* list of each
    session graph (padding node included) and never uses its positional
    embeddings; here it always runs over the clicks in click order.

    **Static length (export).** With :attr:`static_length` set to :math:`L`
    (``None`` by default; :func:`tagnn_pyg.serve.export.export_model` sets it
    on the copy it exports), the padded batch has exactly :math:`L` slots per
    session whatever the batch
    (:class:`~tagnn_pyg.utils.static_dense.StaticDenseBatch`), so no size
    depends on the data (what ``torch.export`` and ONNX need); the
    key-padding mask is :math:`l \ge n_b`. The values equal the default
    path's (masked slots get zero attention weight); the cost is attention
    over :math:`L` slots per session instead of the batch's longest. A session
    longer than :math:`L` raises a :class:`ValueError` in eager mode and gets
    NaN outputs in a traced graph (see
    :class:`~tagnn_pyg.utils.static_dense.StaticDenseBatch`).

    Args:
        channels (int): Feature size :math:`d`.
        heads (int, optional): Attention heads (must divide ``channels``).
            (default: :obj:`2`)
        dropout (float, optional): Dropout on the attention weights and (for
            ``'post'``) on each sub-layer output. (default: :obj:`0.1`)
        positional (bool, optional): Add learned positional embeddings.
            (default: :obj:`True`)
        feed_forward (bool, optional): Add the feed-forward sub-layer. Default
            :obj:`None`: :obj:`True` for ``'post'``, :obj:`False` for
            ``'released'`` (which has none).
        max_length (int, optional): Longest session the positional embeddings
            cover. (default: :obj:`512`)
        norm (str, optional): ``'post'`` or ``'released'``.
        ff_channels (int, optional): Hidden width of the feed-forward
            sub-layer. (default: :math:`4d`)

    Shapes:
        - **input:** position features :math:`(N, d)`, ``index`` :math:`(N)`
          or ``ptr`` :math:`(B + 1)`; the positions of a session must be in
          click order (sessions may be interleaved)
        - **output:** :math:`(N, d)`, in the input order
    """

    def __init__(self, channels: int, heads: int = 2, dropout: float = 0.1,
                 positional: bool = True, feed_forward: Optional[bool] = None,
                 max_length: int = 512, norm: str = 'post',
                 ff_channels: Optional[int] = None) -> None:
        super().__init__()
        if int(channels) != channels or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        if int(heads) != heads or heads < 1 or channels % heads != 0:
            raise ValueError(f"heads must be a positive divisor of channels="
                             f"{channels}, got {heads!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        positional = check_flag('positional', positional)
        feed_forward = (norm == 'post' if feed_forward is None
                        else check_flag('feed_forward', feed_forward))
        if feed_forward and norm == 'released':
            raise ValueError("norm='released' (attn(x) + LayerNorm(x)) has no "
                             "feed-forward sub-layer: use feed_forward=False or "
                             "norm='post'")
        if int(max_length) != max_length or max_length < 1:
            raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
        self.channels = int(channels)
        self.heads = int(heads)
        self.dropout = float(dropout)
        self.positional = positional
        self.feed_forward = feed_forward
        self.max_length = int(max_length)
        self.norm = norm
        self.ff_channels = int(ff_channels) if ff_channels is not None else 4 * self.channels
        #: Fixed slots per session (export only; ``None``: the batch's longest).
        self.static_length: Optional[int] = None
        if self.ff_channels < 1:
            raise ValueError(f"ff_channels must be a positive integer, got {ff_channels!r}")

        self.pos_emb = Embedding(self.max_length, channels) if positional else None
        self.attn = MultiheadAttention(channels, heads, dropout=dropout,
                                       batch_first=True)
        self.norm1 = LayerNorm(channels)
        self.dropout1 = Dropout(dropout) if norm == 'post' else None
        if self.feed_forward:
            self.lin1 = Linear(channels, self.ff_channels)
            self.lin2 = Linear(self.ff_channels, channels)
            self.norm2 = LayerNorm(channels)
            self.dropout_ff = Dropout(dropout)
            self.dropout2 = Dropout(dropout)
        else:
            self.lin1 = self.lin2 = self.norm2 = None
            self.dropout_ff = self.dropout2 = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""``'released'``: every parameter uniform in :math:`[-1/\sqrt{d},
        1/\sqrt{d}]` (LayerNorm included), as the released code's model-wide
        reset. ``'post'``: PyTorch's defaults for the attention, LayerNorm and
        linear layers, positional embeddings uniform in :math:`[-1/\sqrt{d},
        1/\sqrt{d}]`."""
        self.attn._reset_parameters()
        self.norm1.reset_parameters()
        if self.feed_forward:
            self.lin1.reset_parameters()
            self.lin2.reset_parameters()
            self.norm2.reset_parameters()
        stdv = 1.0 / math.sqrt(self.channels)
        if self.pos_emb is not None:
            torch.nn.init.uniform_(self.pos_emb.weight, -stdv, stdv)
        if self.norm == 'released':
            for p in self.parameters():
                torch.nn.init.uniform_(p, -stdv, stdv)

    def forward(self, x: Tensor, index: Optional[Tensor] = None,
                ptr: Optional[Tensor] = None,
                dim_size: Optional[int] = None) -> Tensor:
        r"""Apply the layer to the positions ``x`` of the sessions in ``index``.

        Args:
            x (torch.Tensor): Position features :math:`(N, d)`.
            index (torch.Tensor, optional): Session of each position :math:`(N)`.
            ptr (torch.Tensor, optional): CSR alternative to ``index``.
            dim_size (int, optional): Number of sessions :math:`B`.
        """
        if x.dim() != 2 or x.size(-1) != self.channels:
            raise ValueError(f"x must have shape [num_positions, {self.channels}], "
                             f"got {list(x.shape)}")
        index = resolve_index(x, index, ptr)
        static_length = getattr(self, 'static_length', None)
        if static_length is not None:
            return self._forward_static(x, index, dim_size, static_length)
        # Group positions by session, keeping click order (no-op when sorted).
        perm = torch.sort(index, stable=True)[1]
        xd, mask = to_dense_batch(x[perm], index[perm], batch_size=dim_size)
        length = xd.size(1)
        if self.pos_emb is not None:
            if length > self.max_length:
                raise ValueError(f"a session has {length} clicks, more than "
                                 f"max_length={self.max_length} of the positional "
                                 f"embeddings; build SessionTransformer(..., "
                                 f"max_length>={length}) or truncate sessions")
            xd = xd + self.pos_emb.weight[:length]
        causal = torch.ones(length, length, dtype=torch.bool,
                            device=x.device).triu_(1)
        key_padding = ~mask
        if length > 0:
            # Position 0 is real in every non-empty session; unmasking it for
            # empty sessions avoids all-masked rows (NaN) in their padded slots.
            key_padding[:, 0] = False
        out = self._dense(xd, causal, key_padding)
        result = torch.empty_like(x, dtype=out.dtype)
        result[perm] = out[mask]
        return result

    def _dense(self, xd: Tensor, causal: Tensor, key_padding: Tensor) -> Tensor:
        r"""The layer on the padded batch ``[B, L, d]``."""
        h, _ = self.attn(xd, xd, xd, attn_mask=causal, key_padding_mask=key_padding,
                         need_weights=False)
        if self.norm == 'released':
            return h + self.norm1(xd)
        out = self.norm1(xd + self.dropout1(h))
        if self.feed_forward:
            ff = self.lin2(self.dropout_ff(torch.relu(self.lin1(out))))
            out = self.norm2(out + self.dropout2(ff))
        return out

    def _forward_static(self, x: Tensor, index: Tensor, dim_size: Optional[int],
                        length: int) -> Tensor:
        r"""The layer with exactly ``length`` slots per session
        (:class:`~tagnn_pyg.utils.static_dense.StaticDenseBatch`): every size
        comes from ``x``, ``dim_size`` and ``length``."""
        if self.pos_emb is not None and length > self.max_length:
            raise ValueError(f"static_length must be in [1, {self.max_length}] "
                             f"(max_length of the positional embeddings), got {length}")
        slots = StaticDenseBatch(index, dim_size, length)
        xd = slots.to_dense(x)
        if self.pos_emb is not None:
            xd = xd + self.pos_emb.weight[:length]
        steps = torch.arange(length, device=x.device)
        causal = steps[None, :] > steps[:, None]
        # Slot 0 unmasked in every row: no all-masked row (NaN) for empty sessions.
        key_padding = ~slots.mask & (steps[None, :] > 0)
        return slots.from_dense(self._dense(xd, causal, key_padding))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.channels}, heads={self.heads}, '
                f'norm={self.norm!r}, positional={self.positional}, '
                f'feed_forward={self.feed_forward})')
