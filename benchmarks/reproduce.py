r"""Reproduce the papers' tables (SR-GNN, TAGNN, TAGNN++ and ablations, baselines).

Trains and evaluates every row of issue 6's table on the real data (SR-GNN
format folders under ``--data-root``, default ``../shared/datasets``) with the
papers' settings, taken from :mod:`tagnn_pyg.presets`:

==========================  ===============================================
row                         preset
==========================  ===============================================
``pop``, ``spop``,          :mod:`tagnn_pyg.baselines` fitted on the training
``itemknn``                 sessions (read back from
                            ``benchmarks/results/baselines.json`` when the
                            baselines benchmark already measured them)
``srgnn``                   ``srgnn``
``tagnn``                   ``tagnn``
``tagnn-L/-Avg/-Att/-L+Att``  ``tagnn-L`` ... (TAGNN without target attention)
``tagnnpp``                 ``tagnnpp-paper-<data>`` (``--tagnnpp-preset
                            released``: ``tagnnpp-released-<data>``;
                            ``released-padded``: the exact emulation of the
                            released code, ``tagnnpp-released-padded-<data>``)
``tagnnpp-AGC/-GNN/-PE/     ``tagnnpp-paper-<data>-AGC`` ...
-Transformer``
``gru4rec``, ``narm``,      ``gru4rec``, ``narm``, ``stamp`` (the TAGNN
``stamp``                   paper's sequence baselines)
==========================  ===============================================

Every neural row runs under both protocols of :mod:`tagnn_pyg.train` (``honest``:
epoch chosen on the most recent 10 % of the training sessions, test once;
``paper``: the released code's best test epoch per metric) and every seed.

One JSON per run is written to ``benchmarks/results/reproduce/`` (small,
committed); checkpoints and logs go to ``--runs-dir`` (default ``runs/reproduce``,
git-ignored). Resumable: a run whose JSON exists is read back, not repeated
(unless ``--force``); an interrupted run resumes from its ``last.pt`` (end of
the last finished epoch, or with ``--checkpoint-every N`` the last N-th batch;
the Trainer replays the rest exactly).

``--epochs N`` and ``--max-train`` / ``--max-test`` make *limited* runs (smoke
tests, the one-epoch faithfulness check): they get their own file names and a
``limits`` entry, and the report never mixes them with full runs.

Examples::

    # everything (GPU)
    python benchmarks/reproduce.py --device cuda
    # issue 4's faithfulness check: SR-GNN, one epoch, papers' protocol
    python benchmarks/reproduce.py --datasets diginetica --rows srgnn \
        --protocols paper --seeds 0 --epochs 1 --device cpu
    # smoke run
    python benchmarks/reproduce.py --rows srgnn tagnn --epochs 1 --max-train 2000 \
        --max-test 500 --seeds 0
    # aggregate into docs/results.md and the figure
    python benchmarks/reproduce.py --report
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from tagnn_pyg.testing import load_script

REPO = Path(__file__).resolve().parents[1]
report = load_script(REPO / 'benchmarks' / 'reproduce_report.py')  # the aggregation, torch-free

DEFAULT_DATA_ROOT = REPO.parent / 'shared' / 'datasets'
RESULTS_DIR = report.RESULTS_DIR
BASELINES_JSON = REPO / 'benchmarks' / 'results' / 'baselines.json'
DEFAULT_RUNS_DIR = REPO / 'runs' / 'reproduce'
KS = (5, 10, 20)
PRESET_DATA = {'diginetica': 'diginetica', 'yoochoose1_64': 'yoochoose'}
#: ``--tagnnpp-preset`` kinds: the paper's settings, the released train.py's, and
#: those with the released code's padding emulated exactly.
TAGNNPP_PRESETS = ('paper', 'released', 'released-padded')

logger = logging.getLogger('reproduce')


# ------------------------------------------------------------------ run plan


@dataclass(frozen=True)
class RunSpec:
    r"""One run of the table.

    Attributes:
        row (str): a key of :data:`reproduce_report.ROWS`.
        dataset (str): ``'diginetica'`` or ``'yoochoose1_64'``.
        protocol (str): ``'honest'``, ``'paper'`` or ``'none'`` (baselines).
        seed (int): the seed (0 for baselines, which are deterministic).
        preset (str, optional): preset name (``None`` for baselines).
        epochs (int, optional): epoch override (a limited run).
        max_train (int, optional): training cap (a limited run).
        max_test (int, optional): test cap (a limited run).
    """
    row: str
    dataset: str
    protocol: str
    seed: int
    preset: Optional[str] = None
    epochs: Optional[int] = None
    max_train: Optional[int] = None
    max_test: Optional[int] = None

    @property
    def model(self) -> str:
        return report.ROWS[self.row][0]

    @property
    def variant(self) -> str:
        return report.ROWS[self.row][1]

    @property
    def limits(self) -> Optional[Dict[str, int]]:
        lim = {k: v for k, v in (('epochs', self.epochs), ('max_train', self.max_train),
                                 ('max_test', self.max_test)) if v is not None}
        return lim or None

    @property
    def run_id(self) -> str:
        """File-name stem: ``<data>__<row>[__released]__<protocol>__seed<s>[__limits]``."""
        row = self.row
        if self.preset and 'released-padded' in self.preset:
            row += '__released_padded'
        elif self.preset and 'released' in self.preset:
            row += '__released'
        parts = [self.dataset, row, self.protocol, f'seed{self.seed}']
        tags = []
        if self.epochs is not None:
            tags.append(f'e{self.epochs}')
        if self.max_train is not None:
            tags.append(f'mt{self.max_train}')
        if self.max_test is not None:
            tags.append(f'mx{self.max_test}')
        if tags:
            parts.append('_'.join(tags))
        return '__'.join(parts).replace('+', 'p')


def preset_for(row: str, dataset: str, tagnnpp_preset: str = 'paper') -> Optional[str]:
    r"""The preset name of a neural row on a data set (``None`` for baselines).

    Raises:
        ValueError: unknown row, data set or TAGNN++ preset kind.
    """
    if row not in report.ROWS:
        raise ValueError(f"unknown row {row!r}; expected one of {list(report.ROWS)}")
    if dataset not in PRESET_DATA:
        raise ValueError(f"unknown data set {dataset!r}; expected one of {list(PRESET_DATA)}")
    if tagnnpp_preset not in TAGNNPP_PRESETS:
        raise ValueError(f"--tagnnpp-preset must be one of {list(TAGNNPP_PRESETS)}, got "
                         f"{tagnnpp_preset!r}")
    if row in report.BASELINE_ROWS:
        return None
    if row.startswith('tagnnpp'):
        base = f'tagnnpp-{tagnnpp_preset}-{PRESET_DATA[dataset]}'
        return base if row == 'tagnnpp' else f'{base}-{row.split("-", 1)[1]}'
    return row  # 'srgnn', 'tagnn', 'tagnn-L', ...


def _preset_exists(name: Optional[str]) -> bool:
    from tagnn_pyg.presets import preset_names
    return name is None or name in preset_names()


def plan(rows: Sequence[str], datasets: Sequence[str], protocols: Sequence[str],
         seeds: Sequence[int], tagnnpp_preset: str = 'paper', epochs: Optional[int] = None,
         max_train: Optional[int] = None, max_test: Optional[int] = None
         ) -> List[RunSpec]:
    r"""The runs to do, baselines first (once per data set, seed 0, protocol
    ``'none'``), then every neural row x protocol x seed."""
    specs: List[RunSpec] = []
    for ds in datasets:
        for row in rows:
            preset = preset_for(row, ds, tagnnpp_preset)
            if row in report.BASELINE_ROWS:
                specs.append(RunSpec(row, ds, 'none', 0, None, None, None, max_test))
                continue
            if not _preset_exists(preset):
                logger.warning('%s on %s: preset %s does not exist (the ablation is a '
                               'no-op of this base preset): skipped', row, ds, preset)
                continue
            for proto in protocols:
                for seed in seeds:
                    specs.append(RunSpec(row, ds, proto, int(seed), preset, epochs,
                                         max_train, max_test))
    return specs


# ------------------------------------------------------------------ helpers


def device_label(device: Any) -> str:
    r"""Human-readable device: the GPU's name, or ``CPU (arch, N threads)``."""
    import torch
    dev = torch.device(device)
    if dev.type == 'cuda':
        return torch.cuda.get_device_name(dev)
    return f'CPU ({platform.machine()}, {torch.get_num_threads()} threads)'


