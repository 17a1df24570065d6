"""The ONNX and torch.export backends equal the torch backend on 1,000 real
Diginetica test sessions (small models trained a few steps: TAGNN, and every model
whose exported copy pads sessions to a fixed length, LESSR's graphs included).
Needs the ``onnx`` extra, skipped without it and run in CI."""
import pytest
import torch

from conftest import require_shared
from serve_utils import assert_same_top_k, require_module, tiny_checkpoint
from tagnn_pyg.checkpoint import save_checkpoint
from tagnn_pyg.data.batching import build_session_batch
from tagnn_pyg.models import GCSAN, LESSR, GRU4Rec, NARM, STAMP, TAGNN, TAGNNPlusPlus
from tagnn_pyg.serve import RecommendError, Recommender
from tagnn_pyg.serve.export import export_model

require_module('onnxruntime')
require_module('onnxscript')


@pytest.fixture(scope='module')
def diginetica():
    from tagnn_pyg.data.loading import load_session_data
    require_shared('diginetica')
    from conftest import SHARED_DATASETS
    return load_session_data('diginetica', root=SHARED_DATASETS)


def _trained(data, steps=5, model=None):
    torch.manual_seed(0)
    model = TAGNN(data.num_items, 16) if model is None else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(steps):
        part = data.train[step * 100:(step + 1) * 100]
        batch = build_session_batch(part.items, part.ptr, targets=part.targets)
        loss = torch.nn.functional.cross_entropy(model(batch)[:, 1:], batch.y - 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_onnx_equals_torch_on_real_sessions(tmp_path, diginetica):
    model = _trained(diginetica)
    path = tmp_path / 'best.pt'
    save_checkpoint(path, model=model, model_name='tagnn', num_items=diginetica.num_items,
                    train_config={'weighting': 'binary'})
    export_model(path, 'onnx', tmp_path / 'best.onnx')
    torch_rec = Recommender.from_checkpoint(path)
    onnx_rec = Recommender.from_checkpoint(path, backend='onnx')
    sessions = diginetica.test[:1000].to_lists()
    for start in range(0, len(sessions), 250):
        batch = torch_rec._batch(sessions[start:start + 250])
        with torch.no_grad():
            ref = torch_rec.model(batch)
        got = onnx_rec.scorer(batch)
        assert got.shape == ref.shape
        assert (got[:, 1:] - ref[:, 1:]).abs().max() <= 1e-4
        assert torch.isinf(got[:, 0]).all()
        assert_same_top_k(got, ref, 20, atol=1e-4)
    # through the public API, raw ids in and out
    a = torch_rec.recommend(sessions[:50], k=20)
    b = onnx_rec.recommend(sessions[:50], k=20)
    assert [r.items for r in a] == [r.items for r in b]


def test_onnx_backend_checks(tmp_path):
    path = tiny_checkpoint(tmp_path / 'c.pt')
    with pytest.raises(FileNotFoundError, match='tagnn-pyg export --format onnx'):
        Recommender.from_checkpoint(path, backend='onnx')
    with pytest.raises(ValueError, match="backend must be one of"):
        Recommender.from_checkpoint(path, backend='tensorrt')
    other = tiny_checkpoint(tmp_path / 'other.pt', 'srgnn')
    export_model(other, 'onnx', tmp_path / 'c.onnx')
    rec = Recommender.from_checkpoint(other, backend='onnx', onnx_path=tmp_path / 'c.onnx')
    assert rec.recommend([['i3', 'i4'], ['i5']], k=3)[1].items == \
        Recommender.from_checkpoint(other).recommend([['i5']], k=3)[0].items
    with pytest.raises(ValueError, match='retrieval=.mips. needs the torch model'):
        Recommender(None, 60, scorer=rec.scorer, retrieval='mips')


#: The models whose exported copy pads sessions to a fixed length (their
#: SessionTransformer, SessionSelfAttention or GRU, LESSR's graphs; StaticDenseBatch),
#: and STAMP.
PADDED = {
    'tagnnpp-paper': ('tagnnpp', lambda n: TAGNNPlusPlus(n, 16, heads=2, layer='paper')),
    'tagnnpp-released': ('tagnnpp', lambda n: TAGNNPlusPlus(n, 16, heads=2,
                                                            layer='released')),
    'gcsan': ('gcsan', lambda n: GCSAN(n, 16)),
    'gcsan-causal-2heads': ('gcsan', lambda n: GCSAN(n, 16, num_layers=2, heads=2,
                                                     causal=True)),
    'narm': ('narm', lambda n: NARM(n, 16, embedding_channels=8)),
    'gru4rec': ('gru4rec', lambda n: GRU4Rec(n, 16, num_layers=2)),
    'stamp': ('stamp', lambda n: STAMP(n, 16)),
    'lessr': ('lessr', lambda n: LESSR(n, 16)),
}


@pytest.mark.parametrize('case', sorted(PADDED))
def test_padded_models_onnx_and_pt2_equal_torch_on_real_sessions(tmp_path, diginetica,
                                                                  case):
    name, build = PADDED[case]
    torch.manual_seed(0)
    model = _trained(diginetica, model=build(diginetica.num_items))
    path = tmp_path / 'best.pt'
    save_checkpoint(path, model=model, model_name=name, num_items=diginetica.num_items,
                    train_config={'weighting': 'binary'})
    for fmt in ('onnx', 'pt2'):
        side = export_model(path, fmt, tmp_path / f'best.{fmt}')
        assert side['max_session_length'] == (None if name == 'stamp' else 200)
    torch_rec = Recommender.from_checkpoint(path)
    recs = {fmt: Recommender.from_checkpoint(path, backend=fmt) for fmt in ('onnx', 'pt2')}
    assert all(r.max_session_length == 200 for r in recs.values())   # the default too
    sessions = [s for s in diginetica.test[:1000].to_lists() if len(s) <= 200]
    assert len(sessions) >= 990 and max(len(s) for s in sessions) >= 20
    for start in range(0, len(sessions), 250):
        batch = torch_rec._batch(sessions[start:start + 250])
        with torch.no_grad():
            ref = model(batch)                  # the trained model, default path
        for fmt, rec in recs.items():
            got = rec.scorer(batch)
            assert got.shape == ref.shape, fmt
            assert (got[:, 1:] - ref[:, 1:]).abs().max() <= 1e-4, fmt
            assert torch.isinf(got[:, 0]).all(), fmt
            assert_same_top_k(got, ref, 20, atol=1e-4)
    # End to end: the same top-20 scores, the same items up to near-ties.
    want = torch_rec.recommend(sessions[:50], k=20)
    for rec in recs.values():
        for r, w in zip(rec.recommend(sessions[:50], k=20), want):
            assert max(abs(a - b) for a, b in zip(r.scores, w.scores)) <= 1e-4
            swapped_in = set(r.items) - set(w.items)
            assert all(sc >= w.scores[-1] - 1e-4
                       for it, sc in zip(r.items, r.scores) if it in swapped_in)


@pytest.mark.parametrize('name', ['tagnnpp', 'gcsan', 'narm', 'gru4rec', 'lessr'])
def test_padded_export_refuses_longer_sessions(tmp_path, name):
    path = tiny_checkpoint(tmp_path / 'c.pt', name)
    side = export_model(path, 'onnx', tmp_path / 'c.onnx', max_session_length=6)
    assert side['max_session_length'] == 6
    rec = Recommender.from_checkpoint(path, backend='onnx')
    assert rec.max_session_length == 6 and rec.info()['backend'] == 'onnx'
    assert len(rec.recommend([['i3'] * 6], k=3)[0].items) == 3
    with pytest.raises(RecommendError, match='sessions.0. has 7 clicks, more than '
                                             'max_session_length = 6'):
        rec.recommend([['i3'] * 7], k=3)
    with pytest.raises(ValueError, match=r'max_session_length = 7 is more than the 6 '
                                         r'clicks .*--max-session-length 7'):
        Recommender.from_checkpoint(path, backend='onnx', max_session_length=7)
    # the graph itself, fed a longer session, gives NaN for it (never truncated
    # scores) and leaves the other sessions exact
    batch = rec._batch([[3, 4, 5], [7] * 7, [8, 9]])
    got = rec.scorer(batch)
    with torch.no_grad():
        ref = Recommender.from_checkpoint(path).model(batch)
    assert torch.isnan(got[1, 1:]).all()
    assert (got[[0, 2], 1:] - ref[[0, 2], 1:]).abs().max() <= 1e-5


def test_export_latency_benchmark_runs(tmp_path):
    """benchmarks/export_latency.py (docs/serving.md's figures) on a few real
    sessions: every backend scored, the exports equal torch, the report written."""
    import json
    import sys
    from conftest import REPO, SHARED_DATASETS
    require_shared('diginetica')
    sys.path.insert(0, str(REPO / 'benchmarks'))
    try:
        import export_latency
    finally:
        sys.path.remove(str(REPO / 'benchmarks'))
    export_latency.main(['--root', str(SHARED_DATASETS), '--models', 'stamp', 'gcsan',
                         '--sessions', '100', '--batch', '50', '--lengths', '10', '--warmup',
                         '0', '--out', str(tmp_path)])
    result = json.loads((tmp_path / 'export_latency_cpu.json').read_text())
    got = {(r['model'], r['backend'], r['L']) for r in result['rows']}
    assert got == {('stamp', 'torch', None), ('stamp', 'onnx', None), ('stamp', 'pt2', None),
                   ('gcsan', 'torch', None), ('gcsan', 'onnx', 10), ('gcsan', 'pt2', 10)}
    assert all(r['max_abs_diff'] <= 1e-4 and r['ms_per_batch_median'] > 0
               for r in result['rows'])
    assert result['batches'] == 2
    assert '| gcsan | `gcsan` | onnx | 10 |' in (tmp_path / 'export_latency_cpu.md').read_text()


def test_onnxruntime_gets_torchs_thread_count(tmp_path):
    """`serve --threads N` sets torch's threads; the ONNX backend must not take every
    core beside it (onnxruntime's default)."""
    path = tiny_checkpoint(tmp_path / 'c.pt')
    export_model(path, 'onnx', tmp_path / 'c.onnx')
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        rec = Recommender.from_checkpoint(path, backend='onnx')
        assert rec.scorer.session.get_session_options().intra_op_num_threads == 1
    finally:
        torch.set_num_threads(before)
