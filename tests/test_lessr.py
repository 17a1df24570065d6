"""LESSR: its two graphs against hand-worked edge lists, EOPAConv against a
GRUCell loop over each node's ordered in-neighbours, ShortcutGATConv against a
dense per-node attention, the whole model against a per-session
reimplementation of the released equations (plain loops, eval mode), batch
independence, the padding column, candidates, gradients, config round trip,
training through the Trainer and the CLI, and the preset."""
import json

import pytest
import torch
import torch.nn.functional as F
import torch_geometric
from torch_geometric.data import Batch

from tagnn_pyg.cli import main
from tagnn_pyg.data import SessionData
from tagnn_pyg.data.srgnn_format import write_srgnn_folder
from tagnn_pyg.data.synthetic import make_synthetic_sessions
from tagnn_pyg.models import LESSR, MODELS
from tagnn_pyg.models.lessr import LESSRAttentionReadout
from tagnn_pyg.nn import (EOPAConv, ShortcutGATConv, eop_multigraph, shortcut_graph,
                          static_eop_multigraph, static_shortcut_graph)

M = 30   # item ids 0..29 (0 = padding)
#: repeats, a repeated transition (5 -> 3 twice), length 1, differing lengths
SESSIONS = [[5, 3, 5, 7, 3], [5, 3, 5, 3, 7], [8], [20, 20, 21], [1, 2, 3, 4, 5, 6, 2, 7],
            [10, 29, 10]]


def batch_of(seqs):
    return Batch.from_data_list([SessionData.from_sequence(s, target=1 + sum(s) % (M - 1))
                                 for s in seqs])


