"""TargetAttention against eq. (6)-(7) and the TAGNN scores written out per session.

The reference loops over sessions and targets in float64 exactly as the paper
writes it (beta = softmax over the session's clicks of v_t^T W v_i, s_target^t =
sum_i beta_i v_i, score = u_t . s_target^t); forward values and gradients of both
the chunked and the dense method are compared with it.
"""
import pytest
import torch

import tagnn_pyg.nn.target_attention as ta
from tagnn_pyg.nn import TargetAttention
from tagnn_pyg.nn.target_attention import DEFAULT_CHUNK_ELEMENTS, _auto_chunk


@pytest.fixture(autouse=True, params=['keep', 'recompute'])
def backward_mode(request, monkeypatch):
    """Every test runs twice: with the softmax/G chunks kept for the backward
    (small inputs) and with the backward recomputing them (over the budget)."""
    if request.param == 'recompute':
        monkeypatch.setattr(ta, 'SAVE_ELEMENTS', 0)
    return request.param

D = 5
LENGTHS = [3, 1, 4, 2, 1]
NUM_TARGETS = 10


def setup(seed=0, lengths=LENGTHS):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(lengths), D, generator=g, dtype=torch.double)
    x[2] = x[0]                       # a repeated click in session 0
    x[6] = x[4]                       # and one in session 2
    index = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    target = torch.randn(NUM_TARGETS, D, generator=g, dtype=torch.double)
    value = torch.randn(NUM_TARGETS, D, generator=g, dtype=torch.double)
    W = torch.randn(D, D, generator=g, dtype=torch.double) / D ** 0.5
    return x, index, target, value, W


def reference(x, index, target, value, W, candidates=None):
    """Eq. (6)-(7) literally, per session and target; returns [B, T] (or [B, C])."""
    B = int(index.max()) + 1
    rows = []
    for b in range(B):
        v = x[index == b]                                     # [L, d]
        cols = range(target.size(0)) if candidates is None else candidates[b].tolist()
        row = []
        for t in cols:
            e = torch.stack([target[t] @ (W @ v_i) for v_i in v])   # v_t^T W v_i
            beta = torch.exp(e - e.max()) / torch.exp(e - e.max()).sum()
            s_target = (beta.unsqueeze(-1) * v).sum(0)
            row.append(value[t] @ s_target)
        rows.append(torch.stack(row))
    return torch.stack(rows)


def module(W, **kwargs):
    ta = TargetAttention(D, **kwargs).double()
    with torch.no_grad():
        ta.lin.weight.copy_(W)
    return ta


def grads(fn, inputs, weight):
    out = fn(*inputs)
    return out, torch.autograd.grad((out * weight).sum(), inputs)


CONFIGS = [dict(method='dense'), dict(method='chunked'),
           dict(method='chunked', chunk_size=1), dict(method='chunked', chunk_size=3),
           dict(method='chunked', chunk_size=7), dict(method='chunked', chunk_size=100)]


