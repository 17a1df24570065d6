"""SKNN, V-SKNN and STAN against hand-worked scores and against a direct loop
over the papers' formulas (one session at a time, plain Python sets and dicts)."""
import math
import random
import zlib

import pytest
import torch
from torch_geometric.data import Batch

from tagnn_pyg.baselines import BASELINES, SKNN, STAN, VSKNN
from tagnn_pyg.data import SessionData
from tagnn_pyg.data.sequences import SessionSequences
from tagnn_pyg.metrics import target_rank

# Training sessions in date order (session 4 is the most recent), items 1..5.
TRAIN = [[1, 2, 3], [2, 3, 2], [3, 4], [1, 3], [4, 5, 1]]
NUM_ITEMS = 6


def batch_of(*sessions):
    return Batch.from_data_list([SessionData.from_sequence(s) for s in sessions])


# ---------------------------------------------------------------------------
# The reference: the formulas, looped, one current session at a time.
# ---------------------------------------------------------------------------

def last_positions(seq):
    """item -> 1-based position of its last click."""
    return {item: p for p, item in enumerate(seq, 1)}


def reference(method, train, session, num_items, k, sample_size, remind=True, **hp):
    cur = last_positions(session)
    length = len(session)
    s_items = sorted(cur)
    total = len(train)
    cand = [n for n in range(total) if set(train[n]) & set(cur)]
    if sample_size is not None:
        cand = cand[-sample_size:]  # the most recent
    if method == 'vsknn':
        f = {'same': lambda p: 1.0, 'div': lambda p: p / length,
             'quadratic': lambda p: (p / length) ** 2,
             'log': lambda p: 1 / math.log10(length - p + 1.7)}[hp.get('weighting', 'div')]
        w = {i: f(cur[i]) for i in s_items}
    elif method == 'stan':
        lam1 = hp.get('lambda1', 1.02)
        w = {i: (math.exp((cur[i] - length) / lam1) if lam1 else 1.0) for i in s_items}
    else:
        w = {i: 1.0 for i in s_items}
    sims = {}
    for n in cand:
        n_set = set(train[n])
        common = [i for i in s_items if i in n_set]
        if method == 'sknn':
            if hp.get('similarity', 'cosine') == 'cosine':
                sim = len(common) / math.sqrt(len(cur) * len(n_set))
            else:
                sim = len(common) / len(n_set | set(cur))
        elif method == 'vsknn':
            sim = sum(w[i] for i in common) / len(cur)
        else:
            norm = math.sqrt(sum(w[i] ** 2 for i in s_items))
            sim = sum(w[i] for i in common) / (norm * math.sqrt(len(n_set)))
            lam2 = hp.get('lambda2', 6500.0)
            if lam2:
                sim *= math.exp(-(total - 1 - n) / lam2)
        sims[n] = sim
    neighbours = sorted(cand, key=lambda n: (-sims[n], -n))[:k]
    scores = [0.0] * num_items
    for n in neighbours:
        n_pos = last_positions(train[n])
        common = [i for i in cur if i in n_pos]
        weight = sims[n]
        if method == 'vsknn':
            step = length - max(cur[i] for i in common) + 1
            g = {'same': 1.0, 'div': 1 / step, 'quadratic': 1 / step ** 2,
                 'log': 1 / math.log10(step + 1.7)}[hp.get('weighting_score', 'div')]
            weight *= g
        for i in n_pos:
            value = weight
            if method == 'vsknn' and hp.get('idf_weighting', 0):
                clicks = sum(s.count(i) for s in train)
                value *= 1 + hp['idf_weighting'] * math.log(total / clicks)
            if method == 'stan' and hp.get('lambda3', 2.05):
                if hp.get('anchor', 'recent') == 'recent':
                    r = max(common, key=lambda i: cur[i])
                    anchor = n_pos[r]
                else:
                    anchor = max(n_pos[i] for i in common)
                value *= math.exp(-abs(n_pos[i] - anchor) / hp.get('lambda3', 2.05))
            scores[i] += value
    if not remind:
        for i in cur:
            scores[i] = 0.0
    return scores


# ---------------------------------------------------------------------------
# Hand-worked examples
# ---------------------------------------------------------------------------

