"""Scoring latency of the exported backends against torch, side by side in one run:
``model(batch)`` (torch, the training path), the ONNX file under onnxruntime and the
``torch.export`` program, for every exportable model at its preset's size, on real
Diginetica test sessions::

    python benchmarks/export_latency.py --root ../shared/datasets --lengths 50 200

The models are randomly initialised at their presets' sizes (latency does not depend on
the weights; the scores are compared with torch's as a check). The models that pad
sessions in their exported copy (TAGNN++, GC-SAN, NARM, GRU4Rec, LESSR:
``StaticDenseBatch``) are exported once per ``--lengths`` L, which shows what the fixed
length costs; SR-GNN, TAGNN and STAMP take any length and are exported once. Every
backend scores the same prebuilt batches (``--batch`` sessions each, the graphs built
once by ``build_session_batch``, not timed) of the first ``--sessions`` test sessions
with at most min(L) clicks, after ``--warmup`` untimed batches. Results go to
``<out>/export_latency_cpu.json`` and ``.md`` with the command line.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from serve_report import write_report

HERE = Path(__file__).resolve().parent
#: Models whose exported copy pads sessions to a fixed length.
PADDED = ('tagnnpp', 'gcsan', 'narm', 'gru4rec', 'lessr')
MODELS = ('srgnn', 'tagnn', 'stamp') + PADDED
PRESETS = {'tagnnpp': 'tagnnpp-paper-diginetica'}


def _time(score: Callable[[Any], torch.Tensor], batches: List[Any],
          warmup: int) -> Dict[str, Any]:
    for batch in batches[:warmup]:
        score(batch)
    ms = []
    for batch in batches:
        t = time.perf_counter()
        score(batch)
        ms.append(1e3 * (time.perf_counter() - t))
    ms.sort()
    return {'ms_per_batch_median': round(statistics.median(ms), 2),
            'ms_per_batch_p90': round(ms[int(0.9 * (len(ms) - 1))], 2)}


def _max_diff(score: Callable[[Any], torch.Tensor], ref: List[torch.Tensor],
              batches: List[Any]) -> float:
    worst = 0.0
    for batch, want in zip(batches, ref):
        got = score(batch)
        worst = max(worst, float((got[:, 1:] - want[:, 1:]).abs().max()))
    return worst


def bench_model(name: str, num_items: int, batches: List[Any], lengths: List[int],
                warmup: int, threads: int, folder: Path) -> List[Dict[str, Any]]:
    from tagnn_pyg.checkpoint import save_checkpoint
    from tagnn_pyg.models import MODELS as ALL
    from tagnn_pyg.presets import get_preset
    from tagnn_pyg.serve import Recommender
    from tagnn_pyg.serve.export import OnnxScorer, Pt2Scorer, export_model

    preset = get_preset(PRESETS.get(name, name))
    torch.manual_seed(0)
    model = ALL[preset.model](num_items, **preset.model_kwargs).eval()
    ckpt = folder / f'{name}.pt'
    save_checkpoint(ckpt, model=model, model_name=preset.model, num_items=num_items,
                    train_config={'weighting': 'binary'})
    rec = Recommender.from_checkpoint(ckpt)
    with torch.no_grad():
        ref = [rec.model(b) for b in batches]
        rows = [{'model': name, 'preset': preset.name, 'backend': 'torch', 'L': None,
                 'max_abs_diff': 0.0, **_time(rec.model, batches, warmup)}]
    for length in (lengths if name in PADDED else [None]):
        for fmt in ('onnx', 'pt2'):
            out = folder / f'{name}_{length}.{fmt}'
            export_model(ckpt, fmt, out, max_session_length=length)
            # onnxruntime with as many threads as torch (its default is every core)
            scorer = OnnxScorer(out, num_threads=threads) if fmt == 'onnx' \
                else Pt2Scorer(out)
            rows.append({'model': name, 'preset': preset.name, 'backend': fmt,
                         'L': length, 'max_abs_diff': _max_diff(scorer, ref, batches),
                         **_time(scorer, batches, warmup)})
    for r in rows:
        r['sessions_per_s'] = round(1e3 * len(batches[0].last) / r['ms_per_batch_median'])
        print(r, flush=True)
    return rows


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data', default='diginetica')
    p.add_argument('--root', default=None, help='folder of the prepared data sets')
    p.add_argument('--models', nargs='+', default=list(MODELS), choices=MODELS)
    p.add_argument('--lengths', type=int, nargs='+', default=[50, 200],
                   help='fixed session lengths L of the padded models\' exports')
    p.add_argument('--sessions', type=int, default=2000)
    p.add_argument('--batch', type=int, default=100)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default=str(HERE / 'results'))
    args = p.parse_args(argv)
    from tagnn_pyg.data.batching import build_session_batch
    from tagnn_pyg.data.loading import load_session_data

    torch.set_num_threads(args.threads)
    data = load_session_data(args.data, root=args.root)
    longest = min(args.lengths)
    sessions = [s for s in data.test[:2 * args.sessions].to_lists()
                if len(s) <= longest][:args.sessions]
    batches = []
    for start in range(0, len(sessions) - args.batch + 1, args.batch):
        part = sessions[start:start + args.batch]
        items = torch.tensor([i for s in part for i in s])
        ptr = torch.tensor([0] + [len(s) for s in part]).cumsum(0)
        batches.append(build_session_batch(items, ptr))
    rows: List[Dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            rows += bench_model(name, data.num_items, batches, args.lengths, args.warmup,
                                args.threads, Path(tmp))
    clicks = sum(len(s) for s in sessions[:len(batches) * args.batch])
    command = 'python benchmarks/export_latency.py ' + shlex.join(
        sys.argv[1:] if argv is None else argv)
    result = {'command': command, 'device': f'cpu ({platform.machine()})',
              'threads': args.threads, 'torch': torch.__version__, 'data': args.data,
              'batches': len(batches), 'batch': args.batch,
              'mean_clicks_per_session': round(clicks / (len(batches) * args.batch), 2),
              'cpu_count': os.cpu_count(),
              'load_average_1min': [round(load_before, 2), round(os.getloadavg()[0], 2)],
              'rows': rows}
    print(write_report(
        args.out, 'export_latency_cpu', result,
        'Scoring latency: torch against the exported ONNX and torch.export files (CPU)',
        f"{args.threads} CPU thread(s) for torch and for onnxruntime, torch {torch.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} cores, 1-minute load average "
        f"{result['load_average_1min'][0]} at the start and "
        f"{result['load_average_1min'][1]} at the end (other jobs beside it make the "
        f"figures noisier, the p90 most); {len(batches)} batches of {args.batch} real {args.data} "
        f"test sessions (at most {longest} clicks, "
        f"{result['mean_clicks_per_session']} on average), all {data.num_items - 1:,} "
        f"items scored; graphs built once beforehand (not timed), {args.warmup} warm-up "
        "batches. L = the fixed session length of the export (models that pad "
        "sessions); '-' = any length. Randomly initialised models at their presets' "
        "sizes; max |diff| = the largest score difference to torch's.",
        ['model', 'preset', 'backend', 'L', 'ms/batch (median)', 'ms/batch (p90)',
         'sessions/s', 'max abs diff vs torch'],
        '|---|---|---|---:|---:|---:|---:|---:|',
        lambda r: [r['model'], f"`{r['preset']}`", r['backend'], r['L'] or '-',
                   r['ms_per_batch_median'], r['ms_per_batch_p90'], r['sessions_per_s'],
                   f"{r['max_abs_diff']:.1e}"]))


if __name__ == '__main__':
    main()
