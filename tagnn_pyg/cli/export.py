"""Export the scoring of a checkpoint (the batch tensors of build_session_batch in,
the [sessions, num_items] logits out) as an ONNX file (torch.onnx, dynamo exporter;
needs the onnx extra) or a torch.export program (.pt2). The item-id mapping and the
input contract go to FILE.json beside it; see docs/serving.md."""
from __future__ import annotations

import argparse
import json
from typing import Any

from .common import UserError, add_checkpoint_parser, add_debug, positive_int


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = add_checkpoint_parser(sub, 'export', help='the model as ONNX or torch.export (.pt2)',
                              description=__doc__)
    p.add_argument('--format', required=True, choices=('onnx', 'pt2'), dest='fmt',
                   help='onnx or pt2')
    p.add_argument('--out', required=True, metavar='FILE', help='the file to write')
    p.add_argument('--max-session-length', type=positive_int, default=None, metavar='L',
                   help='longest session the export takes, recorded in FILE.json and '
                        'enforced by the Recommender of the file; TAGNN++, GC-SAN, NARM, '
                        'GRU4Rec and LESSR pad every session to L (default: 200, at most '
                        "the positional embeddings' max_length; SR-GNN, TAGNN, STAMP: no "
                        "limit)")
    add_debug(p)
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    r"""``tagnn-pyg export``."""
    if args.fmt == 'onnx':
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as err:
            raise UserError(f"--format onnx needs the onnx extra ({err.name} is missing): "
                            f"pip install 'tagnn-pyg[onnx]'") from None
    from ..serve.export import export_model

    side = export_model(args.checkpoint, args.fmt, args.out,
                        max_session_length=args.max_session_length)
    print(json.dumps({'out': str(args.out), 'sidecar': f"{args.out}.json",
                      'format': args.fmt, 'model': side['model'],
                      'num_items': side['num_items'],
                      'max_session_length': side['max_session_length'],
                      'inputs': [i['name'] for i in side['inputs']]}, indent=2))
    return 0
