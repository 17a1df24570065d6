r"""``tagnn-pyg prepare``: raw click logs -> SR-GNN folder, with the SR-GNN protocol
(:func:`tagnn_pyg.data.preprocess.prepare`)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict

from .common import UserError, add_debug

#: The raw formats (equal to :data:`tagnn_pyg.data.preprocess.KINDS`, which a
#: test checks; repeated here so that ``--help`` needs no torch).
KINDS = ('diginetica', 'yoochoose', 'csv')
PROTOCOL_OPTIONS = ('test_days', 'min_item_support', 'min_session_length', 'fraction')
CSV_OPTIONS = ('delimiter', 'session_column', 'item_column', 'time_column', 'time_format',
               'sort_within_session')


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser('prepare', help='raw clicks -> SR-GNN format',
                       description='Preprocess a raw click log with the SR-GNN protocol '
                       'into OUT_DIR: all_train_seq.txt, train.txt, test.txt, '
                       'item_ids.json, stats.json.')
    p.add_argument('kind', choices=KINDS, help='raw format: DIGINETICA '
                   'train-item-views.csv, YOOCHOOSE yoochoose-clicks.dat, or a '
                   'generic CSV with a header')
    p.add_argument('raw_file', help='the raw click log (.gz allowed)')
    p.add_argument('out_dir', help='output folder for the SR-GNN files + stats.json')
    g = p.add_argument_group('protocol (defaults: the released SR-GNN script)')
    g.add_argument('--test-days', type=float, default=None, metavar='DAYS',
                   help='test window before the latest date (default: diginetica/csv 7, '
                        'yoochoose 1)')
    g.add_argument('--min-item-support', type=int, default=None, metavar='N',
                   help='drop items seen fewer times (default: 5)')
    g.add_argument('--min-session-length', type=int, default=None, metavar='N',
                   help='drop sessions with fewer clicks (default: 2)')
    g.add_argument('--fraction', type=int, default=None, metavar='F',
                   help='keep the most recent 1/F of the training sequences as the '
                        'released script (default: yoochoose 64, others 1)')
    c = p.add_argument_group('generic csv')
    c.add_argument('--delimiter', default=None, help="field separator (default: ',')")
    c.add_argument('--session-column', default=None, metavar='NAME',
                   help="session id column (default: session_id)")
    c.add_argument('--item-column', default=None, metavar='NAME',
                   help="item id column (default: item_id)")
    c.add_argument('--time-column', default=None, metavar='NAME',
                   help="time column (default: timestamp)")
    c.add_argument('--time-format', default=None, metavar='FORMAT',
                   help="iso (default), unix, unix_ms or a strptime pattern")
    c.add_argument('--no-sort', dest='sort_within_session', action='store_false',
                   default=None, help='keep file order of clicks within a session '
                                      '(default: sort by time)')
    from ..data.limits import add_limit_arguments  # torch-free
    add_limit_arguments(p)
    add_debug(p)
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    r"""``tagnn-pyg prepare``: prints ``stats.json``."""
    from ..data.limits import limits_from_args
    from ..data.preprocess import prepare

    opts: Dict[str, Any] = {k: getattr(args, k) for k in PROTOCOL_OPTIONS}
    given_csv = {k: getattr(args, k) for k in CSV_OPTIONS}
    if args.kind == 'csv':
        opts.update(given_csv)
    else:
        extra = ['--' + k.replace('_', '-') if k != 'sort_within_session' else '--no-sort'
                 for k, v in given_csv.items() if v is not None]
        if extra:
            raise UserError(f"options {extra} apply to 'csv' only")
    try:
        stats = prepare(args.kind, args.raw_file, args.out_dir,
                        limits=limits_from_args(args), **opts)
    except TypeError as err:  # an option that does not apply to this kind
        raise UserError(str(err)) from err
    print(json.dumps(stats, indent=2))
    print(f"wrote {args.out_dir}: all_train_seq.txt, train.txt, test.txt, stats.json, "
          f"item_ids.json", file=sys.stderr)
    return 0
