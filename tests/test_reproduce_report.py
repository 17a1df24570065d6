"""Aggregation of reproduction runs (``benchmarks/reproduce_report.py``) on
hand-made run records: mean / sample std computed by hand, the papers' figures
table, grouping that never mixes limited and full runs, the faithfulness check,
missing-run commands, splicing into docs/results.md; plus the run plan of
``benchmarks/reproduce.py`` (no training)."""
import json
import math
import sys

import pytest

from conftest import REPO
from tagnn_pyg.testing import load_script

BENCH = REPO / 'benchmarks'
rr = load_script(BENCH / 'reproduce_report.py')


def rec(row='srgnn', dataset='diginetica', protocol='paper', seed=0, hr20=50.0,
        mrr20=17.0, limits=None, preset='srgnn', epochs=12, chosen=None, wall=100.0,
        device='NVIDIA H100'):
    metrics = {m: 1.0 for m in rr.METRICS}
    metrics.update({'HR@20': hr20, 'MRR@20': mrr20})
    return {'row': row, 'model': rr.ROWS[row][0], 'variant': rr.ROWS[row][1],
            'dataset': dataset, 'protocol': protocol, 'seed': seed, 'metrics': metrics,
            'limits': limits, 'preset': {'name': preset} if preset else None,
            'epochs': epochs, 'epoch_chosen': chosen, 'wall_s': wall, 'device': device}


def test_mean_std_by_hand():
    mean, std = rr.mean_std([50.0, 51.0, 52.5])
    assert mean == pytest.approx(51.16666666)
    # sample std: sqrt(((-1.1667)^2 + (-0.1667)^2 + 1.3333^2) / 2)
    assert std == pytest.approx(math.sqrt((1.36111 + 0.02778 + 1.77778) / 2), rel=1e-4)
    assert rr.mean_std([3.0]) == (3.0, None)
    with pytest.raises(ValueError, match='at least one'):
        rr.mean_std([])


def test_groups_seeds_and_keep_limited_runs_apart():
    runs = [rec(seed=0, hr20=50.0), rec(seed=1, hr20=52.0), rec(seed=2, hr20=51.0),
            rec(seed=0, hr20=44.0, limits={'epochs': 1}, epochs=1),
            rec(seed=0, protocol='honest', hr20=49.0)]
    groups = rr.group_runs(runs)
    assert [(g.protocol, g.limits, len(g.runs)) for g in groups] == [
        ('honest', '', 1), ('paper', '', 3), ('paper', '1 epoch', 1)]
    full = groups[1]
    assert full.stat('HR@20') == pytest.approx((51.0, 1.0))
    assert full.seeds == [0, 1, 2]
    # a rerun of the same seed replaces the older record
    again = rr.group_runs(runs[:3] + [rec(seed=1, hr20=55.0)])
    assert again[0].stat('HR@20')[0] == pytest.approx((50 + 55 + 51) / 3)


def test_paper_figures_table():
    assert rr.PAPER[('srgnn', 'diginetica')] == (50.73, 17.59)
    assert rr.PAPER[('tagnn', 'yoochoose1_64')] == (71.02, 31.12)
    assert rr.PAPER[('tagnnpp', 'diginetica')] == (51.86, 17.93)
    assert rr.PAPER[('tagnnpp-GNN', 'yoochoose1_64')] == (71.75, 31.62)
    assert rr.PAPER[('itemknn', 'yoochoose1_64')] == (51.60, 21.81)
    # TAGNN's ablations were only drawn (Figure 2): no numbers to compare with
    assert ('tagnn-L', 'diginetica') not in rr.PAPER
    for row, ds in rr.PAPER:
        assert row in rr.ROWS and ds in rr.DATASETS


def test_match_status():
    beat = rr.group_runs([rec(seed=s, hr20=51.0, mrr20=17.6) for s in range(3)])[0]
    assert rr.match_status(beat) == 'HR@20 ≥, MRR@20 ≥'
    # HR@20 mean 50.0, std 1.0 (paper 50.73 within one sd); MRR 16.0 ± 0 below
    near = rr.group_runs([rec(seed=0, hr20=49.0, mrr20=16.0),
                          rec(seed=1, hr20=50.0, mrr20=16.0),
                          rec(seed=2, hr20=51.0, mrr20=16.0)])[0]
    assert rr.match_status(near) == 'HR@20 within 1 sd, MRR@20 -1.59'
    nopaper = rr.group_runs([rec(row='tagnn-L', preset='tagnn-L')])[0]
    assert rr.match_status(nopaper) == ''


