"""Load test of ``tagnn-pyg serve`` on the loopback address: throughput and
p50/p95/p99 latency at concurrency 1, 8 and 32, with and without dynamic
batching, with a share of malformed requests::

    python benchmarks/serve_load.py --checkpoint runs/demo/best.pt \\
        --data diginetica --root ../shared/datasets

For each batching setting the script starts the service itself
(``python -m tagnn_pyg serve --host 127.0.0.1 --port FREE_PORT ...``), waits
for ``GET /health``, and for each concurrency sends a fixed number of
``POST /recommend`` requests (``--requests``), stopping early when
``--duration`` seconds have passed: a bounded load, to 127.0.0.1 only. Each
valid request holds one session of the test set (raw item ids, ``k = 20``);
``--malformed`` of them are malformed instead (broken JSON, wrong types,
unknown ids, ``k`` out of range, in turn). A *failure* is a valid request
that is not answered 200, or a malformed one answered anything but 4xx.
Latency percentiles are over the valid requests. Results go to
``<out>/serve_load_cpu.json`` and ``<out>/serve_load_cpu.md`` with the command.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

from serve_report import write_report

HERE = Path(__file__).resolve().parent
HOST = '127.0.0.1'          # the loopback address only: no other traffic
MALFORMED = [
    b'{"sessions": [[1, 2]', b'{"sessions": "1,2", "k": 20}',
    b'{"sessions": [[999999999]], "k": 20}', b'{"sessions": [[1]], "k": 0}',
]
SETTINGS = {'batching': ['--max-batch', '256', '--max-wait-ms', '5'],
            'no-batching': ['--max-batch', '1', '--max-wait-ms', '0']}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _percentile(values: List[float], q: float) -> float:
    if not values:
        return float('nan')
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


async def _load(url: str, bodies: List[Tuple[bytes, bool]], concurrency: int,
                duration: float) -> Dict[str, Any]:
    import httpx
    latencies: List[float] = []
    failures = malformed_4xx = sent = 0
    statuses: Dict[int, int] = {}
    queue = list(reversed(bodies))
    deadline = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        async def worker() -> None:
            nonlocal failures, malformed_4xx, sent
            while queue and time.perf_counter() < deadline:
                body, valid = queue.pop()
                sent += 1
                t = time.perf_counter()
                try:
                    r = await client.post('/recommend', content=body,
                                          headers={'content-type': 'application/json'})
                    status = r.status_code
                except httpx.HTTPError:
                    status = -1
                dt = time.perf_counter() - t
                statuses[status] = statuses.get(status, 0) + 1
                if valid:
                    latencies.append(dt)
                    failures += status != 200
                else:
                    ok = 400 <= status < 500
                    malformed_4xx += ok
                    failures += not ok
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {'concurrency': concurrency, 'requests': sent, 'valid': len(latencies),
            'malformed': sent - len(latencies), 'malformed_4xx': malformed_4xx,
            'failures': failures, 'wall_s': round(wall, 2),
            'throughput_rps': round(sent / wall, 1),
            'p50_ms': round(1000 * _percentile(latencies, 50), 1),
            'p95_ms': round(1000 * _percentile(latencies, 95), 1),
            'p99_ms': round(1000 * _percentile(latencies, 99), 1),
            'statuses': {str(k): v for k, v in sorted(statuses.items())}}


def _bodies(sessions: List[List[int]], n: int, malformed: float) -> List[Tuple[bytes, bool]]:
    out: List[Tuple[bytes, bool]] = []
    every = int(round(1 / malformed)) if malformed > 0 else 0
    for i in range(n):
        if every and i % every == every - 1:
            out.append((MALFORMED[(i // every) % len(MALFORMED)], False))
        else:
            s = sessions[i % len(sessions)]
            out.append((json.dumps({'sessions': [s], 'k': 20}).encode(), True))
    return out


def _start(args: argparse.Namespace, extra: List[str]) -> Tuple[subprocess.Popen, str]:
    import httpx
    port = _free_port()
    cmd = [sys.executable, '-m', 'tagnn_pyg', 'serve', '--checkpoint', args.checkpoint,
           '--host', HOST, '--port', str(port), *extra]
    if args.threads:
        cmd += ['--threads', str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f'http://{HOST}:{port}'
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited: {proc.stderr.read().decode()}")
        try:
            if httpx.get(url + '/health', timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit('the service did not start within 180 s')


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--checkpoint', required=True)
    p.add_argument('--data', default='diginetica', help='sessions to send (its test set)')
    p.add_argument('--root', default=None)
    p.add_argument('--requests', type=int, default=400, help='requests per concurrency')
    p.add_argument('--duration', type=float, default=60.0,
                   help='seconds at most per concurrency')
    p.add_argument('--concurrency', type=int, nargs='+', default=[1, 8, 32])
    p.add_argument('--malformed', type=float, default=0.1, help='share of malformed requests')
    p.add_argument('--threads', type=int, default=None, help='torch threads of the service')
    p.add_argument('--label', default='', help='what the checkpoint is, for the report')
    p.add_argument('--out', default=str(HERE / 'results'))
    args = p.parse_args()
    import httpx

    from tagnn_pyg.data.loading import load_session_data
    test = load_session_data(args.data, root=args.root).test
    sessions = test[:max(args.requests, 1)].to_lists()
    rows = []
    for setting, extra in SETTINGS.items():
        proc, url = _start(args, extra)
        try:
            for c in args.concurrency:
                row = asyncio.run(_load(url, _bodies(sessions, args.requests, args.malformed),
                                        c, args.duration))
                row['setting'] = setting
                health = httpx.get(url + '/health', timeout=5).json()
                row['batching_counters'] = health['batching']
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    command = 'python benchmarks/serve_load.py ' + shlex.join(sys.argv[1:])
    result = {'command': command, 'checkpoint': args.checkpoint, 'label': args.label,
              'host': HOST, 'rows': rows}
    print(write_report(
        args.out, 'serve_load_cpu', result, 'tagnn-pyg serve under load (CPU, loopback)',
        f'Model: {args.label or args.checkpoint}. One session per request, k = 20; '
        f'{args.malformed:.0%} malformed requests; latency over the valid ones. '
        f'batching: `--max-batch 256 --max-wait-ms 5`; no-batching: '
        f'`--max-batch 1 --max-wait-ms 0`. Counters are cumulative per service.',
        ['setting', 'concurrency', 'requests', 'throughput req/s', 'p50 ms', 'p95 ms',
         'p99 ms', 'malformed (4xx)', 'failures', 'batches / queries so far'],
        '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
        lambda r: [r['setting'], r['concurrency'], r['requests'], r['throughput_rps'],
                   r['p50_ms'], r['p95_ms'], r['p99_ms'],
                   f"{r['malformed']} ({r['malformed_4xx']})", r['failures'],
                   f"{r['batching_counters']['batches']} / "
                   f"{r['batching_counters']['queries']}"]))

if __name__ == '__main__':
    main()
