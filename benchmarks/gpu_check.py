"""Every GPU figure the docs promise, in one command and one folder, within a time budget.

On one H100/H200 (repository root, the SR-GNN pickles at ``--data-root``)::

    python benchmarks/gpu_check.py --data-root .gpudata/datasets --out $OUT/gpu_check

and, unchanged, on the CPU at a tiny size (what the test suite runs)::

    python benchmarks/gpu_check.py --data-root ../shared/datasets --device cpu --tiny

Stages, in this order, each in its own process with its own time budget (seconds, full size):

==========================  ======  ==========================================================
``speed-diginetica``        150     ``benchmarks/speed.py`` on Diginetica: SR-GNN, TAGNN,
                                    TAGNN++ (presets as in speed.py), library vs the dense
                                    re-implementation of the released code: ms per training
                                    batch, extrapolated epoch, peak memory, evaluation time
``epoch-diginetica``        210     one whole TAGNN training epoch on Diginetica (preset
                                    ``tagnn``, the trainer's own loop, papers' protocol), then
                                    the full test-set evaluation (the trainer's, then once more
                                    alone), peak memory of each
``speed-yoochoose1_64``     150     ``benchmarks/speed.py`` on Yoochoose 1/64
==========================  ======  ==========================================================

The whole run never exceeds ``--budget`` (540 s): a stage gets ``min(its budget, time left)``;
a stage that overruns is stopped and recorded as ``timeout`` (speed.py writes its table after
every row and the epoch stage writes its progress every few hundred batches, so what was
measured before the cut is kept), and a stage for which fewer than 30 s remain is ``skipped``
with the reason. The folder ``--out`` then holds ``gpu_check.json`` (device, command, torch and
CUDA versions, every stage with its status, wall time and figures) and ``gpu_check.md`` (the
same as tables), next to each stage's own files (``speed_<tag>.json``/``.md``,
``epoch_diginetica.json``).

``--tiny``: the same stages on a tiny copy of the real data (the first 400 training sessions
of each data set, ids renumbered to a compact range, 300 of them for training and 100 as test
sessions), a few batches per row: it checks that everything runs and writes its files, in
about a minute on two CPU cores. Its figures mean nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from tagnn_pyg.testing import load_script  # torch-free: --help stays fast

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

#: (stage, budget in seconds at full size)
STAGES = (('speed-diginetica', 150), ('epoch-diginetica', 210), ('speed-yoochoose1_64', 150))
TOTAL_BUDGET_S = 540          # 9 minutes
MIN_STAGE_S = 30              # a stage with less time left is skipped
TINY_SESSIONS, TINY_TRAIN = 400, 300
SPEED_ARGS = {                # speed.py arguments beyond device / data set / output
    'full': ['--reference-batches', '30', '--eval-sequences', '20000'],
    'tiny': ['--batches', '2', '--warmup', '1', '--reference-batches', '1',
             '--eval-sequences', '30', '--threads', '1'],
}


# ----------------------------------------------------------------------------------------
# tiny data
# ----------------------------------------------------------------------------------------
def make_tiny_data(data_root: Path, dest: Path) -> Path:
    """A tiny SR-GNN folder per data set from the real one: its first
    ``TINY_SESSIONS`` training sessions with ids renumbered 1..K in order of first
    appearance, ``TINY_TRAIN`` for training and the rest as test sessions."""
    from tagnn_pyg.data.safe_pickle import safe_pickle_load
    from tagnn_pyg.data.srgnn_format import parse_sessions, write_srgnn_folder

    for name in ('diginetica', 'yoochoose1_64'):
        path = data_root / name / 'all_train_seq.txt'
        sessions = parse_sessions(safe_pickle_load(path), str(path))[:TINY_SESSIONS]
        ids: Dict[int, int] = {}
        compact = [[ids.setdefault(i, len(ids) + 1) for i in s] for s in sessions]
        write_srgnn_folder(dest / name, compact[:TINY_TRAIN], compact[TINY_TRAIN:])
    return dest


# ----------------------------------------------------------------------------------------
# the epoch stage (run in its own process)
# ----------------------------------------------------------------------------------------
def epoch_figures(epoch: Dict[str, Any]) -> Dict[str, Any]:
    """The figures of one epoch record of ``Trainer.fit``'s ``history``."""
    return {
        'batches': epoch['steps'], 'epoch_train_s': epoch['train_time_s'],
        'ms_per_train_batch_mean': round(1e3 * epoch['train_time_s'] / epoch['steps'], 3),
        'train_sequences_per_s': epoch['sequences_per_s'],
        'train_loss': round(epoch['train_loss'], 4),
        'eval_after_epoch_s': epoch['eval_time_s'],
        'test_metrics': {k: round(v, 3) for k, v in epoch['test'].items()}}