def test_sknn_by_hand():
    # s = {1, 3}. Cosine to the training sessions: 0 {1,2,3}: 2/sqrt(6); 1 {2,3}:
    # 1/2; 2 {3,4}: 1/2; 3 {1,3}: 1; 4 {1,4,5}: 1/sqrt(6). k = 2 -> sessions 3, 0.
    out = SKNN(k=2).fit(TRAIN, NUM_ITEMS)(batch_of([1, 3]))[0]
    c = 2 / math.sqrt(6)
    assert out[1:].tolist() == pytest.approx([1 + c, c, 1 + c, 0, 0])
    # k = 3: sessions 1 and 2 tie at 1/2 -> the more recent (2, items {3, 4}) wins
    out = SKNN(k=3).fit(TRAIN, NUM_ITEMS)(batch_of([1, 3]))[0]
    assert out[1:].tolist() == pytest.approx([1 + c, c, 1.5 + c, 0.5, 0])
    # Jaccard: 0: 2/3, 1: 1/3, 2: 1/3, 3: 1, 4: 1/4 -> k = 2: sessions 3, 0
    out = SKNN(k=2, similarity='jaccard').fit(TRAIN, NUM_ITEMS)(batch_of([1, 3]))[0]
    assert out[1:].tolist() == pytest.approx([5 / 3, 2 / 3, 5 / 3, 0, 0])
    # sample_size = 2 keeps only the two most recent candidates (3 and 4)
    out = SKNN(k=5, sample_size=2).fit(TRAIN, NUM_ITEMS)(batch_of([1, 3]))[0]
    d = 1 / math.sqrt(6)
    assert out[1:].tolist() == pytest.approx([1 + d, 0, 1, d, d])


def test_vsknn_by_hand():
    # s = [3, 1] (L = 2): div weights w(3) = 1/2, w(1) = 2/2 = 1; sim = overlap / |s|:
    # 0 {1,2,3}: 1.5/2; 1 {2,3}: 0.25; 2 {3,4}: 0.25; 3 {1,3}: 0.75; 4 {1,4,5}: 0.5.
    # k = 2: sessions 3 and 0 tie at 0.75 -> both. Both contain the last click 1,
    # step 1, decay 1/1.
    out = VSKNN(k=2).fit(TRAIN, NUM_ITEMS)(batch_of([3, 1]))[0]
    assert out[1:].tolist() == pytest.approx([1.5, 0.75, 1.5, 0, 0])
    # k = 3 adds session 4 (0.5, holds 1: step 1)
    out = VSKNN(k=3).fit(TRAIN, NUM_ITEMS)(batch_of([3, 1]))[0]
    assert out[1:].tolist() == pytest.approx([2.0, 0.75, 1.5, 0.5, 0.5])
    # s = [1, 3]: w(1) = 1/2, w(3) = 1; session 4 {1,4,5} shares only 1, the
    # first click: sim 0.25, step 2 -> contributes 0.25 / 2 to its items.
    # k = 5, sims: 0: 0.75, 1: 0.5, 2: 0.5, 3: 0.75, 4: 0.25.
    out = VSKNN(k=5).fit(TRAIN, NUM_ITEMS)(batch_of([1, 3]))[0]
    assert out[1:].tolist() == pytest.approx(
        [0.75 + 0.75 + 0.125, 0.75 + 0.5, 0.75 + 0.5 + 0.5 + 0.75, 0.5 + 0.125, 0.125])


def test_stan_by_hand():
    # s = [1, 3], lambda1 = 1: w1(1) = e^-1, w1(3) = 1, |w1| = sqrt(1 + e^-2).
    # No recency (lambda2=None). Neighbours k = 1: sims 0 {1,2,3}: (1 + e^-1) /
    # (|w1| sqrt 3), 3 {1,3}: (1 + e^-1) / (|w1| sqrt 2) -> session 3 wins.
    # Session 3 = [1, 3]: the anchor (most recent item of s in it) is 3 at
    # position 2; lambda3 = 1: item 1 (pos 1) e^-1, item 3 (pos 2) 1.
    e = math.exp(-1)
    sim3 = (1 + e) / (math.sqrt(1 + e * e) * math.sqrt(2))
    model = STAN(k=1, lambda1=1.0, lambda2=None, lambda3=1.0).fit(TRAIN, NUM_ITEMS)
    out = model(batch_of([1, 3]))[0]
    assert out[1:].tolist() == pytest.approx([sim3 * e, 0, sim3, 0, 0])
    # s = [4]: candidates 2 [3, 4] and 4 [4, 5, 1], sims 1/sqrt2 and 1/sqrt3, both
    # times the recency exp(-(4 - n) / lambda2) with lambda2 = 2: 2 -> e^-1, 4 -> 1.
    # k = 2. Anchor: 4, at position 2 in session 2 and 1 in session 4.
    model = STAN(k=2, lambda1=1.0, lambda2=2.0, lambda3=1.0).fit(TRAIN, NUM_ITEMS)
    out = model(batch_of([4]))[0]
    a, b = e / math.sqrt(2), 1 / math.sqrt(3)
    assert out[1:].tolist() == pytest.approx([b * e ** 2, 0, a * e, a + b, b * e])


