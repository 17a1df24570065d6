"""SRGNN, TAGNN, TAGNNPlusPlus: dense ports of the released code, invariances,
the scoring interface, gradients and ablation switches."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch

from tagnn_pyg.data import SessionData
from tagnn_pyg.models import MODELS, SRGNN, TAGNN, TAGNNPlusPlus
from tagnn_pyg.optim import AGC
from tagnn_pyg.testing.released import dense_adjacency, released_gnn_cell

M, D = 50, 16   # item ids 0..49 (0 = padding), hidden size


SESSIONS = [[3, 7, 3, 12, 9], [5], [20, 20, 21], [1, 2, 3, 4, 5, 6, 2, 7], [10, 44, 10]]

CONFIGS = [
    ('srgnn', dict()),
    ('srgnn', dict(hybrid=False)),
    ('tagnn', dict()),
    ('tagnn', dict(hybrid=False)),
    ('tagnn', dict(score='paper')),
    ('tagnn', dict(session='local')),
    ('tagnn', dict(session='mean')),
    ('tagnn', dict(session='attention')),
    ('tagnn', dict(session='local+attention')),
    ('tagnnpp', dict(heads=2)),
    ('tagnnpp', dict(heads=4, layer='released')),
    ('tagnnpp', dict(heads=2, use_gnn=False)),
    ('tagnnpp', dict(heads=2, use_transformer=False)),
    ('tagnnpp', dict(heads=2, positional=False)),
    ('tagnnpp', dict(heads=2, score='paper', num_steps=2)),
]
IDS = [f"{k}-{'-'.join(f'{a}={b}' for a, b in kw.items()) or 'default'}"
       for k, kw in CONFIGS]


def make(key, seed=0, **kw):
    torch.manual_seed(seed)
    return MODELS[key](M, hidden_channels=D, **kw)


def batch_of(seqs, targets=None):
    targets = targets or [1 + (sum(s) % (M - 1)) for s in seqs]
    return Batch.from_data_list([SessionData.from_sequence(s, target=t)
                                 for s, t in zip(seqs, targets)])


# ----------------------------------------------------------------------------
# Dense ports of the released forward (CRIPAC-DIG/SR-GNN pytorch_code/model.py,
# CRIPAC-DIG/TAGNN model.py, The-Learning-Machines/SBR model.py), for one
# session padded to its own length (so the released padding plays no part).
# ----------------------------------------------------------------------------
def released_inputs(u_input):
    """utils.Data.get_slice for one unpadded session: items, A [n, 2n], alias."""
    u_input = np.asarray(u_input)
    node, A = dense_adjacency(u_input)
    alias = [np.where(node == i)[0][0] for i in u_input]
    return (torch.tensor(node)[None], torch.tensor(A)[None], torch.tensor(alias)[None])


def released_seq_hidden(model, u_input):
    items, A, alias = released_inputs(u_input)
    hidden = model.embedding.weight[items]
    for _ in range(model.num_steps):
        hidden = released_gnn_cell(A.to(hidden.dtype), hidden, model.gnn)
    return hidden[0][alias[0]][None]   # [1, L, d]


def released_compute_scores(model, hidden, softmax_alpha, target_attention, hybrid):
    """SessionGraph.compute_scores with mask = ones (no padding)."""
    ro = model.global_readout
    ht = hidden[:, -1]
    q1 = F.linear(ht, ro.lin_last.weight, ro.lin_last.bias).view(1, 1, -1)
    q2 = F.linear(hidden, ro.lin_pos.weight, ro.lin_pos.bias)
    alpha = F.linear(torch.sigmoid(q1 + q2), ro.lin_q.weight)
    if softmax_alpha:
        alpha = F.softmax(alpha, 1)
    a = torch.sum(alpha * hidden, 1)
    if hybrid:
        a = F.linear(torch.cat([a, ht], 1), model.lin_transform.weight,
                     model.lin_transform.bias)
    b = model.embedding.weight[1:]
    if not target_attention:
        return torch.matmul(a, b.transpose(1, 0))
    qt = F.linear(hidden, model.target_attention.lin.weight)
    beta = F.softmax(b @ qt.transpose(1, 2), -1)
    target = beta @ hidden
    a = a.view(1, 1, -1) + target
    return torch.sum(a * b, -1)


def ours(model, seq):
    model.eval()
    with torch.no_grad():
        return model(batch_of([seq]))


@pytest.mark.parametrize('seq', [[3, 7, 3, 12, 9], [5, 5, 5], [8], [1, 2, 1, 3, 2, 4]])
@pytest.mark.parametrize('hybrid', [True, False])
def test_srgnn_equals_released_dense_port(seq, hybrid):
    model = make('srgnn', hybrid=hybrid, num_steps=2 if hybrid else 1).double()
    ref = released_compute_scores(model, released_seq_hidden(model, seq),
                                  softmax_alpha=False, target_attention=False,
                                  hybrid=hybrid)
    out = ours(model, seq)
    assert out.shape == (1, M) and out[0, 0] == float('-inf')
    torch.testing.assert_close(out[:, 1:], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('seq', [[3, 7, 3, 12, 9], [5, 5, 5], [8], [1, 2, 1, 3, 2, 4]])
@pytest.mark.parametrize('hybrid', [True, False])
def test_tagnn_equals_released_dense_port(seq, hybrid):
    model = make('tagnn', hybrid=hybrid).double()
    ref = released_compute_scores(model, released_seq_hidden(model, seq),
                                  softmax_alpha=True, target_attention=True,
                                  hybrid=hybrid)
    torch.testing.assert_close(ours(model, seq)[:, 1:], ref, atol=1e-5, rtol=1e-5)
    # and in float32, as trained
    model = make('tagnn', hybrid=hybrid)
    ref32 = released_compute_scores(model, released_seq_hidden(model, seq),
                                    softmax_alpha=True, target_attention=True,
                                    hybrid=hybrid)
    torch.testing.assert_close(ours(model, seq)[:, 1:], ref32, atol=1e-5, rtol=1e-4)


def test_tagnn_paper_score_is_eq10():
    """z_t = v_t . W3 [s_target^t; s_local; s_global], built literally."""
    seq = [3, 7, 3, 12, 9]
    model = make('tagnn', score='paper').double()
    hidden = released_seq_hidden(model, seq)[0]            # [L, d]
    ro = model.global_readout
    ht = hidden[-1]
    alpha = F.linear(torch.sigmoid(F.linear(ht, ro.lin_last.weight, ro.lin_last.bias)
                                   + F.linear(hidden, ro.lin_pos.weight, ro.lin_pos.bias)),
                     ro.lin_q.weight).softmax(0)
    s_global = (alpha * hidden).sum(0)
    v = model.embedding.weight[1:]                          # [m, d]
    W = model.target_attention.lin.weight
    beta = torch.softmax(v @ W @ hidden.t(), dim=-1)        # [m, L]: v_t^T W v_i
    s_target = beta @ hidden                                # [m, d]
    m = v.size(0)
    cat = torch.cat([s_target, ht.expand(m, -1), s_global.expand(m, -1)], dim=-1)
    s_t = cat @ model.lin_score.weight.t()                  # [m, d]
    ref = (s_t * v).sum(-1)
    torch.testing.assert_close(ours(model, seq)[0, 1:], ref, atol=1e-10, rtol=1e-8)


def test_ablations_are_their_equations():
    seq = [3, 7, 3, 12, 9]
    for session in ('local', 'mean', 'attention', 'local+attention'):
        model = make('tagnn', session=session).double()
        hidden = released_seq_hidden(model, seq)[0]
        v = model.embedding.weight[1:]
        if session == 'local':
            s = hidden[-1]
        elif session == 'mean':
            s = hidden.mean(0)
        else:
            s = released_compute_scores(model, hidden[None], True, False,
                                        hybrid=session == 'local+attention')
            torch.testing.assert_close(ours(model, seq)[:, 1:], s, atol=1e-10, rtol=1e-8)
            continue
        torch.testing.assert_close(ours(model, seq)[0, 1:], v @ s, atol=1e-10, rtol=1e-8)


def _released_mha(x, mha_params, heads):
    """nn.MultiheadAttention (batch of one, eval) with a causal mask, written out."""
    w_in, b_in, w_out, b_out = mha_params
    L, d = x.shape
    q, k, v = F.linear(x, w_in, b_in).chunk(3, dim=-1)
    dh = d // heads
    q = q.view(L, heads, dh).transpose(0, 1)
    k = k.view(L, heads, dh).transpose(0, 1)
    v = v.view(L, heads, dh).transpose(0, 1)
    logits = q @ k.transpose(1, 2) / dh ** 0.5
    causal = torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1)
    att = logits.masked_fill(causal, float('-inf')).softmax(-1)
    out = (att @ v).transpose(0, 1).reshape(L, d)
    return F.linear(out, w_out, b_out)


def _find_mha(module):
    for m in module.modules():
        if isinstance(m, torch.nn.MultiheadAttention):
            return m
    return None


def test_tagnnpp_released_layer_equals_released_port():
    """The released TAGNN++ forward (SBR model.py: attn(h) + LayerNorm(h) over the
    id-sorted node list, then TAGNN's non-hybrid score). For a session whose
    clicks are distinct and increasing, the node list *is* the click sequence,
    so the padding-free click-order layer must agree exactly."""
    seq = [2, 5, 9, 17, 30]
    model = make('tagnnpp', heads=2, layer='released').double()
    assert model.hybrid is False and model.positional is False
    mha = _find_mha(model.transformer)
    norms = [m for m in model.transformer.modules() if isinstance(m, torch.nn.LayerNorm)]
    if mha is None or len(norms) != 1:
        pytest.skip("SessionTransformer(norm='released') does not expose one "
                    "nn.MultiheadAttention and one LayerNorm")
    ln = norms[0]
    items, A, alias = released_inputs(seq)
    hidden = model.embedding.weight[items]
    hidden = released_gnn_cell(A.double(), hidden, model.gnn)[0]      # [n, d]
    skip = F.layer_norm(hidden, (D,), ln.weight, ln.bias, ln.eps)
    hidden = _released_mha(hidden, (mha.in_proj_weight, mha.in_proj_bias,
                                    mha.out_proj.weight, mha.out_proj.bias),
                           mha.num_heads) + skip
    seq_hidden = hidden[alias[0]][None]
    ref = released_compute_scores(model, seq_hidden, softmax_alpha=True,
                                  target_attention=True, hybrid=False)
    torch.testing.assert_close(ours(model, seq)[:, 1:], ref, atol=1e-8, rtol=1e-6)


def test_tagnnpp_paper_layer_is_a_standard_post_ln_transformer_layer():
    """GNN -> positions (+ learned position embedding of the click index) ->
    torch.nn.TransformerEncoderLayer (post-LN, ReLU FFN 4d, causal) -> TAGNN's
    released score, built from torch's own layer with the weights copied."""
    seq = [3, 7, 3, 12, 9]
    model = make('tagnnpp', heads=4).double().eval()
    tr = model.transformer
    ref_layer = torch.nn.TransformerEncoderLayer(
        D, 4, dim_feedforward=4 * D, dropout=0.0, batch_first=True,
        norm_first=False).double().eval()
    ref_layer.self_attn.load_state_dict(tr.attn.state_dict())
    for ours_mod, ref_mod in ((tr.lin1, ref_layer.linear1), (tr.lin2, ref_layer.linear2),
                              (tr.norm1, ref_layer.norm1), (tr.norm2, ref_layer.norm2)):
        ref_mod.load_state_dict(ours_mod.state_dict())
    hidden = released_seq_hidden(model, seq)                     # [1, L, d]
    L = hidden.size(1)
    hidden = hidden + tr.pos_emb.weight[:L]
    causal = torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1)
    with torch.no_grad():
        v = ref_layer(hidden, src_mask=causal)
        ref = released_compute_scores(model, v, softmax_alpha=True,
                                      target_attention=True, hybrid=True)
    torch.testing.assert_close(ours(model, seq)[:, 1:], ref, atol=1e-8, rtol=1e-6)


