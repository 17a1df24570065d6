r"""``tagnn-pyg train``: train SR-GNN, TAGNN or TAGNN++ and write a run directory.

The training options are generated from :class:`tagnn_pyg.train.TrainConfig`
(:mod:`.config_options`). Settings come, last one winning, from the
``TrainConfig`` defaults, a ``--preset`` or a saved ``--config`` (or, with
``--resume``, the run's ``last.pt``), then the flags given. Every run writes
its complete settings to ``RUN_DIR/config.json``; ``tagnn-pyg train --config
RUN_DIR/config.json --out NEW_RUN`` trains it again with the same result.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .common import (DEFAULT_ROOT, MODEL_NAMES, UserError, add_data, add_debug, load_data,
                     model_arg, positive_int, write_json)
from .config_options import add_config_arguments, config_overrides

#: Version of the ``config.json`` layout.
RUN_CONFIG_VERSION = 1
RUN_CONFIG = 'config.json'

logger = logging.getLogger('tagnn_pyg.cli')


def _choices() -> Dict[str, Tuple[str, ...]]:
    from ..train.config import OPTIMIZERS, PROTOCOLS, VALID_SPLITS, WEIGHTINGS
    return {'protocol': PROTOCOLS, 'valid': VALID_SPLITS, 'optimizer': OPTIMIZERS,
            'weighting': WEIGHTINGS}


def add_parser(sub: Any) -> argparse.ArgumentParser:
    from ..train.config import TrainConfig

    p = sub.add_parser(
        'train', help='train a model; writes best.pt, last.pt, metrics.json, config.json',
        description='Train a model (SR-GNN, TAGNN, TAGNN++, NARM, ...) and write '
        'RUN_DIR/best.pt, last.pt, metrics.json, config.json, log.csv, log.jsonl, train.log.\n\n'
        'Settings: TrainConfig defaults (shown below), replaced by --preset or --config '
        '(or by last.pt with --resume), replaced by the flags given.')
    add_data(p, required=False, default_text="the --config file's; required without it")
    g = p.add_argument_group('model and run')
    g.add_argument('--model', choices=MODEL_NAMES, default=None,
                   help="model (default: the --preset's, --config's or checkpoint's; "
                        "required without them)")
    g.add_argument('--preset', default=None, metavar='NAME',
                   help="named model and training settings, e.g. tagnn, srgnn, "
                        "tagnnpp-paper-diginetica (see docs/training.md; default: none, "
                        "TrainConfig's settings)")
    g.add_argument('--config', default=None, metavar='FILE',
                   help="re-run the settings of a run's config.json (JSON or YAML); "
                        "flags given beside it override (default: none)")
    g.add_argument('--out', required=True, metavar='RUN_DIR', help='run directory')
    g.add_argument('--resume', action='store_true',
                   help='continue the run in RUN_DIR from last.pt')
    g.add_argument('--overwrite', action='store_true',
                   help='replace the run already in RUN_DIR (its files are removed)')
    g.add_argument('--hidden', type=positive_int, default=None, metavar='D',
                   help='hidden size d (model argument hidden_channels; default: 100)')
    g.add_argument('--model-arg', type=model_arg, action='append', default=[],
                   metavar='KEY=VALUE', help='extra model argument (JSON value), repeatable')
    names = add_config_arguments(p, TrainConfig, choices=_choices())
    p.add_argument('--step-at-epoch-end', dest='scheduler_step_at_epoch_start',
                   action='store_false', default=None,
                   help='scheduler.step() at the end of each epoch (= '
                        '--no-scheduler-step-at-epoch-start)')
    add_debug(p)
    p.set_defaults(run=run, _config_fields=names)
    return p


# ------------------------------------------------------------ run config file


def read_run_config(path: str) -> Dict[str, Any]:
    r"""Read a run's ``config.json`` (or the same content as YAML).

    Raises:
        UserError: unreadable, not a mapping, or missing ``model`` / ``train``.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding='utf-8')
    except OSError as err:
        raise UserError(f"cannot read --config {path}: {err.strerror or err}") from err
    if file.suffix.lower() in ('.yaml', '.yml'):
        try:
            import yaml
        except ImportError as err:
            raise UserError(f"--config {path} is YAML, which needs PyYAML "
                            f"(pip install pyyaml); or pass the JSON file") from err
        try:
            obj = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise UserError(f"--config {path} is not valid YAML: "
                            f"{' '.join(str(err).split())}") from err
    else:
        try:
            obj = json.loads(text)
        except ValueError as err:
            raise UserError(f"--config {path} is not valid JSON: {err}") from err
    if not isinstance(obj, dict) or not isinstance(obj.get('model'), dict) \
            or not isinstance(obj.get('train'), dict):
        raise UserError(f"--config {path} must be a mapping with 'model' and 'train' "
                        f"entries (a run's {RUN_CONFIG})")
    return obj


