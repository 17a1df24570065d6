"""Metrics against hand-worked rankings and against PyG's link-prediction metrics."""
import math

import numpy as np
import pytest
import torch

from tagnn_pyg.metrics import Evaluator, TopKMetrics, target_rank

INF = float('inf')


def test_target_rank_hand_worked():
    scores = torch.tensor([
        [-INF, 0.1, 0.9, 0.5, 0.3],  # target 2: best -> rank 1
        [-INF, 0.1, 0.9, 0.5, 0.3],  # target 1: worst -> rank 4
        [-INF, 0.5, 0.9, 0.5, 0.3],  # target 1 ties item 3 -> ties against: rank 3
        [-INF, 0.2, 0.2, 0.2, 0.2],  # all equal -> last (4 ranked items)
        [9.0, 0.1, 0.9, 0.5, 0.3],  # column 0 never counts, whatever its score
        [-INF, -INF, 0.9, -INF, 0.3],  # target 4 = 0.3: -inf never counts above
    ])
    target = torch.tensor([2, 1, 1, 3, 2, 4])
    assert target_rank(scores, target).tolist() == [1, 4, 3, 4, 1, 2]
    assert target_rank(scores, target.view(-1, 1)).tolist() == [1, 4, 3, 4, 1, 2]


def test_topk_metrics_hand_worked():
    # ranks 1, 3 (tie), 6 over 7 items (+ padding column).
    scores = torch.tensor([
        [-INF, 7., 6., 5., 4., 3., 2., 1.],  # target 1 -> rank 1
        [-INF, 7., 6., 6., 4., 3., 2., 1.],  # target 2 ties item 3 -> rank 3
        [-INF, 7., 6., 5., 4., 3., 2., 1.],  # target 6 -> rank 6
    ])
    target = torch.tensor([1, 2, 6])
    m = TopKMetrics(ks=(1, 3, 5))
    m.update(scores[:2], target[:2])
    m.update(scores[2:], target[2:])
    assert m.count == 3
    out = m.compute()
    assert set(out) == {f'{n}@{k}' for n in ('HR', 'MRR', 'NDCG') for k in (1, 3, 5)}
    exp = {
        'HR@1': 100 / 3, 'HR@3': 200 / 3, 'HR@5': 200 / 3,  # rank 6 beyond K=5
        'MRR@1': 100 / 3, 'MRR@3': 100 * (1 + 1 / 3) / 3, 'MRR@5': 100 * (1 + 1 / 3) / 3,
        'NDCG@1': 100 / 3, 'NDCG@3': 100 * (1 + 1 / math.log2(4)) / 3,
        'NDCG@5': 100 * (1 + 0.5) / 3,
    }
    for key, value in exp.items():
        assert out[key] == pytest.approx(value, abs=1e-9), key
    # K boundary: rank 3 counts at K=3 but not at K=2
    m2 = TopKMetrics(ks=(2, 3))
    m2.update(scores[1:2], target[1:2])
    out2 = m2.compute()
    assert out2['HR@2'] == 0 and out2['MRR@2'] == 0 and out2['NDCG@2'] == 0
    assert out2['HR@3'] == 100 and out2['MRR@3'] == pytest.approx(100 / 3)
    m.reset()
    assert m.count == 0
    with pytest.raises(ValueError, match='before any update'):
        m.compute()


def test_all_equal_scores_rank_last():
    m = TopKMetrics(ks=(5, ))
    m.update(torch.zeros(4, 6), torch.tensor([1, 2, 3, 4]))  # 5 items, all tie
    assert m.compute()['HR@5'] == 100.0  # rank 5 = last, still within K = 5
    assert m.compute()['MRR@5'] == pytest.approx(20.0)
    m = TopKMetrics(ks=(4, ))
    m.update(torch.zeros(4, 6), torch.tensor([1, 2, 3, 4]))
    assert m.compute()['HR@4'] == 0.0


def test_errors():
    scores = torch.rand(2, 5)
    with pytest.raises(ValueError, match='NaN'):
        TopKMetrics().update(torch.tensor([[0., float('nan'), 1., 2., 3.]] * 2),
                             torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r'scores of row 1 \(and 1 other rows\)'):
        TopKMetrics().update(torch.tensor([[0., 1., 2.], [0., float('nan'), 1.],
                                           [0., 1., float('nan')]]), torch.tensor([1, 2, 2]))
    with pytest.raises(ValueError, match='item id 5'):
        target_rank(scores, torch.tensor([1, 5]))
    with pytest.raises(ValueError, match='item id 0'):
        target_rank(scores, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match='3 targets for 2'):
        target_rank(scores, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r'\[batch, num_items\]'):
        target_rank(torch.rand(5), torch.tensor([1]))
    with pytest.raises(ValueError, match='integer'):
        target_rank(scores, torch.tensor([1., 2.]))
    with pytest.raises(ValueError, match='positive integer'):
        TopKMetrics(ks=(0, 5))