def test_tagnnpp_without_transformer_is_tagnn():
    pp = make('tagnnpp', use_transformer=False)
    tagnn = TAGNN(M, D)
    tagnn.load_state_dict(pp.state_dict())
    b = batch_of(SESSIONS)
    pp.eval(), tagnn.eval()
    torch.testing.assert_close(pp(b), tagnn(b))


# ----------------------------------------------------------------------------
# Properties, every configuration
# ----------------------------------------------------------------------------
@pytest.mark.parametrize('key,kw', CONFIGS, ids=IDS)
def test_interface_and_invariances(key, kw):
    model = make(key, **kw).eval()
    assert model.num_items == M and model.embedding.weight.shape == (M, D)
    batch = batch_of(SESSIONS)
    with torch.no_grad():
        full = model(batch)
        assert full.shape == (len(SESSIONS), M)
        assert torch.isinf(full[:, 0]).all() and (full[:, 0] < 0).all()
        assert torch.isfinite(full[:, 1:]).all()
        # item 0 is never recommended, even with k = all items
        assert not (full.topk(M - 1, dim=1).indices == 0).any()
        # alone == inside a batch with sessions of other lengths
        for i, s in enumerate(SESSIONS):
            torch.testing.assert_close(model(batch_of([s])), full[i:i + 1],
                                       atol=1e-5, rtol=1e-5)
        # candidates == gathering the full scores (id 0 -> -inf)
        cand = torch.randint(0, M, (len(SESSIONS), 7), generator=torch.Generator().manual_seed(1))
        cand[0, 0] = 0
        torch.testing.assert_close(model(batch, candidates=cand), full.gather(1, cand),
                                   atol=1e-5, rtol=1e-5)
        # deterministic in eval mode
        torch.testing.assert_close(model(batch), full)


