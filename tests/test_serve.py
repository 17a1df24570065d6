"""The Recommender: raw ids in and out, validation, unknown ids, fallback,
batching, candidates, MIPS retrieval and torch.export (no optional extra
needed except faiss for MIPS)."""
import math
import subprocess
import sys

import pytest
import torch

from serve_utils import ITEM_IDS, NUM_ITEMS, require_module, tiny_checkpoint
from tagnn_pyg.data.batching import build_session_batch
from tagnn_pyg.serve import RecommendError, Recommender, item_counts

SESSIONS = [['i3', 'i4', 'i3'], ['i7'], ['i8', 'i9', 'i10', 'i8'], ['i1', 'i59']]


@pytest.fixture(params=['srgnn', 'tagnn', 'tagnnpp'])
def ckpt(request, tmp_path):
    return tiny_checkpoint(tmp_path / 'best.pt', request.param)


def _internal(sessions):
    return [[ITEM_IDS.index(r) for r in s] for s in sessions]


def test_matches_the_model_on_raw_ids(ckpt):
    rec = Recommender.from_checkpoint(ckpt)
    out = rec.recommend(SESSIONS, k=5)
    sessions = _internal(SESSIONS)
    ptr = torch.tensor([0] + [len(s) for s in sessions]).cumsum(0)
    batch = build_session_batch(torch.tensor(sum(sessions, [])), ptr)
    with torch.no_grad():
        top = rec.model(batch).topk(5)
    for r, idx, val in zip(out, top.indices.tolist(), top.values.tolist()):
        assert r.items == [ITEM_IDS[i] for i in idx]
        assert r.scores == pytest.approx(val, abs=1e-6)
        assert r.fallback is None and r.unknown == []
    # the scores are logits: softmax over the catalogue is a distribution
    assert all(math.isfinite(s) for r in out for s in r.scores)


def test_batch_equals_one_by_one(ckpt):
    rec = Recommender.from_checkpoint(ckpt)
    together = rec.recommend(SESSIONS, k=10)
    for s, r in zip(SESSIONS, together):
        alone = rec.recommend([s], k=10)[0]
        assert alone.items == r.items
        assert alone.scores == pytest.approx(r.scores, abs=1e-5)


def test_validation_names_the_bad_value(tmp_path):
    rec = Recommender.from_checkpoint(tiny_checkpoint(tmp_path / 'c.pt'), max_session_length=5,
                                      max_sessions=3)
    cases = [
        (dict(sessions='i3'), "sessions must be a list"),
        (dict(sessions=[]), "1..3 sessions, got 0"),
        (dict(sessions=[['i3']] * 4), "1..3 sessions, got 4"),
        (dict(sessions=[['i3'], 'i4']), "sessions[1] must be a list of item ids"),
        (dict(sessions=[['i3', 3.5]]), "sessions[0][1] must be an item id (int or str), "
                                       "got float 3.5"),
        (dict(sessions=[['i3', None]]), "sessions[0][1] must be an item id"),
        (dict(sessions=[['i3', True]]), "got bool True"),
        (dict(sessions=[[]]), "sessions[0] is empty"),
        (dict(sessions=[['i3'] * 6]), "sessions[0] has 6 clicks, more than "
                                      "max_session_length = 5"),
        (dict(sessions=[['i3', 'nope']]), "sessions[0] holds unknown item ids ['nope']"),
        (dict(sessions=[['i3']], k=0), "k must be an int in [1, 59], got 0"),
        (dict(sessions=[['i3']], k=60), "got 60"),
        (dict(sessions=[['i3']], k=2.0), "got 2.0"),
        (dict(sessions=[['i3']], unknown='skip'), "unknown must be one of"),
        (dict(sessions=[['i3']], exclude_seen='yes'), "exclude_seen must be a bool"),
        (dict(sessions=[['i3']], candidates=[]), "candidates must be a non-empty list"),
        (dict(sessions=[['i3']], candidates=[['i1'], ['i2']]), "2 lists for 1 sessions"),
        (dict(sessions=[['i3']], candidates=['zz']), "candidates holds unknown item ids"),
    ]
    for kwargs, message in cases:
        with pytest.raises(RecommendError) as err:
            rec.recommend(**kwargs)
        assert message in str(err.value), (kwargs, str(err.value))


