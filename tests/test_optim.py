"""AGC on hand-computed cases (lambda = 0.01, eps = 1e-3 unless said otherwise)."""
import pytest
import torch

from tagnn_pyg.optim import AGC, adaptive_clip_grad_, unitwise_norm


def _param(data, grad):
    p = torch.nn.Parameter(torch.tensor(data, dtype=torch.float64))
    p.grad = torch.tensor(grad, dtype=torch.float64)
    return p


def test_matrix_rows_are_units():
    # row norms 5, 1, 0 -> thresholds 0.01 * max(norm, 1e-3) = 0.05, 0.01, 1e-5
    p = _param([[3., 4.], [1., 0.], [0., 0.]],
               [[0.03, 0.0],      # norm 0.03 <= 0.05: untouched
                [0.06, 0.08],     # norm 0.1 > 0.01: scaled by 0.1
                [0.0, 2e-5]])     # norm 2e-5 > 1e-5 (eps floor): scaled by 0.5
    adaptive_clip_grad_([p])
    expected = torch.tensor([[0.03, 0.0], [0.006, 0.008], [0.0, 1e-5]], dtype=torch.float64)
    torch.testing.assert_close(p.grad, expected, rtol=1e-12, atol=0)


def test_vector_elementwise_and_custom_lambda():
    # bias: every element is its own unit
    p = _param([2.0, -0.5, 0.0, 1.0], [0.01, -0.05, 0.0, -3e-5])
    adaptive_clip_grad_(p)   # thresholds 0.02, 0.005, 1e-5, 0.01
    torch.testing.assert_close(
        p.grad, torch.tensor([0.01, -0.005, 0.0, -3e-5], dtype=torch.float64),
        rtol=1e-12, atol=0)
    q = _param([2.0], [0.5])
    adaptive_clip_grad_([q], clipping=0.1, eps=1e-2)   # threshold 0.2
    torch.testing.assert_close(q.grad, torch.tensor([0.2], dtype=torch.float64))


def test_higher_rank_units_and_unitwise_norm():
    w = torch.zeros(2, 2, 2, dtype=torch.float64)
    w[0] = 1.0            # unit norm 2 -> threshold 0.02
    w[1, 0, 0] = 10.0     # unit norm 10 -> threshold 0.1
    g = torch.zeros_like(w)
    g[0] = 0.02           # norm 0.04 > 0.02: halved
    g[1, 1, 1] = 0.05     # norm 0.05 <= 0.1: untouched
    assert unitwise_norm(w).shape == (2, 1, 1)
    torch.testing.assert_close(unitwise_norm(w).flatten(),
                               torch.tensor([2.0, 10.0], dtype=torch.float64))
    p = _param(w.tolist(), g.tolist())
    adaptive_clip_grad_([p])
    exp = g.clone()
    exp[0] = 0.01
    torch.testing.assert_close(p.grad, exp, rtol=1e-12, atol=0)


def test_zero_and_missing_gradients_are_safe():
    p = _param([[0.0, 0.0]], [[0.0, 0.0]])   # zero weight, zero grad
    q = torch.nn.Parameter(torch.ones(3))    # no grad at all
    adaptive_clip_grad_([p, q])
    assert torch.equal(p.grad, torch.zeros(1, 2, dtype=torch.float64))
    assert q.grad is None
    r = _param([0.0, 1.0], [0.0, 0.0])
    AGC([r], clipping=0.0).clip_()            # lambda 0: only non-zero grads vanish
    assert torch.isfinite(r.grad).all() and torch.equal(r.grad, torch.zeros(2, dtype=torch.float64))


def test_works_with_any_optimizer_and_param_groups():
    for opt_cls in (torch.optim.SGD, torch.optim.Adam):
        p = _param([[3., 4.]], [[0.6, 0.8]])   # norm 1 > 0.05 -> grad [0.03, 0.04]
        opt = opt_cls([{'params': [p]}], lr=1.0)
        agc = AGC(opt.param_groups)
        handle = agc.attach(opt)
        opt.step()
        handle.remove()
        torch.testing.assert_close(p.grad, torch.tensor([[0.03, 0.04]], dtype=torch.float64))
        if opt_cls is torch.optim.SGD:
            torch.testing.assert_close(p.detach(), torch.tensor([[2.97, 3.96]], dtype=torch.float64))


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(4, 2)
        self.lin = torch.nn.Linear(2, 2)


def test_for_model_exempts_embedding():
    torch.manual_seed(0)
    m = _Toy()
    for p in m.parameters():
        p.grad = torch.full_like(p, 100.0)
    AGC.for_model(m).clip_()
    assert torch.equal(m.embedding.weight.grad, torch.full((4, 2), 100.0))
    rows = unitwise_norm(m.lin.weight.detach()).clamp_min(1e-3) * 0.01
    torch.testing.assert_close(unitwise_norm(m.lin.weight.grad), rows)
    torch.testing.assert_close(m.lin.bias.grad, m.lin.bias.detach().abs().clamp_min(1e-3) * 0.01)

    for p in m.parameters():
        p.grad = torch.full_like(p, 100.0)
    AGC.for_model(m, exempt_embedding=False, exempt=['lin.bias']).clip_()
    assert m.embedding.weight.grad.abs().max() < 1.0
    assert torch.equal(m.lin.bias.grad, torch.full((2,), 100.0))


def test_errors():
    with pytest.raises(ValueError, match='clipping'):
        AGC([torch.nn.Parameter(torch.ones(1))], clipping=-1.0)
    with pytest.raises(ValueError, match='eps'):
        adaptive_clip_grad_([], eps=-1.0)
    with pytest.raises(ValueError, match='embedding'):
        AGC.for_model(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match='not in the model'):
        AGC.for_model(_Toy(), exempt=['nope'])
    e = torch.nn.Embedding(3, 2, sparse=True)
    e(torch.tensor([1])).sum().backward()
    with pytest.raises(ValueError, match='sparse'):
        adaptive_clip_grad_(e.parameters())
    assert 'clipping=0.01' in repr(AGC.for_model(_Toy()))


def test_make_adam_matches_plain_adam():
    # fused (where supported) or not, the update is torch's Adam with L2 decay
    from tagnn_pyg.optim import make_adam
    torch.manual_seed(0)
    a = torch.nn.Linear(5, 3)
    b = torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    opt_a = make_adam(a.parameters(), lr=1e-2, weight_decay=1e-5)
    opt_b = torch.optim.Adam(b.parameters(), lr=1e-2, weight_decay=1e-5, foreach=False)
    for _ in range(3):
        x = torch.randn(4, 5)
        for m, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            m(x).square().sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