def _atomic_json(path: Path, obj: Any) -> None:
    from tagnn_pyg.utils.io import atomic_write_text
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=1) + '\n')


def _metrics(values: Dict[str, Any]) -> Dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if k.split('@')[0] in ('HR', 'MRR', 'NDCG')}


_DATA_CACHE: Dict[str, Any] = {}


def load_data(root: Path, dataset: str) -> Any:
    r"""Built-in data set ``dataset`` under ``root`` through the library's loader
    (:func:`tagnn_pyg.data.loading.load_session_data`), cached per process.

    Raises:
        FileNotFoundError: naming the folder and the expected files.
    """
    if dataset not in _DATA_CACHE:
        from tagnn_pyg.data.loading import load_session_data
        t0 = time.perf_counter()
        _DATA_CACHE[dataset] = load_session_data(dataset, root=root)
        logger.info('loaded %s in %.1fs: %s', _DATA_CACHE[dataset].source,
                    time.perf_counter() - t0, _DATA_CACHE[dataset])
    return _DATA_CACHE[dataset]


# ------------------------------------------------------------------ baselines


def _baseline_from_benchmark(spec: RunSpec) -> Optional[Dict[str, Any]]:
    """The baselines benchmark's record of ``spec`` (full test set only)."""
    if spec.max_test is not None or not BASELINES_JSON.exists():
        return None
    try:
        records = json.loads(BASELINES_JSON.read_text())
    except json.JSONDecodeError:
        return None
    for rec in records if isinstance(records, list) else []:
        if rec.get('model') == spec.row and rec.get('dataset') == spec.dataset:
            return rec
    return None