@pytest.mark.parametrize('config', CONFIGS)
@pytest.mark.parametrize('with_value', [False, True])
def test_forward_and_gradients_equal_eq_6_7(config, with_value):
    x, index, target, value, W = setup()
    W = W.clone().requires_grad_()
    ta = module(W.detach(), **config)
    weight = torch.randn(len(LENGTHS), NUM_TARGETS, dtype=torch.double)
    inputs = [x.clone().requires_grad_(), target.clone().requires_grad_()]
    if with_value:
        inputs.append(value.clone().requires_grad_())

    def ours(x, target, value=None):
        return ta(x, index, target=target, value=value)

    def ref(x, target, value=None):
        return reference(x, index, target, target if value is None else value, W)

    out, g_ours = grads(ours, inputs, weight)
    out_ref = ref(*inputs)
    g_ref = torch.autograd.grad((out_ref * weight).sum(), inputs + [W])
    assert out.shape == (len(LENGTHS), NUM_TARGETS)
    torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    g_w = torch.autograd.grad((ours(*inputs) * weight).sum(), ta.lin.weight)[0]
    torch.testing.assert_close(g_w, g_ref[-1], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize('config', CONFIGS)
def test_candidates_forward_and_gradients(config):
    x, index, target, value, W = setup(seed=1)
    candidates = torch.tensor([[0, 3, 3, 9], [1, 2, 5, 0], [9, 8, 7, 6],
                               [4, 4, 4, 4], [2, 0, 1, 3]])
    W = W.clone().requires_grad_()
    ta = module(W.detach(), **config)
    weight = torch.randn(*candidates.shape, dtype=torch.double)
    inputs = [x.clone().requires_grad_(), target.clone().requires_grad_(),
              value.clone().requires_grad_()]
    out, g_ours = grads(lambda x, t, u: ta(x, index, target=t, value=u,
                                           candidates=candidates), inputs, weight)
    out_ref = reference(inputs[0], index, inputs[1], inputs[2], W, candidates)
    g_ref = torch.autograd.grad((out_ref * weight).sum(), inputs + [W])
    torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    # Candidates give the same numbers as the full scores at those columns.
    full = ta(x, index, target=target, value=value)
    torch.testing.assert_close(out.detach(), full.gather(1, candidates))


def test_tagnn_released_and_paper_scores():
    """The module gives the TAGNN scores once the target-independent term is added."""
    x, index, target, _, W = setup(seed=2)
    ta = module(W)
    B = len(LENGTHS)
    g = torch.Generator().manual_seed(3)
    a = torch.randn(B, D, generator=g, dtype=torch.double)       # s_global/local part
    # Released code: z_t = v_t . (a + s_target^t), written per session and target.
    released = torch.empty(B, NUM_TARGETS, dtype=torch.double)
    for b in range(B):
        v = x[index == b]
        for t in range(NUM_TARGETS):
            beta = torch.softmax(torch.stack([target[t] @ W @ vi for vi in v]), 0)
            released[b, t] = target[t] @ (a[b] + (beta[:, None] * v).sum(0))
    ours = a @ target.t() + ta(x, index, target=target)
    torch.testing.assert_close(ours, released)
    # Paper eq. (10): z_t = v_t . W3 [s_target^t; s_local; s_global].
    W3 = torch.randn(D, 3 * D, generator=g, dtype=torch.double)
    s_local = torch.randn(B, D, generator=g, dtype=torch.double)
    s_global = torch.randn(B, D, generator=g, dtype=torch.double)
    paper = torch.empty(B, NUM_TARGETS, dtype=torch.double)
    for b in range(B):
        v = x[index == b]
        for t in range(NUM_TARGETS):
            beta = torch.softmax(torch.stack([target[t] @ W @ vi for vi in v]), 0)
            s_t = torch.cat([(beta[:, None] * v).sum(0), s_local[b], s_global[b]])
            paper[b, t] = target[t] @ (W3 @ s_t)
    W3a, W3b, W3c = W3.split(D, dim=1)
    const = (s_local @ W3b.t() + s_global @ W3c.t()) @ target.t()
    ours = const + ta(x, index, target=target, value=target @ W3a)
    torch.testing.assert_close(ours, paper)


def test_pool_is_eq_7():
    x, index, target, _, W = setup(seed=4)
    ta = module(W)
    pooled = ta.pool(x, index, target=target)
    assert pooled.shape == (len(LENGTHS), NUM_TARGETS, D)
    for b in range(len(LENGTHS)):
        v = x[index == b]
        for t in (0, 5, 9):
            beta = torch.softmax(torch.stack([target[t] @ W @ vi for vi in v]), 0)
            torch.testing.assert_close(pooled[b, t], (beta[:, None] * v).sum(0))
    cand = torch.tensor([[1, 2]] * len(LENGTHS))
    torch.testing.assert_close(ta.pool(x, index, target=target, candidates=cand),
                               pooled[:, 1:3])
    ptr = torch.tensor([0] + LENGTHS).cumsum(0)   # the same sessions as CSR pointers
    torch.testing.assert_close(ta.pool(x, ptr=ptr, target=target), pooled)


def test_sessions_do_not_interact_and_unsorted_index():
    x, index, target, _, W = setup(seed=5)
    ta = module(W, chunk_size=4)
    out = ta(x, index, target=target)
    ptr = [0] + torch.tensor(LENGTHS).cumsum(0).tolist()
    for b in range(len(LENGTHS)):
        alone = ta(x[ptr[b]:ptr[b + 1]], torch.zeros(LENGTHS[b], dtype=torch.long),
                   target=target)
        torch.testing.assert_close(alone[0], out[b], rtol=0, atol=1e-12)
    perm = torch.randperm(x.size(0), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ta(x[perm], index[perm], target=target), out)
    out_ptr = ta(x, ptr=torch.tensor(ptr), target=target)
    torch.testing.assert_close(out_ptr, out)
    # A trailing empty session scores 0, not NaN.
    out_empty = ta(x, index, dim_size=len(LENGTHS) + 1, target=target)
    assert torch.isfinite(out_empty).all() and out_empty[-1].abs().sum() == 0


def test_numerically_stable_large_logits():
    x, index, target, _, W = setup(seed=6)
    ta = module(W * 1e3)
    out = ta(x * 10, index, target=target)
    ref = module(W * 1e3, method='dense')(x * 10, index, target=target)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref)


