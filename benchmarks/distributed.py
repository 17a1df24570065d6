"""Benchmark: training examples per second with 1 and 2 processes (torch.distributed).

Times the trainer's own training loop (``Trainer._train_batches``: forward, loss,
backward, gradient all-reduce, optimiser step) on the first ``--batches`` global
batches of a shuffled epoch of the real Diginetica training set, for SR-GNN and
TAGNN, once with one process and once with N processes started by
``torch.multiprocessing`` with the environment torchrun sets (Gloo on the CPU,
NCCL with ``--device cuda``: one GPU per process). The global batch is the same
(``--batch-size``), so N processes do the work of one process per step.

On the CPU the comparison keeps the cores fixed: 1 process with ``--threads``
threads against N processes with ``--threads / N`` threads each (default on a
2-core machine: 1 x 2 threads vs 2 x 1 thread); a first row of 1 process with 1
thread tells the gain of more processes from that of more threads. The speed-up
column is relative to 1 process with ``--threads`` threads. A warm-up of ``--warmup`` batches
precedes the timed ones. Each configuration starts fresh processes that load the
data themselves.

Usage (from the repository root)::

    nice -n 19 python benchmarks/distributed.py [--root ../shared/datasets]
        [--models srgnn tagnn] [--procs 1 2] [--batches 20] [--device cpu]

writes ``distributed_<device>.json`` and ``.md`` in ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, job: Dict[str, Any], out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(job['threads'])
    from tagnn_pyg import distributed
    from tagnn_pyg.data.batching import SessionLoader
    from tagnn_pyg.data.loading import load_session_data
    from tagnn_pyg.models import MODELS
    from tagnn_pyg.train import TrainConfig, Trainer, seed_everything

    ctx = distributed.init_from_env() if world > 1 else distributed.SINGLE
    try:
        t0 = time.perf_counter()
        data = load_session_data('diginetica', root=job['root'])
        load_s = time.perf_counter() - t0
        seed_everything(0)
        model = MODELS[job['model']](num_items=data.num_items)
        cfg = TrainConfig(batch_size=job['batch_size'], device=job['device'], seed=0,
                          progress=False, num_threads=job['threads'])
        trainer = Trainer(model, cfg)
        distributed.broadcast_parameters(trainer.model)
        n = job['batch_size'] * (job['warmup'] + job['batches'])
        train = data.train[:n]  # the first n prefixes; the loader shuffles them
        shard = (ctx.rank, ctx.world_size) if ctx.active else None
        timings = []
        for e, count in ((0, job['warmup']), (1, job['batches'])):
            sub = SessionLoader(train[:count * cfg.batch_size], cfg.batch_size,
                                shuffle=True, device=trainer.device, seed=e, shard=shard)
            if trainer.device.type == 'cuda':
                torch.cuda.synchronize(trainer.device)
            t = time.perf_counter()
            state = trainer._train_batches(sub, e, None)
            if trainer.device.type == 'cuda':
                torch.cuda.synchronize(trainer.device)
            timings.append((time.perf_counter() - t, state.seen, len(sub)))
        seconds, seen, steps = timings[1]
        memory = distributed.all_gather_object(distributed.max_rss_mib())
        if ctx.is_main:
            record = {'model': job['model'], 'processes': world,
                      'threads_per_process': job['threads'], 'device': job['device'],
                      'backend': ctx.backend, 'batch_size': cfg.batch_size,
                      'timed_batches': steps, 'examples': seen,
                      'seconds': round(seconds, 3),
                      'examples_per_s': round(seen / seconds, 1),
                      'ms_per_step': round(1000 * seconds / steps, 1),
                      'data_load_s': round(load_s, 2), 'num_items': data.num_items,
                      'parameters': sum(p.numel() for p in model.parameters()),
                      'max_rss_mib_per_process': memory,
                      'load_avg': round(os.getloadavg()[0], 2)}
            Path(out).write_text(json.dumps(record))
    finally:
        if world > 1:
            distributed.destroy()


def run_config(model: str, world: int, args: argparse.Namespace,
               threads: Optional[int] = None) -> Dict[str, Any]:
    if threads is None:
        threads = max(1, args.threads // world) if args.device == 'cpu' else args.threads
    job = {'model': model, 'threads': threads, 'root': args.root, 'device': args.device,
           'batch_size': args.batch_size, 'batches': args.batches, 'warmup': args.warmup}
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / 'record.json')
        mp.spawn(_worker, args=(world, _free_port(), job, out), nprocs=world, join=True)
        return json.loads(Path(out).read_text())


def markdown(records: List[Dict[str, Any]], command: str) -> str:
    lines = [f"# Distributed training throughput ({records[0]['device']})", '',
             f"Command: `{command}`  ",
             f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} cores, "
             f"nice {os.nice(0)}, "
             f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}. Real Diginetica "
             f"training batches (global batch {records[0]['batch_size']}, "
             f"{records[0]['timed_batches']} timed after a warm-up), OMP_WAIT_POLICY="
             f"{os.environ.get('OMP_WAIT_POLICY', '-')}; the trainer's loop "
             f"(forward, loss, backward, gradient all-reduce, Adam). On the CPU the cores "
             f"are fixed: N processes get 1/N of the threads each. The machine is shared "
             f"(load average column): figures are indicative.", '',
             '| model | processes | threads / process | backend | ex/s | ms / step '
             '| speed-up | peak RSS MiB / process | load avg |',
             '|---|---:|---:|---|---:|---:|---:|---|---:|']
    base: Dict[str, Dict[str, Any]] = {}  # per model: 1 process, most threads
    for r in records:
        if r['processes'] == 1 and r['threads_per_process'] >= \
                base.get(r['model'], {}).get('threads_per_process', 0):
            base[r['model']] = r
    for r in records:
        one = base.get(r['model'])
        speed = f"{r['examples_per_s'] / one['examples_per_s']:.2f}x" if one else ''
        lines.append(f"| {r['model']} | {r['processes']} | {r['threads_per_process']} | "
                     f"{r['backend'] or '-'} | {r['examples_per_s']:,.0f} | "
                     f"{r['ms_per_step']} | {speed} | "
                     f"{', '.join(str(m) for m in r['max_rss_mib_per_process'])} | "
                     f"{r['load_avg']} |")
    return '\n'.join(lines) + '\n'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--root', default=str(REPO.parent / 'shared' / 'datasets'),
                   help='folder holding diginetica/')
    p.add_argument('--models', nargs='+', default=['srgnn', 'tagnn'],
                   choices=['srgnn', 'tagnn', 'tagnnpp'])
    p.add_argument('--procs', nargs='+', type=int, default=[1, 2],
                   help='numbers of processes to compare')
    p.add_argument('--threads', type=int, default=2,
                   help='CPU threads in all (split over the processes on the CPU)')
    p.add_argument('--batch-size', type=int, default=100, help='global batch')
    p.add_argument('--batches', type=int, default=20, help='timed batches')
    p.add_argument('--warmup', type=int, default=2, help='untimed batches first')
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    p.add_argument('--no-one-thread-reference', dest='one_thread', action='store_false',
                   help='on the CPU, skip the extra row of 1 process with 1 thread (it '
                        'tells the gain of N processes from that of N threads)')
    p.add_argument('--out', type=Path, default=Path(__file__).resolve().parent / 'results')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    args = parse_args(argv)
    # as benchmarks/speed.py: idle OpenMP threads sleep instead of spinning (on a
    # shared machine spinning threads steal the cores the others need)
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    records = []
    for model in args.models:
        configs = [(world, None) for world in args.procs]
        if args.device == 'cpu' and args.one_thread and args.threads > 1:
            configs.insert(0, (1, 1))
        for world, threads in configs:
            record = run_config(model, world, args, threads)
            print(json.dumps(record), flush=True)
            records.append(record)
    command = 'python benchmarks/distributed.py ' + ' '.join(
        sys.argv[1:] if argv is None else list(argv))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f'distributed_{args.device}.json').write_text(
        json.dumps({'command': command.strip(), 'records': records}, indent=1) + '\n')
    (args.out / f'distributed_{args.device}.md').write_text(markdown(records, command.strip()))
    return records


if __name__ == '__main__':
    main()