def run_baseline(spec: RunSpec, args: argparse.Namespace) -> Dict[str, Any]:
    r"""POP / S-POP / Item-KNN: read back from ``benchmarks/results/baselines.json``
    when measured there (same library, same data, full test set), else fitted on
    the training sessions and evaluated with :func:`tagnn_pyg.train.evaluate`."""
    base = {'row': spec.row, 'model': spec.model, 'variant': spec.variant,
            'dataset': spec.dataset, 'protocol': 'none', 'seed': 0,
            'protocol_description': 'baseline: fitted on all training sessions, no '
                                    'model selection, full test set',
            'epochs': 0, 'epoch_chosen': None, 'preset': None, 'limits': spec.limits}
    rec = None if args.recompute_baselines else _baseline_from_benchmark(spec)
    if rec is not None:
        base.update(metrics=_metrics(rec['metrics']), wall_s=float(rec.get('wall_s', 0)),
                    device=rec.get('device', '?'), test_cases=rec.get('test_cases'),
                    command=rec.get('command', 'python benchmarks/baselines.py'),
                    source=str(BASELINES_JSON.relative_to(REPO)))
        return base
    import torch
    from tagnn_pyg.baselines import BASELINES
    from tagnn_pyg.train import evaluate, resolve_device

    data = load_data(args.data_root, spec.dataset)
    dev = resolve_device(args.device)
    test = data.test if spec.max_test is None else data.test[:spec.max_test]
    t0 = time.perf_counter()
    model = BASELINES[spec.row]().fit(data.train_sessions, data.num_items)
    model = model.to(dev) if isinstance(model, torch.nn.Module) else model
    metrics = evaluate(model, test, batch_size=args.eval_batch_size or 100, ks=KS,
                       device=dev, progress=args.progress)
    base.update(metrics=_metrics(metrics), wall_s=round(time.perf_counter() - t0, 2),
                device=device_label(dev), test_cases=int(metrics['count']),
                command=args.command, source='benchmarks/reproduce.py')
    return base


# ------------------------------------------------------------------ neural runs


def train_config(spec: RunSpec, preset: Any, args: argparse.Namespace) -> Any:
    r"""The :class:`~tagnn_pyg.train.TrainConfig` of a run: the preset's training
    settings with the protocol, seed, device and limits on top."""
    from tagnn_pyg.train import TrainConfig
    overrides: Dict[str, Any] = dict(protocol=spec.protocol, seed=spec.seed,
                                     device=args.device, progress=args.progress)
    if spec.epochs is not None:
        overrides['epochs'] = spec.epochs
    if spec.max_train is not None:
        overrides['max_train'] = spec.max_train
    if spec.max_test is not None:
        overrides['max_test'] = spec.max_test
    if args.max_valid is not None:
        overrides['max_valid'] = args.max_valid
    if args.eval_batch_size is not None:
        overrides['eval_batch_size'] = args.eval_batch_size
    if args.amp:
        overrides['amp'] = True
    if args.checkpoint_every is not None:
        overrides['checkpoint_every'] = args.checkpoint_every
    return TrainConfig.from_preset(preset, **overrides)


