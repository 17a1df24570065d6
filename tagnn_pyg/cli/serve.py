"""Serve a checkpoint over HTTP (FastAPI + uvicorn: pip install 'tagnn-pyg[serve]'):
POST /recommend with {"sessions": [[raw ids...], ...], "k": 20}, GET /health, the
OpenAPI schema at /openapi.json. Concurrent requests are merged into one model
batch. SIGTERM finishes the requests in flight, then exits. See docs/serving.md."""
from __future__ import annotations

import argparse
import json
import os
from typing import Any, Dict

from .common import UserError, add_checkpoint_parser, add_debug, positive_int


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = add_checkpoint_parser(sub, 'serve', help='HTTP service: POST /recommend, GET /health',
                              description=__doc__)
    p.add_argument('--host', default='127.0.0.1', help='address to bind (default: 127.0.0.1)')
    p.add_argument('--port', type=int, default=8000, help='port (default: 8000)')
    p.add_argument('--workers', type=positive_int, default=1, metavar='N',
                   help='worker processes, each with its own model copy (default: 1)')
    p.add_argument('--max-batch', type=positive_int, default=256, metavar='B',
                   help='sessions per merged model batch; 1 scores every request alone '
                        '(default: 256)')
    p.add_argument('--max-wait-ms', type=_non_negative, default=5.0, metavar='MS',
                   help='longest wait for more requests once a batch is open (default: 5)')
    p.add_argument('--backend', choices=('torch', 'onnx', 'pt2'), default='torch',
                   help='torch (default), onnx (onnxruntime) or pt2 (a torch.export '
                        'program), the last two from the file of tagnn-pyg export')
    p.add_argument('--onnx', default=None, metavar='FILE',
                   help='the ONNX file for --backend onnx (default: CKPT with suffix .onnx)')
    p.add_argument('--pt2', default=None, metavar='FILE',
                   help='the .pt2 file for --backend pt2 (default: CKPT with suffix .pt2)')
    p.add_argument('--retrieval', choices=('exact', 'mips'), default='exact',
                   help='exact (default: score every item) or mips (candidates from a '
                        'maximum-inner-product index, re-ranked exactly)')
    p.add_argument('--num-candidates', type=positive_int, default=200, metavar='C',
                   help='items retrieved per session with --retrieval mips (default: 200)')
    p.add_argument('--popularity', default=None, metavar='DATA',
                   help="data set (built-in name or folder) whose training clicks rank the "
                        "fallback of sessions left empty (default: the checkpoint's "
                        "item_counts, else item-vector norms)")
    p.add_argument('--root', default=None, metavar='DIR',
                   help='folder of the built-in data sets, for --popularity (default: ./data)')
    p.add_argument('--pad-length', type=positive_int, default=None, metavar='L',
                   help='required by models with released_padding=True (default: none; refused for others)')
    p.add_argument('--max-k', type=positive_int, default=1000, metavar='K',
                   help='largest k (default: 1000)')
    p.add_argument('--max-sessions', type=positive_int, default=1024, metavar='N',
                   help='most sessions per request (default: 1024)')
    p.add_argument('--max-session-length', type=positive_int, default=None, metavar='L',
                   help="most clicks per session (default: 200; with --backend onnx or pt2 "
                        "the export's max_session_length when it has one, and no more "
                        "than it)")
    p.add_argument('--max-body-bytes', type=positive_int, default=1 << 20, metavar='N',
                   help='largest request body (default: 1048576)')
    p.add_argument('--graceful-timeout', type=_non_negative, default=30.0, metavar='S',
                   help='seconds SIGTERM waits for requests in flight (default: 30)')
    p.add_argument('--device', default='cpu', help='cpu (default), cuda, cuda:N')
    p.add_argument('--threads', type=positive_int, default=None, metavar='N',
                   help="CPU threads for torch per worker (default: torch's choice)")
    p.add_argument('--log-level', default='warning',
                   choices=('critical', 'error', 'warning', 'info', 'debug'),
                   help='uvicorn log level (default: warning)')
    add_debug(p)
    p.set_defaults(run=run)
    return p


def config_from_args(args: argparse.Namespace) -> Dict[str, Any]:
    r"""The JSON-able service configuration of the command line."""
    rec: Dict[str, Any] = {'retrieval': args.retrieval, 'num_candidates': args.num_candidates,
                           'max_k': args.max_k, 'max_sessions': args.max_sessions}
    if args.max_session_length is not None:
        rec['max_session_length'] = args.max_session_length
    if args.popularity is not None:
        rec['popularity'] = args.popularity
        rec['root'] = args.root
    return {'checkpoint': os.path.abspath(args.checkpoint), 'device': args.device,
            'backend': args.backend, 'onnx_path': args.onnx, 'pt2_path': args.pt2,
            'pad_length': args.pad_length,
            'recommender': rec, 'max_batch': args.max_batch, 'max_wait_ms': args.max_wait_ms,
            'max_body_bytes': args.max_body_bytes, 'threads': args.threads}


def run(args: argparse.Namespace) -> int:
    r"""``tagnn-pyg serve``."""
    try:
        import uvicorn

        from ..serve.http import ENV_CONFIG, app_from_env, build_from_config
    except ImportError as err:
        raise UserError(f"tagnn-pyg serve needs the serve extra ({err.name} is missing): "
                        f"pip install 'tagnn-pyg[serve]'") from None
    config = config_from_args(args)
    common = dict(host=args.host, port=args.port, log_level=args.log_level,
                  timeout_graceful_shutdown=args.graceful_timeout)
    if args.workers == 1:
        # Load in this process: a bad checkpoint is a one-line error before binding.
        uvicorn.run(build_from_config(config), **common)
    else:
        build_from_config(config)          # fail early, in the parent
        os.environ[ENV_CONFIG] = json.dumps(config)
        uvicorn.run(f"{app_from_env.__module__}:{app_from_env.__name__}", factory=True,
                    workers=args.workers, **common)
    return 0