def test_unknown_ids_and_popularity_fallback(tmp_path):
    counts = torch.zeros(NUM_ITEMS)
    counts[[5, 9, 2]] = torch.tensor([30., 20., 10.])
    rec = Recommender.from_checkpoint(tiny_checkpoint(tmp_path / 'c.pt', item_counts=counts))
    dropped = rec.recommend([['zz', 'i3', 'yy'], ['zz']], k=3, unknown='drop')
    direct = rec.recommend([['i3']], k=3)[0]
    assert dropped[0].items == direct.items and dropped[0].unknown == ['zz', 'yy']
    assert dropped[0].fallback is None
    assert dropped[1].fallback == 'popularity' and dropped[1].unknown == ['zz']
    assert dropped[1].items == ['i5', 'i9', 'i2']
    assert dropped[1].scores == pytest.approx([0.5, 1 / 3, 1 / 6])
    ignored = rec.recommend([['zz']], k=2, unknown='ignore')[0]
    assert ignored.unknown == [] and ignored.fallback == 'popularity'
    # popularity given as an argument wins; without any counts: item-vector norms
    rec2 = Recommender.from_checkpoint(tmp_path / 'c.pt', popularity=counts.flip(0))
    assert rec2.recommend([['zz']], k=1, unknown='drop')[0].items == ['i54']
    bare = Recommender.from_checkpoint(tiny_checkpoint(tmp_path / 'bare.pt'))
    r = bare.recommend([['zz']], k=4, unknown='drop')[0]
    norms = bare.model.embedding.weight.detach().norm(dim=-1)
    norms[0] = -1
    assert r.fallback == 'embedding-norm'
    assert r.items == [ITEM_IDS[i] for i in norms.topk(4).indices.tolist()]


def test_item_counts():
    from tagnn_pyg.data.sequences import SessionSequences
    seqs = SessionSequences.from_lists([[1, 2], [2]], targets=[3, 2])
    assert item_counts(seqs, 5).tolist() == [0, 1, 3, 1, 0]
    assert item_counts([[1, 1, 4]], 5).tolist() == [0, 2, 0, 0, 1]


def test_exclude_seen_and_candidates(ckpt):
    rec = Recommender.from_checkpoint(ckpt)
    full = rec.recommend([['i3', 'i4']], k=NUM_ITEMS - 1)[0]
    seen = rec.recommend([['i3', 'i4']], k=NUM_ITEMS - 1, exclude_seen=True)[0]
    assert seen.items == [i for i in full.items if i not in ('i3', 'i4')]
    cand = ['i10', 'i3', 'i20', 'i30']
    r = rec.recommend([['i3', 'i4'], ['i5']], k=3, candidates=cand)
    for out, session in zip(r, [['i3', 'i4'], ['i5']]):
        ref = [i for i in rec.recommend([session], k=NUM_ITEMS - 1)[0].items if i in cand]
        assert out.items == ref[:3]
    per = rec.recommend([['i3', 'i4'], ['i5']], k=5, candidates=[['i1', 'i2'], ['i9']],
                        exclude_seen=True)
    assert sorted(per[0].items) == ['i1', 'i2'] and per[1].items == ['i9']
    only_seen = rec.recommend([['i3']], k=3, candidates=['i3'], exclude_seen=True)[0]
    assert only_seen.items == [] and only_seen.scores == []


def test_contiguous_ids_without_mapping(tmp_path):
    rec = Recommender.from_checkpoint(tiny_checkpoint(tmp_path / 'c.pt', item_ids=None))
    a = rec.recommend([[3, 4]], k=4)[0]
    b = rec.recommend([['3', '4']], k=4)[0]
    assert a.items == b.items and all(isinstance(i, int) for i in a.items)
    with pytest.raises(RecommendError, match=r"unknown item ids \[60, 0\].*ids 1..59"):
        rec.recommend([[3, 60, 0]])


def test_released_padding_needs_pad_length(tmp_path):
    from tagnn_pyg.checkpoint import save_checkpoint
    from tagnn_pyg.models import TAGNN
    save_checkpoint(tmp_path / 'p.pt', model=TAGNN(NUM_ITEMS, 8, released_padding=True),
                    model_name='tagnn', num_items=NUM_ITEMS)
    with pytest.raises(ValueError, match='pass pad_length'):
        Recommender.from_checkpoint(tmp_path / 'p.pt')
    rec = Recommender.from_checkpoint(tmp_path / 'p.pt', pad_length=10)
    assert len(rec.recommend([[1, 2]], k=3)[0].items) == 3
    with pytest.raises(ValueError, match='only to models with released_padding=True'):
        Recommender.from_checkpoint(tiny_checkpoint(tmp_path / 'c.pt'), pad_length=10)