def test_stan_anchor_variants_differ_as_defined():
    # s = [5, 1]; training session [1, 2, 5, 3]: the most recent item of s in it is
    # 1 (position 1 there); the last position there holding an item of s is 3 (5).
    train = [[1, 2, 5, 3]]
    kw = dict(k=1, lambda1=None, lambda2=None, lambda3=1.0)
    recent = STAN(anchor='recent', **kw).fit(train, NUM_ITEMS)(batch_of([5, 1]))[0]
    last = STAN(anchor='last', **kw).fit(train, NUM_ITEMS)(batch_of([5, 1]))[0]
    sim = 2 / (math.sqrt(2) * 2)
    e = math.exp(-1)
    assert recent[1:].tolist() == pytest.approx([sim, sim * e, sim * e ** 3, 0, sim * e ** 2])
    assert last[1:].tolist() == pytest.approx([sim * e ** 2, sim * e, sim * e, 0, sim])


# ---------------------------------------------------------------------------
# Against the loop, on random data with repeats
# ---------------------------------------------------------------------------

def random_sessions(rng, num, num_items, max_len):
    return [[rng.randint(1, num_items - 1) for _ in range(rng.randint(1, max_len))]
            for _ in range(num)]


CASES = [
    ('sknn', dict(k=3, sample_size=None)),
    ('sknn', dict(k=4, sample_size=6, similarity='jaccard', remind=False)),
    ('vsknn', dict(k=3, sample_size=None)),
    ('vsknn', dict(k=5, sample_size=8, weighting='log', weighting_score='quadratic',
                   idf_weighting=2.0)),
    ('vsknn', dict(k=2, sample_size=None, weighting='quadratic', weighting_score='log',
                   remind=False)),
    ('vsknn', dict(k=4, sample_size=None, weighting='same', weighting_score='same')),
    ('stan', dict(k=3, sample_size=None)),
    ('stan', dict(k=4, sample_size=7, lambda1=0.5, lambda2=10.0, lambda3=0.7,
                  anchor='last')),
    ('stan', dict(k=2, sample_size=None, lambda1=None, lambda2=None, lambda3=None)),
]


