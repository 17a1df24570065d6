"""The HTTP service: answers, 4xx JSON errors, dynamic batching equal to
scoring alone, and graceful SIGTERM of a real uvicorn process (needs the
``serve`` extra; skipped without it, run in CI)."""
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serve_utils import require_module, tiny_checkpoint
from tagnn_pyg.serve import Recommender

require_module('fastapi')
httpx = require_module('httpx')

from tagnn_pyg.serve.http import create_app  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def rec(tmp_path):
    return Recommender.from_checkpoint(tiny_checkpoint(tmp_path / 'c.pt'), max_sessions=8,
                                       max_session_length=10, max_k=30)


async def _post_all(app, bodies, raw=False):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url='http://test') as client:
        async def one(body):
            if raw:
                return await client.post('/recommend', content=body,
                                         headers={'content-type': 'application/json'})
            return await client.post('/recommend', json=body)
        return await asyncio.gather(*(one(b) for b in bodies))


def test_recommend_and_health(rec):
    app = create_app(rec)
    [r] = asyncio.run(_post_all(app, [{'sessions': [['i3', 'i4'], ['zz']], 'k': 3,
                                       'unknown': 'drop'}]))
    assert r.status_code == 200
    body = r.json()
    alone = rec.recommend([['i3', 'i4']], k=3)[0]
    assert body['recommendations'][0]['items'] == alone.items
    assert body['recommendations'][1]['fallback'] == 'embedding-norm'
    assert body['recommendations'][1]['unknown'] == ['zz']

    async def get(path):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url='http://test') as c:
            return await c.get(path)
    health = asyncio.run(get('/health')).json()
    assert health['model'] == 'tagnn' and health['num_items'] == 59 and health['version']
    schema = asyncio.run(get('/openapi.json')).json()
    assert '/recommend' in schema['paths']


BAD = [
    (b'{"sessions": [["i3"', 422, 'malformed JSON'),
    (b'[1, 2]', 422, 'valid dictionary'),
    (b'{"sessions": [["i3", 3.5]]}', 422, 'sessions.0.1'),
    (b'{"sessions": "i3"}', 422, 'sessions'),
    (b'{"sessions": [["i3"]], "k": 0}', 422, 'k must be an int in [1, 30], got 0'),
    (b'{"sessions": [["i3"]], "k": 31}', 422, 'got 31'),
    (b'{"sessions": [["i3"]], "k": "5"}', 422, 'k: Input should be a valid integer'),
    (b'{"sessions": [["nope"]]}', 422, "unknown item ids ['nope']"),
    (b'{"sessions": [[]]}', 422, 'sessions[0] is empty'),
    (b'{"sessions": []}', 422, '1..8 sessions, got 0'),
    (json.dumps({'sessions': [['i3']] * 9}).encode(), 422, '1..8 sessions, got 9'),
    (json.dumps({'sessions': [['i3'] * 11]}).encode(), 422, 'max_session_length = 10'),
    (b'{"sessions": [["i3"]], "unknown": "skip"}', 422, 'unknown'),
    (b'{"sessions": [["i3"]], "extra": 1}', 422, 'extra: Extra inputs are not permitted'),
    (b'{"sessions": [["i3"]], "candidates": ["zz"]}', 422, 'candidates holds unknown'),
    (b'{"sessions": [["i3"]], "pad": "' + b'x' * 5000 + b'"}', 413, 'over the limit'),
]


def test_bad_input_is_a_4xx_json_error(rec):
    app = create_app(rec, max_body_bytes=4096)
    replies = asyncio.run(_post_all(app, [b for b, _, _ in BAD], raw=True))
    for (body, status, message), r in zip(BAD, replies):
        assert r.status_code == status, (body[:60], r.status_code, r.text)
        assert message in r.json()['error'], (body[:60], r.json())
    # the service still answers
    [ok] = asyncio.run(_post_all(app, [{'sessions': [['i3']], 'k': 2}]))
    assert ok.status_code == 200