def run_neural(spec: RunSpec, args: argparse.Namespace) -> Dict[str, Any]:
    r"""Train and evaluate one neural run with :class:`tagnn_pyg.train.Trainer`,
    resuming from ``<runs-dir>/<run_id>/last.pt`` when it exists."""
    from tagnn_pyg.checkpoint import CheckpointError
    from tagnn_pyg.models import MODELS
    from tagnn_pyg.presets import get_preset
    from tagnn_pyg.train import Trainer, make_splits, resolve_device, seed_everything
    from tagnn_pyg.data.sequences import item_counts

    assert spec.preset is not None
    preset = get_preset(spec.preset)
    cfg = train_config(spec, preset, args)
    data = load_data(args.data_root, spec.dataset)
    splits = make_splits(cfg, train=data.train, test=data.test,
                         train_sessions=data.train_sessions)
    run_dir = args.runs_dir / spec.run_id
    resume = (run_dir / 'last.pt').exists()
    seed_everything(cfg.seed)  # reproducible initial weights
    model = MODELS[preset.model](num_items=data.num_items, **preset.model_kwargs)
    extra = {'data': spec.dataset, 'preset': preset.name, 'row': spec.row,
             'split_notes': splits.notes}
    counts = item_counts(splits.train_sessions or splits.train, data.num_items)
    trainer = Trainer(model, cfg, out_dir=run_dir, model_name=preset.model, extra=extra,
                      item_counts=counts)
    t0 = time.perf_counter()
    try:
        result = trainer.fit(splits.train, splits.valid, splits.test, resume=resume)
    except CheckpointError as err:
        raise SystemExit(f"error: cannot resume {spec.run_id}: {err}\n(delete {run_dir} "
                         f"to start this run afresh)") from err
    wall_now = time.perf_counter() - t0
    history = result.get('history', [])
    wall = sum(float(h.get('train_time_s', 0)) + float(h.get('eval_time_s', 0))
               for h in history) + float(result.get('test_time_s', 0) or 0)
    dev = resolve_device(cfg.device)
    curve_key = 'valid' if spec.protocol == 'honest' else 'test'
    return {
        'row': spec.row, 'model': spec.model, 'variant': spec.variant,
        'dataset': spec.dataset, 'protocol': spec.protocol, 'seed': spec.seed,
        'protocol_description': result['protocol_description'],
        'schedule': result['schedule'],
        'epochs': int(result['epochs_run']), 'epoch_chosen': result['epoch_chosen'],
        'stopped': result['stopped'],
        'metrics': _metrics(result['test']),
        'metrics_at_best_epoch': (_metrics(result['test_at_best_epoch'])
                                  if 'test_at_best_epoch' in result else None),
        'valid_metrics': _metrics(result['valid']) if result.get('valid') else None,
        'curve': [{'epoch': h['epoch'], 'loss': h['train_loss'], 'lr': h['lr'],
                   curve_key: {k: h[curve_key][k] for k in ('HR@20', 'MRR@20')
                               if k in h.get(curve_key, {})}}
                  for h in history],
        'wall_s': round(wall, 2), 'wall_s_this_invocation': round(wall_now, 2),
        'resumed': resume, 'device': device_label(dev),
        'sizes': result['sizes'], 'num_items': result['num_items'],
        'preset': preset.to_dict(), 'train_config': result['train_config'],
        'model_config': result['model_config'], 'split_notes': splits.notes,
        'limits': spec.limits, 'run_dir': str(run_dir),
        'command': args.command,
        'torch': __import__('torch').__version__,
    }


# ------------------------------------------------------------------ driver