@pytest.mark.parametrize('method,kw', CASES)
def test_against_loop_reference(method, kw):
    rng = random.Random(zlib.crc32(method.encode()) % 1000 + kw['k'])
    num_items = 12
    train = random_sessions(rng, 40, num_items, 6)
    tests = random_sessions(rng, 15, num_items, 5)
    model = BASELINES[method](**kw).fit(train, num_items)
    out = model(batch_of(*tests))
    assert out.shape == (len(tests), num_items) and out.dtype == torch.float64
    assert torch.isinf(out[:, 0]).all() and (out[:, 0] < 0).all()
    for row, s in zip(out, tests):
        expected = reference(method, train, s, num_items, **kw)
        torch.testing.assert_close(row[1:].double(), torch.tensor(expected[1:],
                                   dtype=torch.float64), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('method', ['sknn', 'vsknn', 'stan'])
def test_batch_independence_and_padding(method):
    rng = random.Random(7)
    train = random_sessions(rng, 60, 15, 6)
    tests = random_sessions(rng, 9, 15, 6)
    model = BASELINES[method](k=5).fit(train, 15)
    together = model(batch_of(*tests))
    for b, s in enumerate(tests):
        assert torch.equal(model(batch_of(s))[0], together[b])
    reordered = model(batch_of(*tests[::-1]))
    assert torch.equal(reordered, together.flip(0))
    # item 0 is never ranked: column 0 is the strict minimum of every row, so
    # no top-14 of the 15 columns holds it, and a target's rank counts the real
    # items scoring at least as much (ties against the model), column 0 never
    targets = torch.tensor([s[-1] for s in tests])
    assert (together[:, 0] < together[:, 1:].min(dim=1).values).all()
    assert (together.topk(14, dim=1).indices != 0).all()
    expected = [int((row[1:] >= row[t]).sum()) for row, t in zip(together, targets)]
    assert target_rank(together, targets).tolist() == expected
    # a session of an item no training session holds has no neighbour: all 15
    # real items of a 16-column table tie at 0 and every target ranks last among
    # them (ties count against the model), column 0 not counted
    unseen = BASELINES[method](k=5).fit(train, 16)(batch_of([15]))
    assert (unseen[:, 1:] == 0).all() and torch.isinf(unseen[:, 0]).all()
    assert target_rank(unseen.repeat(15, 1), torch.arange(1, 16)).tolist() == [15] * 15
    # candidates
    cand = torch.tensor([[1, 2, 3]] * len(tests))
    assert torch.equal(model(batch_of(*tests), cand), together[:, 1:4])


def test_session_sequences_and_unknown_items():
    # a sequence + its target is one session: same index as the whole sessions
    seqs = SessionSequences.from_lists([s[:-1] for s in TRAIN], targets=[s[-1] for s in TRAIN])
    a = STAN(k=3).fit(TRAIN, NUM_ITEMS)(batch_of([1, 3], [4, 4]))
    b = STAN(k=3).fit(seqs, NUM_ITEMS)(batch_of([1, 3], [4, 4]))
    assert torch.equal(a, b)
    # an item no training session holds: no neighbour, all scores 0
    out = SKNN().fit([[1, 2]], NUM_ITEMS)(batch_of([5]))
    assert (out[0, 1:] == 0).all()


def test_errors():
    with pytest.raises(ValueError, match='k must be a positive int'):
        SKNN(k=0)
    with pytest.raises(ValueError, match="sample_size must be a positive int or None"):
        VSKNN(sample_size=-3)
    with pytest.raises(ValueError, match="similarity must be one of 'cosine', 'jaccard'"):
        SKNN(similarity='dice')
    with pytest.raises(ValueError, match='weighting_score must be one of'):
        VSKNN(weighting_score='linear')
    with pytest.raises(ValueError, match='lambda2 must be a positive finite number'):
        STAN(lambda2=0)
    with pytest.raises(ValueError, match="anchor must be one of"):
        STAN(anchor='first')
    with pytest.raises(ValueError, match='idf_weighting must be'):
        VSKNN(idf_weighting=-1)
    with pytest.raises(RuntimeError, match='not fitted'):
        STAN()(batch_of([1]))
    with pytest.raises(ValueError, match='item id 9'):
        SKNN().fit(TRAIN, NUM_ITEMS)(batch_of([9]))


def test_cli_methods_and_params(tmp_path, capsys):
    import json

    from tagnn_pyg.cli import main
    from tagnn_pyg.data.srgnn_format import write_srgnn_folder
    from tagnn_pyg.data.synthetic import make_synthetic_sessions

    train, test = make_synthetic_sessions(num_items=60, num_train_sessions=120,
                                          num_test_sessions=30, seed=3, num_interests=4)
    data = write_srgnn_folder(tmp_path / 'data', train, test)
    for method in ('sknn', 'vsknn', 'stan'):
        assert main(['baseline', '--data', str(data), '--method', method,
                     '--param', 'k=20', '--no-progress']) == 0
        res = json.loads(capsys.readouterr().out)
        assert res['method'] == method and res['params'] == {'k': 20}
        assert 'k=20' in res['variant'] and 0 <= res['test']['HR@20'] <= 100
        assert 'valid' in res  # honest protocol by default
    assert main(['baseline', '--data', str(data), '--method', 'stan', '--protocol',
                 'paper', '--param', 'lambda2=null', '--param', 'anchor=last',
                 '--no-progress']) == 0
    res = json.loads(capsys.readouterr().out)
    assert 'lambda2=None' in res['variant'] and "anchor='last'" in res['variant']
    assert main(['baseline', '--data', str(data), '--method', 'sknn', '--param',
                 'lambda1=2']) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "SKNN has no hyper-parameter 'lambda1'" in err and 'sample_size' in err
    assert main(['baseline', '--data', str(data), '--method', 'vsknn', '--param',
                 'k=0']) == 1
    assert 'k must be a positive int, got 0' in capsys.readouterr().err
    assert main(['baseline', '--data', str(data), '--method', 'sknn', '--param',
                 'remind=no']) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("tagnn-pyg: error: --param: remind must be True or False, got 'no' "
                   "(str) (on the command line write JSON: true or false)")


def test_cli_refuses_prefixes_as_neighbours(tmp_path, capsys):
    # Under a random prefix split the other prefixes of a validation session
    # would be its nearest neighbours; without all_train_seq.txt every prefix
    # would count as a session. Both are refused, naming the cause.
    from tagnn_pyg.cli import main
    from tagnn_pyg.data.srgnn_format import write_srgnn_folder
    from tagnn_pyg.data.synthetic import make_synthetic_sessions

    train, test = make_synthetic_sessions(num_items=60, num_train_sessions=120,
                                          num_test_sessions=30, seed=3, num_interests=4)
    data = write_srgnn_folder(tmp_path / 'data', train, test)
    assert main(['baseline', '--data', str(data), '--method', 'stan', '--valid',
                 'random', '--no-progress']) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert '--method stan needs whole training sessions' in err
    assert '--valid random splits prefix sequences' in err
    (data / 'all_train_seq.txt').unlink()  # a folder of train.txt / test.txt only
    (data / 'manifest.json').unlink()
    for protocol in ('paper', 'honest'):
        assert main(['baseline', '--data', str(data), '--method', 'sknn', '--protocol',
                     protocol, '--no-progress']) == 1
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert 'has no whole training sessions (all_train_seq.txt)' in err
    # Item-KNN counts co-occurrences, which prefixes give as well as sessions.
    assert main(['baseline', '--data', str(data), '--method', 'itemknn', '--protocol',
                 'paper', '--no-progress']) == 0
