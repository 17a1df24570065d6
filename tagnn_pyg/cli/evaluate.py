r"""``tagnn-pyg evaluate``: full-ranking HR/MRR/NDCG@K of a checkpoint."""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Tuple

from .common import (UserError, add_data, add_debug, add_runtime, check_trained_on,
                     int_list, load_data, positive_int, setup_threads, write_json)

logger = logging.getLogger('tagnn_pyg.cli')


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser('evaluate', help='evaluate a checkpoint on a data set',
                       description='Full-ranking HR/MRR/NDCG@K of a checkpoint; prints '
                       'JSON and writes it to --out (default: next to the checkpoint).')
    p.add_argument('--checkpoint', required=True, metavar='CKPT',
                   help='best.pt or last.pt of a run')
    add_data(p)
    p.add_argument('--split', choices=('test', 'valid'), default='test',
                   help="'valid' rebuilds the run's validation split (default: test)")
    p.add_argument('--max-test', type=positive_int, default=None, metavar='N',
                   help='evaluate the first N test sequences only (default: all)')
    p.add_argument('--batch-size', type=positive_int, default=100, metavar='N',
                   help='sequences per batch (default: 100)')
    p.add_argument('--ks', type=int_list, default=None, metavar='K,K,...',
                   help="cut-offs (default: the run's, usually 5,10,20)")
    p.add_argument('--out', default=None, metavar='FILE',
                   help='metrics JSON file (default: evaluate-*.json beside CKPT)')
    p.add_argument('--allow-other-data', action='store_true',
                   help='evaluate even if the data is not what the checkpoint was '
                        'trained on (item count, id mapping, data fingerprint)')
    add_runtime(p)
    add_debug(p)
    p.set_defaults(run=run)
    return p


def load_model(path: str, device: str) -> Tuple[Any, Any, Any]:
    r"""(checkpoint dict, model in eval mode on ``device``, the device)."""
    from ..checkpoint import build_model, load_checkpoint
    from ..distributed import resolve_device

    ckpt = load_checkpoint(path)
    dev = resolve_device(device)
    model = build_model(ckpt, path, device=dev)
    model.eval()
    return ckpt, model, dev


def _safe_name(name: str) -> str:
    return ''.join(c if c.isalnum() or c in '-_' else '_' for c in Path(name).name) or 'data'


def run(args: argparse.Namespace) -> int:
    r"""``tagnn-pyg evaluate``; under ``torchrun`` each process ranks a shard of the
    cases and the metric sums are all-reduced (rank 0 writes and prints)."""
    from ..distributed import session

    with session() as ctx:
        return _evaluate(args, ctx.is_main)


def _evaluate(args: argparse.Namespace, main: bool) -> int:
    from ..distributed import run_on_main
    from ..train import TrainConfig, evaluate, make_splits

    from ..data.limits import limits_from_args

    setup_threads(args.threads)
    limits_from_args(args)  # bad limits fail before the checkpoint is read
    ckpt, model, dev = load_model(args.checkpoint, args.device)
    # rank 0 first: a data set made or cached on first use is written once
    data = run_on_main(lambda: load_data(args), 'loading the data')
    if data is None:
        data = load_data(args)
    check_trained_on(data, ckpt, args.checkpoint, args.allow_other_data)
    saved = TrainConfig.from_dict(ckpt['train_config'])
    ks = tuple(args.ks) if args.ks else saved.ks
    if args.split == 'valid':
        if saved.protocol != 'honest':
            raise UserError(f"{args.checkpoint} was trained under the papers' protocol, "
                            f"which has no validation split")
        cfg = TrainConfig.from_dict(ckpt['train_config'], max_test=None)
        seqs = make_splits(cfg, train=data.train, test=None,
                           train_sessions=data.train_sessions).valid
    else:
        seqs = data.test
        if args.max_test is not None and len(seqs) > args.max_test:
            seqs = seqs[:args.max_test]
    t0 = time.perf_counter()
    metrics = evaluate(model, seqs, batch_size=args.batch_size, ks=ks, device=dev,
                       weighting=saved.weighting, progress=not args.no_progress,
                       desc=args.split, distributed=True)
    result = {'checkpoint': str(args.checkpoint), 'model': ckpt['model']['name'],
              'data': data.name, 'split': args.split, 'epoch': ckpt['epoch'],
              'protocol': ckpt['protocol'], 'metrics': metrics,
              'time_s': round(time.perf_counter() - t0, 3)}
    ckpt_path = Path(args.checkpoint)
    out = Path(args.out) if args.out else ckpt_path.with_name(
        f'evaluate-{ckpt_path.stem}-{_safe_name(data.name)}-{args.split}.json')
    run_on_main(lambda: write_json(out, result), f'writing {out}')
    if main:
        print(json.dumps(result, indent=2))
        logger.info('metrics written to %s', out)
    return 0