@pytest.mark.parametrize('model', ['srgnn', 'tagnn'])
def test_mips_reranks_exactly(tmp_path, model):
    require_module('faiss')
    path = tiny_checkpoint(tmp_path / 'c.pt', model)
    exact = Recommender.from_checkpoint(path)
    mips = Recommender.from_checkpoint(path, retrieval='mips', num_candidates=20)
    everything = Recommender.from_checkpoint(path, retrieval='mips',
                                             num_candidates=NUM_ITEMS - 1)
    e = exact.recommend(SESSIONS, k=10)
    m = mips.recommend(SESSIONS, k=10)
    a = everything.recommend(SESSIONS, k=10)
    for x, y, z in zip(e, m, a):
        assert x.items == z.items          # all items retrieved: the exact answer
        assert x.scores == pytest.approx(z.scores, abs=1e-5)
        assert len(y.items) == 10
    # re-ranked scores are the exact scores of those items
    for s, y in zip(SESSIONS, m):
        ref = exact.recommend([s], k=10, candidates=y.items)[0]
        assert ref.items == y.items and ref.scores == pytest.approx(y.scores, abs=1e-5)
    if model == 'srgnn':   # SR-GNN's score is the inner product itself: MIPS is exact
        for x, y in zip(e, m):
            assert x.items == y.items


def test_mips_checks(tmp_path):
    path = tiny_checkpoint(tmp_path / 'c.pt')
    with pytest.raises(ValueError, match="retrieval must be one of"):
        Recommender.from_checkpoint(path, retrieval='ann')
    require_module('faiss')
    rec = Recommender.from_checkpoint(path, retrieval='mips', num_candidates=5)
    with pytest.raises(RecommendError, match="k = 6 is more than the num_candidates = 5"):
        rec.recommend([['i3']], k=6)


@pytest.mark.parametrize('model', ['srgnn', 'tagnn'])
def test_torch_export_matches(tmp_path, model):
    from tagnn_pyg.serve.export import batch_inputs, export_model
    path = tiny_checkpoint(tmp_path / 'c.pt', model)
    side = export_model(path, 'pt2', tmp_path / 'm.pt2')
    assert side['item_ids'] == ITEM_IDS and [i['name'] for i in side['inputs']][0] == 'x'
    program = torch.export.load(str(tmp_path / 'm.pt2')).module()
    rec = Recommender.from_checkpoint(path)
    for sessions in (_internal(SESSIONS), [[5]], [[1, 2, 3, 4, 5, 6, 7, 8]] * 9):
        batch = rec._batch(sessions)
        with torch.no_grad():
            ref = rec.model(batch)
            got = program(*batch_inputs(batch))
        assert got.shape == ref.shape
        assert torch.allclose(got[:, 1:], ref[:, 1:], atol=1e-5)


@pytest.mark.parametrize('layer', ['paper', 'released'])
def test_tagnnpp_pt2_export_matches(tmp_path, layer):
    from tagnn_pyg.checkpoint import save_checkpoint
    from tagnn_pyg.models import TAGNNPlusPlus
    torch.manual_seed(0)
    model = TAGNNPlusPlus(NUM_ITEMS, 16, heads=2, layer=layer).eval()
    path = tmp_path / 'c.pt'
    save_checkpoint(path, model=model, model_name='tagnnpp', num_items=NUM_ITEMS,
                    item_ids=ITEM_IDS, train_config={'weighting': 'binary'})
    side = _export(path, 'pt2', tmp_path / 'c.pt2', max_session_length=9)
    assert side['max_session_length'] == 9
    rec = Recommender.from_checkpoint(path, backend='pt2')
    assert rec.max_session_length == 9 and rec.info()['backend'] == 'pt2'
    for sessions in (_internal(SESSIONS), [[5]], [[1, 2, 3, 4, 5, 6, 7, 8, 9]] * 9,
                     [[1, 2], [3, 4, 5, 6, 7, 8, 9, 10, 11], [12]]):
        batch = rec._batch(sessions)
        with torch.no_grad():
            ref = model(batch)
        got = rec.scorer(batch)
        assert got.shape == ref.shape
        assert (got[:, 1:] - ref[:, 1:]).abs().max() <= 1e-5
        assert torch.equal(got.topk(20).indices, ref.topk(20).indices)
    with pytest.raises(RecommendError, match='sessions.1. has 10 clicks, more than '
                                             'max_session_length = 9'):
        rec.recommend([['i1'], ['i2'] * 10])
    with pytest.raises(ValueError, match='max_session_length = 10 is more than the 9'):
        Recommender.from_checkpoint(path, backend='pt2', max_session_length=10)
    assert Recommender.from_checkpoint(path, backend='pt2',
                                       max_session_length=4).max_session_length == 4