def run_config(data: Any, root: Optional[str], model_name: str, preset: Optional[str],
               model_kwargs: Dict[str, Any], train: Dict[str, Any]) -> Dict[str, Any]:
    r"""The complete settings of a run, as written to ``RUN_DIR/config.json``."""
    from .. import __version__
    from ..data.loading import BUILTIN_DATA

    builtin = data.name in BUILTIN_DATA and Path(data.source).resolve() != \
        Path(data.name).resolve()
    return {
        'version': RUN_CONFIG_VERSION, 'tagnn_pyg': __version__,
        'data': {'data': data.name if builtin else str(Path(data.source).resolve()),
                 'root': str(Path(root or DEFAULT_ROOT).resolve()) if builtin else None,
                 'num_items': data.num_items},
        'model': {'name': model_name, 'preset': preset, 'kwargs': model_kwargs},
        'train': train,
    }


# ---------------------------------------------------------------- settings


def _settings(args: argparse.Namespace) -> Tuple[str, Optional[str], Dict[str, Any],
                                                 Dict[str, Any], Optional[str],
                                                 Optional[str]]:
    r"""(model name, preset, model kwargs, base training dict, data, root)."""
    from ..checkpoint import load_checkpoint

    if args.config and (args.preset or args.resume):
        raise UserError("--config cannot be combined with --preset or --resume: it "
                        "already holds the model and training settings")
    model_name, preset_name = args.model, args.preset
    data, root = args.data, args.root
    model_kwargs: Dict[str, Any] = {}
    base: Dict[str, Any] = {}
    if args.resume:
        ckpt = load_checkpoint(Path(args.out) / 'last.pt')
        base = dict(ckpt['train_config'])
        saved = ckpt['model']['name']
        if model_name is not None and model_name != saved:
            raise UserError(f"--model {model_name} but {Path(args.out) / 'last.pt'} "
                            f"holds {saved!r}")
        model_name = saved
        model_kwargs = dict(ckpt['model']['config'])
        model_kwargs.pop('num_items', None)
        preset_name = preset_name or (ckpt.get('extra') or {}).get('preset')
    elif args.config:
        saved_run = read_run_config(args.config)
        saved = saved_run['model'].get('name')
        if model_name is not None and model_name != saved:
            raise UserError(f"--model {model_name} but --config {args.config} trains "
                            f"{saved!r}")
        model_name = saved
        preset_name = saved_run['model'].get('preset')
        model_kwargs = dict(saved_run['model'].get('kwargs') or {})
        base = dict(saved_run['train'])
        saved_data = saved_run.get('data') or {}
        data = data or saved_data.get('data')
        root = root or saved_data.get('root')
    elif preset_name is not None:
        from ..presets import get_preset
        preset = get_preset(preset_name)
        if model_name is not None and model_name != preset.model:
            raise UserError(f"--preset {preset_name} is a {preset.model!r} preset but "
                            f"--model is {model_name!r}")
        model_name = preset.model
        model_kwargs = dict(preset.model_kwargs)
        base = dict(preset.training)
    if model_name is None:
        raise UserError(f"train needs --model ({', '.join(MODEL_NAMES)}), --preset or --config")
    if data is None:
        raise UserError("train needs --data (a folder or a built-in name)")
    if args.hidden is not None:
        model_kwargs['hidden_channels'] = args.hidden
    for key, value in args.model_arg:
        model_kwargs[key] = value
    return model_name, preset_name, model_kwargs, base, data, root