def test_dynamic_batching_equals_scoring_alone(rec):
    app = create_app(rec, max_batch=64, max_wait_ms=50)
    bodies = [{'sessions': [[f"i{(7 * j + t) % 59 + 1}" for t in range(1 + j % 5)]
                            for j in range(r, r + 1 + r % 3)],
               'k': 5 + r % 4, 'exclude_seen': bool(r % 2)} for r in range(24)]
    bodies.append({'sessions': [['i3']], 'k': 3, 'candidates': ['i1', 'i2', 'i5']})
    bodies.append({'sessions': [['zz']], 'k': 3, 'unknown': 'drop'})
    replies = asyncio.run(_post_all(app, bodies))
    stats = app.state.batcher.stats
    assert stats['max_queries'] > 1 and stats['batches'] < len(bodies)   # merged
    for body, r in zip(bodies, replies):
        assert r.status_code == 200, r.text
        opts = {k: v for k, v in body.items() if k != 'sessions'}
        alone = rec.recommend(body['sessions'], **opts)
        for got, ref in zip(r.json()['recommendations'], alone):
            assert got['items'] == ref.items and got['fallback'] == ref.fallback
            assert got['scores'] == pytest.approx(ref.scores, abs=1e-5)


def test_no_batching_answers_alone(rec):
    app = create_app(rec, max_batch=1, max_wait_ms=0)
    bodies = [{'sessions': [['i3', f"i{j + 1}"]], 'k': 4} for j in range(6)]
    replies = asyncio.run(_post_all(app, bodies))
    assert all(r.status_code == 200 for r in replies)
    assert app.state.batcher.stats['max_queries'] == 1


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_sigterm_finishes_requests_in_flight(tmp_path):
    require_module('uvicorn')
    ckpt = tiny_checkpoint(tmp_path / 'c.pt')
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # a 1.5 s wait cap keeps the request in flight when SIGTERM arrives
    proc = subprocess.Popen([sys.executable, '-m', 'tagnn_pyg', 'serve', '--checkpoint',
                             str(ckpt), '--host', '127.0.0.1', '--port', str(port),
                             '--max-wait-ms', '1500', '--max-batch', '1000'],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(url + '/health', timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, 'service did not start'
            time.sleep(0.2)

        async def in_flight():
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                task = asyncio.ensure_future(client.post(
                    '/recommend', json={'sessions': [['i3', 'i4']], 'k': 3}))
                await asyncio.sleep(0.5)
                sent = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                reply = await task
                return reply, time.monotonic() - sent
        reply, waited = asyncio.run(in_flight())
        assert reply.status_code == 200
        assert len(reply.json()['recommendations'][0]['items']) == 3
        # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        assert b'Traceback' not in proc.stdout.read()
        with pytest.raises(httpx.HTTPError):
            httpx.get(url + '/health', timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize('backend', ['onnx', 'pt2'])
def test_serve_options_select_an_exported_backend(tmp_path, backend):
    """`tagnn-pyg serve --backend onnx|pt2 --onnx|--pt2 FILE` serves that file:
    /health names the backend and the answers equal the torch model's."""
    from tagnn_pyg.cli import build_parser
    from tagnn_pyg.cli.serve import config_from_args
    from tagnn_pyg.serve.export import export_model
    from tagnn_pyg.serve.http import build_from_config
    if backend == 'onnx':
        require_module('onnxruntime')
    ckpt = tiny_checkpoint(tmp_path / 'c.pt')
    exported = tmp_path / f'elsewhere.{backend}'       # not the default CKPT.suffix
    export_model(ckpt, backend, exported)
    args = build_parser().parse_args(['serve', '--checkpoint', str(ckpt), '--backend',
                                      backend, f'--{backend}', str(exported)])
    app = build_from_config(config_from_args(args))

    async def health():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url='http://test') as c:
            return await c.get('/health')
    assert asyncio.run(health()).json()['backend'] == backend
    [r] = asyncio.run(_post_all(app, [{'sessions': [['i3', 'i4'], ['i5']], 'k': 5}]))
    want = Recommender.from_checkpoint(ckpt).recommend([['i3', 'i4'], ['i5']], k=5)
    assert [x['items'] for x in r.json()['recommendations']] == [w.items for w in want]
    # without the file at the default place, the default path is named in the error
    args = build_parser().parse_args(['serve', '--checkpoint', str(ckpt), '--backend',
                                      backend])
    with pytest.raises(FileNotFoundError, match=f'c.{backend}'):
        build_from_config(config_from_args(args))