def test_float32_matches_float64():
    x, index, target, _, W = setup(seed=7)
    ta = module(W)
    ref = ta(x, index, target=target)
    out = ta.float()(x.float(), index, target=target.float())
    torch.testing.assert_close(out, ref.float(), rtol=1e-5, atol=1e-5)


def test_auto_chunk_bounds_memory():
    assert _auto_chunk(500, 43_000, 1) == DEFAULT_CHUNK_ELEMENTS // 500
    assert _auto_chunk(10, 7, 1) == 7
    assert _auto_chunk(10 ** 9, 7, 100) == 1


def test_errors_and_repr():
    ta = TargetAttention(D, chunk_size=64)
    assert repr(ta) == "TargetAttention(5, chunk_size=64, method='chunked')"
    assert ta.lin.bias is None and ta.lin.weight.abs().max() <= 1 / D ** 0.5
    x = torch.randn(4, D)
    index = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match='needs target'):
        ta(x, index)
    with pytest.raises(ValueError, match=r'target must have shape \[T, 5\]'):
        ta(x, index, target=torch.randn(3, 4))
    with pytest.raises(ValueError, match='value must have the shape'):
        ta(x, index, target=torch.randn(3, D), value=torch.randn(2, D))
    with pytest.raises(ValueError, match=r'candidates must be a long tensor of shape \[2, C\]'):
        ta(x, index, target=torch.randn(3, D), candidates=torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="got 'fast'"):
        TargetAttention(D, method='fast')
    with pytest.raises(ValueError, match='chunk_size'):
        TargetAttention(D, chunk_size=0)


def test_bf16_autocast_matmuls_with_float32_softmax_match_float32(monkeypatch, backward_mode):
    # Under autocast the matmuls run in bf16 while the segment softmax, the
    # sums and the gradients stay float32 (and the recomputing backward never
    # meets mixed dtypes); the result tracks the float32 computation.
    torch.manual_seed(0)
    att = TargetAttention(16, chunk_size=128)   # 3 chunks, the last one partial
    x = torch.randn(40, 16)
    target = torch.randn(300, 16)
    index = torch.arange(8).repeat_interleave(5)

    def run(autocast):
        xx, tt = x.clone().requires_grad_(), target.clone().requires_grad_()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            out = att(xx, index, dim_size=8, target=tt)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out, xx.grad, tt.grad, att.lin.weight.grad.clone()

    ref = run(False)
    att.zero_grad()
    seen = []
    real = ta._pair_dots
    monkeypatch.setattr(ta, '_pair_dots', lambda a, b, *rest: (
        seen.append((a.dtype, b.dtype)), real(a, b, *rest))[1])
    got = run(True)
    assert got[0].dtype == torch.float32
    assert not torch.equal(got[0], ref[0])
    # every pair-dot matmul of the 3 chunks ran in bf16: E and G of each chunk in
    # the forward, and again in the backward when it recomputes them
    assert len(seen) == (12 if backward_mode == 'recompute' else 6)
    assert set(seen) == {(torch.bfloat16, torch.bfloat16)}
    for g, r in zip(got, ref):
        assert g.dtype == torch.float32
        assert torch.allclose(g, r, rtol=0.05, atol=0.05 * r.abs().max().item())
