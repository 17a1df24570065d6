"""AGC on hand-computed cases (lambda = 0.01, eps = 1e-3 unless said otherwise)."""
import io

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


# ----------------------------------------------------------------------- AdamW


def test_no_decay_groups_on_lessr_exempts_exactly_biases_norms_and_prelu():
    """On a real LESSR: exactly the biases (Linear, GRU), the batch norms' weights and
    biases and the PReLU slopes have decay 0, all else 1e-4, each parameter once. The
    expected sets are written out by parameter name (the released rule is a name match,
    ``'bias'``/``'batch_norm'``/``'activation'`` in the name; our modules are named
    ``batch_norm``/``norm`` and ``act``)."""
    from tagnn_pyg.models import LESSR
    from tagnn_pyg.optim import no_decay_groups
    model = LESSR(30, hidden_channels=4, num_layers=3, batch_norm=True)
    groups = no_decay_groups(model, 1e-4)
    by_id = {id(p): n for n, p in model.named_parameters()}
    seen = [by_id[id(p)] for g in groups for p in g['params']]
    assert sorted(seen) == sorted(by_id.values()) and len(seen) == len(set(seen))
    decay_of = {by_id[id(p)]: g['weight_decay'] for g in groups for p in g['params']}

    exempt = set()
    for i in range(3):
        exempt |= {f'layers.{i}.batch_norm.module.weight',
                   f'layers.{i}.batch_norm.module.bias', f'layers.{i}.act.weight'}
    for i in (0, 2):                                   # EOPA: the GRU's two biases
        exempt |= {f'layers.{i}.gru.bias_ih_l0', f'layers.{i}.gru.bias_hh_l0'}
    exempt |= {'layers.1.lin_q.bias',                  # SGAT fc_q has a bias
               'readout.batch_norm.module.weight', 'readout.batch_norm.module.bias',
               'readout.lin_v.bias', 'readout.act.weight',
               'norm.module.weight', 'norm.module.bias'}
    assert exempt <= set(decay_of)
    assert {n for n, wd in decay_of.items() if wd == 0.0} == exempt
    assert all(wd == 1e-4 for n, wd in decay_of.items() if n not in exempt)
    # the decayed ones include the item table and the weight matrices
    assert {'embedding.weight', 'lin_sr.weight', 'layers.0.gru.weight_ih_l0',
            'readout.lin_u.weight'} <= {n for n, wd in decay_of.items() if wd == 1e-4}
    # the released name rule picks the same set once our names are mapped to its own
    def released_name(name):       # our attribute names -> the released lessr.py's
        name = name.replace('.module.', '.').replace('.act.', '.activation.')
        return 'batch_norm.' + name[len('norm.'):] if name.startswith('norm.') else name

    released = {n for n in decay_of
                if any(k in released_name(n) for k in ('bias', 'batch_norm', 'activation'))}
    assert released == exempt


def test_no_decay_groups_errors():
    from tagnn_pyg.optim import no_decay_groups
    with pytest.raises(TypeError, match='expects a torch.nn.Module.*got list'):
        no_decay_groups([torch.nn.Parameter(torch.zeros(2))], 1e-4)
    with pytest.raises(ValueError, match=r'weight_decay must be a number >= 0, got -1'):
        no_decay_groups(torch.nn.Linear(2, 2), -1.0)


def test_make_adamw_step_is_the_decoupled_update():
    """Two steps of make_adamw against the update written out by hand:
    p <- p - lr*wd*p - lr * m_hat / (sqrt(v_hat) + eps), wd = 0 for the bias."""
    from tagnn_pyg.optim import make_adamw
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2).double()
    lr, wd, b1, b2, eps = 1e-2, 0.1, 0.9, 0.999, 1e-8
    opt = make_adamw(lin, lr=lr, weight_decay=wd)
    assert [g['weight_decay'] for g in opt.param_groups] == [wd, 0.0]
    params = {'weight': (lin.weight, wd), 'bias': (lin.bias, 0.0)}
    ref = {k: p.detach().clone() for k, (p, _) in params.items()}
    m = {k: torch.zeros_like(v) for k, v in ref.items()}
    v = {k: torch.zeros_like(x) for k, x in ref.items()}
    for t in (1, 2):
        x = torch.randn(5, 3, dtype=torch.float64)
        opt.zero_grad()
        lin(x).sin().sum().backward()
        grads = {k: p.grad.detach().clone() for k, (p, _) in params.items()}
        opt.step()
        for k, (_, decay) in params.items():
            g = grads[k]
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            m_hat = m[k] / (1 - b1 ** t)
            v_hat = v[k] / (1 - b2 ** t)
            ref[k] = ref[k] - lr * decay * ref[k] - lr * m_hat / (v_hat.sqrt() + eps)
        for k, (p, _) in params.items():
            torch.testing.assert_close(p.detach(), ref[k], rtol=0, atol=1e-12)


def test_make_adamw_state_dict_round_trip():
    """Both groups survive state_dict / load_state_dict: a fresh optimizer loaded from
    the state continues exactly like the original."""
    from tagnn_pyg.optim import make_adamw
    torch.manual_seed(1)
    a = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.PReLU(3), torch.nn.Linear(3, 1))
    b = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.PReLU(3), torch.nn.Linear(3, 1))
    opt_a = make_adamw(a, lr=1e-2, weight_decay=1e-2)
    x = torch.randn(6, 4)

    def step(m, opt):
        opt.zero_grad()
        m(x).square().sum().backward()
        opt.step()

    step(a, opt_a)
    b.load_state_dict(a.state_dict())
    opt_b = make_adamw(b, lr=1e-2, weight_decay=1e-2)
    # through bytes, as a checkpoint goes (load_state_dict alone would share the moments)
    buf = io.BytesIO()
    torch.save(opt_a.state_dict(), buf)
    buf.seek(0)
    opt_b.load_state_dict(torch.load(buf, weights_only=True))
    assert [g['weight_decay'] for g in opt_b.param_groups] == [1e-2, 0.0]
    assert [len(g['params']) for g in opt_b.param_groups] == [2, 3]  # weights; biases + PReLU
    for _ in range(2):
        step(a, opt_a)
        step(b, opt_b)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_pyg_norms_are_exempt():
    """PyG's own norms (not torch subclasses) are exempt like torch's: every one of
    their parameters (weight, bias, GraphNorm's mean_scale) has decay 0."""
    from torch_geometric.nn.norm import GraphNorm, LayerNorm

    from tagnn_pyg.optim import no_decay_groups
    model = torch.nn.ModuleList([torch.nn.Linear(4, 4, bias=False), LayerNorm(4),
                                 GraphNorm(4)])
    groups = no_decay_groups(model, 1e-4)
    exempt = {id(p) for g in groups if g['weight_decay'] == 0.0 for p in g['params']}
    expected = {id(p) for m in model[1:] for p in m.parameters()}
    assert exempt == expected and len(expected) == 5
    assert [g['weight_decay'] for g in groups] == [1e-4, 0.0]
