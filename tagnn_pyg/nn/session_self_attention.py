r"""GC-SAN's stacked self-attention blocks over each session's clicks."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor
from torch.nn import Linear, ModuleList

from torch_geometric.utils import to_dense_batch

from tagnn_pyg.nn.inits import released_uniform
from tagnn_pyg.nn.readouts import resolve_index
from tagnn_pyg.utils.checks import check_flag
from tagnn_pyg.utils.static_dense import StaticDenseBatch

__all__ = ['SessionSelfAttention']


class SessionSelfAttention(torch.nn.Module):
    r"""The self-attention blocks of GC-SAN (Xu et al., "Graph Contextualized
    Self-Attention Network for Session-based Recommendation", IJCAI 2019,
    eq. (6)-(8)), over the clicks of every session in click order.

    One block, on the click features :math:`\mathbf{H} \in \mathbb{R}^{n
    \times d}` of a session:

    .. math::
        \mathbf{F} &= \mathrm{softmax}\left(\frac{(\mathbf{H}\mathbf{W}^Q)
            (\mathbf{H}\mathbf{W}^K)^{\top}}{\sqrt{d}}\right)
            (\mathbf{H}\mathbf{W}^V)

        \mathbf{E} &= \mathrm{ReLU}(\mathbf{F}\mathbf{W}_1 + \mathbf{b}_1)
            \mathbf{W}_2 + \mathbf{b}_2 + \mathbf{F}

    and ``num_layers`` :math:`k` blocks are stacked,
    :math:`\mathbf{E}^{(1)} = \mathbf{E}(\mathbf{H})`,
    :math:`\mathbf{E}^{(j)} = \mathbf{E}(\mathbf{E}^{(j-1)})`.
    :math:`\mathbf{W}^Q, \mathbf{W}^K, \mathbf{W}^V \in \mathbb{R}^{d \times d}`
    have no bias and the attention has no output projection, as in the paper
    (single head). With ``heads`` :math:`h > 1` the three projections are
    split into :math:`h` heads of size :math:`d/h` (scale
    :math:`\sqrt{d/h}`), the heads are concatenated and an output projection
    :math:`\mathbf{W}^O` (no bias) follows, as in Vaswani et al.; this is an
    extension (RecBole's ``n_heads``), not the paper's model.

    Dropout (``dropout``, the paper applies dropout but does not give the
    places) acts on the attention weights and on the feed-forward output
    before the residual sum. There is no LayerNorm and no residual around the
    attention sub-layer, as in the paper's eq. (7); RecBole's implementation
    instead uses a post-LayerNorm Transformer layer (residual and LayerNorm
    around both sub-layers, GELU) with a causal mask. The paper's attention is
    not masked (every click attends to every click of the prefix, which
    holds no future item); ``causal=True`` restricts click :math:`i` to clicks
    :math:`\le i` as RecBole does.

    Positions are gathered into a padded ``[B, L, d]`` batch with
    :func:`torch_geometric.utils.to_dense_batch`; padded slots are masked as
    keys and dropped as queries, so neither padding nor other sessions of the
    batch affect a session's output. With :attr:`static_length` set to
    :math:`L` (export; :func:`tagnn_pyg.serve.export.export_model` sets it on
    the copy it exports) every session gets exactly :math:`L` slots
    (:class:`~tagnn_pyg.utils.static_dense.StaticDenseBatch`), with the same
    values.

    Args:
        channels (int): Feature size :math:`d`.
        num_layers (int, optional): Stacked blocks :math:`k`. (default: :obj:`1`)
        heads (int, optional): Attention heads (must divide ``channels``);
            :obj:`1` is the paper's. (default: :obj:`1`)
        ff_channels (int, optional): Width of :math:`\mathbf{W}_1`
            (the paper's: :math:`d`). (default: :obj:`None`, :math:`d`)
        dropout (float, optional): Dropout rate, in :math:`[0, 1)`.
            (default: :obj:`0.0`)
        causal (bool, optional): Mask later clicks. (default: :obj:`False`)

    Shapes:
        - **input:** position features :math:`(N, d)`, ``index`` :math:`(N)`
          or ``ptr`` :math:`(B + 1)`; the positions of a session must be in
          click order (sessions may be interleaved)
        - **output:** :math:`(N, d)`, :math:`\mathbf{E}^{(k)}` in the input
          order
    """

    def __init__(self, channels: int, num_layers: int = 1, heads: int = 1,
                 ff_channels: Optional[int] = None, dropout: float = 0.0,
                 causal: bool = False) -> None:
        super().__init__()
        for name, value in (('channels', channels), ('num_layers', num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1 \
                or channels % heads != 0:
            raise ValueError(f"heads must be a positive divisor of channels="
                             f"{channels}, got {heads!r}")
        if ff_channels is None:
            ff_channels = channels
        if not isinstance(ff_channels, int) or isinstance(ff_channels, bool) \
                or ff_channels < 1:
            raise ValueError(f"ff_channels must be a positive int, got {ff_channels!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")
        self.channels = channels
        self.num_layers = num_layers
        self.heads = heads
        self.ff_channels = ff_channels
        self.dropout = float(dropout)
        self.causal = check_flag('causal', causal)
        #: Fixed slots per session (export only; ``None``: the batch's longest).
        self.static_length: Optional[int] = None
        d = channels
        self.lin_q = ModuleList([Linear(d, d, bias=False) for _ in range(num_layers)])
        self.lin_k = ModuleList([Linear(d, d, bias=False) for _ in range(num_layers)])
        self.lin_v = ModuleList([Linear(d, d, bias=False) for _ in range(num_layers)])
        self.lin_o = ModuleList([Linear(d, d, bias=False) for _ in range(num_layers)]) \
            if heads > 1 else None
        self.lin1 = ModuleList([Linear(d, ff_channels) for _ in range(num_layers)])
        self.lin2 = ModuleList([Linear(ff_channels, d) for _ in range(num_layers)])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Every parameter uniform in :math:`[-1/\sqrt{d}, 1/\sqrt{d}]` (the
        library's convention, as the released SR-GNN code)."""
        released_uniform(self.channels, self)

    def _attention(self, j: int, x: Tensor, allowed: Tensor) -> Tensor:
        B, L, d = x.shape
        h, dh = self.heads, d // self.heads

        def split(t: Tensor) -> Tensor:
            return t.view(B, L, h, dh).transpose(1, 2)          # [B, h, L, dh]

        q, k, v = split(self.lin_q[j](x)), split(self.lin_k[j](x)), split(self.lin_v[j](x))
        logits = (q @ k.transpose(-1, -2)) / math.sqrt(dh)      # [B, h, L, L]
        logits = logits.masked_fill(~allowed.unsqueeze(1), float('-inf'))
        att = torch.softmax(logits, dim=-1)
        att = torch.nn.functional.dropout(att, self.dropout, self.training)
        out = (att @ v).transpose(1, 2).reshape(B, L, d)
        return self.lin_o[j](out) if self.lin_o is not None else out

    def forward(self, x: Tensor, index: Optional[Tensor] = None,
                ptr: Optional[Tensor] = None, dim_size: Optional[int] = None) -> Tensor:
        r"""Apply the :math:`k` blocks to the positions ``x`` of the sessions in
        ``index``.

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
        if static_length is None:
            perm = torch.sort(index, stable=True)[1]     # group by session, keep order
            xd, mask = to_dense_batch(x[perm], index[perm], batch_size=dim_size)
        else:
            slots = StaticDenseBatch(index, dim_size, static_length)
            xd, mask = slots.to_dense(x), slots.mask
        L = xd.size(1)
        steps = torch.arange(L, device=x.device)
        allowed = mask.unsqueeze(1).expand(-1, L, -1)                # [B, query, key]
        if self.causal:
            allowed = allowed & (steps[None, :] <= steps[:, None])
        # key 0 is a real click of every non-empty session (and allowed by the
        # causal mask); allowing it for empty sessions avoids all -inf rows (NaN)
        allowed = allowed | (steps == 0)
        for j in range(self.num_layers):
            f = self._attention(j, xd, allowed)
            ff = self.lin2[j](torch.relu(self.lin1[j](f)))
            xd = torch.nn.functional.dropout(ff, self.dropout, self.training) + f
        if static_length is not None:
            return slots.from_dense(xd)
        out = torch.empty_like(x, dtype=xd.dtype)
        out[perm] = xd[mask]
        return out

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.channels}, num_layers={self.num_layers}, '
                f'heads={self.heads}, ff_channels={self.ff_channels}, '
                f'causal={self.causal})')