def _export(*args, **kwargs):
    from tagnn_pyg.serve.export import export_model
    return export_model(*args, **kwargs)


def test_export_length_checks_and_refusals(tmp_path):
    from tagnn_pyg.checkpoint import save_checkpoint
    from tagnn_pyg.models import TAGNNPlusPlus
    # the released padding stays refused: its scores depend on the data set's longest session
    torch.manual_seed(0)
    padded = TAGNNPlusPlus(NUM_ITEMS, 16, layer='released', released_padding=True)
    path = tmp_path / 'padded.pt'
    save_checkpoint(path, model=padded, model_name='tagnnpp', num_items=NUM_ITEMS,
                    item_ids=ITEM_IDS, train_config={'weighting': 'binary'})
    for fmt in ('pt2', 'onnx'):
        with pytest.raises(ValueError, match='released_padding=True.*longest session'):
            _export(path, fmt, tmp_path / f'm.{fmt}')
    assert not (tmp_path / 'm.pt2').exists()
    # the fixed length is capped by the positional embeddings
    small = TAGNNPlusPlus(NUM_ITEMS, 16, max_length=50)
    path = tmp_path / 'small.pt'
    save_checkpoint(path, model=small, model_name='tagnnpp', num_items=NUM_ITEMS,
                    item_ids=ITEM_IDS, train_config={'weighting': 'binary'})
    with pytest.raises(ValueError, match='max_session_length=51 is more than the '
                                         'max_length=50 positions'):
        _export(path, 'pt2', tmp_path / 'm.pt2', max_session_length=51)
    with pytest.raises(ValueError, match='max_session_length must be a positive int, got 0'):
        _export(path, 'pt2', tmp_path / 'm.pt2', max_session_length=0)
    assert _export(path, 'pt2', tmp_path / 'm.pt2')['max_session_length'] == 50
    # SR-GNN and TAGNN take any length unless a limit is given
    srgnn = tiny_checkpoint(tmp_path / 's.pt', 'srgnn')
    assert _export(srgnn, 'pt2', tmp_path / 's.pt2')['max_session_length'] is None
    assert Recommender.from_checkpoint(srgnn, backend='pt2').max_session_length == 200
    _export(srgnn, 'pt2', tmp_path / 's.pt2', max_session_length=3)
    with pytest.raises(RecommendError, match='more than max_session_length = 3'):
        Recommender.from_checkpoint(srgnn, backend='pt2').recommend([['i1'] * 4])


def test_cli_help_is_light():
    code = ("import sys\nfrom tagnn_pyg.cli import main\n"
            "for argv in (['serve', '--help'], ['export', '--help'], ['--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit as e:\n"
            "        assert e.code == 0\n"
            "print('HEAVY', [m for m in ('torch', 'fastapi', 'uvicorn', 'onnx', "
            "'onnxruntime', 'faiss', 'starlette', 'pydantic') if m in sys.modules])")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == 'HEAVY []'


def test_cli_export_pt2(tmp_path, capsys):
    from tagnn_pyg.cli import main
    path = tiny_checkpoint(tmp_path / 'c.pt', 'srgnn')
    assert main(['export', '--checkpoint', str(path), '--format', 'pt2',
                 '--out', str(tmp_path / 'm.pt2')]) == 0
    assert (tmp_path / 'm.pt2').is_file() and (tmp_path / 'm.pt2.json').is_file()
    assert '"format": "pt2"' in capsys.readouterr().out
    path = tiny_checkpoint(tmp_path / 'pp.pt', 'tagnnpp')
    assert main(['export', '--checkpoint', str(path), '--format', 'pt2',
                 '--out', str(tmp_path / 'pp.pt2'), '--max-session-length', '30']) == 0
    assert '"max_session_length": 30' in capsys.readouterr().out
    assert Recommender.from_checkpoint(path, backend='pt2').max_session_length == 30