def run_epoch_stage(data_root: Path, device_arg: str, out: Path, dataset: str = 'diginetica'
                    ) -> Dict[str, Any]:
    """One whole epoch of the ``tagnn`` preset with the trainer (papers' protocol, so the
    full test set is evaluated after it), then one more full test evaluation alone; wall
    times and peak memory of each. Writes ``epoch_<dataset>.json`` (also while training,
    every 500 batches, with ``complete: false``)."""
    import torch

    from tagnn_pyg.data.srgnn_format import read_srgnn_folder
    from tagnn_pyg.models import MODELS
    from tagnn_pyg.presets import get_preset
    from tagnn_pyg.train import TrainConfig, Trainer, evaluate

    speed = load_script(HERE / 'speed.py')
    device = torch.device(device_arg)
    path = out / f'epoch_{dataset}.json'
    t0 = time.perf_counter()
    data = read_srgnn_folder(data_root / dataset)
    preset = get_preset('tagnn')
    result: Dict[str, Any] = {
        'stage': f'epoch-{dataset}', 'dataset': dataset, 'preset': preset.name,
        'device': speed.device_name(device), 'train_sequences': len(data.train),
        'test_sequences': len(data.test), 'num_items': data.num_items,
        'batch_size': preset.training['batch_size'],
        'load_s': round(time.perf_counter() - t0, 2), 'complete': False}
    torch.manual_seed(0)
    model = MODELS[preset.model](num_items=data.num_items, **preset.model_kwargs)
    cfg = TrainConfig.from_preset(preset, epochs=1, protocol='paper', device=device_arg,
                                  progress=False, seed=0)
    started = time.perf_counter()

    def progress(epoch: int, batch: int) -> None:
        if (batch + 1) % 500 == 0:
            speed.synchronize(device)
            result['batches_done'] = batch + 1
            result['train_s_so_far'] = round(time.perf_counter() - started, 2)
            path.write_text(json.dumps(result, indent=1) + '\n')

    meter = speed.PeakMemory(device)
    meter.start()
    trainer = Trainer(model, cfg, on_batch_end=progress)
    fit = trainer.fit(data.train, test=data.test)
    result.update(epoch_figures(fit['history'][0]),
                  peak_mem_train_and_eval_mib=round(meter.peak_mib(), 1))
    meter.start()
    speed.synchronize(device)
    t1 = time.perf_counter()
    evaluate(model, data.test, batch_size=cfg.batch_size, device=device, progress=False)
    speed.synchronize(device)
    result.update({'eval_alone_s': round(time.perf_counter() - t1, 3),
                   'peak_mem_eval_mib': round(meter.peak_mib(), 1),
                   'peak_mem_method': meter.method, 'complete': True})
    path.write_text(json.dumps(result, indent=1) + '\n')
    return result


# ----------------------------------------------------------------------------------------
# orchestration
# ----------------------------------------------------------------------------------------
def stage_command(stage: str, args: argparse.Namespace, data_root: Path) -> List[str]:
    """The command line of one stage."""
    kind, dataset = stage.split('-', 1)
    if kind == 'speed':
        return [sys.executable, str(HERE / 'speed.py'), '--data-root', str(data_root),
                '--device', args.device, '--datasets', dataset, '--out', str(args.out),
                '--tag', f'{args.device.split(":")[0]}_{dataset}',
                *SPEED_ARGS['tiny' if args.tiny else 'full']]
    return [sys.executable, str(Path(__file__).resolve()), '--stage', stage,
            '--data-root', str(data_root), '--device', args.device, '--out', str(args.out)]


def stage_files(stage: str, args: argparse.Namespace) -> List[Path]:
    kind, dataset = stage.split('-', 1)
    if kind == 'speed':
        return [args.out / f'speed_{args.device.split(":")[0]}_{dataset}.json']
    return [args.out / f'epoch_{dataset}.json']