def randomise_norms(module, seed=0):
    """Non-trivial batch-norm running statistics and affine parameters, PReLU
    slopes, so that eval mode tests them."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g, dtype=torch.float64) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g, dtype=torch.float64) * 0.1)
        if isinstance(m, torch.nn.PReLU):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g,
                                          dtype=torch.float64))


# ---------------------------------------------------------------- references
def bn_eval(bn, x, pool=None):
    """(x - mean) / sqrt(var + eps) * gamma + beta with the running statistics,
    or (training) with the biased statistics of ``pool`` (all rows of the batch)."""
    if bn is None:
        return x
    m = bn.module
    if pool is None:
        mean, var = m.running_mean, m.running_var
    else:
        mean, var = pool.mean(0), pool.var(0, unbiased=False)
    return (x - mean) / torch.sqrt(var + m.eps) * m.weight + m.bias


def prelu(act, x):
    if act is None:
        return x
    return torch.where(x >= 0, x, act.weight * x)


def gru_cell_of(gru):
    cell = torch.nn.GRUCell(gru.input_size, gru.hidden_size).to(gru.weight_ih_l0.dtype)
    with torch.no_grad():
        for name in ('weight_ih', 'weight_hh', 'bias_ih', 'bias_hh'):
            getattr(cell, name).copy_(getattr(gru, f'{name}_l0'))
    return cell


def ref_eopa(conv, x, in_lists, pool=None):
    """out_v = PReLU(W_self h_v + W_neigh GRU(h_u for u in in_lists[v])), h = BN(x)."""
    h = bn_eval(conv.batch_norm, x, pool)
    cell = gru_cell_of(conv.gru)
    outs = []
    for v in range(x.size(0)):
        a = torch.zeros(conv.in_channels, dtype=x.dtype)
        for u in in_lists[v]:
            a = cell(h[u].view(1, -1), a.view(1, -1))[0]
        outs.append(prelu(conv.act, conv.lin_self.weight @ h[v]
                          + conv.lin_neigh.weight @ a))
    return torch.stack(outs)


def ref_sgat(conv, x, in_sets, pool=None):
    """e_uv = p . sigmoid(W_q h_u + b_q + W_k h_v), softmax over u, sum W_v h_u."""
    h = bn_eval(conv.batch_norm, x, pool)
    outs = []
    for v in range(x.size(0)):
        us = sorted(in_sets[v])
        e = torch.stack([conv.lin_e.weight[0] @ torch.sigmoid(
            conv.lin_q.weight @ h[u] + conv.lin_q.bias + conv.lin_k.weight @ h[v])
            for u in us])
        a = torch.exp(e - e.max()) / torch.exp(e - e.max()).sum()
        outs.append(prelu(conv.act, sum(a[k] * (conv.lin_v.weight @ h[u])
                                       for k, u in enumerate(us))))
    return torch.stack(outs)


def session_graphs(seq):
    """Nodes (sorted items), node of each click, EOP in-lists in click order,
    shortcut in-sets (u -> v for clicks i <= j), by plain loops."""
    items = sorted(set(seq))
    nid = [items.index(i) for i in seq]
    n = len(items)
    eop = [[] for _ in range(n)]
    for k in range(len(seq) - 1):
        eop[nid[k + 1]].append(nid[k])
    short = [set() for _ in range(n)]
    for i in range(len(seq)):
        for j in range(i, len(seq)):
            short[nid[j]].add(nid[i])
    return items, nid, eop, short


def renormed(weight, max_norm):
    """nn.Embedding(max_norm): rows with norm > max_norm scaled by max_norm / (norm + 1e-7)."""
    if max_norm is None:
        return weight
    norm = weight.norm(dim=1, keepdim=True)
    return torch.where(norm > max_norm, weight * (max_norm / (norm + 1e-7)), weight)


def ref_lessr(model, table, seqs, batch_stats=False):
    """The released LESSR forward, session by session, with no dropout; batch
    norm with the running statistics, or (``batch_stats``) with those of the
    whole batch: over all sessions' nodes for the layers and the readout, over
    the sessions for the final one. Returns ``[B, M - 1]``."""
    graphs = [session_graphs(seq) for seq in seqs]
    feats = [table[torch.tensor(items)] for items, _, _, _ in graphs]
    for i, layer in enumerate(model.layers):
        pool = torch.cat(feats) if batch_stats else None
        feats = [torch.cat([ref_eopa(layer, f, eop, pool) if i % 2 == 0
                            else ref_sgat(layer, f, short, pool), f], dim=1)
                 for f, (_, _, eop, short) in zip(feats, graphs)]
    ro = model.readout
    pool = torch.cat(feats) if batch_stats else None
    sessions = []
    for feat, (items, nid, _, _) in zip(feats, graphs):
        last = nid[-1]
        h = bn_eval(ro.batch_norm, feat, pool)
        e = torch.stack([ro.lin_e.weight[0] @ torch.sigmoid(
            ro.lin_u.weight @ h[i] + ro.lin_v.weight @ h[last] + ro.lin_v.bias)
            for i in range(len(items))])
        a = torch.softmax(e, dim=0)
        s_g = prelu(ro.act, ro.lin_out.weight @ (a.view(-1, 1) * h).sum(0))
        sessions.append(torch.cat([feat[last], s_g]))
    s = torch.stack(sessions)
    s = bn_eval(model.norm, s, s if batch_stats else None)
    return (s @ model.lin_sr.weight.t()) @ table[1:].t()


def make(seed=0, **kw):
    torch.manual_seed(seed)
    return LESSR(M, **{'hidden_channels': 6, **kw})


def eval_model_and_table(**kw):
    """A double LESSR in eval mode with random batch-norm statistics and some item
    vectors inside the norm ball, some outside; and its table renormalised as
    released (what the reference reads)."""
    model = make(**kw).double()
    with torch.no_grad():
        model.embedding.weight.mul_(0.6)        # some rows inside the norm ball, some not
    randomise_norms(model)
    model.eval()
    return model, renormed(model.embedding.weight.detach().clone(), model.max_norm)


def set_static_length(model, length):
    """The exported copy's setting: ``static_length`` on LESSR and its EOPA layers."""
    for m in model.modules():
        if hasattr(m, 'static_length'):
            m.static_length = length