def test_checks_deferred_off_the_cpu_count_and_report_at_compute(monkeypatch):
    """On a GPU the value checks are counted on the device and reported by
    compute(); the same code runs here with the CPU treated as a device."""
    import tagnn_pyg.metrics as metrics
    monkeypatch.setattr(metrics, 'host_reads_are_free', lambda device: False)
    nan = float('nan')
    good = TopKMetrics(ks=(2, ))
    # the smallest and the largest valid ids are not counted as bad
    good.update(torch.tensor([[-INF, 3., 2., 1.], [-INF, 1., 2., 3.]]), torch.tensor([1, 3]))
    assert good.compute() == {'HR@2': 100.0, 'MRR@2': 100.0, 'NDCG@2': 100.0}
    m = TopKMetrics(ks=(2, ))
    m.update(torch.tensor([[-INF, 3., 2., 1.]] * 3), torch.tensor([0, 4, 1]))  # no raise
    m.update(torch.tensor([[-INF, nan, 2., 1.], [-INF, nan, 1., 1.], [-INF, 1., 2., 3.]]),
             torch.tensor([1, 2, 3]))
    assert m.packed_sums()[-3:].tolist() == [2.0, 2.0, 6.0]   # bad targets, NaN rows, cases
    with pytest.raises(ValueError, match='2 of 6 test cases had a target item id outside'):
        m.compute()
    m = TopKMetrics(ks=(2, ))
    m.update(torch.tensor([[-INF, nan, 2., 1.], [-INF, 1., 2., 3.]]), torch.tensor([1, 3]))
    with pytest.raises(ValueError, match='1 of 2 test cases had NaN scores'):
        m.compute()


def _pyg_metrics(scores, target, k):
    from torch_geometric.metrics import LinkPredHitRatio, LinkPredMRR, LinkPredNDCG
    pred_index_mat = scores[:, 1:].topk(k, dim=1).indices + 1  # item ids, top-k
    edge_label_index = torch.stack([torch.arange(target.numel()), target])
    out = {}
    for name, cls in (('HR', LinkPredHitRatio), ('MRR', LinkPredMRR),
                      ('NDCG', LinkPredNDCG)):
        metric = cls(k=k)
        metric.update(pred_index_mat, edge_label_index)
        out[f'{name}@{k}'] = 100 * float(metric.compute())
    return out


def test_agrees_with_pyg_link_pred_metrics():
    gen = torch.Generator().manual_seed(0)
    num_items = 60
    scores = torch.randperm(400 * num_items, generator=gen).view(400, num_items).float()
    scores[:, 0] = -INF
    target = torch.randint(1, num_items, (400, ), generator=gen)
    # make sure some targets rank near the top so MRR/NDCG are not all zero
    scores[:50].scatter_(1, target[:50].view(-1, 1), 1e9)
    ours = TopKMetrics(ks=(1, 5, 10, 20))
    for chunk in range(0, 400, 64):
        ours.update(scores[chunk:chunk + 64], target[chunk:chunk + 64])
    out = ours.compute()
    for k in (1, 5, 10, 20):
        for key, value in _pyg_metrics(scores, target, k).items():
            assert out[key] == pytest.approx(value, abs=1e-4), key


def test_evaluator_ogb_interface():
    ev = Evaluator('session', ks=(1, 2))
    y_pred = np.array([[0., 3., 2., 1.], [0., 3., 2., 1.]], dtype=np.float32)
    out = ev.eval({'y_true': np.array([[1], [3]]), 'y_pred': y_pred})
    assert out['HR@1'] == 50.0 and out['HR@2'] == 50.0 and out['MRR@2'] == 50.0
    out_t = ev.eval({'y_true': torch.tensor([1, 3]), 'y_pred': torch.from_numpy(y_pred)})
    assert out_t == out
    assert 'y_true' in ev.expected_input_format and 'HR@2' in ev.expected_output_format
    assert ev.eval_metric == 'HR@2'                  # the largest K, as HR@20 by default
    assert Evaluator('session').eval_metric == 'HR@20'
    assert '43098' in Evaluator('diginetica').expected_input_format
    assert 'num_items' in ev.expected_input_format
    assert Evaluator('session', ks=(1, 2), chunk_size=1).eval({'y_true': np.array([[1], [3]]),
                                                              'y_pred': y_pred}) == out
    with pytest.raises(KeyError, match='y_pred'):
        ev.eval({'y_true': np.array([1])})
    with pytest.raises(ValueError, match='2 cases but y_pred has 1 rows'):
        ev.eval({'y_true': np.array([1, 2]), 'y_pred': y_pred[:1]})
    with pytest.raises(ValueError, match='floating'):
        ev.eval({'y_true': np.array([1]), 'y_pred': np.array([[0, 1, 2]])})
    with pytest.raises(ValueError, match='43098 item ids'):
        Evaluator('diginetica').eval({'y_true': np.array([1]), 'y_pred': y_pred[:1]})
    with pytest.raises(ValueError, match="unknown evaluator name 'ogbl-foo'"):
        Evaluator('ogbl-foo')
    # chunking does not change the result
    gen = torch.Generator().manual_seed(1)
    scores, target = torch.rand(50, 30, generator=gen), torch.randint(1, 30, (50, ), generator=gen)
    a = Evaluator('session', chunk_size=7).eval({'y_true': target, 'y_pred': scores})
    b = Evaluator('session').eval({'y_true': target, 'y_pred': scores})
    assert a == pytest.approx(b)


def test_packed_sums_add_like_one_stream():
    """Two halves' packed sums, added, give the metrics of the whole (the
    distributed evaluation adds them with all_reduce)."""
    torch.manual_seed(0)
    scores, target = torch.randn(40, 30), torch.randint(1, 30, (40,))
    whole, a, b = TopKMetrics((5, 20)), TopKMetrics((5, 20)), TopKMetrics((5, 20))
    whole.update(scores, target)
    a.update(scores[:25], target[:25])
    b.update(scores[25:], target[25:])
    total = TopKMetrics((5, 20))
    total.load_packed_sums(a.packed_sums() + b.packed_sums())
    assert total.count == 40
    got, want = total.compute(), whole.compute()
    assert got.keys() == want.keys()
    for key in want:
        assert abs(got[key] - want[key]) < 1e-9, key
    assert TopKMetrics((5, 20)).packed_sums().tolist() == [0.0] * 9
    with pytest.raises(ValueError, match='3 \\* 2 \\+ 3 = 9'):
        total.load_packed_sums(torch.zeros(5))
