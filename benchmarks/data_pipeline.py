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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

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


@dataclass
class Timings:
    """Wall-clock and process CPU seconds of repeated runs (CPU time is less sensitive to
    other users of a shared machine)."""
    wall: List[float]
    cpu: List[float]


def timed(fn: Callable[[], Any], device: torch.device, repeat: int = 1) -> Timings:
    """:class:`Timings` of ``repeat`` runs of ``fn`` (device work included)."""
    wall, cpu = [], []
    for _ in range(repeat):
        sync(device)
        c = time.process_time()
        t = time.perf_counter()
        fn()
        sync(device)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return Timings(wall, cpu)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--root', default=str(REPO.parent / 'shared' / 'datasets'
                                              / 'diginetica'))
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch-size', type=int, default=100)
    parser.add_argument('--sample', type=int, default=20000,
                        help='sessions for the (extrapolated) reference path')
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--out', default=str(REPO / 'benchmarks' / 'results'))
    return parser.parse_args(argv)


def time_reference(train: Any, sample_size: int, batch_size: int) -> Dict[str, Any]:
    """(a) ``SessionData.from_sequence`` per session + PyG's ``DataLoader``, on a random
    sample of ``sample_size`` sessions of ``train``, extrapolated to all of them."""
    n = len(train)
    gen = torch.Generator().manual_seed(0)
    sample = train[torch.randperm(n, generator=gen)[:sample_size]]
    seqs, targets = sample.to_lists(), sample.targets.tolist()
    t, c = time.perf_counter(), time.process_time()
    graphs = [SessionData.from_sequence(s, y) for s, y in zip(seqs, targets)]
    build, build_cpu = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    for _ in DataLoader(graphs, batch_size=batch_size, shuffle=False):
        pass
    collate, collate_cpu = time.perf_counter() - t, time.process_time() - c
    scale = n / len(seqs)
    ref = dict(sessions=len(seqs), build_s=build, collate_s=collate,
               epoch_s=(build + collate) * scale,
               epoch_cpu_s=(build_cpu + collate_cpu) * scale)
    print(f"(a) reference on {len(seqs)} sessions: from_sequence {build:.2f} s, "
          f"DataLoader {collate:.2f} s -> extrapolated {ref['epoch_s']:.1f} s "
          f"for {n}", flush=True)
    return ref


def time_fast_path(data: Any, batch_size: int, device: torch.device, repeat: int
                   ) -> Dict[str, Any]:
    """(b) ``build_session_batch`` on all training prefixes at once, a shuffled
    ``SessionLoader`` epoch over them, and one over the test set."""
    train, n = data.train, len(data.train)
    items, ptr, tg = train.items.to(device), train.ptr.to(device), train.targets.to(device)
    at_once = timed(lambda: build_session_batch(items, ptr, tg), device, repeat)
    print(f"(b) build_session_batch on all {n}: {min(at_once.wall):.2f} s (best of "
          f"{repeat})", flush=True)
    loader = SessionLoader(train, batch_size, shuffle=True, seed=0, device=device)
    epoch = timed(lambda: [None for _ in loader], device, repeat)
    epoch_s = statistics.median(epoch.wall)
    print(f"    SessionLoader epoch ({len(loader)} batches of {batch_size}, shuffled): "
          f"{epoch_s:.2f} s median of {repeat} -> {len(loader) / epoch_s:.0f} "
          f"batches/s", flush=True)
    test = timed(lambda: [None for _ in SessionLoader(data.test, batch_size, device=device)],
                 device, repeat)
    return dict(at_once=at_once, epoch=epoch, epoch_s=epoch_s, num_batches=len(loader),
                test=test)


def time_dataset_processing(root: Path) -> Dict[str, float]:
    """Processing the PyG data set ``Diginetica`` from a copy of ``root``'s pickles (read +
    prefix expansion + all graphs + save), then loading its cache."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / 'raw'
        raw.mkdir()
        for name in ('all_train_seq.txt', 'test.txt'):
            shutil.copyfile(root / name, raw / name)
        c, t = time.process_time(), time.perf_counter()
        Diginetica(tmp, log=False)
        process_s, process_cpu_s = time.perf_counter() - t, time.process_time() - c
        t = time.perf_counter()
        Diginetica(tmp, log=False)
        cached_s = time.perf_counter() - t
    print(f"    Diginetica dataset processing: {process_s:.2f} s wall, "
          f"{process_cpu_s:.2f} s CPU; cached load {cached_s:.3f} s", flush=True)
    return dict(process_s=process_s, process_cpu_s=process_cpu_s, cached_s=cached_s)


def device_label(device: torch.device) -> str:
    """The GPU's name, or the CPU's with its cores and torch threads."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return (f'cpu ({cpu_name()}, {os.cpu_count()} cores, '
            f'{torch.get_num_threads()} torch threads)')