def test_markdown_table_and_faithfulness():
    runs = [rec(seed=s, hr20=50.0 + s, mrr20=17.0) for s in range(3)]
    runs += [rec(seed=0, hr20=44.0, mrr20=14.5, limits={'epochs': 1}, epochs=1,
                 wall=2400, device='CPU (x86_64, 2 threads)'),
             rec(row='pop', protocol='none', preset=None, hr20=0.93, mrr20=0.21,
                 epochs=0)]
    md = rr.render_markdown(runs)
    line = next(l for l in md.splitlines() if l.startswith('| SR-GNN | `srgnn` | paper |'))
    assert '51.00 ± 1.00' in line and '50.73 / 17.59' in line and '3 (0, 1, 2)' in line
    assert 'NVIDIA H100' in line
    pop = next(l for l in md.splitlines() if l.startswith('| POP |'))
    assert '0.93' in pop and '0.89 / 0.20' in pop and 'HR@20 ≥, MRR@20 ≥' in pop
    faith = next(l for l in md.splitlines() if '44.52 / 14.12' in l)
    assert '44.00 / 14.50' in faith and '-0.52 / +0.38' in faith and '| yes |' in faith
    assert '40.0 min' in faith
    limited = next(l for l in md.splitlines() if '| 1 epoch |' in l)
    assert limited.startswith('| Diginetica | SR-GNN | `srgnn` | paper | 1 epoch | ')
    far = rr.faithfulness_lines(rr.group_runs(
        [rec(seed=0, hr20=42.0, mrr20=14.0, limits={'epochs': 1})]))
    assert '| NO |' in far[-1]


def test_missing_runs_and_commands():
    runs = [rec(seed=s) for s in (0, 1)]
    runs.append(rec(seed=2, limits={'epochs': 1}))  # limited runs do not count
    missing = rr.missing_runs(runs, datasets=('diginetica',))
    assert missing[('diginetica', 'srgnn', 'paper')] == [2]
    assert missing[('diginetica', 'srgnn', 'honest')] == [0, 1, 2]
    assert missing[('diginetica', 'pop', 'none')] == [0]
    n_expected = 3 + len(rr.NEURAL_ROWS) * 2 * 3
    assert sum(map(len, missing.values())) == n_expected - 2
    cmds = rr.missing_commands({('diginetica', 'srgnn', 'paper'): [2],
                                ('diginetica', 'tagnn', 'paper'): [2],
                                ('diginetica', 'tagnn', 'honest'): [2],
                                ('diginetica', 'tagnnpp', 'paper'): [2],
                                ('diginetica', 'tagnnpp', 'honest'): [0, 1, 2],
                                ('yoochoose1_64', 'pop', 'none'): [0]})
    assert sorted(cmds) == sorted([
        'python benchmarks/reproduce.py --datasets diginetica --rows srgnn '
        '--protocols paper --seeds 2 --device cuda',
        'python benchmarks/reproduce.py --datasets diginetica --rows tagnn '
        '--protocols honest paper --seeds 2 --device cuda',
        'python benchmarks/reproduce.py --datasets diginetica --rows tagnnpp '
        '--protocols honest --seeds 0 1 2 --device cuda',
        'python benchmarks/reproduce.py --datasets diginetica --rows tagnnpp '
        '--protocols paper --seeds 2 --device cuda',
        'python benchmarks/reproduce.py --datasets yoochoose1_64 --rows pop'])
    # every missing run of an empty results folder is covered by the commands
    everything = rr.missing_commands(rr.missing_runs([]))
    assert len(everything) == 4  # baselines + neural rows, per data set


def test_honest_gap():
    runs = [rec(protocol='paper', hr20=51.0, mrr20=18.0),
            rec(protocol='honest', hr20=50.2, mrr20=17.7)]
    lines = rr.honest_gap_lines(rr.group_runs(runs))
    assert lines[-1] == '| SR-GNN | Diginetica | `srgnn` | -0.80 | -0.30 |'


