"""GC-SAN against a dense per-session computation of the paper's equations written
here (SR-GNN's gated GNN on a dense adjacency with the GRU gates spelled out,
self-attention blocks as plain matrices), batch and padding independence, the
padding column, candidates, gradients, config round trip, preset and CLI runs."""
import json
import math

import pytest
import torch
from torch_geometric.data import Batch

from tagnn_pyg.cli import main
from tagnn_pyg.data import SessionData
from tagnn_pyg.data.srgnn_format import write_srgnn_folder
from tagnn_pyg.data.synthetic import make_synthetic_sessions
from tagnn_pyg.models import GCSAN, MODELS
from tagnn_pyg.nn import SessionSelfAttention

M = 30   # item ids 0..29 (0 = padding)
# repeats, a self-loop, a length-1 session, differing lengths
SESSIONS = [[3, 7, 3, 12, 9], [5], [20, 20, 21], [1, 2, 3, 4, 5, 6, 2, 7], [10, 29, 10]]

CONFIGS = {
    'default': dict(hidden_channels=8),
    'k2-omega0.3': dict(hidden_channels=8, num_layers=2, weight=0.3),
    'causal-2steps': dict(hidden_channels=8, num_steps=2, causal=True, ff_channels=5),
    'heads2-k3': dict(hidden_channels=8, heads=2, num_layers=3, dropout=0.2),
    'omega1': dict(hidden_channels=8, weight=1.0),
    'omega0': dict(hidden_channels=8, weight=0.0),
}


def make(cid, seed=0, **kw):
    torch.manual_seed(seed)
    return GCSAN(M, **{**CONFIGS[cid], **kw})


def batch_of(seqs):
    return Batch.from_data_list([SessionData.from_sequence(s, target=1 + sum(s) % (M - 1))
                                 for s in seqs])


# --------------------------------------------------------------- reference
def ref_gnn(model, seq):
    """SR-GNN's step on the session's dense binary adjacency (released code:
    in-weights A[j, i] / indeg(i), out-weights A[i, j] / outdeg(i), the linear
    maps' biases inside the mean, b_in / b_out added to every node), GRU gates
    written out. Returns the state of every click, in click order."""
    nodes = sorted(set(seq))
    n = len(nodes)
    pos = {item: i for i, item in enumerate(nodes)}
    A = torch.zeros(n, n, dtype=torch.float64)
    for u, v in zip(seq[:-1], seq[1:]):
        A[pos[u], pos[v]] = 1.0
    A_in = A / A.sum(0, keepdim=True).clamp(min=1)          # column i: / indeg(i)
    A_out = A / A.sum(1, keepdim=True).clamp(min=1)         # row i: / outdeg(i)
    g = model.gnn
    h = model.embedding.weight[torch.tensor(nodes)]
    W_ih, W_hh = g.gru.weight_ih, g.gru.weight_hh
    b_ih, b_hh = g.gru.bias_ih, g.gru.bias_hh
    d = h.size(1)
    for _ in range(model.num_steps):
        m_in = A_in.t() @ (h @ g.lin_in.weight.t() + g.lin_in.bias) + g.bias_in
        m_out = A_out @ (h @ g.lin_out.weight.t() + g.lin_out.bias) + g.bias_out
        a = torch.cat([m_in, m_out], dim=1)
        gi, gh = a @ W_ih.t() + b_ih, h @ W_hh.t() + b_hh
        r = torch.sigmoid(gi[:, :d] + gh[:, :d])
        z = torch.sigmoid(gi[:, d:2 * d] + gh[:, d:2 * d])
        cand = torch.tanh(gi[:, 2 * d:] + r * gh[:, 2 * d:])
        h = (1 - z) * cand + z * h
    return h[torch.tensor([pos[i] for i in seq])]


def ref_blocks(sa, H):
    """E^(j) = ReLU(F W1 + b1) W2 + b2 + F, F = softmax(Q K^T / sqrt(d_h)) V per head."""
    n, d = H.shape
    dh = d // sa.heads
    X = H
    for j in range(sa.num_layers):
        Q = X @ sa.lin_q[j].weight.t()
        K = X @ sa.lin_k[j].weight.t()
        V = X @ sa.lin_v[j].weight.t()
        heads = []
        for hd in range(sa.heads):
            cols = slice(hd * dh, (hd + 1) * dh)
            logits = Q[:, cols] @ K[:, cols].t() / math.sqrt(dh)
            if sa.causal:
                logits = logits + torch.full((n, n), float('-inf'),
                                             dtype=H.dtype).triu(1)
            heads.append(torch.softmax(logits, dim=1) @ V[:, cols])
        F = torch.cat(heads, dim=1)
        if sa.heads > 1:
            F = F @ sa.lin_o[j].weight.t()
        X = torch.relu(F @ sa.lin1[j].weight.t() + sa.lin1[j].bias) \
            @ sa.lin2[j].weight.t() + sa.lin2[j].bias + F
    return X


