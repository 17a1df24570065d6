"""Train TAGNN on the embedded synthetic data set and compare it with POP and S-POP.

The synthetic sessions (:func:`tagnn_pyg.data.make_synthetic_sessions`) have latent
interests and item-to-item transitions: a session model can learn them, global
popularity cannot. The run uses the honest protocol: the epoch is chosen on the most
recent 10% of the training sessions, and the test set is evaluated once.

    python examples/train_tagnn_synthetic.py                 # ~1 minute on a laptop CPU
    python examples/train_tagnn_synthetic.py --train-sessions 300 --epochs 1   # seconds
"""
from __future__ import annotations

import argparse
import logging
from typing import Optional, Sequence

import torch

from tagnn_pyg.baselines import POP, SPOP
from tagnn_pyg.data import expand_prefixes, make_synthetic_sessions
from tagnn_pyg.models import TAGNN
from tagnn_pyg.train import TrainConfig, Trainer, evaluate, make_splits


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--num-items', type=int, default=1000)
    parser.add_argument('--train-sessions', type=int, default=10000)
    parser.add_argument('--test-sessions', type=int, default=2000)
    parser.add_argument('--hidden', type=int, default=100)
    parser.add_argument('--epochs', type=int, default=3)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--out', default=None, help='run directory (checkpoints, logs)')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    torch.set_num_threads(args.threads)

    # 1. data: whole sessions in "chronological" order, then the protocol's splits
    train_sessions, test_sessions = make_synthetic_sessions(
        num_items=args.num_items, num_train_sessions=args.train_sessions,
        num_test_sessions=args.test_sessions, seed=args.seed)
    num_items = max(max(map(max, train_sessions)), max(map(max, test_sessions))) + 1
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, device=args.device, seed=args.seed)
    splits = make_splits(cfg, train_sessions=train_sessions,
                         test=expand_prefixes(test_sessions))
    print('sizes:', splits.sizes())

    # 2. model and training (honest protocol)
    torch.manual_seed(args.seed)
    model = TAGNN(num_items, hidden_channels=args.hidden)
    result = Trainer(model, cfg, out_dir=args.out).fit(splits.train, splits.valid,
                                                       splits.test)

    # 3. baselines on the same training sessions and test cases
    rows = {'TAGNN': result['test']}
    for name, cls in (('S-POP', SPOP), ('POP', POP)):
        rows[name] = evaluate(cls().fit(splits.train_sessions, num_items), splits.test)
    print(f"\n{'method':<8}{'HR@20':>8}{'MRR@20':>8}")
    for name, m in rows.items():
        print(f"{name:<8}{m['HR@20']:>8.2f}{m['MRR@20']:>8.2f}")
    print(f"({result['protocol_description']}; epoch {result['epoch_chosen']} chosen)")


if __name__ == '__main__':
    main()