def permuted(data, perm):
    """Relabel the nodes of one SessionData: node i becomes perm[i]."""
    perm = torch.as_tensor(perm)
    x = torch.empty_like(data.x)
    x[perm] = data.x
    return SessionData(x=x, edge_index=perm[data.edge_index],
                       edge_weight_in=data.edge_weight_in,
                       edge_weight_out=data.edge_weight_out,
                       seq=perm[data.seq], seq_batch=data.seq_batch,
                       last=perm[data.last], y=data.y)


@pytest.mark.parametrize('key,kw', CONFIGS, ids=IDS)
def test_node_permutation_invariance(key, kw):
    model = make(key, **kw).eval()
    seqs = [[3, 7, 3, 12, 9, 7], [1, 2, 3, 4, 5, 6, 2, 7]]
    data = [SessionData.from_sequence(s, target=1) for s in seqs]
    g = torch.Generator().manual_seed(3)
    perms = [torch.randperm(d.num_nodes, generator=g) for d in data]
    assert any((p != torch.arange(p.numel())).any() for p in perms)
    with torch.no_grad():
        a = model(Batch.from_data_list(data))
        b = model(Batch.from_data_list([permuted(d, p) for d, p in zip(data, perms)]))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# parameters each configuration must have / must not have
def _expected_absent(key, kw):
    absent = set()
    session = kw.get('session', 'full')
    if key == 'srgnn' and not kw.get('hybrid', True):
        absent.add('lin_transform')
    if key in ('tagnn', 'tagnnpp'):
        full = session == 'full'
        score = kw.get('score', 'released')
        layer = kw.get('layer', 'paper')
        hybrid = kw.get('hybrid', layer == 'paper')
        if not full:
            absent |= {'target_attention', 'lin_score'}
        if not (session == 'local+attention' or (full and score == 'released' and hybrid)):
            absent.add('lin_transform')
        if score != 'paper' or not full:
            absent.add('lin_score')
        if session in ('local', 'mean'):
            absent.add('global_readout')
        if key == 'tagnnpp':
            if not kw.get('use_gnn', True):
                absent.add('gnn')
            if not kw.get('use_transformer', True):
                absent.add('transformer')
    return absent