def run_stage(stage: str, budget_s: float, args: argparse.Namespace, data_root: Path,
              deadline: float) -> Dict[str, Any]:
    """Run one stage in a subprocess, stopped at ``min(budget_s, deadline - now)``."""
    left = deadline - time.perf_counter()
    rec: Dict[str, Any] = {'stage': stage, 'budget_s': round(budget_s, 1)}
    if left < MIN_STAGE_S:
        rec.update(status='skipped', wall_s=0.0,
                   reason=f"only {left:.0f} s of the {args.budget:.0f} s budget left "
                          f"(a stage needs at least {MIN_STAGE_S} s)")
        return rec
    timeout = min(budget_s, left)
    cmd = stage_command(stage, args, data_root)
    rec['command'] = ' '.join(shlex.quote(c) for c in cmd)
    env = dict(os.environ, PYTHONUNBUFFERED='1',
               PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [
                   os.environ.get('PYTHONPATH')] if p]))
    log = args.out / f'{stage}.log'
    t0 = time.perf_counter()
    with open(log, 'w') as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        try:
            code = proc.wait(timeout=timeout)
            rec['status'] = 'ok' if code == 0 else 'failed'
            if code != 0:
                rec['reason'] = f"exit status {code}; see {log.name}"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rec['status'] = 'timeout'
            rec['reason'] = (f"stopped after {timeout:.0f} s (its budget"
                             + (")" if timeout == budget_s else ", cut to the time left)")
                             + "; partial figures kept")
    rec['wall_s'] = round(time.perf_counter() - t0, 1)
    rec['log'] = log.name
    figures = []
    for path in stage_files(stage, args):
        if path.exists():
            try:
                figures.append(json.loads(path.read_text()))
            except ValueError:   # cut off while writing it
                rec['reason'] = rec.get('reason', '') + f"; {path.name} unreadable"
                continue
            rec.setdefault('files', []).append(path.name)
    rec['figures'] = figures[0] if len(figures) == 1 else figures
    if rec['status'] != 'ok':
        tail = log.read_text().strip().splitlines()[-5:]
        rec['log_tail'] = tail
    print(f"[{stage}] {rec['status']} in {rec['wall_s']:.0f} s (budget {timeout:.0f} s)"
          + (f": {rec['reason']}" if 'reason' in rec else ''), flush=True)
    return rec


def environment(device_arg: str) -> Dict[str, Any]:
    import torch
    env: Dict[str, Any] = {'torch': torch.__version__, 'python': platform.python_version(),
                           'host': platform.node(), 'cpu_count': os.cpu_count()}
    dev = torch.device(device_arg)
    if dev.type == 'cuda':
        props = torch.cuda.get_device_properties(dev)
        env.update(device=props.name, cuda=torch.version.cuda,
                   gpu_memory_gib=round(props.total_memory / 2 ** 30, 1))
    else:
        env['device'] = 'cpu'
    try:
        import torch_geometric
        env['torch_geometric'] = torch_geometric.__version__
    except ImportError:  # pragma: no cover - a hard dependency
        pass
    return env