# ---------------------------------------------------------------- graphs
def test_graphs_hand_worked():
    # [5, 3, 5, 7, 3]: nodes [3, 5, 7] = 0, 1, 2; clicks -> nodes [1, 0, 1, 2, 0]
    # [5, 3, 5, 3, 7]: the same nodes; clicks [1, 0, 1, 0, 2] (5 -> 3 twice)
    batch = batch_of([[5, 3, 5, 7, 3], [5, 3, 5, 3, 7], [8]])
    assert batch.x.tolist() == [3, 5, 7, 3, 5, 7, 8]
    assert batch.seq.tolist() == [1, 0, 1, 2, 0, 4, 3, 4, 3, 5, 6]
    eop = eop_multigraph(batch.seq, batch.seq_batch)
    # transitions in click order: 5->3, 3->5, 5->7, 7->3 | 5->3, 3->5, 5->3, 3->7 | none
    assert eop.t().tolist() == [[1, 0], [0, 1], [1, 2], [2, 0],
                                [4, 3], [3, 4], [4, 3], [3, 5]]
    sg = shortcut_graph(batch.seq, batch.seq_batch, batch.num_nodes)
    # session 0: every ordered pair and self-loop but 7 -> 5 (5 never after 7)
    # session 1: every pair but 7 -> 3 and 7 -> 5 (7 is last)
    # session 2: the self-loop 8 -> 8
    expected = {(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0), (2, 2),
                (3, 3), (3, 4), (3, 5), (4, 3), (4, 4), (4, 5), (5, 5),
                (6, 6)}
    got = [tuple(e) for e in sg.t().tolist()]
    assert len(got) == len(set(got)) and set(got) == expected
    empty = eop_multigraph(torch.tensor([0]), torch.tensor([0]))
    assert empty.shape == (2, 0)
    none = torch.zeros(0, dtype=torch.long)   # no clicks at all: no edges
    assert shortcut_graph(none, none, 0).shape == (2, 0)


@pytest.mark.parametrize('seq', SESSIONS)
def test_graphs_match_loops(seq):
    """The vectorised graphs equal the released per-session loops (click pairs)."""
    items, nid, eop, short = session_graphs(seq)
    data = SessionData.from_sequence(seq)
    sb = torch.zeros(len(seq), dtype=torch.long)
    mg = eop_multigraph(data.seq, sb)
    for v in range(len(items)):
        assert mg[0][mg[1] == v].tolist() == eop[v]
    sg = shortcut_graph(data.seq, sb, len(items))
    assert sorted(map(tuple, sg.t().tolist())) == sorted(
        (u, v) for v in range(len(items)) for u in short[v])


