r"""``tagnn-pyg demo``: the main job of ``make demo``: train TAGNN on the embedded
synthetic data set and print HR@20 / MRR@20 beside POP and S-POP."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .common import (DEFAULT_ROOT, MODEL_NAMES, PROG, add_debug, positive_int,
                     setup_threads, write_json)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser('demo', help='the main job of make demo',
                       description='Generate the synthetic data set, train TAGNN for a '
                       'few epochs on the CPU and print HR@20 / MRR@20 beside POP and '
                       'S-POP.')
    p.add_argument('--out', default='runs/demo', metavar='RUN_DIR',
                   help='run directory (default: runs/demo)')
    p.add_argument('--cache', default=None, metavar='DIR',
                   help=f'where the synthetic data is generated (default: '
                        f'./{DEFAULT_ROOT}/synthetic)')
    p.add_argument('--model', choices=MODEL_NAMES, default='tagnn',
                   help='model (default: tagnn)')
    p.add_argument('--epochs', type=positive_int, default=3, metavar='N',
                   help='maximum epochs (default: 3)')
    p.add_argument('--seed', type=int, default=0, help='seed (default: 0)')
    p.add_argument('--device', default='cpu', help='cpu (default), cuda, auto')
    p.add_argument('--threads', type=positive_int, default=1, metavar='N',
                   help='CPU threads (default: 1: the small model gains little from '
                        'more, and a busy machine loses a lot)')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    add_debug(p)
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    r"""``tagnn-pyg demo``."""
    t_start = time.perf_counter()
    setup_threads(args.threads)
    import torch

    from ..baselines import POP, SPOP
    from ..data.loading import LoadedData, synthetic_folder
    from ..models import MODELS
    from ..train import TrainConfig, Trainer, evaluate, make_splits

    cache = Path(args.cache) if args.cache else Path(DEFAULT_ROOT) / 'synthetic'
    print(f"[1/3] synthetic sessions in {cache} ...", flush=True)
    data = LoadedData.from_folder(synthetic_folder(cache), name='synthetic')
    cfg = TrainConfig(epochs=args.epochs, device=args.device, seed=args.seed,
                      progress=not args.no_progress, num_threads=args.threads)
    splits = make_splits(cfg, train=data.train, test=data.test,
                         train_sessions=data.train_sessions)
    sizes = splits.sizes()
    print(f"      {data.num_items - 1:,} items; {len(splits.train_sessions or []):,} "
          f"training sessions ({sizes['train']:,} sequences), {sizes['valid']:,} "
          f"validation and {sizes['test']:,} test sequences", flush=True)
    print(f"[2/3] training {args.model.upper()} for up to {args.epochs} epochs on "
          f"{args.device} ...", flush=True)
    torch.manual_seed(args.seed)
    model = MODELS[args.model](num_items=data.num_items)
    trainer = Trainer(model, cfg, out_dir=args.out, model_name=args.model,
                      extra={'data': 'synthetic', 'data_source': data.source,
                             'preset': None, 'split_notes': splits.notes})
    result = trainer.fit(splits.train, splits.valid, splits.test, overwrite=True)
    print("[3/3] baselines POP and S-POP (fitted on the same training sessions) ...",
          flush=True)
    rows = [(args.model.upper(), result['test'])]
    for name, cls in (('S-POP', SPOP), ('POP', POP)):
        fitted = cls().fit(splits.train_sessions, data.num_items)
        rows.append((name, evaluate(fitted, splits.test, ks=cfg.ks)))
    elapsed = time.perf_counter() - t_start
    table = [f"\n{'method':<8}{'HR@20':>8}{'MRR@20':>8}",
             *(f"{n:<8}{m['HR@20']:>8.2f}{m['MRR@20']:>8.2f}" for n, m in rows)]
    print('\n'.join(table))
    print(f"\n{result['protocol_description']}; {args.model.upper()} epoch "
          f"{result['epoch_chosen']} of {result['epochs_run']} chosen. "
          f"Metrics in percent over {sizes['test']:,} test cases (full ranking).")
    write_json(Path(args.out) / 'demo.json',
               {'rows': {n: m for n, m in rows}, 'time_s': round(elapsed, 1),
                'protocol': result['protocol'],
                'protocol_description': result['protocol_description']})
    exe = sys.argv[0] if Path(sys.argv[0]).name == PROG else PROG
    print(f"Run saved in {args.out} ({elapsed:.0f} s). Try: {exe} recommend "
          f"--checkpoint {Path(args.out) / 'best.pt'} --items 1,2,3")
    return 0