@pytest.mark.parametrize('key,kw', CONFIGS, ids=IDS)
def test_gradients_reach_every_used_parameter(key, kw):
    model = make(key, **kw).train()
    batch = batch_of(SESSIONS)
    scores = model(batch)
    F.cross_entropy(scores[:, 1:], batch.y - 1).backward()
    names = {n for n, _ in model.named_parameters()}
    for mod in _expected_absent(key, kw):
        assert getattr(model, mod, None) is None, mod
        assert not any(n.startswith(mod + '.') for n in names), mod
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} gets no gradient"
        assert p.grad.abs().sum() > 0, f"{name} gets a zero gradient"
    if key == 'tagnnpp' and kw.get('use_transformer', True):
        has_pos = any('pos' in n for n, _ in model.transformer.named_parameters())
        assert has_pos == model.positional
    # AGC works on every model and leaves the item table alone
    emb_grad = model.embedding.weight.grad.clone()
    AGC.for_model(model).clip_()
    assert torch.equal(model.embedding.weight.grad, emb_grad)


@pytest.mark.parametrize('key,kw', CONFIGS, ids=IDS)
def test_config_round_trip(key, kw):
    model = make(key, **kw)
    cfg = model.config()
    assert json.loads(json.dumps(cfg)) == cfg
    rebuilt = type(model)(**cfg)
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.config() == cfg
    b = batch_of(SESSIONS[:2])
    model.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt(b), model(b))


