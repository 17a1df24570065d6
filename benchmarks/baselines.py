"""POP, S-POP and Item-KNN on the full Diginetica and Yoochoose 1/64 test sets.

Fits every baseline on the training *sessions* (``all_train_seq.txt``), ranks the
target of every test sequence (``test.txt``) among all items (ties against the
model, :mod:`tagnn_pyg.metrics`) and writes

* ``benchmarks/results/baselines.json``: one record per (model, dataset) with
  the metrics in percent, the papers' figures, times, device and command;
* ``benchmarks/results/baselines.md``: the same as a markdown table.

Usage::

    python benchmarks/baselines.py                       # everything, CPU
    python benchmarks/baselines.py --datasets diginetica --methods spop
    python benchmarks/baselines.py --device cuda --chunk-size 4096
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from tagnn_pyg.baselines import BASELINES
from tagnn_pyg.metrics import TopKMetrics

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / 'shared' / 'datasets'
RESULTS = REPO / 'benchmarks' / 'results'
KS = (5, 10, 20)
NAMES = {'pop': 'POP', 'spop': 'S-POP', 'itemknn': 'Item-KNN'}
DATASET_NAMES = {'diginetica': 'Diginetica', 'yoochoose1_64': 'Yoochoose 1/64'}
# HR@20 (the papers' P@20) / MRR@20, percent: TAGNN paper Table 2 (= SR-GNN's).
PAPER = {
    ('pop', 'diginetica'): (0.89, 0.20),
    ('spop', 'diginetica'): (21.06, 13.68),
    ('itemknn', 'diginetica'): (35.75, 11.57),
    ('pop', 'yoochoose1_64'): (6.71, 1.65),
    ('spop', 'yoochoose1_64'): (30.44, 18.35),
    ('itemknn', 'yoochoose1_64'): (51.60, 21.81),
}


def load_pickle(path: Path) -> Any:
    """Restricted unpickling (lists, tuples, ints only) of an SR-GNN file."""
    from tagnn_pyg.data.safe_pickle import safe_pickle_load
    return safe_pickle_load(path)


def load(root: Path, name: str) -> Tuple[List[List[int]], torch.Tensor, torch.Tensor,
                                         torch.Tensor, int]:
    """Training sessions, test (items, ptr, targets) and num_items of a folder."""
    folder = root / name
    sessions = load_pickle(folder / 'all_train_seq.txt')
    seqs, targets = load_pickle(folder / 'test.txt')
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    items = np.fromiter((i for s in seqs for i in s), dtype=np.int64,
                        count=int(lengths.sum()))
    ptr = np.concatenate([[0], np.cumsum(lengths)])
    targets = np.asarray(targets, dtype=np.int64)
    max_train = max(max(s) for s in sessions)
    num_items = int(max(max_train, items.max(), targets.max())) + 1
    return (sessions, torch.from_numpy(items), torch.from_numpy(ptr),
            torch.from_numpy(targets), num_items)


def make_batch(items: torch.Tensor, ptr: torch.Tensor, targets: torch.Tensor,
               device: torch.device) -> Any:
    """A PyG batch of SessionData for sequences ``ptr[0]..ptr[-1]``."""
    ptr = ptr - ptr[0]
    try:
        from tagnn_pyg.data.batching import build_session_batch
    except ImportError:  # fall back to PyG collation
        from torch_geometric.data import Batch

        from tagnn_pyg.data import SessionData
        data = [SessionData.from_sequence(items[ptr[b]:ptr[b + 1]], int(targets[b]))
                for b in range(targets.numel())]
        return Batch.from_data_list(data).to(device)
    return build_session_batch(items, ptr, targets, device=device)


def evaluate(model: Any, items: torch.Tensor, ptr: torch.Tensor, targets: torch.Tensor,
             chunk_size: int, device: torch.device) -> Dict[str, float]:
    metrics = TopKMetrics(KS)
    num = targets.numel()
    for start in range(0, num, chunk_size):
        end = min(start + chunk_size, num)
        batch = make_batch(items[ptr[start]:ptr[end]], ptr[start:end + 1],
                           targets[start:end], device)
        with torch.no_grad():
            scores = model(batch)
        metrics.update(scores, batch.y)
    return metrics.compute()


def device_name(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'CPU ({platform.processor() or platform.machine()}, ' \
           f'{torch.get_num_threads()} threads)'


def write_markdown(records: List[Dict[str, Any]], path: Path) -> None:
    lines = [
        '# Baselines on the full test sets',
        '',
        'Full ranking over all items, ties counted against the model; metrics in '
        'percent (HR@K is the papers\' P@K / Recall@K). Fitted on the training '
        'sessions (`all_train_seq.txt`); every test sequence of `test.txt` '
        'evaluated. "paper" = the TAGNN/SR-GNN tables (HR@20 / MRR@20).',
        '',
        '| model | dataset | HR@5 | HR@10 | HR@20 | MRR@5 | MRR@10 | MRR@20 | '
        'NDCG@20 | paper HR@20 / MRR@20 | test cases | fit s | eval s | device |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for r in records:
        m = r['metrics']
        p = r['paper']
        lines.append(
            f"| {r['model_name']} | {DATASET_NAMES.get(r['dataset'], r['dataset'])} | "
            + ' | '.join(f"{m[k]:.2f}" for k in ('HR@5', 'HR@10', 'HR@20', 'MRR@5',
                                                  'MRR@10', 'MRR@20', 'NDCG@20'))
            + f" | {p['HR@20']:.2f} / {p['MRR@20']:.2f} | {r['test_cases']:,} | "
            f"{r['fit_s']:.1f} | {r['eval_s']:.1f} | {r['device']} |")
    cmds = sorted({r['command'] for r in records})
    lines += ['', 'Command' + ('s' if len(cmds) > 1 else '') + ':', '']
    lines += [f'    {c}' for c in cmds]
    path.write_text('\n'.join(lines) + '\n')


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', type=Path, default=DEFAULT_ROOT)
    parser.add_argument('--datasets', nargs='+', default=list(DATASET_NAMES),
                        choices=list(DATASET_NAMES))
    parser.add_argument('--methods', nargs='+', default=list(BASELINES),
                        choices=list(BASELINES))
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--chunk-size', type=int, default=1000)
    parser.add_argument('--out', type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    command = 'python ' + ' '.join(shlex.quote(a) for a in
                                   ['benchmarks/baselines.py'] + sys.argv[1:])

    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / 'baselines.json'
    records: List[Dict[str, Any]] = []
    if json_path.exists():  # keep the rows this run does not redo
        records = [r for r in json.loads(json_path.read_text())
                   if not (r['dataset'] in args.datasets and r['model'] in args.methods)]

    for name in args.datasets:
        t0 = time.perf_counter()
        sessions, items, ptr, targets, num_items = load(args.root, name)
        print(f'{name}: {len(sessions):,} training sessions, {targets.numel():,} test '
              f'sequences, {num_items:,} item ids (load {time.perf_counter() - t0:.1f} s)',
              flush=True)
        for method in args.methods:
            t0 = time.perf_counter()
            model = BASELINES[method]().fit(sessions, num_items).to(device)
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            metrics = evaluate(model, items, ptr, targets, args.chunk_size, device)
            eval_s = time.perf_counter() - t0
            hr, mrr = PAPER[(method, name)]
            record = {
                'model': method, 'model_name': NAMES[method], 'variant': repr(model),
                'dataset': name, 'protocol': 'full test set, no model selection',
                'metrics': metrics, 'paper': {'HR@20': hr, 'MRR@20': mrr},
                'train_sessions': len(sessions), 'test_cases': int(targets.numel()),
                'num_items': num_items, 'fit_s': round(fit_s, 2),
                'eval_s': round(eval_s, 2), 'wall_s': round(fit_s + eval_s, 2),
                'device': device_name(device), 'torch': torch.__version__,
                'command': command,
            }
            records.append(record)
            print(f"  {NAMES[method]:9s} HR@20 {metrics['HR@20']:6.2f} (paper {hr:5.2f})  "
                  f"MRR@20 {metrics['MRR@20']:6.2f} (paper {mrr:5.2f})  "
                  f"fit {fit_s:.1f} s, eval {eval_s:.1f} s", flush=True)

    order = {(d, m): i for i, (d, m) in enumerate(
        (d, m) for d in DATASET_NAMES for m in BASELINES)}
    records.sort(key=lambda r: order.get((r['dataset'], r['model']), 99))
    json_path.write_text(json.dumps(records, indent=1) + '\n')
    write_markdown(records, args.out / 'baselines.md')
    print(f'wrote {json_path} and {args.out / "baselines.md"}')


if __name__ == '__main__':
    main()
