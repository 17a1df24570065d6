"""Memory of TAGNN scoring as the catalogue grows: 100 sessions against up to 1,000,000 items.

Each measurement runs in a fresh subprocess (``--child``) that builds a TAGNN with
``num_items`` items (d = 100, the released initialisation), a batch of ``--sessions`` random
sessions (lengths 1..``--max-length``), and scores every item for every session in inference
mode with the chunked :class:`~tagnn_pyg.nn.TargetAttention`. Its peak memory is the peak
resident set size of the *whole* child process (Python, torch, the 1M x 100 item table and the
``[100, 1M]`` score matrix included): ``VmHWM`` from ``/proc/self/status``, cross-checked with
``ru_maxrss`` from ``os.wait4`` in the parent. Nothing is ever ``[sessions, items, d]``.

For comparison, the released computation builds ``beta`` ``[B, m, L]`` and the target tensor
``[B, m, d]`` (and a broadcast copy of the ``[m, d]`` table per session): the table lists their
size, which is what the released code would need on top of everything else. With
``--reference-items`` the dense re-implementation is also run (in its own subprocess) at small
catalogue sizes.

Usage::

    python benchmarks/memory_scaling.py                      # writes results/memory_scaling_cpu.*
    python benchmarks/memory_scaling.py --items 10000 100000 1000000 --reference-items 10000
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple


# passive OpenMP waiting: see speed.py (the machine is shared); inherited by the children
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

from tagnn_pyg.utils.memory import current_rss_mib, peak_rss_mib  # noqa: E402 (torch-free)

HERE = Path(__file__).resolve().parent
LIMIT_MIB = 2048.0


def _build_tagnn_pyg(args: argparse.Namespace, num_items: int,
                     sessions: List[List[int]]) -> Tuple[Any, Any, Optional[float], float]:
    """The library's TAGNN and batch: ``(score function, chunk, RSS after import, build s)``."""
    from tagnn_pyg.data import SessionSequences
    from tagnn_pyg.data.batching import build_session_batch
    from tagnn_pyg.models import TAGNN
    rss_after_import = current_rss_mib()
    t0 = time.perf_counter()
    model = TAGNN(num_items, args.hidden, chunk_size=args.chunk_size).eval()
    seqs = SessionSequences.from_lists(sessions)
    batch = build_session_batch(seqs.items, seqs.ptr)
    chunk = args.chunk_size or 'auto (2**23 elements per [positions, chunk] matrix)'
    return (lambda: model(batch)), chunk, rss_after_import, time.perf_counter() - t0


def _build_reference(args: argparse.Namespace, num_items: int,
                     sessions: List[List[int]]) -> Tuple[Any, Any, Optional[float], float]:
    """The released computation and its padded batch, as :func:`_build_tagnn_pyg`."""
    import numpy as np
    from tagnn_pyg.testing.released import (ReleasedSessionData, ReleasedSessionGraph,
                                            released_scores)
    rss_after_import = current_rss_mib()
    t0 = time.perf_counter()
    model = ReleasedSessionGraph(num_items, args.hidden, kind='tagnn').eval()
    data = ReleasedSessionData(sessions, [1] * len(sessions))
    rbatch = data.get_slice(np.arange(len(sessions)))
    return ((lambda: released_scores(model, rbatch, 'cpu')[0]), None, rss_after_import,
            time.perf_counter() - t0)


def child(args: argparse.Namespace) -> Dict[str, Any]:
    """Runs in the subprocess: build, score, report (JSON on stdout)."""
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    num_items = args.num_items + 1  # ids 1..num_items plus padding 0
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, args.max_length + 1, size=args.sessions)
    sessions = [rng.integers(1, num_items, size=n).tolist() for n in lengths]
    torch.manual_seed(0)
    build = _build_tagnn_pyg if args.implementation == 'tagnn_pyg' else _build_reference
    score, chunk, rss_after_import, build_s = build(args, num_items, sessions)
    rss_after_build = current_rss_mib()
    times = []
    with torch.inference_mode():
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            scores = score()
            top = scores.topk(20, dim=1).indices
            times.append(time.perf_counter() - t0)
            finite = bool(torch.isfinite(scores[:, -1000:]).all())
            del scores
    return {
        'implementation': args.implementation,
        'num_items': args.num_items,
        'sessions': args.sessions,
        'positions': int(lengths.sum()),
        'max_length': int(lengths.max()),
        'hidden_channels': args.hidden,
        'chunk_size': chunk,
        'threads': torch.get_num_threads(),
        'omp_wait_policy': os.environ.get('OMP_WAIT_POLICY'),
        'torch': torch.__version__,
        'score_s': round(min(times), 3),
        'score_s_all': [round(t, 3) for t in times],
        'build_s': round(build_s, 3),
        'rss_after_import_mib': round(rss_after_import or 0, 1),
        'rss_after_build_mib': round(rss_after_build or 0, 1),
        'peak_rss_mib': round(peak_rss_mib() or 0, 1),
        'scores_finite': finite,
        'top20_shape': list(top.shape),
    }