def test_graph_errors():
    with pytest.raises(ValueError, match='one length'):
        eop_multigraph(torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(ValueError, match='clicked at least once'):
        shortcut_graph(torch.tensor([0, 0]), torch.tensor([0, 0]), 2)


# ---------------------------------------------------------------- layers
def test_eopa_conv_matches_gru_cell_loop():
    torch.manual_seed(0)
    conv = EOPAConv(5, 4, dropout=0.3).double()
    randomise_norms(conv)
    conv.eval()
    x = torch.randn(6, 5, dtype=torch.float64)
    # a multigraph: node 0 gets 3, 1, 3 (in this order), node 2 gets 4, 0; 5 none
    edge_index = torch.tensor([[3, 4, 1, 0, 3, 2, 2],
                               [0, 2, 0, 2, 0, 1, 3]])
    in_lists = [[3, 1, 3], [2], [4, 0], [2], [], []]
    out = conv(x, edge_index)
    torch.testing.assert_close(out, ref_eopa(conv, x, in_lists))
    # edge_order decides the order, not the columns
    perm = torch.tensor([6, 2, 0, 5, 1, 4, 3])
    torch.testing.assert_close(conv(x, edge_index[:, perm], edge_order=perm), out)
    reversed_lists = [[3, 1, 3][::-1], [2], [0, 4], [2], [], []]
    torch.testing.assert_close(conv(x, edge_index, edge_order=-torch.arange(7)),
                               ref_eopa(conv, x, reversed_lists))
    # no edges at all: W_self h only
    torch.testing.assert_close(conv(x, edge_index[:, :0]), ref_eopa(conv, x, [[]] * 6))
    assert 'EOPAConv(5, 4' in repr(conv)


def test_layer_defaults_are_the_released_ones():
    # LESSR's released layers: batch norm on the input and a PReLU on the output
    for conv in (EOPAConv(3, 2), ShortcutGATConv(3, 2), LESSRAttentionReadout(3, 4, 2)):
        assert isinstance(conv.batch_norm, torch_geometric.nn.BatchNorm)
        assert isinstance(conv.act, torch.nn.PReLU)
        assert conv.dropout == 0.0


def test_eopa_conv_options_and_errors():
    conv = EOPAConv(3, 2, batch_norm=False, act=False)
    assert conv.batch_norm is None and conv.act is None
    x = torch.randn(2, 3)
    ei = torch.tensor([[0], [1]])
    torch.testing.assert_close(conv(x, ei)[0], conv.lin_self(x)[0])
    with pytest.raises(ValueError, match='in_channels'):
        EOPAConv(0, 2)
    with pytest.raises(ValueError, match='dropout'):
        EOPAConv(2, 2, dropout=1.0)
    with pytest.raises(ValueError, match='aggr'):
        EOPAConv(2, 2, aggr='mean')
    with pytest.raises(ValueError, match=r'shape \[num_nodes, 3\]'):
        conv(torch.randn(2, 4), ei)
    with pytest.raises(ValueError, match='edge_order'):
        conv(x, ei, edge_order=torch.arange(3))
    with pytest.raises(ValueError, match='dense'):
        conv(x, torch.tensor([0, 1]))


def test_shortcut_gat_conv_matches_dense_attention():
    torch.manual_seed(1)
    conv = ShortcutGATConv(5, 4, hidden_channels=3, dropout=0.2).double()
    randomise_norms(conv)
    conv.eval()
    x = torch.randn(5, 5, dtype=torch.float64)
    in_sets = [{0, 2}, {0, 1, 3, 4}, {2}, {3, 0}, {4}]
    edges = [(u, v) for v, us in enumerate(in_sets) for u in us]
    edge_index = torch.tensor(edges).t()
    torch.testing.assert_close(conv(x, edge_index), ref_sgat(conv, x, in_sets))
    assert conv.lin_q.bias is not None and conv.lin_k.bias is None
    assert ShortcutGATConv(4, 2).hidden_channels == 2
    with pytest.raises(ValueError, match='hidden_channels'):
        ShortcutGATConv(4, 2, hidden_channels=0)
    with pytest.raises(ValueError, match="aggr"):
        ShortcutGATConv(4, 2, aggr='mean')


# ---------------------------------------------------------------- the model
@pytest.mark.parametrize('kw', [dict(), dict(num_layers=1), dict(num_layers=4),
                                dict(max_norm=None), dict(batch_norm=False)],
                         ids=['default', '1layer', '4layers', 'no-max-norm', 'no-bn'])
def test_matches_dense_reference(kw):
    model, table = eval_model_and_table(**kw)
    with torch.no_grad():
        scores = model(batch_of(SESSIONS))
        for b, seq in enumerate(SESSIONS):   # one session at a time
            torch.testing.assert_close(scores[b, 1:], ref_lessr(model, table, [seq])[0],
                                       atol=1e-5, rtol=1e-5)
    if model.max_norm is not None:   # the table was renormalised in place, as released
        torch.testing.assert_close(model.embedding.weight, table)
        assert bool((model.embedding.weight.norm(dim=1) <= 1.0 + 1e-6).all())


def test_training_batch_norm_uses_batch_statistics():
    """In training (dropout 0), every batch norm normalises with the statistics
    of the whole batch: the layers' and the readout's over all nodes of all
    sessions (each distinct item of a session once), the last over sessions."""
    model = make(dropout=0.0).double()
    randomise_norms(model)
    model.train()
    table = renormed(model.embedding.weight.detach().clone(), model.max_norm)
    with torch.no_grad():
        scores = model(batch_of(SESSIONS))
    torch.testing.assert_close(scores[:, 1:], ref_lessr(model, table, SESSIONS,
                                                        batch_stats=True),
                               atol=1e-5, rtol=1e-5)


def test_graphs_random_sessions_match_loops():
    """A batch of random sessions (many repeats): both builders against the loops."""
    g = torch.Generator().manual_seed(5)
    seqs = [torch.randint(1, 8, (int(torch.randint(1, 12, (1, ), generator=g)), ),
                          generator=g).tolist() for _ in range(40)]
    batch = batch_of(seqs)
    mg = eop_multigraph(batch.seq, batch.seq_batch)
    sg = shortcut_graph(batch.seq, batch.seq_batch, batch.num_nodes)
    exp_mg, exp_sg, offset = [], set(), 0
    for seq in seqs:
        items, nid, eop, short = session_graphs(seq)
        exp_mg += [(offset + nid[k], offset + nid[k + 1]) for k in range(len(seq) - 1)]
        exp_sg |= {(offset + u, offset + v) for v in range(len(items)) for u in short[v]}
        offset += len(items)
    assert [tuple(e) for e in mg.t().tolist()] == exp_mg        # click order kept
    got = [tuple(e) for e in sg.t().tolist()]
    assert len(got) == len(set(got)) and set(got) == exp_sg


def test_batch_independence_in_eval():
    model = make()
    randomise_norms(model)
    model.eval()
    with torch.no_grad():
        alone = [model(batch_of([s]))[0] for s in SESSIONS]
        together = model(batch_of(SESSIONS))
        reordered = model(batch_of(SESSIONS[::-1] + [[1] * 20]))
    for b in range(len(SESSIONS)):
        torch.testing.assert_close(together[b], alone[b], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(reordered[len(SESSIONS) - 1 - b], alone[b],
                                   atol=1e-5, rtol=1e-5)


def test_padding_column_and_candidates():
    model = make().eval()
    batch = batch_of(SESSIONS)
    with torch.no_grad():
        scores = model(batch)
        assert scores.shape == (len(SESSIONS), M)
        assert torch.isneginf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
        assert (model.recommend(batch, k=M - 1) != 0).all()
        cand = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 11], [12, 13, 29],
                             [5, 3, 0]])
        part = model(batch, candidates=cand)
    assert part.shape == cand.shape
    full = scores.gather(1, cand)
    torch.testing.assert_close(part[cand != 0], full[cand != 0], atol=1e-6, rtol=1e-6)
    assert torch.isneginf(part[cand == 0]).all()
    with pytest.raises(ValueError, match='shape'):
        model(batch, candidates=torch.tensor([[1, 2]]))


