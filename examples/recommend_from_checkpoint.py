"""Load a training checkpoint and recommend the next items for a session.

The checkpoint (``best.pt`` or ``last.pt`` of a run) holds the model's name,
its constructor arguments and its weights; it is loaded with
``torch.load(weights_only=True)`` (no pickled code runs). If it came from a
prepared data set with an item-id mapping, ids are translated both ways.

    tagnn-pyg demo                        # writes runs/demo/best.pt
    python examples/recommend_from_checkpoint.py runs/demo/best.pt --items 3,17,42 -k 5
"""
from __future__ import annotations

import argparse
from typing import List, Optional, Sequence

import torch

from tagnn_pyg.checkpoint import build_model, load_checkpoint
from tagnn_pyg.data import build_session_batch


def recommend(checkpoint: str, session: List[str], k: int = 10) -> List[tuple]:
    """Top-``k`` (item id, score) pairs after the clicks ``session`` (ids as strings,
    in the data set's original ids when the checkpoint has a mapping)."""
    ckpt = load_checkpoint(checkpoint)
    model = build_model(ckpt, checkpoint).eval()
    ids = ckpt['item_ids']                          # None: ids are already 1..m
    to_internal = ({str(v): i for i, v in enumerate(ids) if i > 0} if ids is not None
                   else {str(i): i for i in range(1, ckpt['num_items'])})
    unknown = [s for s in session if s not in to_internal]
    if unknown:
        raise SystemExit(f"unknown item ids {unknown} (the model knows "
                         f"{ckpt['num_items'] - 1} items)")
    clicks = torch.tensor([to_internal[s] for s in session])
    batch = build_session_batch(clicks, torch.tensor([0, len(clicks)]))
    with torch.no_grad():
        scores = model(batch)[0]                    # [num_items], column 0 = -inf
    top = scores.topk(min(k, ckpt['num_items'] - 1))
    return [(ids[i] if ids is not None else i, float(s))
            for i, s in zip(top.indices.tolist(), top.values.tolist())]


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('checkpoint')
    parser.add_argument('--items', required=True, help='the session, e.g. 3,17,42')
    parser.add_argument('-k', type=int, default=10)
    args = parser.parse_args(argv)
    session = [s.strip() for s in args.items.split(',') if s.strip()]
    for rank, (item, score) in enumerate(recommend(args.checkpoint, session, args.k), 1):
        print(f'{rank:>3}. item {item}  score {score:.4f}')


if __name__ == '__main__':
    main()