def test_switches_change_the_computation():
    b = batch_of(SESSIONS)
    groups = [
        [('srgnn', {}), ('srgnn', dict(hybrid=False))],
        [('tagnn', {}), ('tagnn', dict(score='paper')), ('tagnn', dict(hybrid=False))]
        + [('tagnn', dict(session=s)) for s in ('local', 'mean', 'attention',
                                                 'local+attention')],
        [('tagnnpp', {}), ('tagnnpp', dict(layer='released')),
         ('tagnnpp', dict(use_gnn=False)), ('tagnnpp', dict(use_transformer=False)),
         ('tagnnpp', dict(positional=False))],
    ]
    for group in groups:
        outs = []
        for key, kw in group:
            model = make(key, seed=0, **kw).eval()
            with torch.no_grad():
                outs.append(model(b)[:, 1:])
        for i in range(len(outs)):
            for j in range(i):
                assert not torch.allclose(outs[i], outs[j], atol=1e-4), (group[i], group[j])


def test_tagnnpp_defaults_and_dropout():
    model = make('tagnnpp')
    assert (model.layer, model.hybrid, model.positional, model.heads) == ('paper', True, True, 2)
    rel = make('tagnnpp', layer='released')
    assert (rel.hybrid, rel.positional) == (False, False)
    b = batch_of(SESSIONS)
    model.train()
    torch.manual_seed(1)
    a1 = model(b)
    torch.manual_seed(2)
    a2 = model(b)
    assert not torch.allclose(a1, a2)     # dropout active in training
    # released initialisation: every parameter in [-1/sqrt(d), 1/sqrt(d)]
    for name, p in model.named_parameters():
        assert p.abs().max() <= D ** -0.5 + 1e-7, name
    ln = [m for m in make('tagnnpp', init='transformer-default').modules()
          if isinstance(m, torch.nn.LayerNorm)]
    assert ln and all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in ln)