def test_does_not_read_the_srgnn_edges():
    model = make().eval()
    batch = batch_of(SESSIONS)
    with torch.no_grad():
        full = model(batch)
        for name in ('edge_index', 'edge_weight_in', 'edge_weight_out'):
            if name in batch:
                del batch[name]
        torch.testing.assert_close(model(batch), full)


def test_gradients_reach_every_parameter_and_config_round_trip():
    model = make().train()
    batch = batch_of(SESSIONS)
    loss = F.cross_entropy(model(batch)[:, 1:], batch.y - 1)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    cfg = model.config()
    assert json.loads(json.dumps(cfg)) == cfg
    rebuilt = type(model)(**cfg)
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(batch), model(batch))


def test_dropout_and_batch_norm_only_in_training():
    model = make()
    batch = batch_of(SESSIONS)
    with torch.no_grad():
        torch.manual_seed(1)
        a = model.train()(batch)
        torch.manual_seed(1)
        b = model(batch)
        torch.testing.assert_close(a, b)          # same dropout masks: deterministic
        assert not torch.equal(model(batch), b)   # fresh masks
        model.eval()
        torch.testing.assert_close(model(batch), model(batch))
        # a training batch of one session and one node works (running statistics)
        model.train()
        assert torch.isfinite(model(batch_of([[4]]))[:, 1:]).all()


