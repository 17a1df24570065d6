"""``benchmarks/gpu_check.py`` at tiny size on the CPU: every stage runs and every file the
GPU run will write is there, with the figures in it; the time budget stops and skips stages."""
import json
import sys
import time

from conftest import REPO, require_shared
from tagnn_pyg.testing import load_script

gpu_check = load_script(REPO / 'benchmarks' / 'gpu_check.py')


def test_tiny_run_on_cpu_writes_every_figure(tmp_path):
    root = require_shared()
    require_shared('yoochoose1_64')
    out = tmp_path / 'check'
    summary = gpu_check.main(['--data-root', str(root), '--device', 'cpu', '--tiny',
                              '--out', str(out)])
    assert [s['stage'] for s in summary['stages']] == [s for s, _ in gpu_check.STAGES]
    assert all(s['status'] == 'ok' for s in summary['stages']), summary['stages']
    assert summary['wall_s'] < summary['budget_s'] == gpu_check.TOTAL_BUDGET_S
    on_disk = json.loads((out / 'gpu_check.json').read_text())
    assert on_disk['environment']['device'] == 'cpu' and '--tiny' in on_disk['command']
    for name in ('diginetica', 'yoochoose1_64'):
        rows = json.loads((out / f'speed_cpu_{name}.json').read_text())
        assert {(r['model'], r['implementation']) for r in rows} == {
            (m, i) for m in ('srgnn', 'tagnn', 'tagnnpp') for i in ('tagnn_pyg', 'reference')}
        assert all(r['dataset'] == name and r['ms_per_train_batch'] > 0
                   and r['peak_mem_mib'] >= 0 and r['eval_s'] > 0 for r in rows)
    epoch = json.loads((out / 'epoch_diginetica.json').read_text())
    assert epoch['complete'] and epoch['preset'] == 'tagnn'
    assert epoch['batches'] == -(-epoch['train_sequences'] // epoch['batch_size'])
    assert epoch['epoch_train_s'] > 0 and epoch['eval_alone_s'] > 0
    assert 0 <= epoch['test_metrics']['HR@20'] <= 100
    md = (out / 'gpu_check.md').read_text()
    assert md.count('## Speed') == 2 and '## One TAGNN training epoch' in md
    assert 'speed-yoochoose1_64 | ok' in md


def test_budget_stops_and_skips_stages(tmp_path, monkeypatch):
    args = gpu_check.parse_args(['--device', 'cpu', '--out', str(tmp_path), '--budget', '60'])
    monkeypatch.setattr(gpu_check, 'stage_command', lambda stage, a, root: [
        sys.executable, '-c', 'import time; print("working", flush=True); time.sleep(30)'])
    deadline = time.perf_counter() + 40
    t0 = time.perf_counter()
    rec = gpu_check.run_stage('speed-diginetica', 2.0, args, tmp_path, deadline)
    assert time.perf_counter() - t0 < 15
    assert rec['status'] == 'timeout' and 'stopped after 2 s (its budget)' in rec['reason']
    assert rec['log_tail'] == ['working']
    rec = gpu_check.run_stage('epoch-diginetica', 100.0, args, tmp_path,
                              time.perf_counter() + 10)
    assert rec['status'] == 'skipped' and 'only 10 s of the 60 s budget left' in rec['reason']