def run_child(implementation: str, num_items: int, args: argparse.Namespace,
              chunk_size: Optional[int] = None) -> Dict[str, Any]:
    """Run one measurement in a fresh interpreter; add the kernel's ``ru_maxrss``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), '--child',
           '--implementation', implementation, '--num-items', str(num_items),
           '--sessions', str(args.sessions), '--max-length', str(args.max_length),
           '--hidden', str(args.hidden), '--threads', str(args.threads),
           '--repeats', str(args.repeats)]
    if chunk_size:
        cmd += ['--chunk-size', str(chunk_size)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"child {implementation} num_items={num_items} failed "
                           f"({proc.returncode}):\n{err[-4000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result['ru_maxrss_mib'] = round(usage.ru_maxrss / 1024, 1)  # KiB on Linux
    result['within_2GiB'] = max(result['peak_rss_mib'], result['ru_maxrss_mib']) <= LIMIT_MIB
    # what the released computation materialises for this batch
    B, m, d = args.sessions, num_items, args.hidden
    L = result['max_length']
    result['released_target_tensor_mib'] = round(B * m * d * 4 / 2 ** 20, 1)
    result['released_beta_mib'] = round(B * m * L * 4 / 2 ** 20, 1)
    return result


def markdown(results: List[Dict[str, Any]], command: str) -> str:
    lines = [
        '# Memory scaling: TAGNN scoring 100 sessions against the whole catalogue (CPU)',
        '',
        f'Command: `{command}`  ',
        'Peak = peak RSS of the whole scoring process (interpreter, torch, item table, '
        '`[sessions, items]` scores), VmHWM / ru_maxrss, in a fresh subprocess per row. '
        f'Limit: {LIMIT_MIB:.0f} MiB. "released tensors" = size of `beta` `[B, m, L]` + '
        'target `[B, m, d]` that the released computation would build on top (L = longest '
        'session of the batch; the released code pads L to the data set maximum).',
        '',
        '| implementation | chunk | items | sessions | positions | RSS after import MiB '
        '| peak RSS MiB | within 2 GiB | score time (s) | released tensors MiB |',
        '|---|---|---:|---:|---:|---:|---:|---|---:|---:|',
    ]
    for r in results:
        peak = max(r['peak_rss_mib'], r['ru_maxrss_mib'])
        lines.append(
            f"| {r['implementation']} | {str(r['chunk_size']).split(' ')[0] if r['chunk_size'] else '-'} "
            f"| {r['num_items']:,} | {r['sessions']} | {r['positions']} "
            f"| {r['rss_after_import_mib']:.0f} | {peak:.0f} | {'yes' if r['within_2GiB'] else 'NO'} | {r['score_s']:.2f} "
            f"| {r['released_target_tensor_mib'] + r['released_beta_mib']:,.0f} |")
    return '\n'.join(lines) + '\n'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--items', nargs='+', type=int, default=[10_000, 100_000, 1_000_000],
                   help='catalogue sizes for tagnn_pyg')
    p.add_argument('--reference-items', nargs='*', type=int, default=[10_000],
                   help='catalogue sizes for the dense released re-implementation')
    p.add_argument('--sessions', type=int, default=100)
    p.add_argument('--max-length', type=int, default=20)
    p.add_argument('--hidden', type=int, default=100)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--repeats', type=int, default=2)
    p.add_argument('--chunk-sizes', nargs='+', default=['auto', '2048'],
                   help="TargetAttention chunk sizes to run for tagnn_pyg ('auto': the "
                        "library's default)")
    p.add_argument('--out', type=Path, default=HERE / 'results')
    # internal: one measurement
    p.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--implementation', default='tagnn_pyg', help=argparse.SUPPRESS)
    p.add_argument('--num-items', type=int, default=1_000_000, help=argparse.SUPPRESS)
    p.add_argument('--chunk-size', type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return []
    command = 'python ' + ' '.join(shlex.quote(a) for a in
                                   [sys.argv[0]] + list(argv if argv is not None
                                                        else sys.argv[1:]))
    results = []
    chunks = [None if c == 'auto' else int(c) for c in args.chunk_sizes]
    runs = [('tagnn_pyg', n, c) for n in args.items for c in chunks]
    runs += [('reference', n, None) for n in args.reference_items]
    for impl, n, chunk in runs:
        r = run_child(impl, n, args, chunk)
        r['command'] = command
        r['device'] = 'cpu'
        r['load_avg_1min'] = os.getloadavg()[0]
        results.append(r)
        print(f"{impl:10s} chunk {chunk} items {n:>9,}: peak RSS {r['peak_rss_mib']:8.1f} MiB "
              f"(ru_maxrss {r['ru_maxrss_mib']:.1f}), score {r['score_s']:.2f} s, "
              f"within 2 GiB: {r['within_2GiB']}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / 'memory_scaling_cpu.json').write_text(json.dumps(results, indent=1) + '\n')
    (args.out / 'memory_scaling_cpu.md').write_text(markdown(results, command))
    print(markdown(results, command))
    return results


if __name__ == '__main__':
    main()