def ref_scores(model, seq):
    H = ref_gnn(model, seq)
    E = ref_blocks(model.self_attention, H)
    s_f = model.weight * E[-1] + (1 - model.weight) * H[-1]
    emb = model.embedding.weight
    return torch.stack([emb[t] @ s_f for t in range(1, M)])


# --------------------------------------------------------------- tests
@pytest.mark.parametrize('cid', list(CONFIGS))
def test_matches_dense_reference(cid):
    model = make(cid).double().eval()
    with torch.no_grad():
        scores = model(batch_of(SESSIONS))
        for b, seq in enumerate(SESSIONS):
            torch.testing.assert_close(scores[b, 1:], ref_scores(model, seq),
                                       atol=1e-5, rtol=1e-5)


def test_self_attention_alone_matches_reference_with_ptr_and_interleaving():
    torch.manual_seed(1)
    sa = SessionSelfAttention(6, num_layers=2, heads=3).double().eval()
    x = torch.randn(7, 6, dtype=torch.float64)
    index = torch.tensor([0, 1, 0, 2, 1, 0, 2])          # interleaved sessions
    out = sa(x, index, dim_size=4)                        # session 3 is empty
    for b in range(3):
        sel = (index == b).nonzero().view(-1)
        torch.testing.assert_close(out[sel], ref_blocks(sa, x[sel]))
    ptr_out = sa(x[torch.sort(index, stable=True)[1]], ptr=torch.tensor([0, 3, 5, 7]))
    torch.testing.assert_close(ptr_out, out[torch.sort(index, stable=True)[1]])
    assert 'heads=3' in repr(sa)


@pytest.mark.parametrize('cid', ['default', 'causal-2steps', 'heads2-k3'])
def test_batch_and_padding_independence(cid):
    model = make(cid).eval()
    with torch.no_grad():
        alone = [model(batch_of([s]))[0] for s in SESSIONS]
        together = model(batch_of(SESSIONS))
        reordered = model(batch_of(SESSIONS[::-1] + [[1, 2] * 10]))   # longer padding
    for b in range(len(SESSIONS)):
        torch.testing.assert_close(together[b], alone[b], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(reordered[len(SESSIONS) - 1 - b], alone[b],
                                   atol=1e-5, rtol=1e-5)


def test_padding_column_and_candidates():
    model = make('k2-omega0.3').eval()
    batch = batch_of(SESSIONS)
    with torch.no_grad():
        scores = model(batch)
        assert scores.shape == (len(SESSIONS), M)
        assert torch.isneginf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
        assert (model.recommend(batch, k=M - 1) != 0).all()
        cand = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 11], [12, 13, 29]])
        part = model(batch, candidates=cand)
    assert part.shape == cand.shape
    full = scores.gather(1, cand)
    torch.testing.assert_close(part[cand != 0], full[cand != 0], atol=1e-6, rtol=1e-6)
    assert torch.isneginf(part[cand == 0]).all()
    with pytest.raises(ValueError, match='shape'):
        model(batch, candidates=torch.tensor([[1, 2]]))


@pytest.mark.parametrize('cid', ['default', 'causal-2steps', 'heads2-k3'])
def test_gradients_reach_every_parameter_and_config_round_trip(cid):
    model = make(cid).train()
    batch = batch_of(SESSIONS)
    loss = torch.nn.functional.cross_entropy(model(batch)[:, 1:], batch.y - 1)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() \
            and p.grad.abs().sum() > 0, name
    cfg = model.config()
    assert json.loads(json.dumps(cfg)) == cfg
    rebuilt = type(model)(**cfg)
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(batch), model(batch))


def test_dropout_only_in_training():
    model = make('heads2-k3')
    batch = batch_of(SESSIONS)
    with torch.no_grad():
        torch.manual_seed(1)
        assert not torch.equal(model.train()(batch), model(batch))
        model.eval()
        torch.testing.assert_close(model(batch), model(batch))