def test_widths_init_and_errors():
    model = LESSR(M, hidden_channels=4, num_layers=3)
    assert [type(layer).__name__ for layer in model.layers] == \
        ['EOPAConv', 'ShortcutGATConv', 'EOPAConv']
    assert [layer.in_channels for layer in model.layers] == [4, 8, 12]
    assert model.readout.in_channels == 16 and model.lin_sr.in_features == 20
    assert model.embedding.max_norm == 1.0
    # PyTorch's initialisation, as released: batch norm (1, 0), PReLU 0.25
    assert torch.equal(model.norm.module.weight, torch.ones(20))
    assert torch.allclose(model.layers[0].act.weight, torch.full((4, ), 0.25))
    for bad, match in [(dict(num_layers=0), 'num_layers'), (dict(dropout=-0.1), 'dropout'),
                       (dict(max_norm=0.0), 'max_norm'), (dict(hidden_channels=0),
                                                         'hidden_channels')]:
        with pytest.raises(ValueError, match=match):
            LESSR(M, **bad)


def test_preset_builds():
    from tagnn_pyg.presets import get_preset
    p = get_preset('lessr')
    assert p.model == 'lessr'
    assert p.model_kwargs['hidden_channels'] == 32 and p.model_kwargs['num_layers'] == 3
    assert p.model_kwargs['dropout'] == 0.2
    assert (p.training['lr'], p.training['batch_size'], p.training['epochs'],
            p.training['patience']) == (1e-3, 512, 30, 2)
    # released utils/train.py: AdamW, decoupled decay 1e-4 (main.py --weight-decay default)
    assert (p.training['optimizer'], p.training['weight_decay'], p.training['lr_decay']) == \
        ('adamw', 1e-4, 1.0)
    assert 'AdamW' in p.description and 'replaced' not in p.description
    model = MODELS[p.model](50, **p.model_kwargs)
    assert isinstance(model, LESSR) and model.config()['hidden_channels'] == 32


def test_trainer_learns():
    from tagnn_pyg.baselines import POP
    from tagnn_pyg.data.sequences import expand_prefixes
    from tagnn_pyg.train import TrainConfig, Trainer, evaluate, make_splits
    train, test = make_synthetic_sessions(num_items=120, num_train_sessions=500,
                                          num_test_sessions=100, seed=3, num_interests=6,
                                          mean_length=5.0)
    num_items = max(max(map(max, train)), max(map(max, test))) + 1
    cfg = TrainConfig(epochs=3, batch_size=64, lr=1e-2, device='cpu', seed=0,
                      progress=False)
    sp = make_splits(cfg, train_sessions=train, test=expand_prefixes(test))
    torch.manual_seed(0)
    model = MODELS['lessr'](num_items=num_items, hidden_channels=16)
    result = Trainer(model, cfg).fit(sp.train, sp.valid, sp.test)
    losses = [h['train_loss'] for h in result['history']]
    assert losses[-1] < losses[0] - 0.5, losses
    pop_hr = evaluate(POP().fit(sp.train_sessions, num_items), sp.test)['HR@20']
    assert result['test']['HR@20'] > pop_hr + 10, (result['test']['HR@20'], pop_hr)


def test_cli_train_smoke(tmp_path, capsys):
    train, test = make_synthetic_sessions(num_items=60, num_train_sessions=120,
                                          num_test_sessions=30, seed=2, num_interests=4)
    data_dir = write_srgnn_folder(tmp_path / 'data', train, test)
    out = tmp_path / 'lessr'
    assert main(['train', '--data', str(data_dir), '--model', 'lessr', '--out', str(out),
                 '--epochs', '1', '--hidden', '8', '--batch-size', '50',
                 '--max-test', '60', '--threads', '1', '--no-progress',
                 '--optimizer', 'adamw', '--weight-decay', '1e-4',
                 '--device', 'cpu']) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    assert 0 <= metrics['test']['HR@20'] <= 100
    assert metrics['schedule'].startswith('AdamW lr 0.001, decoupled weight decay 0.0001')
    config = json.loads((out / 'config.json').read_text())
    assert config['model']['name'] == 'lessr'
    assert (config['train']['optimizer'], config['train']['weight_decay']) == ('adamw', 1e-4)
    assert main(['evaluate', '--checkpoint', str(out / 'best.pt'), '--data',
                 str(data_dir), '--max-test', '60', '--out', str(tmp_path / 'ev'),
                 '--no-progress']) == 0
    capsys.readouterr()
    assert main(['recommend', '--checkpoint', str(out / 'best.pt'), '--items',
                 '3,17,42', '-k', '5']) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res['recommendations']) == 5
    assert all(1 <= r['item'] < 60 for r in res['recommendations'])