def summarise(data: Any, read_s: float, ref: Dict[str, Any], fast: Dict[str, Any],
              dataset: Dict[str, float], args: argparse.Namespace,
              argv: Optional[Sequence[str]], load_before: Sequence[float]) -> Dict[str, Any]:
    """The JSON record of one run."""
    train, num_batches, epoch_s = data.train, fast['num_batches'], fast['epoch_s']
    return {
        'benchmark': 'data_pipeline',
        'dataset': 'diginetica',
        'device': device_label(torch.device(args.device)),
        'torch': torch.__version__,
        'command': ('python benchmarks/data_pipeline.py ' + ' '.join(
            argv if argv is not None else sys.argv[1:])).strip(),
        'load_average_before': [round(x, 2) for x in load_before],
        'load_average_after': [round(x, 2) for x in os.getloadavg()],
        'train_sequences': len(train),
        'train_clicks': train.num_clicks,
        'batch_size': args.batch_size,
        'num_batches': num_batches,
        'read_srgnn_folder_s': round(read_s, 3),
        'reference_sample_sessions': ref['sessions'],
        'reference_from_sequence_sample_s': round(ref['build_s'], 3),
        'reference_dataloader_sample_s': round(ref['collate_s'], 3),
        'reference_epoch_s_extrapolated': round(ref['epoch_s'], 1),
        'reference_epoch_cpu_s_extrapolated': round(ref['epoch_cpu_s'], 1),
        'reference_batches_per_s_extrapolated': round(num_batches / ref['epoch_s'], 1),
        'build_all_at_once_s': round(min(fast['at_once'].wall), 3),
        'build_all_at_once_cpu_s': round(min(fast['at_once'].cpu), 3),
        'loader_epoch_s': round(epoch_s, 3),
        'loader_epoch_s_all_runs': [round(x, 3) for x in fast['epoch'].wall],
        'loader_epoch_cpu_s': round(statistics.median(fast['epoch'].cpu), 3),
        'loader_batches_per_s': round(num_batches / epoch_s, 1),
        'loader_ms_per_batch': round(1000 * epoch_s / num_batches, 3),
        'test_epoch_s': round(statistics.median(fast['test'].wall), 3),
        'test_sequences': len(data.test),
        'speedup_epoch': round(ref['epoch_s'] / epoch_s, 1),
        'dataset_process_s': round(dataset['process_s'], 2),
        'dataset_process_cpu_s': round(dataset['process_cpu_s'], 2),
        'dataset_cached_load_s': round(dataset['cached_s'], 3),
    }


def markdown(r: Dict[str, Any], repeat: int) -> str:
    """The record ``r`` of :func:`summarise` as a markdown page."""
    n, batches = r['train_sequences'], r['num_batches']
    return '\n'.join([
        '# Data pipeline: session-graph batches on Diginetica',
        '',
        f"Device: {r['device']}; torch {r['torch']}. Load average before/after: "
        f"{r['load_average_before']} / {r['load_average_after']} "
        f"(shared machine: timings are noisy).",
        '',
        f"Command: `{r['command']}`",
        '',
        f"{n:,} training prefixes ({r['train_clicks']:,} clicks), batch {r['batch_size']} "
        f"({batches:,} batches per epoch).",
        '',
        '| path | wall time for one epoch of batches | process CPU time | batches/s (wall) |',
        '|---|---|---|---|',
        f"| `SessionData.from_sequence` per session + PyG `DataLoader` "
        f"(**extrapolated** from {r['reference_sample_sessions']:,} sessions: "
        f"{r['reference_from_sequence_sample_s']:.2f} s + "
        f"{r['reference_dataloader_sample_s']:.2f} s) | "
        f"{r['reference_epoch_s_extrapolated']:.1f} s | "
        f"{r['reference_epoch_cpu_s_extrapolated']} s | "
        f"{r['reference_batches_per_s_extrapolated']} |",
        f"| `SessionLoader` (shuffled, `build_session_batch` per batch; median of "
        f"{repeat}) | {r['loader_epoch_s']:.2f} s | {r['loader_epoch_cpu_s']} s | "
        f"{r['loader_batches_per_s']} |",
        f"| `build_session_batch` on all {n:,} prefixes at once (best of "
        f"{repeat}) | {r['build_all_at_once_s']:.2f} s | "
        f"{r['build_all_at_once_cpu_s']} s | - |",
        '',
        f"Speed-up of the loader over the per-session path: "
        f"{r['speedup_epoch']}x. Test set ({r['test_sequences']:,} prefixes) "
        f"through the loader: {r['test_epoch_s']} s. Reading the SR-GNN "
        f"pickles (safe unpickler + prefix expansion): {r['read_srgnn_folder_s']:.2f} s.",
        '',
        f"`Diginetica(root)` processing (read, expand, build and save all "
        f"{n:,} + {r['test_sequences']:,} graphs): {r['dataset_process_s']:.2f} s wall, "
        f"{r['dataset_process_cpu_s']:.2f} s CPU; loading the cache afterwards: "
        f"{r['dataset_cached_load_s']:.3f} s.",
        '',
    ])


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    load_before = os.getloadavg()
    t = time.perf_counter()
    data = load_session_data(args.root)
    read_s = time.perf_counter() - t
    print(f"read {args.root}: {len(data.train)} training prefixes, "
          f"{data.train.num_clicks} clicks ({read_s:.2f} s)", flush=True)
    ref = time_reference(data.train, args.sample, args.batch_size)
    fast = time_fast_path(data, args.batch_size, device, args.repeat)
    dataset = time_dataset_processing(Path(args.root))
    result = summarise(data, read_s, ref, fast, dataset, args, argv, load_before)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"data_pipeline_{'cpu' if device.type == 'cpu' else device.type}"
    stem.with_suffix('.json').write_text(json.dumps(result, indent=2) + '\n')
    stem.with_suffix('.md').write_text(markdown(result, args.repeat))
    print(json.dumps(result, indent=2))
    return result


if __name__ == '__main__':
    main()
