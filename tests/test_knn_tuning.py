"""benchmarks/knn_tuning.py's bookkeeping: which rows the test stage reuses,
recomputes or drops (the fitting itself is stubbed out)."""
import argparse
import json
import sys
from types import SimpleNamespace

from conftest import REPO

sys.path.insert(0, str(REPO / 'benchmarks'))
import knn_tuning as kt  # noqa: E402


def test_test_stage_reuses_current_rows_and_replaces_stale_ones(tmp_path, monkeypatch):
    calls = []

    def fake_fit_evaluate(method, params, sessions, num_items, sequences, batch_size):
        calls.append((method, dict(params)))
        hr = 40.0 + len(params)
        return 'model', {k: hr for k in ('HR@5', 'HR@10', 'HR@20', 'MRR@5', 'MRR@10',
                                         'MRR@20', 'NDCG@20')}, 0.1, 0.2

    monkeypatch.setattr(kt, 'fit_evaluate', fake_fit_evaluate)
    monkeypatch.setattr(kt, 'score_dtype', lambda model: 'float64')
    monkeypatch.setattr(kt, 'load_session_data', lambda name, root: SimpleNamespace(
        train_sessions=[[1, 2]], num_items=3, test=[0] * 7))

    def tuned(*points):
        (tmp_path / 'knn_tuning.json').write_text(json.dumps([
            {'dataset': 'diginetica', 'model': m, 'params': p, 'valid_cases': 10,
             'valid': {'HR@20': hr, 'MRR@20': 1.0}} for m, p, hr in points]))

    args = argparse.Namespace(datasets=['diginetica'], methods=['sknn', 'stan'],
                              protocols=['paper', 'honest'], root=tmp_path,
                              batch_size=10, out=tmp_path)

    def rows():
        return sorted((r['model'], r['protocol'], json.dumps(r['params']))
                      for r in json.loads((tmp_path / 'session_knn.json').read_text()))

    tuned(('sknn', {'k': 50}, 40.0), ('sknn', {'k': 200}, 41.0), ('stan', {'k': 9}, 1.0))
    kt.test(args, 'cmd')
    assert rows() == [('sknn', 'honest', '{"k": 200}'), ('sknn', 'paper', '{}'),
                      ('stan', 'honest', '{"k": 9}'), ('stan', 'paper', '{}')]
    assert len(calls) == 4
    # nothing changed: nothing is fitted again
    kt.test(args, 'cmd')
    assert len(calls) == 4
    # the grid chose another SKNN point, and one paper row has float32 scores:
    # exactly those two rows are fitted again, the other two are kept, none is lost
    tuned(('sknn', {'k': 50}, 40.0), ('sknn', {'k': 200}, 41.0), ('sknn', {'k': 500}, 42.0),
          ('stan', {'k': 9}, 1.0))
    records = json.loads((tmp_path / 'session_knn.json').read_text())
    for r in records:
        if r['model'] == 'sknn' and r['protocol'] == 'paper':
            r['scores'] = 'float32'   # refitted first: later rows must not drop it
    (tmp_path / 'session_knn.json').write_text(json.dumps(records))
    kt.test(args, 'cmd')
    assert calls[4:] == [('sknn', {}), ('sknn', {'k': 500})]
    assert rows() == [('sknn', 'honest', '{"k": 500}'), ('sknn', 'paper', '{}'),
                      ('stan', 'honest', '{"k": 9}'), ('stan', 'paper', '{}')]
    assert all(r['scores'] == 'float64'
               for r in json.loads((tmp_path / 'session_knn.json').read_text()))
    assert (tmp_path / 'session_knn.md').exists()