# ---------------------------------------------------------------- static length (export)
def test_static_graphs_keep_the_edges_of_the_data_dependent_ones():
    """The fixed-size graphs of the exported copy: their kept columns are the
    released loops' edges (the EOP ones in click order), on random sessions."""
    g = torch.Generator().manual_seed(6)
    seqs = [torch.randint(1, 8, (int(torch.randint(1, 12, (1, ), generator=g)), ),
                          generator=g).tolist() for _ in range(40)]
    batch = batch_of(seqs)
    mg, mg_mask = static_eop_multigraph(batch.seq, batch.seq_batch)
    assert mg.shape == (2, batch.seq.numel()) and mg_mask.shape == (batch.seq.numel(), )
    assert torch.equal(mg[:, mg_mask], eop_multigraph(batch.seq, batch.seq_batch))
    # every click is the target of exactly one column (a node: one per click on it)
    assert torch.equal(torch.sort(mg[1]).values, torch.sort(batch.seq).values)
    for length in (11, 14):
        sg, sg_mask = static_shortcut_graph(batch.seq, batch.seq_batch, batch.num_nodes,
                                            len(seqs), length)
        assert sg.shape == (2, batch.num_nodes * length)
        got = [tuple(e) for e in sg[:, sg_mask].t().tolist()]
        want = shortcut_graph(batch.seq, batch.seq_batch, batch.num_nodes)
        assert len(got) == len(set(got)) and set(got) == set(map(tuple, want.t().tolist()))
    with pytest.raises(ValueError, match='distinct items, more than static_length=3'):
        static_shortcut_graph(batch.seq, batch.seq_batch, batch.num_nodes, len(seqs), 3)


def test_layers_with_edge_masks_equal_the_kept_edges():
    """A masked edge is an absent one: EOPAConv (packed and fixed-slot paths) and
    ShortcutGATConv against the GRUCell loop and the dense attention over the kept
    edges."""
    torch.manual_seed(2)
    x = torch.randn(6, 5, dtype=torch.float64)
    edge_index = torch.tensor([[3, 4, 1, 0, 3, 2, 2, 5, 1],
                               [0, 2, 0, 2, 0, 1, 3, 0, 4]])
    mask = torch.tensor([True, True, False, True, True, True, True, False, True])
    eopa = EOPAConv(5, 4).double()
    randomise_norms(eopa)
    eopa.eval()
    in_lists = [[3, 3], [2], [4, 0], [2], [1], []]        # the kept edges, in order
    want = ref_eopa(eopa, x, in_lists)
    torch.testing.assert_close(eopa(x, edge_index, edge_mask=mask), want)
    for length in (4, 6):       # node 0 has 4 columns (2 kept): its slots hold all of them
        eopa.static_length = length
        torch.testing.assert_close(eopa(x, edge_index, edge_mask=mask), want)
    eopa.static_length = 2
    torch.testing.assert_close(eopa(x, edge_index[:, mask]), want)
    eopa.static_length = 3
    with pytest.raises(ValueError, match='a node has 4 in-edges, more than static_length=3'):
        eopa(x, edge_index, edge_mask=mask)
    with pytest.raises(ValueError, match=r'edge_mask must be a bool tensor of shape \[9\]'):
        eopa(x, edge_index, edge_mask=mask[:3])
    with pytest.raises(ValueError, match='must be a bool tensor'):
        eopa(x, edge_index, edge_mask=mask.long())
    sgat = ShortcutGATConv(5, 4, hidden_channels=3).double()
    randomise_norms(sgat)
    sgat.eval()
    in_sets = [{0, 2}, {0, 1, 3, 4}, {2}, {3, 0}, {4}, {5}]
    kept = torch.tensor([(u, v) for v, us in enumerate(in_sets) for u in sorted(us)]).t()
    extra = torch.tensor([[1, 5, 2, 4], [0, 0, 3, 5]])     # masked: as if absent
    full = torch.cat([extra[:, :2], kept, extra[:, 2:]], dim=1)
    full_mask = torch.ones(full.size(1), dtype=torch.bool)
    full_mask[[0, 1, -2, -1]] = False
    got = sgat(x, full, edge_mask=full_mask)
    torch.testing.assert_close(got, sgat(x, kept))
    torch.testing.assert_close(got, ref_sgat(sgat, x, in_sets))
    # a masked edge from a NaN source changes nothing (zero message, not 0 * NaN)
    x_nan = x.clone()
    x_nan[1] = float('nan')                     # node 1 feeds only node 1, and 0 masked
    out = sgat(x_nan, full, edge_mask=full_mask)
    assert torch.isnan(out[1]).all() and torch.isfinite(out[[0, 2, 3, 4, 5]]).all()
    torch.testing.assert_close(out[[0, 2, 3, 4, 5]], got[[0, 2, 3, 4, 5]])