def test_splice_keeps_prose():
    doc = f"# Results\n\nprose before\n\n{rr.BEGIN}\nold table\n{rr.END}\n\nprose after\n"
    out = rr.splice(doc, 'new table\n')
    assert 'old table' not in out and 'new table' in out
    assert out.startswith('# Results\n\nprose before') and out.endswith('prose after\n')
    assert rr.splice(out, 'new table\n') == out  # idempotent
    appended = rr.splice('# Results\n', 'x\n')
    assert appended.endswith(f'{rr.BEGIN}\nx\n{rr.END}\n')
    with pytest.raises(ValueError, match='marker'):
        rr.splice(f'{rr.BEGIN}\nno end', 'x')


def test_load_runs_and_write_report(tmp_path, monkeypatch):
    res = tmp_path / 'results'
    res.mkdir()
    for s in range(2):
        (res / f'run{s}.json').write_text(json.dumps(rec(seed=s, hr20=50.0 + 2 * s)))
    doc = tmp_path / 'results.md'
    doc.write_text(f'# R\n\n{rr.BEGIN}\n{rr.END}\n\nafter\n')
    # figure skipped (with a message) when matplotlib cannot be imported
    monkeypatch.setitem(sys.modules, 'matplotlib', None)
    block = rr.write_report(res, doc, tmp_path / 'fig.png',
                            curves_figure=tmp_path / 'curves.png')
    assert not (tmp_path / 'fig.png').exists() and not (tmp_path / 'curves.png').exists()
    assert '51.00 ± 1.41' in block and doc.read_text().endswith('after\n')
    (res / 'bad.json').write_text('{"row": "srgnn"}')
    with pytest.raises(ValueError, match='bad.json'):
        rr.load_runs(res)


def test_knn_table(tmp_path):
    records = [{'model_name': 'STAN', 'dataset': 'diginetica', 'protocol': 'honest',
                'params': {'k': 500}, 'eval_s': 47.0, 'device': 'CPU',
                'metrics': {'HR@10': 40.0, 'HR@20': 51.0, 'MRR@10': 17.0,
                            'MRR@20': 18.5, 'NDCG@20': 25.0}},
               {'model_name': 'SKNN', 'dataset': 'diginetica', 'protocol': 'paper',
                'params': {}, 'eval_s': 137.0, 'device': 'CPU',
                'metrics': {'HR@10': 37.0, 'HR@20': 49.0, 'MRR@10': 16.0,
                            'MRR@20': 17.0, 'NDCG@20': 24.0}}]
    path = tmp_path / 'knn.json'
    path.write_text(json.dumps(records))
    lines = rr.knn_lines(rr.load_knn(path))
    # SKNN before STAN; the gap to the published TAGNN (51.31 / 18.03) by hand
    assert lines[2].startswith('| SKNN | Diginetica | paper | 37.00 | 49.00 |')
    assert '| -2.31 / -1.03 | defaults |' in lines[2]
    assert '| -0.31 / +0.47 | k=500 | 47 s | CPU |' in lines[3]
    assert rr.load_knn(tmp_path / 'absent.json') == []
    path.write_text('{"model": "sknn"}')
    with pytest.raises(ValueError, match='knn.json'):
        rr.load_knn(path)
    assert 'Session k-NN' in rr.render_markdown([], knn=records)


def test_figure_data():
    runs = [rec(seed=0, hr20=50.0, mrr20=17.0),
            rec(seed=0, hr20=44.0, mrr20=14.0, limits={'epochs': 1}),
            rec(seed=0, hr20=9.0, mrr20=3.0, limits={'epochs': 1, 'max_train': 10}),
            rec(row='tagnn-L', preset='tagnn-L')]
    assert rr.figure_data(runs) == [
        ('diginetica', 'SR-GNN', 50.0, 17.0, 50.73, 17.59),
        ('diginetica', 'SR-GNN (1 epoch)', 44.0, 14.0, 44.52, 14.12)]