def test_documented_defaults_and_initialisation():
    # the paper's block: one, single-head, unmasked, feed-forward width d, no dropout
    sa = SessionSelfAttention(16)
    assert (sa.num_layers, sa.heads, sa.causal, sa.dropout) == (1, 1, False, 0.0)
    assert sa.lin1[0].out_features == 16
    model = GCSAN(num_items=9, hidden_channels=16)
    assert model.config()['weight'] == 0.6 and model.config()['num_layers'] == 1
    assert model.config()['causal'] is False
    # every parameter uniform in [-1/sqrt(d), 1/sqrt(d)] (d, not each layer's fan-in:
    # with a feed-forward width of 64, PyTorch's default would bound lin2 by 1/8),
    # drawn in parameter order
    torch.manual_seed(5)
    sa = SessionSelfAttention(16, ff_channels=64)
    torch.manual_seed(5)
    want = SessionSelfAttention(16, ff_channels=64)
    torch.manual_seed(9)
    sa.reset_parameters()
    torch.manual_seed(9)
    for p in want.parameters():
        torch.nn.init.uniform_(p, -1.0 / math.sqrt(16), 1.0 / math.sqrt(16))
    for got, ref in zip(sa.parameters(), want.parameters()):
        assert torch.equal(got, ref)
    assert sa.lin2[0].weight.abs().max() > 0.9 / math.sqrt(16)


def test_omega_extremes():
    """omega = 0: the last click's GNN state alone (the attention does not matter);
    omega = 1: the self-attention output alone (the last GNN state enters only
    through it)."""
    batch = batch_of(SESSIONS)
    m0 = make('omega0').eval()
    with torch.no_grad():
        before = m0(batch)
        for p in m0.self_attention.parameters():
            p.add_(1.0)
        torch.testing.assert_close(m0(batch), before)
    m1 = make('omega1').eval()
    with torch.no_grad():
        pos = m1.positions(batch)
        e = m1.self_attention(pos.x, pos.index, dim_size=pos.num_sessions)
        last = torch.tensor([len(s) for s in SESSIONS]).cumsum(0) - 1
        torch.testing.assert_close(m1.session_embedding(pos), e[last])
    assert MODELS['gcsan'] is GCSAN


@pytest.mark.parametrize('kw, match', [
    (dict(weight=1.5), 'weight'), (dict(weight=-0.1), 'weight'),
    (dict(num_layers=0), 'num_layers'), (dict(heads=3), 'heads'),
    (dict(dropout=1.0), 'dropout'), (dict(num_steps=0), 'num_steps'),
    (dict(ff_channels=0), 'ff_channels'), (dict(hidden_channels=0), 'hidden_channels')])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        GCSAN(M, **{'hidden_channels': 8, **kw})


def test_preset_builds():
    from tagnn_pyg.presets import get_preset, preset_names
    assert 'gcsan' in preset_names()
    p = get_preset('gcsan')
    assert p.model == 'gcsan'
    kw = p.model_kwargs
    assert (kw['hidden_channels'], kw['num_layers'], kw['weight'], kw['heads'],
            kw['num_steps']) == (100, 1, 0.6, 1, 1)
    t = p.training
    assert (t['lr'], t['weight_decay'], t['batch_size'], t['lr_decay'],
            t['lr_decay_step']) == (1e-3, 1e-5, 100, 0.1, 3)
    model = MODELS[p.model](M, **kw)
    assert model.config() == {'num_items': M, **kw}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    train, test = make_synthetic_sessions(num_items=60, num_train_sessions=120,
                                          num_test_sessions=30, seed=2, num_interests=4)
    return write_srgnn_folder(tmp_path_factory.mktemp('tiny') / 'data', train, test)


def test_cli_train_smoke(data_dir, tmp_path, capsys):
    out = tmp_path / 'gcsan'
    assert main(['train', '--data', str(data_dir), '--model', 'gcsan', '--out', str(out),
                 '--epochs', '1', '--hidden', '8', '--batch-size', '50',
                 '--max-test', '60', '--threads', '1', '--no-progress',
                 '--device', 'cpu']) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    assert 0 <= metrics['test']['HR@20'] <= 100
    assert json.loads((out / 'config.json').read_text())['model']['name'] == 'gcsan'
    assert main(['evaluate', '--checkpoint', str(out / 'best.pt'), '--data',
                 str(data_dir), '--max-test', '60', '--out', str(tmp_path / 'ev'),
                 '--no-progress']) == 0
    capsys.readouterr()
    assert main(['recommend', '--checkpoint', str(out / 'best.pt'), '--items',
                 '3,17,42', '-k', '5']) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res['recommendations']) == 5
    assert all(1 <= r['item'] < 60 for r in res['recommendations'])


