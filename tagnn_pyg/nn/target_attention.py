r"""Target attention (TAGNN eq. 6-7) without the ``[sessions, items, d]`` tensor."""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch
from torch import Tensor
from torch.nn import Linear

from torch_geometric.nn.aggr import Aggregation
from torch_geometric.nn.inits import uniform
from torch_geometric.utils import scatter, to_dense_batch

from tagnn_pyg.nn.readouts import check_pad_count, resolve_index

__all__ = ['TargetAttention', 'target_attention_scores']

METHODS = ('chunked', 'dense')

#: Default bound on the elements of one ``[positions, chunk]`` matrix (full
#: mode) or one ``[positions, chunk, d]`` gather (candidate mode): 2**23
#: elements = 32 MiB in float32. A chunk step keeps about five such matrices.
DEFAULT_CHUNK_ELEMENTS = 2 ** 23

#: Largest number of ``[positions, items]`` elements (``P`` and ``G`` together)
#: that the training forward keeps for the backward instead of recomputing
#: them: 2**26 elements = 256 MiB in float32 (a Diginetica batch of 100 needs
#: about 43M).
SAVE_ELEMENTS = 2 ** 26


def _auto_chunk(num_positions: int, num_cols: int, per_col: int,
                budget: int = DEFAULT_CHUNK_ELEMENTS) -> int:
    return max(1, min(num_cols, budget // max(1, num_positions * per_col)))


def _pair_dots(a: Tensor, b: Tensor, index: Tensor, candidates: Optional[Tensor],
               t0: int, t1: int) -> Tensor:
    r"""``[N, t1 - t0]``: :math:`a_i \cdot b_t` for the targets ``t0:t1``
    (full mode) or for the candidates ``t0:t1`` of the position's session."""
    if candidates is None:
        return a @ b[t0:t1].t()
    rows = b[candidates[:, t0:t1][index]]               # [N, c, d]
    return torch.bmm(rows, a.unsqueeze(-1)).squeeze(-1)


def _pair_grads(grad: Tensor, a: Tensor, b: Tensor, index: Tensor,
                candidates: Optional[Tensor], t0: int, t1: int,
                grad_a: Optional[Tensor], grad_b: Optional[Tensor]) -> None:
    r"""Accumulate the gradients of :func:`_pair_dots` for ``grad`` [N, c]."""
    grad = grad.to(a.dtype)       # the matmul dtype (bf16 under autocast)
    if candidates is None:
        if grad_a is not None:
            if grad_a.dtype == a.dtype:
                grad_a.addmm_(grad, b[t0:t1])
            else:
                grad_a += grad @ b[t0:t1]
        if grad_b is not None:
            grad_b[t0:t1] += grad.t() @ a
        return
    idx = candidates[:, t0:t1][index]                   # [N, c]
    if grad_a is not None:
        grad_a += torch.bmm(grad.unsqueeze(1), b[idx]).squeeze(1)
    if grad_b is not None:
        grad_b.index_add_(0, idx.reshape(-1),
                          (grad.unsqueeze(-1) * a.unsqueeze(1)).reshape(-1, a.size(-1))
                          .to(grad_b.dtype))


class _ChunkedTargetAttention(torch.autograd.Function):
    r"""Forward: per chunk of targets, :math:`E = QK^\top`, :math:`G = XU^\top`,
    segment log-sum-exp of :math:`E`, :math:`o = \sum_i e^{E - lse} G`.
    Saves the inputs, ``lse`` and ``o`` (``[B, T]``), and the chunks of
    :math:`P = \mathrm{softmax}(E)` and :math:`G` only while they fit
    ``SAVE_ELEMENTS``; beyond that the backward recomputes :math:`E, G` chunk by
    chunk, so memory stays bounded for any catalogue:
    :math:`\partial G = P \cdot g`, :math:`\partial E = P (G - o) \cdot g`.

    With ``compute_dtype`` (bf16/fp16 under autocast) the four matmul inputs are
    cast to it once and the matmuls run in it, while the segment softmax, the
    weighted sums, ``o`` and the gradients stay in the inputs' (float32) dtype.

    With ``pad`` (``[B]``), session :math:`b` also has ``pad[b]`` slots with
    :math:`E = 0` and :math:`G = 0` (the released code's zeroed padding): they
    add ``pad[b]`` :math:`\cdot e^{0}` to the softmax denominator and nothing to
    the sum. The backward formulas hold unchanged: with the padded denominator
    (carried by ``lse``) still :math:`\partial E = P (G - o) \cdot g`."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, x: Tensor, k: Tensor, u: Tensor, index: Tensor,
                candidates: Optional[Tensor], dim_size: int,
                chunk_size: int, compute_dtype: Optional[torch.dtype] = None,
                training: bool = False, pad: Optional[Tensor] = None) -> Tensor:
        num_cols = k.size(0) if candidates is None else candidates.size(1)
        out = q.new_zeros(dim_size, num_cols)
        if compute_dtype is not None:
            q, x, k, u = (t.to(compute_dtype) for t in (q, x, k, u))
        # Keep P and G for the backward when they fit the budget (saves two of
        # the backward's six matmuls); otherwise the backward recomputes them.
        keep = training and 2 * q.size(0) * num_cols <= SAVE_ELEMENTS
        # the recomputing backward needs the log-sum-exp; nothing else does
        lse = q.new_zeros(dim_size, num_cols) if training and not keep else None
        chunks: List[Tuple[Tensor, Tensor]] = []
        for t0 in range(0, num_cols, chunk_size):
            t1 = min(t0 + chunk_size, num_cols)
            e = _pair_dots(q, k, index, candidates, t0, t1).to(out.dtype)
            g = _pair_dots(x, u, index, candidates, t0, t1).to(out.dtype)
            m = scatter(e, index, 0, dim_size, reduce='max')
            if pad is not None:  # padded slots have E = 0: include 0 in the max
                m = torch.where(pad.view(-1, 1) > 0, m.clamp(min=0.0), m)
            p = e.sub_(m[index]).exp_()
            s = scatter(p, index, 0, dim_size, reduce='sum')
            if pad is not None:
                s = s + pad.view(-1, 1) * torch.exp(-m)
            p.div_(s.clamp(min=torch.finfo(s.dtype).tiny)[index])   # P = softmax
            out[:, t0:t1] = scatter(p * g if keep else p.mul_(g), index, 0, dim_size,
                                    reduce='sum')
            if lse is not None:
                lse[:, t0:t1] = m + s.log()
            if keep:
                chunks.append((p, g))
        ctx.save_for_backward(q, x, k, u, index, candidates, lse, out)  # q..u cast
        ctx.chunk_size = chunk_size
        ctx.chunks = chunks if keep else None
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> Tuple[Optional[Tensor], ...]:
        q, x, k, u, index, candidates, lse, out = ctx.saved_tensors
        need_q, need_x, need_k, need_u = ctx.needs_input_grad[:4]
        zeros = lambda t: torch.zeros_like(t, dtype=out.dtype)  # noqa: E731
        grad_q = zeros(q) if need_q else None
        grad_x = zeros(x) if need_x else None
        grad_k = zeros(k) if need_k else None
        grad_u = zeros(u) if need_u else None
        grad_out = grad_out.contiguous()
        num_cols = out.size(1)
        for c, t0 in enumerate(range(0, num_cols, ctx.chunk_size)):
            t1 = min(t0 + ctx.chunk_size, num_cols)
            if ctx.chunks is not None:
                p, g = ctx.chunks[c]
                p, g = p * grad_out[:, t0:t1][index], g.clone()   # P * dout
            else:
                e = _pair_dots(q, k, index, candidates, t0, t1).to(out.dtype)
                g = _pair_dots(x, u, index, candidates, t0, t1).to(out.dtype)
                p = e.sub_(lse[:, t0:t1][index]).exp_()
                p.mul_(grad_out[:, t0:t1][index])           # P * dout
            if need_x or need_u:
                _pair_grads(p, x, u, index, candidates, t0, t1, grad_x, grad_u)
            if need_q or need_k:
                de = p.mul_(g.sub_(out[:, t0:t1][index]))  # P * dout * (G - o)
                _pair_grads(de, q, k, index, candidates, t0, t1, grad_q, grad_k)
        return grad_q, grad_x, grad_k, grad_u, None, None, None, None, None, None, None


def _dense_pool(q: Tensor, x: Tensor, k: Tensor, index: Tensor, dim_size: int,
                candidates: Optional[Tensor], pad: Optional[Tensor] = None) -> Tensor:
    r"""Literal eq. (6)-(7) on a padded batch: ``[B, T, d]`` (or ``[B, C, d]``).
    With ``pad``, ``pad[b]`` zero slots join session ``b``'s softmax (one extra
    slot with logit :math:`\log` ``pad[b]``, which is the same)."""
    qd, mask = to_dense_batch(q, index, batch_size=dim_size)   # [B, L, d]
    xd, _ = to_dense_batch(x, index, batch_size=dim_size)
    if candidates is None:
        e = qd @ k.t()                                          # [B, L, T]
    else:
        e = qd @ k[candidates].transpose(1, 2)                  # [B, L, C]
    e = e.masked_fill(~mask.unsqueeze(-1), float('-inf'))
    if pad is not None:
        extra = pad.to(e.dtype).log().view(-1, 1, 1).expand(-1, 1, e.size(-1))
        e = torch.cat([e, extra], dim=1)
    beta = torch.softmax(e, dim=1)[:, :mask.size(1)]
    beta = beta.masked_fill(~mask.unsqueeze(-1), 0.0)
    return beta.transpose(1, 2) @ xd


def target_attention_scores(q: Tensor, x: Tensor, target: Tensor, value: Tensor,
                            index: Tensor, dim_size: int,
                            candidates: Optional[Tensor] = None,
                            chunk_size: Optional[int] = None,
                            method: str = 'chunked',
                            pad_count: Optional[Tensor] = None) -> Tensor:
    r"""Functional form of :class:`TargetAttention` with precomputed
    :math:`\mathbf{q}_i = \mathbf{W}\mathbf{v}_i` (``q``):
    :math:`o_{b,t} = \sum_{i \in b} \mathrm{softmax}_i(\mathbf{q}_i \cdot
    \mathbf{v}_t)\, (\mathbf{v}_i \cdot \mathbf{u}_t)`, the softmax
    denominator extended by ``pad_count[b]`` zero slots when given."""
    if pad_count is not None:
        pad_count = pad_count.to(torch.float32 if q.dtype in (torch.float16, torch.bfloat16)
                                 else q.dtype)
    device_type = q.device.type
    if torch.is_autocast_enabled(device_type):
        # Mixed precision done inside: the matmuls run in the autocast dtype,
        # the segment softmax, sums and gradients in float32. Autocast itself is
        # switched off here because the backward recomputes the chunks outside
        # it, where bf16 activations and fp32 embeddings cannot meet in a matmul.
        compute_dtype = torch.get_autocast_dtype(device_type) if method == 'chunked' else None
        with torch.autocast(device_type=device_type, enabled=False):
            return _target_attention_scores(q.float(), x.float(), target.float(),
                                            value.float(), index, dim_size, candidates,
                                            chunk_size, method, compute_dtype,
                                            None if pad_count is None else pad_count.float())
    return _target_attention_scores(q, x, target, value, index, dim_size, candidates,
                                    chunk_size, method, None, pad_count)


def _target_attention_scores(q: Tensor, x: Tensor, target: Tensor, value: Tensor,
                             index: Tensor, dim_size: int, candidates: Optional[Tensor],
                             chunk_size: Optional[int], method: str,
                             compute_dtype: Optional[torch.dtype],
                             pad_count: Optional[Tensor] = None) -> Tensor:
    if method == 'dense':
        pooled = _dense_pool(q, x, target, index, dim_size, candidates, pad_count)
        u = value if candidates is None else value[candidates]
        return (pooled * u).sum(-1)
    if method != 'chunked':
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    num_cols = target.size(0) if candidates is None else candidates.size(1)
    if chunk_size is None:
        per_col = 1 if candidates is None else q.size(-1)
        chunk_size = _auto_chunk(q.size(0), num_cols, per_col)
    training = torch.is_grad_enabled() and any(
        t.requires_grad for t in (q, x, target, value))
    return _ChunkedTargetAttention.apply(q, x, target, value, index, candidates,
                                         dim_size, max(1, int(chunk_size)), compute_dtype,
                                         training, pad_count)


class TargetAttention(Aggregation):
    r"""The target-attentive readout of TAGNN (eq. 6-7), reduced to the scalar
    that the score needs.

    For every session :math:`s` (positions :math:`i`, i.e. its clicks with
    repeats, features :math:`\mathbf{v}_i`) and every target :math:`t` with
    key :math:`\mathbf{v}_t` (``target``) and value :math:`\mathbf{u}_t`
    (``value``, default :math:`\mathbf{u}_t = \mathbf{v}_t`):

    .. math::
        \beta_{i,t} &= \mathrm{softmax}_{i \in s}\left(\mathbf{v}_t^{\top}
            \mathbf{W} \mathbf{v}_i\right)

        \mathbf{s}^t_{target} &= \sum_{i \in s} \beta_{i,t} \mathbf{v}_i

        o_{s,t} &= \mathbf{u}_t \cdot \mathbf{s}^t_{target}
            = \sum_{i \in s} \beta_{i,t}\, (\mathbf{v}_i \cdot \mathbf{u}_t)

    :math:`\mathbf{W}` (``lin``, no bias) is applied to the session side,
    :math:`E_{i,t} = (\mathbf{W}\mathbf{v}_i) \cdot \mathbf{v}_t`, as the
    released ``linear_t``. TAGNN's released score is
    :math:`z_t = \mathbf{v}_t \cdot \mathbf{a} + o_{s,t}` with
    :math:`\mathbf{u}_t = \mathbf{v}_t`; the paper's eq. (10) is
    :math:`z_t = \mathbf{v}_t \cdot \mathbf{W}_3 [\mathbf{s}^t_{target};
    \mathbf{s}_{local}; \mathbf{s}_{global}]`, i.e. :math:`o_{s,t}` with
    :math:`\mathbf{u}_t = \mathbf{W}_{3a}^{\top} \mathbf{v}_t` plus a
    target-independent term.

    The default ``method='chunked'`` never builds the ``[B, T, d]`` tensor: per
    chunk of targets it forms the two ``[N, chunk]`` matrices
    :math:`E = (\mathbf{X}\mathbf{W}^{\top})\mathbf{V}_T^{\top}` and
    :math:`G = \mathbf{X}\mathbf{U}_T^{\top}`, a numerically stable segment
    softmax of :math:`E` over each session's positions (per-segment max
    subtracted) and a segment sum of :math:`\beta \odot G`. A custom autograd
    function saves only the inputs and two ``[B, T]`` matrices and recomputes
    each chunk in the backward pass, so peak memory is
    :math:`O((N + T) d + B T + 5 N \cdot \text{chunk})` in training too. Sessions
    never interact (no padding): a session's result does not depend on the
    rest of the batch.

    With ``candidates`` (``[B, C]`` row indices into ``target``), session
    :math:`b` is scored only against its own candidates; each position is
    dotted with the candidate rows of its own session, in chunks of
    candidates bounding the ``[N, chunk, d]`` gather.

    ``method='dense'`` is the literal reference (padded per-session attention
    and the ``[B, T, d]`` tensor of eq. 7); use it for tests and small inputs.
    :meth:`pool` returns :math:`\mathbf{s}^t_{target}` itself.

    ``pad_count`` (``[B]``, optional) emulates the released TAGNN code, which
    pads every session with zero vectors to the data set's longest session
    and runs this softmax over the padded slots too: each of the
    ``pad_count[b]`` slots has :math:`E = 0` and adds :math:`e^0 = 1` to the
    denominator, :math:`\beta_{i,t} = e^{E_{i,t}} / (\sum_{j \in s}
    e^{E_{j,t}} + \text{pad\_count}_s)`, and nothing to the sum. Off by
    default: attention is per session.

    Args:
        channels (int): Feature size :math:`d`.
        chunk_size (int, optional): Targets (or candidates) per chunk. If
            :obj:`None`, chosen so one ``[N, chunk]`` matrix (candidate mode:
            ``[N, chunk, d]``) holds at most ``2**23`` elements.
            (default: :obj:`None`)
        method (str, optional): ``'chunked'`` (default) or ``'dense'``.

    Shapes:
        - **input:** position features :math:`(N, d)`, ``index`` :math:`(N)`
          or ``ptr`` :math:`(B + 1)`, keyword ``target`` :math:`(T, d)`,
          optional ``value`` :math:`(T, d)`, optional ``candidates``
          :math:`(B, C)`, optional ``pad_count`` :math:`(B)`
        - **output:** :math:`(B, T)`, or :math:`(B, C)` with ``candidates``
    """

    def __init__(self, channels: int, chunk_size: Optional[int] = None,
                 method: str = 'chunked') -> None:
        super().__init__()
        if int(channels) != channels or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        if chunk_size is not None and (int(chunk_size) != chunk_size or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive integer or None, "
                             f"got {chunk_size!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.channels = int(channels)
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.method = method
        self.lin = Linear(channels, channels, bias=False)  # linear_t, W
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""``lin`` uniform in :math:`[-1/\sqrt{d}, 1/\sqrt{d}]`, as released."""
        uniform(self.channels, self.lin)

    def _check(self, x: Tensor, index: Optional[Tensor], ptr: Optional[Tensor],
               dim_size: int, target: Optional[Tensor],
               value: Optional[Tensor], candidates: Optional[Tensor],
               dim: int = -2, pad_count: Optional[Tensor] = None
               ) -> Tuple[Tensor, Tensor, Tensor]:
        self.assert_two_dimensional_input(x, dim)
        if x.size(-1) != self.channels:
            raise ValueError(f"x must have shape [num_positions, {self.channels}], "
                             f"got {list(x.shape)}")
        if target is None:
            raise ValueError("TargetAttention needs target=Tensor[T, channels] "
                             "(the target/candidate item embeddings)")
        if target.dim() != 2 or target.size(-1) != self.channels:
            raise ValueError(f"target must have shape [T, {self.channels}], got "
                             f"{list(target.shape)}")
        if value is None:
            value = target
        elif value.shape != target.shape:
            raise ValueError(f"value must have the shape of target "
                             f"{list(target.shape)}, got {list(value.shape)}")
        index = resolve_index(x, index, ptr)
        if candidates is not None:
            if (candidates.dim() != 2 or candidates.size(0) != dim_size
                    or candidates.dtype != torch.long):
                raise ValueError(f"candidates must be a long tensor of shape "
                                 f"[{dim_size}, C] (row indices into target per "
                                 f"session), got {candidates.dtype} "
                                 f"{list(candidates.shape)}")
        if pad_count is not None:
            check_pad_count(pad_count, dim_size)
        return index, target, value

    def forward(self, x: Tensor, index: Optional[Tensor] = None,
                ptr: Optional[Tensor] = None, dim_size: Optional[int] = None,
                dim: int = -2, target: Optional[Tensor] = None,
                value: Optional[Tensor] = None,
                candidates: Optional[Tensor] = None,
                pad_count: Optional[Tensor] = None) -> Tensor:
        r"""Return :math:`o_{s,t}` as ``[B, T]`` (``[B, C]`` with candidates)."""
        assert dim_size is not None  # set by Aggregation.__call__
        index, target, value = self._check(x, index, ptr, dim_size, target, value,
                                           candidates, dim, pad_count)
        return target_attention_scores(self.lin(x), x, target, value, index,
                                       dim_size, candidates, self.chunk_size,
                                       self.method, pad_count)

    def pool(self, x: Tensor, index: Optional[Tensor] = None,
             target: Optional[Tensor] = None, ptr: Optional[Tensor] = None,
             dim_size: Optional[int] = None,
             candidates: Optional[Tensor] = None) -> Tensor:
        r"""The explicit target embeddings :math:`\mathbf{s}^t_{target}` (eq. 7),
        ``[B, T, d]`` (``[B, C, d]`` with candidates). Memory grows as
        :math:`B T d`: for small ``T`` only. Needs positions grouped by
        session (sorted ``index``)."""
        index = resolve_index(x, index, ptr)
        if dim_size is None:  # as Aggregation.__call__ (pool is not called through it)
            dim_size = ptr.numel() - 1 if ptr is not None else \
                int(index.max()) + 1 if index.numel() > 0 else 0
        index, target, _ = self._check(x, index, None, dim_size, target, None,
                                       candidates)
        return _dense_pool(self.lin(x), x, target, index, dim_size, candidates)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.channels}, '
                f'chunk_size={self.chunk_size}, method={self.method!r})')