def run_all(specs: Sequence[RunSpec], args: argparse.Namespace) -> List[Dict[str, Any]]:
    r"""Run (or read back) every spec; returns the records."""
    out = []
    for i, spec in enumerate(specs, 1):
        path = args.results_dir / f'{spec.run_id}.json'
        if path.exists() and not args.force:
            logger.info('[%d/%d] %s: finished before, read back from %s', i, len(specs),
                        spec.run_id, path)
            out.append(json.loads(path.read_text()))
            continue
        if args.dry_run:
            print(f'[{i}/{len(specs)}] would run {spec.run_id} (preset {spec.preset})')
            continue
        logger.info('[%d/%d] %s (preset %s)', i, len(specs), spec.run_id, spec.preset)
        if spec.row in report.BASELINE_ROWS:
            rec = run_baseline(spec, args)
        else:
            rec = run_neural(spec, args)
        rec['run_id'] = spec.run_id
        _atomic_json(path, rec)
        m = rec['metrics']
        logger.info('%s: HR@20 %.2f  MRR@20 %.2f  (%s epochs, %.0fs, %s) -> %s',
                    spec.run_id, m['HR@20'], m['MRR@20'], rec['epochs'], rec['wall_s'],
                    rec['device'], path)
        out.append(rec)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train and evaluate every row of the papers' tables (issue 6).",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument('--data-root', type=Path, default=DEFAULT_DATA_ROOT,
                   help='folder holding diginetica/ and yoochoose1_64/ (SR-GNN format)')
    p.add_argument('--datasets', nargs='+', default=list(report.DATASETS),
                   choices=list(report.DATASETS))
    p.add_argument('--rows', nargs='+', default=list(report.ROWS), metavar='ROW',
                   help=f"rows to run (default: all): {', '.join(report.ROWS)}")
    p.add_argument('--protocols', nargs='+', default=list(report.PROTOCOLS),
                   choices=list(report.PROTOCOLS))
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--tagnnpp-preset', choices=TAGNNPP_PRESETS, default='paper',
                   help="TAGNN++ settings: the paper's section IV (default), the "
                        "released train.py's, or those with the released padding "
                        "emulated exactly (released-padded)")
    p.add_argument('--device', default='auto', help='auto (default), cpu, cuda, cuda:N')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    p.add_argument('--epochs', type=int, default=None,
                   help='override the preset epochs (a limited run, labelled)')
    p.add_argument('--max-train', type=int, default=None,
                   help='cap training sequences (a limited run, labelled)')
    p.add_argument('--max-test', type=int, default=None,
                   help='cap test sequences (a limited run, labelled)')
    p.add_argument('--max-valid', type=int, default=None, help='cap validation sequences')
    p.add_argument('--eval-batch-size', type=int, default=None)
    p.add_argument('--amp', action='store_true', help='bfloat16 autocast in training')
    p.add_argument('--checkpoint-every', type=int, default=None, metavar='N',
                   help='also checkpoint every N training batches, so that an interrupted '
                        'run resumes mid-epoch (useful for CPU epochs of ~40 minutes)')
    p.add_argument('--runs-dir', type=Path, default=DEFAULT_RUNS_DIR,
                   help='checkpoints and logs (git-ignored; default runs/reproduce)')
    p.add_argument('--results-dir', type=Path, default=RESULTS_DIR,
                   help='per-run JSON records (default benchmarks/results/reproduce)')
    p.add_argument('--recompute-baselines', action='store_true',
                   help='fit the baselines here instead of reading baselines.json')
    p.add_argument('--force', action='store_true', help='rerun finished runs')
    p.add_argument('--dry-run', action='store_true', help='list the runs, run nothing')
    p.add_argument('--no-progress', dest='progress', action='store_false')
    p.add_argument('--report', action='store_true',
                   help='only aggregate the JSONs into docs/results.md and the figure')
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s',
                        datefmt='%H:%M:%S')
    logging.getLogger('tagnn_pyg.train').setLevel(logging.INFO)
    if args.report:
        return report.exit_status(lambda: report.write_report(args.results_dir), ValueError)
    for name in ('epochs', 'max_train', 'max_test', 'max_valid', 'threads',
                 'eval_batch_size', 'checkpoint_every'):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f'error: --{name.replace("_", "-")} must be a positive integer, got '
                  f'{value}', file=sys.stderr)
            return 2
    unknown = [r for r in args.rows if r not in report.ROWS]
    if unknown:
        print(f"error: unknown row(s) {unknown}; expected some of {list(report.ROWS)}",
              file=sys.stderr)
        return 2
    args.command = 'python ' + shlex.join(['benchmarks/reproduce.py'] +
                                          list(sys.argv[1:] if argv is None else argv))
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    specs = plan(args.rows, args.datasets, args.protocols, args.seeds,
                 args.tagnnpp_preset, args.epochs, args.max_train, args.max_test)
    return report.exit_status(lambda: run_all(specs, args), FileNotFoundError)


if __name__ == '__main__':
    sys.exit(main())