def test_errors():
    with pytest.raises(ValueError, match='num_items'):
        SRGNN(1)
    with pytest.raises(ValueError, match="score must be one of"):
        TAGNN(M, D, score='nope')
    with pytest.raises(ValueError, match="session must be one of"):
        TAGNN(M, D, session='global')
    with pytest.raises(ValueError, match="layer must be one of"):
        TAGNNPlusPlus(M, D, layer='nope')
    with pytest.raises(ValueError, match='heads'):
        TAGNNPlusPlus(M, 10, heads=3)
    model = make('tagnn').eval()
    b = batch_of(SESSIONS[:2])
    with pytest.raises(ValueError, match=r'shape \[2, C\]'):
        model(b, candidates=torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match='must lie in'):
        model(b, candidates=torch.full((2, 2), M))
    with pytest.raises(ValueError, match='seq'):
        model(SimpleBatch(x=b.x))


@pytest.mark.parametrize('key', sorted(MODELS))
def test_item_ids_outside_the_table_are_named(key):
    # Sessions encoded for a larger item table: every model names the range it
    # got and its num_items instead of an IndexError from the embedding.
    model = MODELS[key](M, hidden_channels=D, **({'heads': 2} if key == 'tagnnpp' else {}))
    with pytest.raises(ValueError, match=rf'item ids in \[3, {M}\].*num_items={M} '
                                         rf'\(ids 0\.\.{M - 1}\)'):
        model(batch_of([[3, M, 4]], targets=[1]))
    model(batch_of([[3, M - 1, 4]], targets=[1]))  # the last id is in the table
    bad = batch_of([[3, 5]], targets=[1])
    bad.x = bad.x.clone()
    bad.x[0] = -2
    with pytest.raises(ValueError, match=r'item ids in \[-2, 5\]'):
        model(bad)


@pytest.mark.parametrize('key,flag', [('srgnn', 'hybrid'), ('tagnn', 'released_padding'),
                                      ('tagnnpp', 'use_transformer'), ('stamp', 'attention'),
                                      ('stamp', 'sigmoid'), ('lessr', 'batch_norm'),
                                      ('gcsan', 'causal')])
def test_switches_refuse_text(key, flag):
    # bool('no') is True: a switch given as text (--model-arg attention=no)
    # must be refused rather than turned on.
    for value in ('no', 'True', 2, 0.0, None):
        with pytest.raises(TypeError, match=rf"{flag} must be True or False, got "
                                            rf"{value!r}"):
            MODELS[key](M, hidden_channels=D, **{flag: value})
    with pytest.raises(TypeError, match='write JSON: true or false'):
        MODELS[key](M, hidden_channels=D, **{flag: 'False'})
    # NumPy bools and the 0 / 1 of older JSON / YAML configs are switches too,
    # stored as plain bools
    for value, expected in ((np.bool_(True), True), (1, True), (0, False)):
        model = MODELS[key](M, hidden_channels=D, **{flag: value})
        assert model.config()[flag] is expected


class SimpleBatch:
    def __init__(self, **kw):
        self.__dict__.update(kw)


@pytest.mark.parametrize('key,kw', [('tagnn', {}), ('tagnnpp', dict(score='paper'))])
def test_trains_under_bfloat16_autocast(key, kw):
    model = make(key, **kw).train()
    batch = batch_of(SESSIONS)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        scores = model(batch)
        part = model(batch, candidates=batch.y.view(-1, 1))
    loss = F.cross_entropy(scores[:, 1:].float(), batch.y - 1) - part.float().mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize('kw', [dict(), dict(score='paper')])
def test_tagnn_inference_path_equals_training_path(kw):
    # without autograd TAGNN fills one preallocated [B, num_items] buffer
    model = make('tagnn', **kw).eval()
    batch = batch_of(SESSIONS)
    with_grad = model(batch)
    with torch.no_grad():
        without = model(batch)
    assert without.shape == (len(SESSIONS), M)
    assert torch.isinf(without[:, 0]).all() and (without[:, 0] < 0).all()
    torch.testing.assert_close(without, with_grad.detach(), atol=1e-6, rtol=1e-6)