def run(args: argparse.Namespace) -> int:
    r"""``tagnn-pyg train``: owns RUN_DIR (a lock) before anything is written.

    Under ``torchrun`` (several processes, see :mod:`tagnn_pyg.distributed`)
    every process loads the data and trains its part of each batch; rank 0 alone
    takes the lock and writes RUN_DIR.
    """
    from ..distributed import run_on_main, session
    from ..utils.lock import FolderLock

    with session() as ctx:
        if not ctx.active:
            with FolderLock(args.out, 'train'):
                return _train(args)
        lock = run_on_main(lambda: FolderLock(args.out, 'train').acquire(),
                           f'taking the lock of {args.out}')
        try:
            return _train(args, ctx.is_main)
        finally:
            if lock is not None:
                lock.release()


def _train(args: argparse.Namespace, main: bool = True) -> int:
    from ..distributed import run_on_main
    from ..train.config import TrainConfig
    from ..utils.rundir import check_new_run

    model_name, preset_name, model_kwargs, base, data_arg, root = _settings(args)
    cfg = TrainConfig.from_dict({**base, **config_overrides(args, args._config_fields)})
    out = Path(args.out)
    if not args.resume:
        run_on_main(lambda: check_new_run(out, args.overwrite), f'checking {out}')

    from ..models import MODELS
    from ..train import Trainer, make_splits, seed_everything
    from ..data.sequences import item_counts

    # rank 0 first: a data set made or cached on first use is written once
    data = run_on_main(lambda: load_data(args, data_arg, root), 'loading the data')
    if data is None:
        data = load_data(args, data_arg, root)
    splits = make_splits(cfg, train=data.train, test=data.test,
                         train_sessions=data.train_sessions)
    for note in splits.notes:
        logger.info('%s', note)
    seed_everything(cfg.seed)  # reproducible initial weights
    try:
        model = MODELS[model_name](num_items=data.num_items, **model_kwargs)
    except TypeError as err:
        raise UserError(f"bad model argument for {model_name!r}: {err}") from err
    settings = run_config(data, root, model_name, preset_name, model_kwargs,
                          cfg.to_dict())
    run_on_main(lambda: write_json(out / RUN_CONFIG, settings), f'writing {RUN_CONFIG}')
    extra = {'data': data.name, 'data_source': data.source, 'preset': preset_name,
             'split_notes': splits.notes}
    counts = item_counts(splits.train_sessions or splits.train, data.num_items)
    trainer = Trainer(model, cfg, out_dir=out, model_name=model_name,
                      item_ids=data.item_ids, extra=extra, data_identity=data.identity(),
                      item_counts=counts)
    result = trainer.fit(splits.train, splits.valid, splits.test, resume=args.resume,
                         overwrite=args.overwrite)
    if main:
        print(summary(result, out))
    return 0


def summary(result: Dict[str, Any], out: Path) -> str:
    r"""The console summary of a finished run."""
    ks = result['train_config']['ks']
    test = result.get('test') or {}
    lines: List[str] = [f"{result['model']} on {result.get('extra', {}).get('data', '?')}: "
                        f"{result['protocol_description']}"]
    if result['protocol'] == 'honest':
        metric = result['selection']['metric']
        lines.append(f"epoch chosen: {result['epoch_chosen']} of {result['epochs_run']} "
                     f"(validation {metric} {result['valid'][metric]:.2f}); "
                     f"stopped: {result['stopped']}")
    else:
        chosen = ', '.join(f"{k} at epoch {v}" for k, v in result['epoch_chosen'].items())
        lines.append(f"best epochs (test set): {chosen}; stopped: {result['stopped']}")
    if test:
        cols = [f'{m}@{k}' for m in ('HR', 'MRR', 'NDCG') for k in ks]
        lines += [f"{'':6}" + ''.join(f'{c:>10}' for c in cols),
                  f"{'test':6}" + ''.join(f'{test[c]:>10.2f}' for c in cols)]
    lines.append(f"run saved in {out} (best.pt, last.pt, metrics.json, config.json, "
                 f"log.csv)")
    return '\n'.join(lines)