@pytest.mark.parametrize('kw', [dict(), dict(num_layers=4), dict(max_norm=None)],
                         ids=['default', '4layers', 'no-max-norm'])
def test_static_length_matches_dense_reference(kw):
    """The exported copy's path (static_length on the model and its EOPA layers):
    the dense reference's scores, without renormalising the table in place."""
    model, table = eval_model_and_table(**kw)
    before = model.embedding.weight.detach().clone()
    longest = max(len(s) for s in SESSIONS)
    for length in (longest, longest + 3):
        set_static_length(model, length)
        with torch.no_grad():
            scores = model(batch_of(SESSIONS))
            alone = [model(batch_of([seq]))[0] for seq in SESSIONS]   # one-session batches
        for b, seq in enumerate(SESSIONS):
            want = ref_lessr(model, table, [seq])[0]
            torch.testing.assert_close(scores[b, 1:], want, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(alone[b][1:], want, atol=1e-5, rtol=1e-5)
        assert torch.equal(model.embedding.weight, before)      # nothing changed in place
    # the graphs' sizes hold a session of up to L distinct items (its clicks may be
    # more: the Recommender of an export refuses those before scoring anyway)
    set_static_length(model, 6)
    with pytest.raises(ValueError, match='a session has 7 distinct items, more than '
                                         'static_length=6'):
        model(batch_of(SESSIONS))


def test_static_length_traced_too_long_session_is_nan_never_wrong(monkeypatch):
    """In a traced graph the length checks cannot raise: a session with more distinct
    items, or a node with more clicks, than the slots scores NaN; the others exactly."""
    model = make().eval()
    randomise_norms(model)
    sessions = [[5, 3, 5, 7, 3], [1, 2, 3, 4, 5, 6, 2, 7], [9] * 8, [20, 20, 21]]
    with torch.no_grad():
        want = model(batch_of(sessions))
        first = [sessions[2], sessions[0], sessions[1], sessions[3]]
        want_first = model(batch_of(first))
    set_static_length(model, 6)         # session 1: 7 distinct items; session 2: 8 clicks on 9
    monkeypatch.setattr(torch.compiler, 'is_compiling', lambda: True)
    with torch.no_grad():
        got = model(batch_of(sessions))
        # too-long sessions first: node 0 is NaN, and it pads every session's candidates
        got_first = model(batch_of(first))
    assert torch.isnan(got[[1, 2], 1:]).all()
    torch.testing.assert_close(got[[0, 3]], want[[0, 3]], atol=1e-5, rtol=1e-5)
    assert torch.isnan(got_first[[0, 2], 1:]).all()
    torch.testing.assert_close(got_first[[1, 3]], want_first[[1, 3]], atol=1e-5, rtol=1e-5)
