"""Benchmark: building session-graph batches, per-session PyG path vs. vectorised.

On the real Diginetica training set (719,470 prefixes) it times

(a) the reference path: ``SessionData.from_sequence`` for every session plus
    PyG's ``DataLoader`` collation into batches of 100. This is per-session
    Python, so it is run on a random sample and *extrapolated* linearly to the
    full set (labelled as such in the output);
(b) the fast path: ``build_session_batch`` on all 719,470 prefixes at once,
    and a full epoch of ``SessionLoader`` batches (batch 100, shuffled),
    in batches per second.

Usage (from the repository root)::

    python benchmarks/data_pipeline.py [--root ../shared/datasets/diginetica]
        [--device cpu|cuda] [--sample 20000] [--out benchmarks/results]

writes ``data_pipeline_<device>.json`` and ``.md`` in ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch
from torch_geometric.loader import DataLoader

from tagnn_pyg.data import Diginetica, SessionData, SessionLoader, build_session_batch
from tagnn_pyg.data.loading import load_session_data

REPO = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


CPU_TIMES: Dict[int, List[float]] = {}


def timed(fn: Callable[[], Any], device: torch.device, repeat: int = 1) -> List[float]:
    """Wall-clock seconds of ``repeat`` runs; the process CPU seconds of the
    same runs go to ``CPU_TIMES[id(list)]`` (less sensitive to other users of a
    shared machine)."""
    times, cpu = [], []
    for _ in range(repeat):
        sync(device)
        c = time.process_time()
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    CPU_TIMES[id(times)] = cpu
    return times


def main(argv: List[str] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--root', default=str(REPO.parent / 'shared' / 'datasets'
                                              / 'diginetica'))
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch-size', type=int, default=100)
    parser.add_argument('--sample', type=int, default=20000,
                        help='sessions for the (extrapolated) reference path')
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--out', default=str(REPO / 'benchmarks' / 'results'))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    bs = args.batch_size

    load0 = os.getloadavg()
    t = time.perf_counter()
    data = load_session_data(args.root)
    read_s = time.perf_counter() - t
    train = data.train
    n = len(train)
    print(f"read {args.root}: {n} training prefixes, {train.num_clicks} clicks "
          f"({read_s:.2f} s)", flush=True)

    # (a) reference: per-session SessionData + PyG DataLoader, on a sample.
    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(n, generator=gen)[:args.sample]
    sample = train[idx]
    seqs, targets = sample.to_lists(), sample.targets.tolist()
    t, c = time.perf_counter(), time.process_time()
    graphs = [SessionData.from_sequence(s, y) for s, y in zip(seqs, targets)]
    ref_build, ref_build_cpu = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    for _ in DataLoader(graphs, batch_size=bs, shuffle=False):
        pass
    ref_collate, ref_collate_cpu = time.perf_counter() - t, time.process_time() - c
    scale = n / len(seqs)
    ref_epoch = (ref_build + ref_collate) * scale
    print(f"(a) reference on {len(seqs)} sessions: from_sequence {ref_build:.2f} s, "
          f"DataLoader {ref_collate:.2f} s -> extrapolated {ref_epoch:.1f} s "
          f"for {n}", flush=True)

    # (b) fast path: everything at once, then the loader.
    items, ptr, tg = train.items.to(device), train.ptr.to(device), train.targets.to(device)
    all_times = timed(lambda: build_session_batch(items, ptr, tg), device, args.repeat)
    print(f"(b) build_session_batch on all {n}: {min(all_times):.2f} s (best of "
          f"{args.repeat})", flush=True)
    loader = SessionLoader(train, bs, shuffle=True, seed=0, device=device)
    ep_times = timed(lambda: [None for _ in loader], device, args.repeat)
    epoch_s = statistics.median(ep_times)
    print(f"    SessionLoader epoch ({len(loader)} batches of {bs}, shuffled): "
          f"{epoch_s:.2f} s median of {args.repeat} -> {len(loader) / epoch_s:.0f} "
          f"batches/s", flush=True)
    test_times = timed(lambda: [None for _ in SessionLoader(data.test, bs,
                                                            device=device)],
                       device, args.repeat)

    # Processing the PyG data set (read + prefix expansion + all graphs + save).
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / 'raw'
        raw.mkdir()
        for name in ('all_train_seq.txt', 'test.txt'):
            shutil.copyfile(Path(args.root) / name, raw / name)
        c, t = time.process_time(), time.perf_counter()
        Diginetica(tmp, log=False)
        process_s, process_cpu_s = time.perf_counter() - t, time.process_time() - c
        t = time.perf_counter()
        Diginetica(tmp, log=False)
        cached_s = time.perf_counter() - t
    print(f"    Diginetica dataset processing: {process_s:.2f} s wall, "
          f"{process_cpu_s:.2f} s CPU; cached load {cached_s:.3f} s", flush=True)

    dev_name = (torch.cuda.get_device_name(device) if device.type == 'cuda'
                else f'cpu ({cpu_name()}, {os.cpu_count()} cores, '
                     f'{torch.get_num_threads()} torch threads)')
    result = {
        'benchmark': 'data_pipeline',
        'dataset': 'diginetica',
        'device': dev_name,
        'torch': torch.__version__,
        'command': ('python benchmarks/data_pipeline.py ' + ' '.join(
            argv if argv is not None else sys.argv[1:])).strip(),
        'load_average_before': [round(x, 2) for x in load0],
        'load_average_after': [round(x, 2) for x in os.getloadavg()],
        'train_sequences': n,
        'train_clicks': train.num_clicks,
        'batch_size': bs,
        'num_batches': len(loader),
        'read_srgnn_folder_s': round(read_s, 3),
        'reference_sample_sessions': len(seqs),
        'reference_from_sequence_sample_s': round(ref_build, 3),
        'reference_dataloader_sample_s': round(ref_collate, 3),
        'reference_epoch_s_extrapolated': round(ref_epoch, 1),
        'reference_epoch_cpu_s_extrapolated': round((ref_build_cpu + ref_collate_cpu)
                                                    * scale, 1),
        'reference_batches_per_s_extrapolated': round(len(loader) / ref_epoch, 1),
        'build_all_at_once_s': round(min(all_times), 3),
        'build_all_at_once_cpu_s': round(min(CPU_TIMES[id(all_times)]), 3),
        'loader_epoch_s': round(epoch_s, 3),
        'loader_epoch_s_all_runs': [round(x, 3) for x in ep_times],
        'loader_epoch_cpu_s': round(statistics.median(CPU_TIMES[id(ep_times)]), 3),
        'loader_batches_per_s': round(len(loader) / epoch_s, 1),
        'loader_ms_per_batch': round(1000 * epoch_s / len(loader), 3),
        'test_epoch_s': round(statistics.median(test_times), 3),
        'test_sequences': len(data.test),
        'speedup_epoch': round(ref_epoch / epoch_s, 1),
        'dataset_process_s': round(process_s, 2),
        'dataset_process_cpu_s': round(process_cpu_s, 2),
        'dataset_cached_load_s': round(cached_s, 3),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"data_pipeline_{'cpu' if device.type == 'cpu' else device.type}"
    stem.with_suffix('.json').write_text(json.dumps(result, indent=2) + '\n')
    md = [
        '# Data pipeline: session-graph batches on Diginetica',
        '',
        f"Device: {dev_name}; torch {torch.__version__}. Load average before/after: "
        f"{result['load_average_before']} / {result['load_average_after']} "
        f"(shared machine: timings are noisy).",
        '',
        f"Command: `{result['command']}`",
        '',
        f"{n:,} training prefixes ({train.num_clicks:,} clicks), batch {bs} "
        f"({len(loader):,} batches per epoch).",
        '',
        '| path | wall time for one epoch of batches | process CPU time | batches/s (wall) |',
        '|---|---|---|---|',
        f"| `SessionData.from_sequence` per session + PyG `DataLoader` "
        f"(**extrapolated** from {len(seqs):,} sessions: {ref_build:.2f} s + "
        f"{ref_collate:.2f} s) | {ref_epoch:.1f} s | "
        f"{result['reference_epoch_cpu_s_extrapolated']} s | "
        f"{result['reference_batches_per_s_extrapolated']} |",
        f"| `SessionLoader` (shuffled, `build_session_batch` per batch; median of "
        f"{args.repeat}) | {epoch_s:.2f} s | {result['loader_epoch_cpu_s']} s | "
        f"{result['loader_batches_per_s']} |",
        f"| `build_session_batch` on all {n:,} prefixes at once (best of "
        f"{args.repeat}) | {min(all_times):.2f} s | "
        f"{result['build_all_at_once_cpu_s']} s | - |",
        '',
        f"Speed-up of the loader over the per-session path: "
        f"{result['speedup_epoch']}x. Test set ({len(data.test):,} prefixes) "
        f"through the loader: {result['test_epoch_s']} s. Reading the SR-GNN "
        f"pickles (safe unpickler + prefix expansion): {read_s:.2f} s.",
        '',
        f"`Diginetica(root)` processing (read, expand, build and save all "
        f"{n:,} + {len(data.test):,} graphs): {process_s:.2f} s wall, "
        f"{process_cpu_s:.2f} s CPU; loading the cache afterwards: "
        f"{cached_s:.3f} s.",
        '',
    ]
    stem.with_suffix('.md').write_text('\n'.join(md))
    print(json.dumps(result, indent=2))
    return result


if __name__ == '__main__':
    main()
