r"""Session readouts over click positions, in PyG aggregation style.

Every readout takes the features of the clicks (*positions*, repeats included,
in click order) and the position-to-session vector ``index`` (or a CSR ``ptr``)
and returns one vector per session, with no padding. Mean pooling is PyG's own
:class:`torch_geometric.nn.aggr.MeanAggregation`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.nn import Linear

from torch_geometric.index import ptr2index
from torch_geometric.nn.aggr import Aggregation
from torch_geometric.nn.inits import uniform
from torch_geometric.utils import scatter, softmax

from tagnn_pyg.utils.checks import check_flag
from tagnn_pyg.utils.device import host_reads_are_free

__all__ = ['LastItemReadout', 'SoftAttentionReadout', 'check_pad_count',
           'last_position', 'resolve_index']


def resolve_index(x: Tensor, index: Optional[Tensor] = None,
                  ptr: Optional[Tensor] = None) -> Tensor:
    r"""The ``[N]`` position-to-session vector that a forward needs to gather
    per-session values back to positions: ``index`` (its length checked), else
    :func:`torch_geometric.index.ptr2index` of a CSR ``ptr``
    (:meth:`Aggregation.__call__ <torch_geometric.nn.aggr.Aggregation.__call__>`
    passes ``ptr`` through as it is), else all zeros: one session, as
    :class:`~torch_geometric.nn.aggr.Aggregation` does for a module called
    outside it (:class:`~tagnn_pyg.nn.SessionTransformer`).

    Shapes:
        - **input:** :math:`x (N, *)`, ``index`` :math:`(N)` or ``ptr``
          :math:`(B + 1)`
        - **output:** :math:`(N)`
    """
    if index is not None:
        if index.dim() != 1 or index.numel() != x.size(0):
            raise ValueError(f"index must have shape [{x.size(0)}] (one session per "
                             f"position), got {list(index.shape)}")
        return index
    if ptr is not None:
        return ptr2index(ptr, output_size=x.size(0))
    return x.new_zeros(x.size(0), dtype=torch.long)


def last_position(index: Tensor, dim_size: int) -> Tensor:
    r"""For each of the ``dim_size`` segments, the largest position ``i`` with
    ``index[i] == b`` (the last click when positions are in click order), or
    ``-1`` for an empty segment. No host synchronisation.

    Shapes:
        - **input:** :math:`(N)` → **output:** :math:`(B)`
    """
    pos = torch.arange(index.numel(), device=index.device)
    out = torch.full((dim_size, ), -1, dtype=torch.long, device=index.device)
    return out.scatter_reduce_(0, index, pos, reduce='amax', include_self=True)


def _gather_last(x: Tensor, index: Optional[Tensor], ptr: Optional[Tensor],
                 dim_size: int) -> Tensor:
    r"""``[B, d]`` the feature at each session's last position (zeros for an
    empty session), from ``index`` or, with ``ptr`` alone, from ``ptr[1:] - 1``."""
    if index is None and ptr is not None:
        last = (ptr[1:] - 1).masked_fill(ptr[1:] == ptr[:-1], -1)
    else:
        last = last_position(resolve_index(x, index, ptr), dim_size)
    out = x[last.clamp(min=0)]
    return out.masked_fill((last < 0).view(-1, 1), 0.0)


def check_pad_count(pad_count: Tensor, dim_size: int) -> None:
    r"""Validate a ``[B]`` tensor of padded-slot counts (released-code
    emulation): one non-negative count per session."""
    if not isinstance(pad_count, Tensor):
        raise TypeError(f"pad_count must be a Tensor [num_sessions], got "
                        f"{type(pad_count).__name__}")
    if pad_count.dim() != 1 or pad_count.numel() != dim_size:
        raise ValueError(f"pad_count must have shape [{dim_size}] (padded slots per "
                         f"session), got {list(pad_count.shape)}")
    if host_reads_are_free(pad_count.device) and pad_count.numel() > 0 \
            and float(pad_count.min()) < 0:
        raise ValueError(f"pad_count must be >= 0 (padded slots per session), got "
                         f"minimum {float(pad_count.min())}")


class LastItemReadout(Aggregation):
    r"""The *local* session embedding: the feature of each session's last
    click,

    .. math::
        \mathbf{s}_{local} = \mathbf{v}_{s_n},

    where the last click is the highest position of the session (positions
    are in click order). Empty sessions get zeros.

    Shapes:
        - **input:** position features :math:`(N, d)`, ``index`` :math:`(N)`
          or ``ptr`` :math:`(B + 1)`
        - **output:** :math:`(B, d)`
    """

    def forward(self, x: Tensor, index: Optional[Tensor] = None,
                ptr: Optional[Tensor] = None, dim_size: Optional[int] = None,
                dim: int = -2) -> Tensor:
        self.assert_two_dimensional_input(x, dim)
        assert dim_size is not None  # set by Aggregation.__call__
        return _gather_last(x, index, ptr, dim_size)


class SoftAttentionReadout(Aggregation):
    r"""The soft-attention *global* session embedding of SR-GNN (TAGNN eq. 8-9):

    .. math::
        \alpha_i &= \mathbf{q}^{\top} \sigma\left(\mathbf{W}_1 \mathbf{v}_{s_n}
            + \mathbf{c}_1 + \mathbf{W}_2 \mathbf{v}_i + \mathbf{c}_2\right)

        \mathbf{s}_{global} &= \sum_{i=1}^{s_n} \alpha_i \mathbf{v}_i

    over the positions :math:`i` of each session (repeated clicks count once
    per click), :math:`\mathbf{v}_{s_n}` the last click. Both linear maps carry
    a bias, as in the released code (``linear_one``, ``linear_two``; their sum
    is the paper's :math:`\mathbf{c}`), and :math:`\mathbf{q}` has none
    (``linear_three``). SR-GNN sums with the raw :math:`\alpha_i`
    (``softmax=False``); TAGNN's released code first applies a softmax over
    the session, :math:`\alpha_i \leftarrow \mathrm{softmax}_i(\alpha_i)`
    (``softmax=True``). The softmax here is per session.

    The released TAGNN code pads every session to the data set's longest one
    and its softmax also runs over the padded slots, each carrying the GNN
    state of the padding item: to emulate it, pass ``pad_count`` (``[B]``
    padded slots per session) and ``pad_x`` (their feature
    :math:`\mathbf{v}_{pad}`, ``[d]`` or ``[B, d]``). They then join the
    denominator,

    .. math::
        \alpha_i \leftarrow \frac{e^{\alpha_i}}{\sum_{j} e^{\alpha_j} +
            \text{pad\_count} \cdot e^{\alpha_{pad}}}, \qquad
        \alpha_{pad} = \mathbf{q}^{\top}\sigma(\mathbf{W}_1
            \mathbf{v}_{s_n} + \mathbf{c}_1 + \mathbf{W}_2\mathbf{v}_{pad}
            + \mathbf{c}_2),

    and not the sum (the released code masks them there).

    Args:
        channels (int): Feature size :math:`d`.
        softmax (bool, optional): Normalise :math:`\alpha` over each session.
            (default: :obj:`False`, SR-GNN)
        bias (bool, optional): Give :math:`\mathbf{W}_1`, :math:`\mathbf{W}_2`
            their biases :math:`\mathbf{c}_1, \mathbf{c}_2` (``False``: NARM's
            local encoder, :math:`\alpha_{j} = \mathbf{v}^{\top}
            \sigma(\mathbf{A}_1 \mathbf{h}_t + \mathbf{A}_2 \mathbf{h}_j)`).
            (default: :obj:`True`, as released)

    Shapes:
        - **input:** position features :math:`(N, d)`, ``index`` :math:`(N)`
          or ``ptr`` :math:`(B + 1)`, optional keyword ``last`` :math:`(B, d)`
          (default: the feature of each session's last position), optional
          ``pad_count`` :math:`(B)` and ``pad_x`` :math:`(d)` or :math:`(B, d)`
        - **output:** :math:`(B, d)`
    """

    def __init__(self, channels: int, softmax: bool = False, bias: bool = True) -> None:
        super().__init__()
        if int(channels) != channels or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        self.channels = int(channels)
        self.softmax = check_flag('softmax', softmax)
        self.bias = check_flag('bias', bias)
        self.lin_last = Linear(channels, channels, bias=self.bias)  # linear_one, W1
        self.lin_pos = Linear(channels, channels, bias=self.bias)   # linear_two, W2
        self.lin_q = Linear(channels, 1, bias=False)           # linear_three, q
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Every parameter uniform in :math:`[-1/\sqrt{d}, 1/\sqrt{d}]`, as
        released."""
        uniform(self.channels, self.lin_last)
        uniform(self.channels, self.lin_pos)
        uniform(self.channels, self.lin_q)

    def forward(self, x: Tensor, index: Optional[Tensor] = None,
                ptr: Optional[Tensor] = None, dim_size: Optional[int] = None,
                dim: int = -2, last: Optional[Tensor] = None,
                pad_count: Optional[Tensor] = None,
                pad_x: Optional[Tensor] = None) -> Tensor:
        self.assert_two_dimensional_input(x, dim)
        if x.size(-1) != self.channels:
            raise ValueError(f"x must have {self.channels} channels, got "
                             f"{list(x.shape)}")
        assert dim_size is not None  # set by Aggregation.__call__
        if last is None:
            last = _gather_last(x, index, ptr, dim_size)
        elif tuple(last.shape) != (dim_size, self.channels):
            raise ValueError(f"last must have shape [{dim_size}, {self.channels}] "
                             f"(one vector per session), got {list(last.shape)}")
        if (pad_count is None) != (pad_x is None):
            raise ValueError("pad_count and pad_x go together (padded slots per "
                             "session and their feature)")
        if pad_count is not None and not self.softmax:
            raise ValueError("pad_count emulates padded slots in the softmax; it needs "
                             "softmax=True (without it the released code masks them)")
        index = resolve_index(x, index, ptr)
        q_last = self.lin_last(last)
        alpha = self.lin_q(torch.sigmoid(q_last[index] + self.lin_pos(x)))
        if pad_count is not None:
            alpha = self._padded_softmax(alpha, q_last, index, dim_size, pad_count,
                                         pad_x)
        elif self.softmax:
            alpha = softmax(alpha, index, ptr, dim_size, dim=0)
        return self.reduce(alpha * x, index, dim_size=dim_size, dim=0)

    def _padded_softmax(self, alpha: Tensor, q_last: Tensor, index: Tensor,
                        dim_size: int, pad_count: Tensor, pad_x: Tensor) -> Tensor:
        r"""The softmax of ``alpha`` [N, 1] over each session with
        ``pad_count[b]`` padded slots of feature ``pad_x`` joining the
        denominator (the released padding): stable, the per-session maximum
        taken over the padded logit too."""
        check_pad_count(pad_count, dim_size)
        if pad_x.shape not in ((self.channels, ), (dim_size, self.channels)):
            raise ValueError(f"pad_x must have shape [{self.channels}] or "
                             f"[{dim_size}, {self.channels}], got {list(pad_x.shape)}")
        alpha_pad = self.lin_q(torch.sigmoid(q_last + self.lin_pos(pad_x)))  # [B, 1]
        pad = pad_count.to(alpha.dtype).view(-1, 1)
        m = scatter(alpha.detach(), index, 0, dim_size, reduce='max')
        m = torch.where(pad > 0, torch.maximum(m, alpha_pad.detach()), m)
        w = (alpha - m[index]).exp()
        denom = scatter(w, index, 0, dim_size, reduce='sum') \
            + pad * (alpha_pad - m).exp()
        return w / denom[index]

    def __repr__(self) -> str:
        extra = '' if self.bias else ', bias=False'
        return (f'{self.__class__.__name__}({self.channels}, '
                f'softmax={self.softmax}{extra})')
