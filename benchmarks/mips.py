"""Exact scoring against MIPS retrieval + exact re-ranking (``Recommender(...,
retrieval='mips', num_candidates=C)``): recall of the exact top-20, latency per
batch and memory, on Diginetica (a trained checkpoint) and on a synthetic
catalogue of 1,000,000 items (a randomly initialised TAGNN, d = 100)::

    python benchmarks/mips.py --checkpoint runs/demo/best.pt --data diginetica \\
        --root ../shared/datasets --synthetic-items 1000000

Every (catalogue, retrieval, C) runs in its own child process, so that its
peak resident memory (``VmHWM``) is its own; memory is reported as the growth
of the peak over the resident size after the model was loaded (the index, the
score matrices, the chunks of the target attention). The synthetic model is
written once to the temporary folder. Recall@20: the share of
the exact top-20 found in the returned top-20, over all sessions. Results go
to ``<out>/mips_cpu.json`` and ``<out>/mips_cpu.md`` with the command line.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

from serve_report import write_report

HERE = Path(__file__).resolve().parent


def _rss_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    return 0


def _sessions(args: argparse.Namespace, num_items: int) -> List[List[int]]:
    import torch
    if args.catalogue == 'diginetica':
        from tagnn_pyg.data.loading import load_session_data
        data = load_session_data(args.data, root=args.root)
        test = data.test
        step = max(1, len(test) // args.sessions)
        idx = list(range(0, len(test), step))[:args.sessions]
        return test[torch.tensor(idx)].to_lists()
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 10, (args.sessions, ), generator=g)
    return [torch.randint(1, num_items, (int(n), ), generator=g).tolist() for n in lengths]


def child(args: argparse.Namespace) -> Dict[str, Any]:
    import torch

    from tagnn_pyg.serve import Recommender
    torch.set_num_threads(args.threads)
    if args.catalogue == 'diginetica':
        path = args.checkpoint
    else:
        from tagnn_pyg.checkpoint import save_checkpoint
        from tagnn_pyg.models import TAGNN
        import tempfile
        path = Path(tempfile.gettempdir()) / f'tagnn_mips_synthetic_{args.synthetic_items}.pt'
        if not path.exists():
            torch.manual_seed(0)
            save_checkpoint(path, model=TAGNN(args.synthetic_items + 1, 100),
                            model_name='tagnn', num_items=args.synthetic_items + 1)
    candidates = args.candidates[0]
    exact = Recommender.from_checkpoint(path, max_sessions=args.batch)
    base = _rss_kib('VmRSS')
    if args.retrieval == 'mips':
        t = time.perf_counter()
        rec = Recommender(exact.model, exact.num_items, exact.item_ids, retrieval='mips',
                          num_candidates=candidates, max_sessions=args.batch)
        build_s = time.perf_counter() - t
    else:
        rec, build_s = exact, 0.0
    sessions = _sessions(args, exact.num_items)
    times, found = [], []
    for start in range(0, len(sessions), args.batch):
        part = sessions[start:start + args.batch]
        t = time.perf_counter()
        out = rec.recommend(part, k=20)
        times.append(time.perf_counter() - t)
        found.append([r.items for r in out])
    return {'catalogue': args.catalogue, 'num_items': exact.num_items - 1,
            'retrieval': args.retrieval,
            'num_candidates': candidates if args.retrieval == 'mips' else None,
            'batch': args.batch, 'sessions': len(sessions),
            'index_build_s': round(build_s, 3),
            'ms_per_batch_median': round(1000 * sorted(times)[len(times) // 2], 1),
            'ms_per_batch_mean': round(1000 * sum(times) / len(times), 1),
            'peak_mem_growth_mib': round((_rss_kib('VmHWM') - base) / 1024, 1),
            'top20': sum(found, [])}


def run_child(args: argparse.Namespace, catalogue: str, retrieval: str,
              candidates: int) -> Dict[str, Any]:
    cmd = [sys.executable, __file__, '--child', '--catalogue', catalogue,
           '--retrieval', retrieval, '--candidates', str(candidates),
           '--sessions', str(args.sessions), '--batch', str(args.batch),
           '--threads', str(args.threads), '--out', args.out,
           '--synthetic-items', str(args.synthetic_items), '--data', args.data]
    if args.root:
        cmd += ['--root', args.root]
    if args.checkpoint:
        cmd += ['--checkpoint', args.checkpoint]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"child {catalogue}/{retrieval}/{candidates} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--checkpoint', default=None, help='a Diginetica checkpoint')
    p.add_argument('--data', default='diginetica')
    p.add_argument('--root', default=None)
    p.add_argument('--synthetic-items', type=int, default=1_000_000)
    p.add_argument('--candidates', type=int, nargs='+', default=[100, 500, 2000])
    p.add_argument('--sessions', type=int, default=1000)
    p.add_argument('--synthetic-sessions', type=int, default=300)
    p.add_argument('--batch', type=int, default=100)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--out', default=str(HERE / 'results'))
    p.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--catalogue', default='diginetica', help=argparse.SUPPRESS)
    p.add_argument('--retrieval', default='exact', help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    rows: List[Dict[str, Any]] = []
    catalogues = (['diginetica'] if args.checkpoint else []) + \
        (['synthetic'] if args.synthetic_items else [])
    for catalogue in catalogues:
        sessions = args.sessions
        if catalogue == 'synthetic':
            args.sessions = args.synthetic_sessions
        exact = run_child(args, catalogue, 'exact', 0)
        exact_lists = exact.pop('top20')
        rows.append({**exact, 'recall_at_20': 1.0})
        print(json.dumps(rows[-1]), flush=True)
        for c in args.candidates:
            r = run_child(args, catalogue, 'mips', c)
            lists = r.pop('top20')
            hit = sum(len(set(a) & set(b)) for a, b in zip(exact_lists, lists))
            r['recall_at_20'] = round(hit / sum(len(a) for a in exact_lists), 4)
            rows.append(r)
            print(json.dumps(r), flush=True)
        args.sessions = sessions
    command = 'python benchmarks/mips.py ' + shlex.join(sys.argv[1:])
    result = {'command': command, 'device': 'cpu', 'threads': args.threads, 'rows': rows}
    print(write_report(
        args.out, 'mips_cpu', result,
        'MIPS retrieval + exact re-ranking against exact scoring (CPU)',
        f'{args.threads} CPU threads; batches of {args.batch} sessions; recall@20 = share '
        'of the exact top-20 found in the returned top-20; memory = growth of the peak '
        'resident set over the loaded model.',
        ['catalogue', 'items', 'retrieval', 'C', 'recall@20', 'ms/batch (median)',
         'index build s', 'peak memory growth MiB'], '|---|---:|---|---:|---:|---:|---:|---:|',
        lambda r: [r['catalogue'], f"{r['num_items']:,}", r['retrieval'],
                   r['num_candidates'] or '-', f"{r['recall_at_20']:.3f}",
                   r['ms_per_batch_median'], r['index_build_s'], r['peak_mem_growth_mib']]))

if __name__ == '__main__':
    main()