def test_reproduce_plan_and_run_ids():
    reproduce = load_script(BENCH / 'reproduce.py')
    assert reproduce.preset_for('tagnnpp', 'yoochoose1_64') == 'tagnnpp-paper-yoochoose'
    assert reproduce.preset_for('tagnnpp-AGC', 'diginetica', 'released') == \
        'tagnnpp-released-diginetica-AGC'
    assert reproduce.preset_for('tagnn-L+Att', 'diginetica') == 'tagnn-L+Att'
    assert reproduce.preset_for('pop', 'diginetica') is None
    assert reproduce.preset_for('gru4rec', 'diginetica') == 'gru4rec'
    with pytest.raises(ValueError, match='unknown row'):
        reproduce.preset_for('gru4rec-GNN', 'diginetica')
    specs = reproduce.plan(['pop', 'srgnn'], ['diginetica'], ['honest', 'paper'], [0, 1])
    assert [(s.row, s.protocol, s.seed) for s in specs] == [
        ('pop', 'none', 0), ('srgnn', 'honest', 0), ('srgnn', 'honest', 1),
        ('srgnn', 'paper', 0), ('srgnn', 'paper', 1)]
    one = reproduce.plan(['srgnn'], ['diginetica'], ['paper'], [0], epochs=1)[0]
    assert one.run_id == 'diginetica__srgnn__paper__seed0__e1'
    assert one.limits == {'epochs': 1}
    # the released TAGNN++ preset has no positional embeddings: -PE is skipped
    rel = reproduce.plan(['tagnnpp-PE', 'tagnnpp'], ['diginetica'], ['paper'], [0],
                         tagnnpp_preset='released')
    assert [s.run_id for s in rel] == ['diginetica__tagnnpp__released__paper__seed0']
    # the exact emulation of the released code is a row of its own, not a rerun of it
    exact = reproduce.plan(['tagnnpp'], ['yoochoose1_64'], ['paper'], [0], epochs=2,
                           tagnnpp_preset='released-padded')
    assert [(s.preset, s.run_id) for s in exact] == [
        ('tagnnpp-released-padded-yoochoose',
         'yoochoose1_64__tagnnpp__released_padded__paper__seed0__e2')]
    with pytest.raises(ValueError, match='tagnnpp-preset'):
        reproduce.preset_for('tagnnpp', 'diginetica', 'padded')


def test_render_figure_png(tmp_path):
    pytest.importorskip('matplotlib')
    runs = [rec(seed=0, hr20=50.0, mrr20=17.0),
            rec(row='pop', protocol='none', preset=None, hr20=0.9, mrr20=0.2,
                dataset='yoochoose1_64')]
    path = rr.render_figure(runs, tmp_path / 'fig.png')
    assert path is not None and path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert rr.render_figure([rec(row='tagnn-L', preset='tagnn-L')],
                            tmp_path / 'none.png') is None


def curve(*points, lrs=None):
    lrs = lrs or [1e-3] * len(points)
    return [{'epoch': e, 'loss': 1.0, 'lr': lr, 'test': {'HR@20': hr, 'MRR@20': mrr}}
            for (e, hr, mrr), lr in zip(points, lrs)]


def test_per_epoch_curves(tmp_path):
    e1 = rec(row='tagnn', preset='tagnn', limits={'epochs': 1}, hr20=45.0, mrr20=14.5)
    e1['curve'] = curve((1, 45.0, 14.5))
    e2 = rec(row='tagnn', preset='tagnn', limits={'epochs': 2}, hr20=47.0, mrr20=15.0)
    e2['curve'] = curve((1, 45.0, 14.5), (2, 47.0, 15.0), lrs=[1e-3, 1e-4])
    pp = rec(row='tagnnpp', preset='tagnnpp-paper-diginetica', limits={'epochs': 1},
             hr20=40.0, mrr20=12.0)
    pp['curve'] = curve((1, 40.0, 12.0))
    honest = rec(row='srgnn', protocol='honest')      # tests once: no curve
    honest['curve'] = [{'epoch': 1, 'loss': 1.0, 'lr': 1e-3, 'valid': {'HR@20': 30.0}}]
    capped = rec(row='srgnn', limits={'epochs': 1, 'max_train': 10})   # data caps
    capped['curve'] = curve((1, 9.0, 3.0))
    uncapped = rec(row='srgnn', limits={'epochs': 1, 'max_train': None})   # no cap
    uncapped['curve'] = curve((1, 44.0, 14.0))
    changed = rec(row='srgnn', limits={'epochs': 2}, preset='srgnn')    # srgnn preset,
    changed['preset']['training'] = {'lr': 1e-2}                        # other settings
    changed['curve'] = curve((1, 40.0, 13.0), (2, 41.0, 13.5))
    assert [(c.row, c.points) for c in rr.curve_series([uncapped, changed])] == [
        ('srgnn', [(1, 44.0, 14.0)]), ('srgnn', [(1, 40.0, 13.0), (2, 41.0, 13.5)])]
    curves = rr.curve_series([e2, honest, pp, e1, capped])
    # the longest record of the TAGNN run wins; rows in the table's order
    assert [(c.row, c.points) for c in curves] == [
        ('tagnn', [(1, 45.0, 14.5), (2, 47.0, 15.0)]), ('tagnnpp', [(1, 40.0, 12.0)])]
    lines = rr.curve_lines(curves)
    assert lines[2] == '| epoch | TAGNN (`tagnn`) | TAGNN++ (`tagnnpp-paper-diginetica`) |'
    assert lines[4] == '| 1 | 45.00 / 14.50 | 40.00 / 12.00 |'
    assert lines[5] == '| 2 | 47.00 / 15.00 (lr 0.0001) |  |'
    assert lines[6] == '| published (converged) | 51.31 / 18.03 | 51.86 / 17.93 |'
    assert rr.curve_lines([]) == ['No run with per-epoch test figures yet.']
    assert 'Per-epoch test curves' in rr.render_markdown([e1, pp])
    no_lr = rec(row='tagnn', preset='tagnn', limits={'epochs': 2})
    no_lr['curve'] = [{'epoch': e, 'test': {'HR@20': 1.0, 'MRR@20': 1.0}} for e in (1, 2)]
    assert '(lr' not in '\n'.join(rr.curve_lines(rr.curve_series([no_lr])))
    no_lr['curve'][1].pop('epoch')
    no_lr['_file'] = 'x.json'
    with pytest.raises(ValueError, match="x.json: a curve entry .* no 'epoch'"):
        rr.curve_series([no_lr])
    pytest.importorskip('matplotlib')
    path = rr.render_curves_figure([e1, e2, pp], tmp_path / 'curves.png')
    assert path is not None and path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert rr.render_curves_figure([honest], tmp_path / 'none.png') is None