def test_cli_preset_on_builtin_synthetic(tmp_path):
    out = tmp_path / 'preset'
    assert main(['train', '--data', 'synthetic', '--root', str(tmp_path / 'data'),
                 '--preset', 'gcsan', '--hidden', '8', '--epochs', '1',
                 '--max-train', '300', '--max-test', '100', '--threads', '1',
                 '--no-progress', '--device', 'cpu', '--out', str(out)]) == 0
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['model']['name'] == 'gcsan'


def test_trainer_learns():
    """The existing Trainer trains it: on synthetic sessions with a few interests,
    one epoch lowers the training-set loss well below its initial value."""
    from tagnn_pyg.data.batching import build_session_batch
    from tagnn_pyg.data.sequences import expand_prefixes
    from tagnn_pyg.train import TrainConfig, Trainer, make_splits
    train, test = make_synthetic_sessions(num_items=120, num_train_sessions=400,
                                          num_test_sessions=80, seed=3, num_interests=6,
                                          mean_length=5.0)
    num_items = max(max(map(max, train)), max(map(max, test))) + 1
    cfg = TrainConfig(epochs=1, batch_size=64, lr=1e-2, device='cpu', seed=0,
                      progress=False)
    sp = make_splits(cfg, train_sessions=train, test=expand_prefixes(test))
    torch.manual_seed(0)
    model = GCSAN(num_items=num_items, hidden_channels=16)

    def train_loss():
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            seqs = sp.train
            for lo in range(0, len(seqs), 256):
                part = seqs[lo:lo + 256]
                batch = build_session_batch(part.items, part.ptr, part.targets)
                total += torch.nn.functional.cross_entropy(
                    model(batch)[:, 1:], batch.y - 1, reduction='sum').item()
                count += batch.y.numel()
        return total / count

    before = train_loss()
    result = Trainer(model, cfg).fit(sp.train, sp.valid, sp.test)
    after = train_loss()
    assert after < before - 0.5, (before, after)
    assert 0 <= result['test']['HR@20'] <= 100


@pytest.mark.parametrize('cid', ['default', 'causal-2steps', 'heads2-k3'])
def test_static_length_matches_dense_reference(cid):
    """The export path (every session padded to exactly L slots) gives the paper's
    equations too, for L = the longest session and more; a longer session is refused."""
    model = make(cid).double().eval()
    for length in (8, 11):
        model.self_attention.static_length = length
        with torch.no_grad():
            scores = model(batch_of(SESSIONS))
        for b, seq in enumerate(SESSIONS):
            torch.testing.assert_close(scores[b, 1:], ref_scores(model, seq),
                                       atol=1e-5, rtol=1e-5)
    model.self_attention.static_length = 7
    with pytest.raises(ValueError, match='a session has 8 clicks, more than static_length=7'):
        model(batch_of(SESSIONS))


@pytest.mark.parametrize('causal', [False, True])
def test_self_attention_static_length_with_interleaving_and_empty_sessions(causal):
    torch.manual_seed(1)
    sa = SessionSelfAttention(6, num_layers=2, heads=3, causal=causal).double().eval()
    x = torch.randn(7, 6, dtype=torch.float64)
    index = torch.tensor([0, 1, 0, 2, 1, 0, 2])          # interleaved; session 3 empty
    sa.static_length = 5                                  # padded slots after every session
    out = sa(x, index, dim_size=4)
    for b in range(3):
        sel = (index == b).nonzero().view(-1)
        torch.testing.assert_close(out[sel], ref_blocks(sa, x[sel]))
    # an empty session (all its slots padding) leaves the gradients finite, both paths
    sa.train()
    for length in (None, 5):
        sa.static_length = length
        sa.zero_grad()
        sa(x.clone().requires_grad_(), index, dim_size=4).sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in sa.parameters()), length


def test_causal_mask_changes_scores_only_from_two_blocks():
    """Only E_n is read and the last click attends to every click with or without the
    causal mask, so with k = 1 the scores are the same; with k = 2 the earlier clicks'
    masked outputs feed E_n and they differ."""
    with torch.no_grad():
        for k, same in ((1, True), (2, False)):
            a = make('default', num_layers=k).double().eval()(batch_of(SESSIONS))
            b = make('default', num_layers=k, causal=True).double().eval()(batch_of(SESSIONS))
            assert torch.allclose(a, b, atol=1e-12) is same, k
