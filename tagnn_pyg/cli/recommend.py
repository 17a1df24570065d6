r"""``tagnn-pyg recommend``: the top-k next items of one session, as JSON."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, List, Optional, Tuple

from .common import (PROG, UserError, add_data, add_debug, check_trained_on, load_data,
                     positive_int)
from .evaluate import load_model


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser('recommend', help='top-k items for one session, as JSON',
                       description='Print the top-k next items for a session of item ids '
                       '(the original ids when the model was trained on a prepared folder '
                       'with item_ids.json).')
    p.add_argument('--checkpoint', required=True, metavar='CKPT',
                   help='best.pt or last.pt of a run')
    p.add_argument('--items', required=True, metavar='ID,ID,...',
                   help='the session, oldest click first, e.g. 3,17,42')
    p.add_argument('-k', '--top-k', dest='k', type=positive_int, default=20, metavar='K',
                   help='how many items (default: 20)')
    p.add_argument('--drop-unknown', action='store_true',
                   help='drop ids the model does not know (with a warning) instead of '
                        'failing')
    p.add_argument('--pad-length', type=positive_int, default=None, metavar='L',
                   help='required by models that emulate the released padding '
                        '(released_padding=True): the length the released code pads every '
                        'session to, the longest session of the data set the query belongs '
                        "to (e.g. 40 for Diginetica's test set); default: none, refused for "
                        "other models")
    add_data(p, required=False)
    p.add_argument('--allow-other-data', action='store_true',
                   help='with --data: use it even if it is not what the checkpoint was '
                        'trained on')
    p.add_argument('--device', default='cpu', help='cpu (default), cuda, cuda:N')
    add_debug(p)
    p.set_defaults(run=run)
    return p


def parse_items(text: str) -> List[str]:
    items = [t.strip() for t in text.split(',')]
    if not text.strip() or any(not t for t in items):
        raise UserError(f"--items must be comma-separated item ids like 3,17,42, got "
                        f"{text!r}")
    return items


def to_internal(raw: List[str], num_items: int, item_ids: Optional[List[Any]]
                ) -> Tuple[List[int], List[str]]:
    r"""(internal ids known to the model, raw ids it does not know)."""
    known: List[int] = []
    unknown: List[str] = []
    if item_ids is not None:
        lookup = {str(v): i for i, v in enumerate(item_ids) if i > 0 and v is not None}
        for t in raw:
            (known.append(lookup[t]) if t in lookup else unknown.append(t))
        return known, unknown
    for t in raw:
        try:
            v = int(t)
        except ValueError:
            unknown.append(t)
            continue
        (known.append(v) if 1 <= v < num_items else unknown.append(t))
    return known, unknown


def run(args: argparse.Namespace) -> int:
    r"""``tagnn-pyg recommend``."""
    import torch

    from ..data.batching import build_session_batch

    ckpt, model, dev = load_model(args.checkpoint, args.device)
    if args.data is not None:
        check_trained_on(load_data(args), ckpt, args.checkpoint, args.allow_other_data)
    if getattr(model, 'released_padding', False):
        if args.pad_length is None:
            raise UserError(f"{args.checkpoint} holds a model that emulates the released "
                            f"padding (released_padding=True): pass --pad-length L, the "
                            f"longest session of the data set the query belongs to (the "
                            f"released code pads to it; e.g. 40 for Diginetica's test set)")
        model.pad_length = args.pad_length
    elif args.pad_length is not None:
        raise UserError(f"--pad-length applies only to models with released_padding=True; "
                        f"{args.checkpoint} holds one without")
    num_items = int(ckpt['num_items'])
    item_ids = ckpt.get('item_ids')
    known, unknown = to_internal(parse_items(args.items), num_items, item_ids)
    if unknown:
        what = (f"unknown item ids {unknown}: the model knows ids 1..{num_items - 1}"
                if item_ids is None else
                f"unknown item ids {unknown}: not in the checkpoint's item-id mapping")
        if not args.drop_unknown:
            raise UserError(f"{what} (use --drop-unknown to drop them)")
        if not known:
            raise UserError(f"{what}; nothing is left after dropping them")
        print(f"{PROG}: warning: {what}; dropped", file=sys.stderr)
    batch = build_session_batch(torch.tensor(known, dtype=torch.long),
                                torch.tensor([0, len(known)], dtype=torch.long),
                                weighting=ckpt['train_config'].get('weighting', 'binary'),
                                device=dev)
    with torch.no_grad():
        scores = model(batch)[0].float()
    scores[0] = float('-inf')
    k = min(args.k, num_items - 1)
    top = torch.topk(scores, k)
    ids = top.indices.tolist()
    out_ids = [item_ids[i] for i in ids] if item_ids is not None else ids
    session = [item_ids[i] for i in known] if item_ids is not None else known
    result = {'session': session, 'dropped': unknown, 'k': k,
              'recommendations': [{'item': i, 'score': round(float(s), 6)}
                                  for i, s in zip(out_ids, top.values.tolist())],
              'model': ckpt['model']['name'], 'checkpoint': str(args.checkpoint)}
    print(json.dumps(result, indent=2))
    return 0
