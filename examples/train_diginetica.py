"""Prepare DIGINETICA with the SR-GNN protocol and train a model on it.

FOLDER is either an SR-GNN folder (``all_train_seq.txt`` / ``train.txt`` and
``test.txt``) or the destination of ``--raw``: with ``--raw train-item-views.csv``
the raw CIKM Cup 2016 file is preprocessed into FOLDER first (same as
``tagnn-pyg prepare diginetica RAW FOLDER``).

    # full data, papers' settings (one epoch, papers' protocol, as in the check of issue 4)
    python examples/train_diginetica.py data/diginetica --model srgnn --protocol paper --epochs 1
    # raw file -> SR-GNN format -> a quick capped run
    python examples/train_diginetica.py data/diginetica --raw train-item-views.csv \\
        --max-train 20000 --max-test 5000 --epochs 2
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Optional, Sequence

import torch

from tagnn_pyg.data.loading import load_session_data
from tagnn_pyg.models import MODELS
from tagnn_pyg.presets import get_preset
from tagnn_pyg.train import TrainConfig, Trainer, make_splits


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('folder', help='SR-GNN folder (or where --raw is prepared to)')
    parser.add_argument('--raw', default=None, help='raw train-item-views.csv to prepare')
    parser.add_argument('--model', choices=sorted(MODELS), default='tagnn')
    parser.add_argument('--preset', default=None,
                        help='named settings (default: the model family preset)')
    parser.add_argument('--protocol', choices=('honest', 'paper'), default='honest')
    parser.add_argument('--epochs', type=int, default=None)
    parser.add_argument('--hidden', type=int, default=None)
    parser.add_argument('--max-train', type=int, default=None,
                        help='about this many most recent training sequences')
    parser.add_argument('--max-test', type=int, default=None)
    parser.add_argument('--out', default=None, help='run directory')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--threads', type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    if args.threads:
        torch.set_num_threads(args.threads)

    folder = Path(args.folder)
    if args.raw is not None:
        from tagnn_pyg.data.preprocess import prepare
        stats = prepare('diginetica', args.raw, folder)
        print('prepared:', json.dumps(stats))
    data = load_session_data(folder)
    print(data)

    preset = get_preset(args.preset or {'tagnnpp': 'tagnnpp-paper-diginetica'}.get(
        args.model, args.model))
    model_kwargs = dict(preset.model_kwargs)
    if args.hidden is not None:
        model_kwargs['hidden_channels'] = args.hidden
    overrides = {k: v for k, v in dict(epochs=args.epochs, max_train=args.max_train,
                                       max_test=args.max_test).items() if v is not None}
    cfg = TrainConfig.from_preset(preset, protocol=args.protocol, device=args.device,
                                  **overrides)
    splits = make_splits(cfg, train=data.train, test=data.test,
                         train_sessions=data.train_sessions)
    print('sizes:', splits.sizes(), *splits.notes, sep='\n  ')

    torch.manual_seed(cfg.seed)
    model = MODELS[preset.model](num_items=data.num_items, **model_kwargs)
    result = Trainer(model, cfg, out_dir=args.out, model_name=preset.model,
                     extra={'data': str(folder), 'preset': preset.name}).fit(
        splits.train, splits.valid, splits.test)
    test = result['test']
    print(f"{preset.model} ({preset.name}) test HR@20 {test['HR@20']:.2f}  "
          f"MRR@20 {test['MRR@20']:.2f}  [{result['protocol_description']}]")


if __name__ == '__main__':
    main()
