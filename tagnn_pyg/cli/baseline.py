r"""``tagnn-pyg baseline``: POP, S-POP, Item-KNN or a session k-NN (SKNN, V-SKNN,
STAN) under the protocol of ``train``."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Dict

from .common import UserError, add_data, add_debug, load_data, model_arg, write_json
from .config_options import add_config_arguments, config_overrides

BASELINE_NAMES = ('pop', 'spop', 'itemknn', 'sknn', 'vsknn', 'stan')
#: The methods whose neighbours are training sessions (never prefix sequences).
SESSION_KNN = ('sknn', 'vsknn', 'stan')
#: The TrainConfig fields that apply to a baseline (data splits and metrics).
SPLIT_FIELDS = ('protocol', 'valid', 'valid_fraction', 'max_train', 'max_valid',
                'max_test', 'ks', 'seed', 'progress')


def add_parser(sub: Any) -> argparse.ArgumentParser:
    from ..train.config import PROTOCOLS, TrainConfig, VALID_SPLITS

    p = sub.add_parser('baseline', help='POP, S-POP, Item-KNN or session k-NN with the '
                       'same protocol',
                       description='Fit a non-neural baseline and report the same '
                       'metrics under the same protocol as train.')
    add_data(p)
    p.add_argument('--method', required=True, choices=BASELINE_NAMES,
                   help='pop (global popularity), spop (session popularity), itemknn '
                        '(cosine item-to-item), sknn (session k-NN), vsknn (V-SKNN, '
                        'position-weighted), stan (sequence and time aware neighbourhood)')
    p.add_argument('--param', type=model_arg, action='append', default=[],
                   metavar='KEY=VALUE',
                   help='a hyper-parameter of the method (repeatable; VALUE read as '
                        'JSON, else text), e.g. --param k=200 --param lambda2=null')
    p.add_argument('--out', default=None, metavar='DIR',
                   help='also write DIR/metrics.json (default: print only)')
    names = add_config_arguments(p, TrainConfig, include=SPLIT_FIELDS,
                                 choices={'protocol': PROTOCOLS, 'valid': VALID_SPLITS},
                                 title='protocol and metrics')
    add_debug(p)
    p.set_defaults(run=run, _config_fields=names)
    return p


def make_baseline(cls: Any, params: Dict[str, Any]) -> Any:
    r"""``cls(**params)``, an unknown name being a one-line error that lists the
    method's hyper-parameters."""
    import inspect

    known = [n for n in inspect.signature(cls.__init__).parameters if n != 'self']
    for key in params:
        if key not in known:
            raise UserError(f"--param {key}: {cls.__name__} has no hyper-parameter "
                            f"{key!r}; it has: {', '.join(known) or 'none'}")
    try:
        return cls(**params)
    except TypeError as err:  # a value of the wrong type (a switch given as text)
        raise UserError(f"--param: {err}") from err


def run(args: argparse.Namespace) -> int:
    r"""``tagnn-pyg baseline``."""
    from ..baselines import BASELINES
    from ..train import TrainConfig, describe_protocol, evaluate, make_splits

    cfg = TrainConfig(**config_overrides(args, args._config_fields))
    data = load_data(args)
    if args.method in SESSION_KNN:
        # Prefixes as neighbours would count every session once per prefix, and
        # under a random split the other prefixes of a held-out session would be
        # its nearest neighbours (the answer leaks into validation).
        why = None
        if data.train_sessions is None:
            why = (f'the data set {data.name!r} has no whole training sessions '
                   '(all_train_seq.txt)')
        elif cfg.protocol == 'honest' and cfg.valid == 'random':
            why = '--valid random splits prefix sequences, not sessions'
        if why:
            raise UserError(f'--method {args.method} needs whole training sessions as '
                            f'neighbours, but {why}; use --valid temporal with a data '
                            'set that has them')
    splits = make_splits(cfg, train=data.train, test=data.test,
                         train_sessions=data.train_sessions)
    fit_on = splits.train_sessions if splits.train_sessions is not None else splits.train
    t0 = time.perf_counter()
    method = make_baseline(BASELINES[args.method], dict(args.param)).fit(
        fit_on, data.num_items)
    fit_time = time.perf_counter() - t0
    result: Dict[str, Any] = {
        'method': args.method, 'params': dict(args.param), 'variant': repr(method),
        'data': data.name, 'protocol': cfg.protocol,
        'protocol_description': (describe_protocol(cfg) if cfg.protocol == 'honest' else
                                 "papers' protocol: fitted on all training sessions, "
                                 "evaluated on the test set (no epochs to select)"),
        'fitted_on': ('whole training sessions' if splits.train_sessions is not None
                      else 'training sequences'),
        'sizes': splits.sizes(), 'split_notes': splits.notes,
        'fit_time_s': round(fit_time, 3)}
    if splits.valid is not None:
        result['valid'] = evaluate(method, splits.valid, ks=cfg.ks,
                                   progress=cfg.progress, desc='valid')
    result['test'] = evaluate(method, splits.test, ks=cfg.ks, progress=cfg.progress,
                              desc='test')
    if args.out:
        write_json(Path(args.out) / 'metrics.json', result)
    print(json.dumps(result, indent=2))
    return 0