def test_epoch_times_by_hand():
    # One run, epoch by epoch: e1 after 600 s, e2 after 1500 s, e4 after 2700 s
    # (two epochs in one invocation): 10, 15, then 10 and 10 minutes.
    chain = []
    for n, wall in ((1, 600.0), (2, 1500.0), (4, 2700.0)):
        r = rec(row='narm', preset='narm', limits={'epochs': n}, wall=wall,
                device='CPU (x86_64, 1 threads)')
        r['curve'] = curve(*[(e, 40.0, 14.0) for e in range(1, n + 1)])
        r['resumed'] = n > 1
        chain.append(r)
    other_seed = rec(row='narm', preset='narm', seed=1, limits={'epochs': 1}, wall=1200.0,
                     device='CPU (x86_64, 2 threads)')
    other_seed['curve'] = curve((1, 40.0, 14.0))
    honest = rec(row='narm', preset='narm', protocol='honest', wall=60.0)
    honest['curve'] = curve((1, 40.0, 14.0))
    capped = rec(row='narm', preset='narm', limits={'epochs': 1, 'max_train': 10},
                 wall=6.0)
    capped['curve'] = curve((1, 9.0, 3.0))
    times = rr.epoch_times(chain[::-1] + [other_seed, honest, capped])
    assert [(t.row, t.minutes) for t in times] == [('narm', [10.0, 15.0, 10.0, 10.0, 20.0])]
    assert times[0].devices == ['CPU (x86_64, 1 threads)', 'CPU (x86_64, 2 threads)']
    lines = rr.epoch_time_lines(times)
    assert lines[2] == ('| Diginetica | NARM (`narm`) | 5 | 10.0 (10.0-20.0) | '
                        'CPU (x86_64, 1 threads); CPU (x86_64, 2 threads) |')
    # a record trained from scratch beside the older ones starts afresh: by its
    # resumed flag (here its wall time grew), or where the flag is missing, by
    # a wall time that does not grow
    restarted = rec(row='narm', preset='narm', limits={'epochs': 3}, wall=2700.0)
    restarted['curve'] = curve(*[(e, 40.0, 14.0) for e in (1, 2, 3)])
    restarted['resumed'] = False
    assert rr.epoch_times(chain[:2] + [restarted])[0].minutes == [10.0, 15.0, 15.0, 15.0,
                                                                  15.0]
    restarted['wall_s'] = 900.0
    del restarted['resumed']
    assert rr.epoch_times(chain[:2] + [restarted])[0].minutes == [10.0, 15.0, 5.0, 5.0, 5.0]
    no_wall = dict(restarted, wall_s=None)
    assert rr.epoch_times(chain[:2] + [no_wall])[0].minutes == [10.0, 15.0]
    assert rr.epoch_time_lines([]) == ["No timed papers' protocol run yet."]