def markdown(summary: Dict[str, Any]) -> str:
    """``gpu_check.md``: the stages, the speed table, the epoch figures."""
    env = summary['environment']
    lines = [f"# GPU check ({env['device']}{', tiny size' if summary['tiny'] else ''})", '',
             f"Command: `{summary['command']}`  ",
             f"torch {env['torch']}" + (f", CUDA {env['cuda']}, {env['gpu_memory_gib']} GiB"
                                        if 'cuda' in env else '')
             + f", {summary['date']}; total {summary['wall_s']:.0f} s of a "
             f"{summary['budget_s']:.0f} s budget.", '',
             '| stage | status | wall (s) | budget (s) | note |', '|---|---|---:|---:|---|']
    for s in summary['stages']:
        lines.append(f"| {s['stage']} | {s['status']} | {s['wall_s']:.0f} | "
                     f"{s['budget_s']:.0f} | {s.get('reason', '')} |")
    speed_markdown = load_script(HERE / 'speed.py').markdown
    for s in summary['stages']:
        rows = s.get('figures') if s['stage'].startswith('speed-') else None
        if rows:
            lines += ['', speed_markdown(rows, rows[0]['command']).replace('# Speed',
                                                                           '## Speed')]
    for s in summary['stages']:
        ep = s.get('figures') if s['stage'].startswith('epoch-') else None
        if not ep:
            continue
        lines += ['', f"## One TAGNN training epoch, {ep['dataset']} (preset {ep['preset']}, "
                  f"the trainer's loop)", '']
        if ep.get('complete'):
            lines += ['| batches | epoch (s) | ms / batch (mean) | sequences / s | '
                      'test eval after the epoch (s) | test eval alone (s) | '
                      'peak train+eval MiB | peak eval MiB | HR@20 | MRR@20 |',
                      '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
                      f"| {ep['batches']} | {ep['epoch_train_s']:.1f} | "
                      f"{ep['ms_per_train_batch_mean']:.2f} | {ep['train_sequences_per_s']:.0f} "
                      f"| {ep['eval_after_epoch_s']:.2f} | {ep['eval_alone_s']:.2f} | "
                      f"{ep['peak_mem_train_and_eval_mib']:.0f} | {ep['peak_mem_eval_mib']:.0f} "
                      f"| {ep['test_metrics'].get('HR@20', float('nan')):.2f} | "
                      f"{ep['test_metrics'].get('MRR@20', float('nan')):.2f} |", '',
                      f"{ep['test_sequences']} test sequences, full ranking over "
                      f"{ep['num_items'] - 1} items. Peak memory: {ep['peak_mem_method']}."]
        elif 'batches_done' in ep:
            lines.append(f"Incomplete: {ep['batches_done']} batches in "
                         f"{ep['train_s_so_far']:.1f} s before the stage was stopped.")
        else:
            lines.append('Incomplete: no batch figures were written.')
    return '\n'.join(lines) + '\n'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    import torch
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--data-root', type=Path, default=Path('../shared/datasets'),
                   help='folder with diginetica/ and yoochoose1_64/ (SR-GNN pickles)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--tiny', action='store_true',
                   help='tiny data and a few batches per row (checks that it runs)')
    p.add_argument('--budget', type=float, default=TOTAL_BUDGET_S,
                   help='seconds for the whole run (stage budgets are cut to fit)')
    p.add_argument('--stages', nargs='+', default=[s for s, _ in STAGES],
                   choices=[s for s, _ in STAGES])
    p.add_argument('--out', type=Path, default=None,
                   help='output folder (default: benchmarks/results/gpu_check_<device>)')
    p.add_argument('--stage', default=None, help=argparse.SUPPRESS)  # internal
    args = p.parse_args(argv)
    if args.out is None:
        args.out = HERE / 'results' / (f"gpu_check_{args.device.split(':')[0]}"
                                       + ('_tiny' if args.tiny else ''))
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    if args.stage is not None:   # one stage, in its own process
        dataset = args.stage.split('-', 1)[1]
        return run_epoch_stage(args.data_root, args.device, args.out, dataset)
    start = time.perf_counter()
    deadline = start + args.budget
    command = 'python ' + ' '.join(shlex.quote(a) for a in (
        [sys.argv[0]] + (list(argv) if argv is not None else sys.argv[1:])))
    args.out.mkdir(parents=True, exist_ok=True)
    data_root = args.data_root
    if args.tiny:
        data_root = make_tiny_data(args.data_root, args.out / 'tiny_data')
    # a full-size budget of B seconds becomes B * budget / TOTAL_BUDGET_S with --budget
    scale = args.budget / TOTAL_BUDGET_S
    summary: Dict[str, Any] = {
        'command': command, 'tiny': args.tiny, 'budget_s': args.budget,
        'data_root': str(args.data_root), 'environment': environment(args.device),
        'date': time.strftime('%Y-%m-%d %H:%M:%S %Z'), 'stages': []}
    for stage, budget in STAGES:
        if stage not in args.stages:
            continue
        summary['stages'].append(run_stage(stage, budget * scale, args, data_root, deadline))
        summary['wall_s'] = round(time.perf_counter() - start, 1)
        (args.out / 'gpu_check.json').write_text(json.dumps(summary, indent=1) + '\n')
        (args.out / 'gpu_check.md').write_text(markdown(summary))
    summary['wall_s'] = round(time.perf_counter() - start, 1)
    (args.out / 'gpu_check.json').write_text(json.dumps(summary, indent=1) + '\n')
    (args.out / 'gpu_check.md').write_text(markdown(summary))
    print(markdown(summary))
    print(f"wrote {args.out}/gpu_check.json/.md in {summary['wall_s']:.0f} s", flush=True)
    return summary


if __name__ == '__main__':
    main()
