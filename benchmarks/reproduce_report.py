r"""Aggregation of the reproduction runs into ``docs/results.md`` and a figure.

Pure bookkeeping, no torch: reads the per-run JSON files that
``benchmarks/reproduce.py`` writes (one per model x variant x data set x protocol
x seed), groups them, computes the mean and the sample standard deviation over
seeds, puts the papers' figures beside ours and renders

* a markdown block (the tables) that replaces the part of ``docs/results.md``
  between :data:`BEGIN` and :data:`END` (the prose around it is kept);
* a PNG bar chart of HR@20 / MRR@20, ours against the papers', and a PNG of the
  per-epoch test curves (:func:`curve_series`), when matplotlib is installed
  (skipped with a message otherwise).

Groups: runs trained as the papers prescribe (no epoch override, no caps) form
the main table; runs with ``--epochs`` or ``--max-train``/``--max-test`` are
*limited* and only appear in their own table, never mixed with full runs. The
one-epoch full-data runs are compared with the released code's one-epoch
figures (:data:`ONE_EPOCH_RELEASED`), the faithfulness check of issue 4.

Usage::

    python benchmarks/reproduce_report.py                 # = reproduce.py --report
    python benchmarks/reproduce_report.py --results DIR --doc docs/results.md --figure docs/img/x.png
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import (Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence,
                    Tuple, Type)

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / 'benchmarks' / 'results' / 'reproduce'
DOC = REPO / 'docs' / 'results.md'
FIGURE = REPO / 'docs' / 'img' / 'results_hr_mrr.png'
#: The per-epoch test curves (papers' protocol), beside :data:`FIGURE`.
CURVES_FIGURE = REPO / 'docs' / 'img' / 'results_curves.png'
#: The session k-NN figures of ``benchmarks/knn_tuning.py --stage test``.
KNN_RESULTS = REPO / 'benchmarks' / 'results' / 'session_knn.json'

BEGIN = '<!-- BEGIN reproduce.py --report (generated, do not edit by hand) -->'
END = '<!-- END reproduce.py --report -->'

DATASETS: Tuple[str, ...] = ('diginetica', 'yoochoose1_64')
DATASET_NAMES = {'diginetica': 'Diginetica', 'yoochoose1_64': 'Yoochoose 1/64'}
PROTOCOLS: Tuple[str, ...] = ('honest', 'paper')
METRICS: Tuple[str, ...] = ('HR@5', 'HR@10', 'HR@20', 'MRR@5', 'MRR@10', 'MRR@20',
                            'NDCG@20')

#: Rows of the issue's table, in display order: row -> (model, variant, label).
ROWS: Dict[str, Tuple[str, str, str]] = {
    'pop': ('pop', 'full', 'POP'),
    'spop': ('spop', 'full', 'S-POP'),
    'itemknn': ('itemknn', 'full', 'Item-KNN'),
    'srgnn': ('srgnn', 'full', 'SR-GNN'),
    'tagnn': ('tagnn', 'full', 'TAGNN'),
    'tagnn-L': ('tagnn', 'L', 'TAGNN-L'),
    'tagnn-Avg': ('tagnn', 'Avg', 'TAGNN-Avg'),
    'tagnn-Att': ('tagnn', 'Att', 'TAGNN-Att'),
    'tagnn-L+Att': ('tagnn', 'L+Att', 'TAGNN-L+Att'),
    'tagnn-padded': ('tagnn', 'padded', 'TAGNN, released padding'),
    'tagnnpp': ('tagnnpp', 'full', 'TAGNN++'),
    'tagnnpp-AGC': ('tagnnpp', 'AGC', 'TAGNN++ -AGC'),
    'tagnnpp-GNN': ('tagnnpp', 'GNN', 'TAGNN++ -GNN'),
    'tagnnpp-PE': ('tagnnpp', 'PE', 'TAGNN++ -PE'),
    'tagnnpp-Transformer': ('tagnnpp', 'Transformer', 'TAGNN++ -Transformer'),
    'gru4rec': ('gru4rec', 'full', 'GRU4Rec'),
    'narm': ('narm', 'full', 'NARM'),
    'stamp': ('stamp', 'full', 'STAMP'),
    'gcsan': ('gcsan', 'full', 'GC-SAN'),
    'lessr': ('lessr', 'full', 'LESSR'),
}
BASELINE_ROWS: Tuple[str, ...] = ('pop', 'spop', 'itemknn')
NEURAL_ROWS: Tuple[str, ...] = tuple(r for r in ROWS if r not in BASELINE_ROWS)

#: Published HR@20 / MRR@20 (percent), best test epoch of the released code.
#: Baselines, GRU4Rec, NARM, STAMP, SR-GNN and TAGNN: TAGNN paper (SIGIR 2020)
#: Table 1 (the baselines, the sequence models and SR-GNN are SR-GNN's own figures).
#: GC-SAN and LESSR: TAGNN++ paper Table I, as printed (the paper does not say on
#: which test files they were measured; its own figures used other pickles). TAGNN++ and its ablations: TAGNN++ paper
#: Tables I and II, measured on *different* pickles (see docs/results.md).
#: TAGNN-L/-Avg/-Att/-L+Att are only drawn in the TAGNN paper's Figure 2: no
#: numbers were published, hence absent here.
PAPER: Dict[Tuple[str, str], Tuple[float, float]] = {
    ('pop', 'diginetica'): (0.89, 0.20),
    ('spop', 'diginetica'): (21.06, 13.68),
    ('itemknn', 'diginetica'): (35.75, 11.57),
    ('srgnn', 'diginetica'): (50.73, 17.59),
    ('tagnn', 'diginetica'): (51.31, 18.03),
    ('tagnnpp', 'diginetica'): (51.86, 17.93),
    ('tagnnpp-AGC', 'diginetica'): (51.57, 17.65),
    ('tagnnpp-GNN', 'diginetica'): (51.48, 17.59),
    ('tagnnpp-PE', 'diginetica'): (51.64, 17.66),
    ('tagnnpp-Transformer', 'diginetica'): (51.42, 17.84),
    ('gru4rec', 'diginetica'): (29.45, 8.33),
    ('narm', 'diginetica'): (49.70, 16.17),
    ('stamp', 'diginetica'): (45.64, 14.32),
    ('gru4rec', 'yoochoose1_64'): (60.64, 22.89),
    ('narm', 'yoochoose1_64'): (68.32, 28.63),
    ('stamp', 'yoochoose1_64'): (68.74, 29.67),
    ('gcsan', 'diginetica'): (51.70, 17.61),
    ('gcsan', 'yoochoose1_64'): (70.66, 30.04),
    ('lessr', 'diginetica'): (51.71, 18.15),
    ('lessr', 'yoochoose1_64'): (70.64, 30.97),
    ('pop', 'yoochoose1_64'): (6.71, 1.65),
    ('spop', 'yoochoose1_64'): (30.44, 18.35),
    ('itemknn', 'yoochoose1_64'): (51.60, 21.81),
    ('srgnn', 'yoochoose1_64'): (70.57, 30.94),
    ('tagnn', 'yoochoose1_64'): (71.02, 31.12),
    ('tagnnpp', 'yoochoose1_64'): (71.91, 31.57),
    ('tagnnpp-AGC', 'yoochoose1_64'): (71.80, 31.41),
    ('tagnnpp-GNN', 'yoochoose1_64'): (71.75, 31.62),
    ('tagnnpp-PE', 'yoochoose1_64'): (71.69, 31.48),
    ('tagnnpp-Transformer', 'yoochoose1_64'): (71.03, 30.69),
}
#: Rows that emulate the released code of another row, and so are compared with
#: that row's published and released figures.
COMPARED_AS: Dict[str, str] = {'tagnn-padded': 'tagnn'}

#: The released code after exactly one epoch on the full Diginetica training set
#: (one H100, papers' settings, all 60,858 test sequences): issue 4's check.
ONE_EPOCH_RELEASED: Dict[Tuple[str, str], Tuple[float, float]] = {
    ('srgnn', 'diginetica'): (44.52, 14.12),
    ('tagnn', 'diginetica'): (43.76, 13.93),
}
#: Tolerance of the faithfulness check, in percentage points.
ONE_EPOCH_TOLERANCE = 1.0


# ------------------------------------------------------------------ loading


def load_runs(results_dir: Path) -> List[Dict[str, Any]]:
    r"""Every run record (``*.json``) under ``results_dir``, sorted by file name.

    Raises:
        ValueError: a file that is not a JSON object with ``row``, ``dataset``,
            ``protocol``, ``seed`` and ``metrics`` (named in the message).
    """
    runs = []
    if not results_dir.exists():
        return runs
    for path in sorted(results_dir.glob('*.json')):
        try:
            rec = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        missing = [k for k in ('row', 'dataset', 'protocol', 'seed', 'metrics')
                   if not isinstance(rec, dict) or k not in rec]
        if missing:
            raise ValueError(f"{path}: not a reproduce.py run record (missing {missing})")
        rec.setdefault('_file', path.name)
        runs.append(rec)
    return runs


def limits_tag(limits: Optional[Mapping[str, Any]]) -> str:
    r"""Short label of a run's limits (``''`` for a full run), e.g.
    ``'1 epoch'`` or ``'1 epoch, max_train 20000'``."""
    if not limits:
        return ''
    parts = []
    if limits.get('epochs') is not None:
        n = int(limits['epochs'])
        parts.append(f"{n} epoch{'s' if n != 1 else ''}")
    for key in ('max_train', 'max_test'):
        if limits.get(key) is not None:
            parts.append(f"{key} {int(limits[key])}")
    return ', '.join(parts)


# ------------------------------------------------------------------ statistics


def mean_std(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    r"""Mean and sample standard deviation (:math:`n-1`; ``None`` for one value).

    Raises:
        ValueError: on an empty sequence.
    """
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("mean_std needs at least one value, got none")
    if len(vals) == 1:
        return vals[0], None
    return statistics.fmean(vals), statistics.stdev(vals)


@dataclass
class Group:
    r"""The runs of one (row, data set, protocol, preset, limits) cell."""
    row: str
    dataset: str
    protocol: str
    preset: str
    limits: str
    runs: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return ROWS.get(self.row, (None, None, self.row))[2]

    @property
    def seeds(self) -> List[int]:
        return sorted(int(r['seed']) for r in self.runs)

    def stat(self, metric: str) -> Tuple[float, Optional[float]]:
        """Mean and std of ``metric`` over the runs."""
        return mean_std([r['metrics'][metric] for r in self.runs])

    def paper(self) -> Optional[Tuple[float, float]]:
        """Published HR@20 / MRR@20 of this row (``None`` if unpublished)."""
        return PAPER.get((COMPARED_AS.get(self.row, self.row), self.dataset))

    def one_epoch_released(self) -> Optional[Tuple[float, float]]:
        """The released code's HR@20 / MRR@20 after one epoch (``None`` if not
        measured)."""
        return ONE_EPOCH_RELEASED.get((COMPARED_AS.get(self.row, self.row), self.dataset))

    def epochs(self) -> str:
        """Epochs trained (and chosen) over the runs, e.g. ``'12 (chosen 9)'``."""
        run = [int(r.get('epochs', 0) or 0) for r in self.runs]
        chosen = [r.get('epoch_chosen') for r in self.runs]
        text = _range(run)
        flat: List[int] = []
        for c in chosen:
            if isinstance(c, Mapping):
                flat += [int(v) for v in c.values()]
            elif c is not None:
                flat.append(int(c))
        if flat and self.row not in BASELINE_ROWS:
            text += f" (best {_range(flat)})"
        return text if self.row not in BASELINE_ROWS else '-'

    def wall(self) -> str:
        """Mean wall time per run."""
        walls = [float(r.get('wall_s', 0.0) or 0.0) for r in self.runs]
        return fmt_duration(statistics.fmean(walls)) if walls else '-'

    def devices(self) -> str:
        return ', '.join(sorted({str(r.get('device', '?')) for r in self.runs}))


def _range(values: Sequence[int]) -> str:
    if not values:
        return '-'
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f'{lo}-{hi}'


def fmt_duration(seconds: float) -> str:
    r"""``'42 s'``, ``'12.5 min'``, ``'3.2 h'``."""
    if seconds < 120:
        return f'{seconds:.0f} s'
    if seconds < 7200:
        return f'{seconds / 60:.1f} min'
    return f'{seconds / 3600:.1f} h'


def fmt_stat(mean: float, std: Optional[float]) -> str:
    r"""``'50.12 ± 0.31'`` (or ``'50.12'`` for a single run)."""
    return f'{mean:.2f}' if std is None else f'{mean:.2f} ± {std:.2f}'


def group_runs(runs: Iterable[Mapping[str, Any]]) -> List[Group]:
    r"""Group runs by (row, data set, protocol, preset name, limits), in the
    display order of :data:`ROWS`, :data:`DATASETS` and :data:`PROTOCOLS`.
    Of two runs with the same seed in one group the later file wins."""
    groups: Dict[Tuple[str, str, str, str, str], Group] = {}
    for rec in runs:
        preset = rec.get('preset')
        preset_name = preset.get('name', '') if isinstance(preset, Mapping) else str(preset or '')
        key = (rec['row'], rec['dataset'], rec['protocol'], preset_name,
               limits_tag(rec.get('limits')))
        g = groups.setdefault(key, Group(*key))
        g.runs = [r for r in g.runs if int(r['seed']) != int(rec['seed'])] + [dict(rec)]

    def order(k: Tuple[str, str, str, str, str]) -> Tuple[Any, ...]:
        row, ds, proto, preset, lim = k
        return (DATASETS.index(ds) if ds in DATASETS else len(DATASETS), ds,
                list(ROWS).index(row) if row in ROWS else len(ROWS), row, preset,
                PROTOCOLS.index(proto) if proto in PROTOCOLS else -1, lim)
    return [groups[k] for k in sorted(groups, key=order)]


def match_status(group: Group) -> str:
    r"""How the mean HR@20 and MRR@20 compare with the published figures:
    per metric ``'≥'`` (match or beat), ``'within 1 sd'``, or the gap
    ``'-0.84'``; ``''`` when no figure was published."""
    paper = group.paper()
    if paper is None:
        return ''
    out = []
    for metric, ref in zip(('HR@20', 'MRR@20'), paper):
        mean, std = group.stat(metric)
        if mean >= ref - 5e-3:
            out.append(f'{metric} ≥')
        elif std is not None and ref - mean <= std:
            out.append(f'{metric} within 1 sd')
        else:
            out.append(f'{metric} {mean - ref:+.2f}')
    return ', '.join(out)


# ------------------------------------------------------------------ markdown


def _table(groups: Sequence[Group], with_limits: bool = False) -> List[str]:
    head = (['dataset'] if with_limits else []) + ['model', 'preset', 'protocol'] \
        + (['limits'] if with_limits else []) \
        + list(METRICS) + ['paper HR@20 / MRR@20', 'vs paper', 'seeds', 'epochs',
                           'wall / run', 'device']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for g in groups:
        paper = g.paper()
        cells = [DATASET_NAMES.get(g.dataset, g.dataset)] if with_limits else []
        cells += [g.label, f'`{g.preset}`' if g.preset else '-', g.protocol]
        if with_limits:
            cells.append(g.limits or 'full')
        cells += [fmt_stat(*g.stat(m)) for m in METRICS]
        cells += [f'{paper[0]:.2f} / {paper[1]:.2f}' if paper else '-',
                  match_status(g) if g.protocol in ('paper', 'none') and not g.limits
                  else '',
                  ('- (deterministic)' if g.row in BASELINE_ROWS
                   else f"{len(g.runs)} ({', '.join(map(str, g.seeds))})"),
                  g.epochs(), g.wall(), g.devices()]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def expected_runs(datasets: Sequence[str] = DATASETS,
                  seeds: Sequence[int] = (0, 1, 2)) -> List[Tuple[str, str, str, int]]:
    r"""Every (data set, row, protocol, seed) the full table needs: the
    baselines once (protocol ``'none'``, seed 0), every neural row under both
    protocols and every seed."""
    out = []
    for ds in datasets:
        for row in BASELINE_ROWS:
            out.append((ds, row, 'none', 0))
        for row in NEURAL_ROWS:
            for proto in PROTOCOLS:
                for seed in seeds:
                    out.append((ds, row, proto, seed))
    return out


def missing_runs(runs: Iterable[Mapping[str, Any]], datasets: Sequence[str] = DATASETS,
                 seeds: Sequence[int] = (0, 1, 2)
                 ) -> Dict[Tuple[str, str, str], List[int]]:
    r"""Full (unlimited) runs still to do: ``{(data set, row, protocol): [seeds]}``."""
    done = {(r['dataset'], r['row'], r['protocol'], int(r['seed']))
            for r in runs if not limits_tag(r.get('limits'))}
    out: Dict[Tuple[str, str, str], List[int]] = {}
    for ds, row, proto, seed in expected_runs(datasets, seeds):
        if (ds, row, proto, seed) not in done:
            out.setdefault((ds, row, proto), []).append(seed)
    return out


def missing_commands(missing: Mapping[Tuple[str, str, str], List[int]]) -> List[str]:
    r"""``reproduce.py`` commands that produce the missing runs: rows of one data
    set with the same protocols and seeds to do share one command."""
    per_row: Dict[Tuple[str, str], Dict[str, Tuple[int, ...]]] = {}
    for (ds, row, proto), seeds in missing.items():
        per_row.setdefault((ds, row), {})[proto] = tuple(seeds)
    merged: Dict[Tuple[str, Tuple[Tuple[str, Tuple[int, ...]], ...]], List[str]] = {}
    for (ds, row), todo in per_row.items():
        if len(set(todo.values())) == 1:  # same seeds under every protocol
            seeds = next(iter(todo.values()))
            sig: Tuple[Tuple[str, Tuple[int, ...]], ...] = \
                ((' '.join(p for p in PROTOCOLS + ('none',) if p in todo), seeds), )
        else:
            sig = tuple(sorted(todo.items()))
        merged.setdefault((ds, sig), []).append(row)
    cmds = []
    for (ds, sig), rows in merged.items():
        for protos, seeds in sig:
            cmd = f"python benchmarks/reproduce.py --datasets {ds} --rows {' '.join(rows)}"
            if protos != 'none':
                cmd += (f" --protocols {protos} --seeds {' '.join(map(str, seeds))} "
                        f"--device cuda")
            cmds.append(cmd)
    return cmds


def faithfulness_lines(groups: Sequence[Group]) -> List[str]:
    r"""The one-epoch check: our full-data one-epoch runs (papers' protocol)
    beside the released code's one-epoch figures."""
    lines = ['| model | dataset | ours HR@20 / MRR@20 | released (1 epoch, H100) | '
             'difference | within 1 point | train + test time | device |',
             '|---|---|---|---|---|---|---|---|']
    found = False
    for g in groups:
        ref = g.one_epoch_released()
        if ref is None or g.protocol != 'paper' or g.limits != '1 epoch':
            continue
        found = True
        hr, _ = g.stat('HR@20')
        mrr, _ = g.stat('MRR@20')
        d_hr, d_mrr = hr - ref[0], mrr - ref[1]
        ok = abs(d_hr) <= ONE_EPOCH_TOLERANCE and abs(d_mrr) <= ONE_EPOCH_TOLERANCE
        lines.append(f"| {g.label} | {DATASET_NAMES.get(g.dataset, g.dataset)} | "
                     f"{hr:.2f} / {mrr:.2f} | {ref[0]:.2f} / {ref[1]:.2f} | "
                     f"{d_hr:+.2f} / {d_mrr:+.2f} | {'yes' if ok else 'NO'} | "
                     f"{g.wall()} | {g.devices()} |")
    if not found:
        lines.append('| (no one-epoch full-data run yet) | | | | | | | |')
    return lines


def honest_gap_lines(groups: Sequence[Group]) -> List[str]:
    r"""HR@20 / MRR@20 of the honest protocol minus the papers' protocol, per
    row with full runs under both."""
    by = {(g.row, g.dataset, g.preset, g.protocol): g for g in groups if not g.limits}
    lines = ['| model | dataset | preset | honest − paper HR@20 | honest − paper MRR@20 |',
             '|---|---|---|---|---|']
    n = 0
    for (row, ds, preset, proto), g in by.items():
        if proto != 'honest' or (row, ds, preset, 'paper') not in by:
            continue
        p = by[(row, ds, preset, 'paper')]
        n += 1
        lines.append(f"| {g.label} | {DATASET_NAMES.get(ds, ds)} | `{preset}` | "
                     f"{g.stat('HR@20')[0] - p.stat('HR@20')[0]:+.2f} | "
                     f"{g.stat('MRR@20')[0] - p.stat('MRR@20')[0]:+.2f} |")
    if not n:
        lines.append('| (needs full runs under both protocols) | | | | |')
    return lines


def load_knn(path: Path = KNN_RESULTS) -> List[Dict[str, Any]]:
    r"""The session k-NN records of ``benchmarks/knn_tuning.py --stage test`` (a JSON
    list; empty when the file does not exist).

    Raises:
        ValueError: not a list of records with ``model_name``, ``dataset``,
            ``protocol`` and ``metrics`` (the file named in the message).
    """
    if not path.exists():
        return []
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(records, list) or not all(
            isinstance(r, dict) and {'model_name', 'dataset', 'protocol', 'metrics'} <= set(r)
            for r in records):
        raise ValueError(f"{path}: not a list of knn_tuning.py test records (each with "
                         f"model_name, dataset, protocol and metrics)")
    return records


def knn_lines(records: Sequence[Mapping[str, Any]]) -> List[str]:
    r"""The session k-NN table: each method under default hyper-parameters
    (*paper*) and those chosen on the honest validation split (*honest*), beside
    the published SR-GNN and TAGNN figures on the same data."""
    lines = ['| model | dataset | protocol | HR@10 | HR@20 | MRR@10 | MRR@20 | NDCG@20 | '
             'HR@20 / MRR@20 − published TAGNN | hyper-parameters | eval time | device |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|']
    order = {ds: i for i, ds in enumerate(DATASETS)}
    methods = {'SKNN': 0, 'V-SKNN': 1, 'STAN': 2}
    for r in sorted(records, key=lambda r: (order.get(r['dataset'], len(order)),
                                            methods.get(r['model_name'], len(methods)),
                                            r['model_name'], r['protocol'] != 'paper')):
        m = r['metrics']
        ref = PAPER.get(('tagnn', r['dataset']))
        gap = (f"{m['HR@20'] - ref[0]:+.2f} / {m['MRR@20'] - ref[1]:+.2f}" if ref else '')
        params = ', '.join(f'{k}={v}' for k, v in (r.get('params') or {}).items()) \
            or 'defaults'
        eval_s = r.get('eval_s')
        lines.append(
            f"| {r['model_name']} | {DATASET_NAMES.get(r['dataset'], r['dataset'])} | "
            f"{r['protocol']} | "
            + ' | '.join(f"{m[k]:.2f}" for k in ('HR@10', 'HR@20', 'MRR@10', 'MRR@20',
                                                  'NDCG@20'))
            + f" | {gap} | {params} | "
            f"{fmt_duration(eval_s) if eval_s is not None else ''} | {r.get('device', '')} |")
    if not records:
        lines.append('| (no record: run `benchmarks/knn_tuning.py --stage test`) |'
                     + ' |' * 11)
    return lines


def render_markdown(runs: Sequence[Mapping[str, Any]], figure: Optional[str] = None,
                    knn: Sequence[Mapping[str, Any]] = (),
                    curves_figure: Optional[str] = None) -> str:
    r"""The generated block of ``docs/results.md`` (without the markers);
    ``knn``: the session k-NN records (:func:`load_knn`); ``figure`` and
    ``curves_figure``: the two images' paths relative to the page."""
    groups = group_runs(runs)
    full = [g for g in groups if not g.limits]
    limited = [g for g in groups if g.limits]
    out: List[str] = []
    out.append(f"Generated from {len(runs)} run record(s) in "
               f"`benchmarks/results/reproduce/`. Metrics in percent, full ranking over "
               f"all items, ties against the model; mean ± sample standard deviation over "
               f"seeds. *paper* protocol = best test epoch per metric (released code); "
               f"*honest* = epoch chosen on the most recent 10 % of the training sessions, "
               f"test evaluated once; *none* = a baseline (no training, no selection). "
               f"'vs paper': `≥` matches or beats the published figure, 'within 1 sd', or "
               f"the gap in points.")
    out.append('')
    for ds in DATASETS:
        gs = [g for g in full if g.dataset == ds]
        out.append(f"### {DATASET_NAMES[ds]}: full runs")
        out.append('')
        if gs:
            out += _table(gs)
        else:
            out.append('No full run yet.')
        out.append('')
    if limited:
        out.append('### Limited runs (epoch override or data caps; not comparable with '
                   'the papers except as labelled)')
        out.append('')
        out += _table(limited, with_limits=True)
        out.append('')
    out.append('### Session k-NN baselines (`benchmarks/knn_tuning.py`)')
    out.append('')
    out.append('Fitted on all training sessions, full test sets, the same metrics; '
               '*paper* = default hyper-parameters, *honest* = chosen on the honest '
               'validation split (see [baselines.md](baselines.md)). Deterministic: one '
               'run each.')
    out.append('')
    out += knn_lines(knn)
    out.append('')
    out.append('### Per-epoch test curves (papers\' protocol)')
    out.append('')
    out.append('Every papers\'-protocol run tests after each epoch; the longest record of '
               'each run (epoch-by-epoch runs leave one per epoch) gives its curve, so '
               'models compare at equal epochs on identical data.')
    out.append('')
    out += curve_lines(curve_series(runs))
    out.append('')
    if curves_figure:
        out.append(f'![Test HR@20 and MRR@20 after each epoch]({curves_figure})')
        out.append('')
    out.append('### Time per epoch')
    out.append('')
    out.append('From the records\' wall times (training plus the test pass after each '
               'epoch), papers\' protocol. The CPU runs shared a 2-core machine with each '
               'other and with tests and benchmarks, so the spread is the load\'s; the '
               'minimum is the closest to the library\'s own speed there.')
    out.append('')
    out += epoch_time_lines(epoch_times(runs))
    out.append('')
    out.append('### One-epoch faithfulness check (issue 4)')
    out.append('')
    out += faithfulness_lines(groups)
    out.append('')
    out.append('### Honest protocol minus papers\' protocol')
    out.append('')
    out += honest_gap_lines(groups)
    out.append('')
    missing = missing_runs(runs)
    out.append('### Still to run')
    out.append('')
    if missing:
        n = sum(len(v) for v in missing.values())
        out.append(f"{n} full run(s) of the table are missing (3 seeds per neural row "
                   f"and protocol). Commands that produce them (resumable; finished runs "
                   f"are read back):")
        out.append('')
        out.append('```')
        out += missing_commands(missing)
        out.append('```')
    else:
        out.append('Nothing: every row has all its runs.')
    if figure:
        out.append('')
        out.append(f'![HR@20 and MRR@20, ours vs the papers]({figure})')
    return '\n'.join(out) + '\n'


# ------------------------------------------------------------------ per-epoch curves


def row_label(row: str, preset: str) -> str:
    r"""A row's display name with its preset, e.g. ``TAGNN (`tagnn`)``."""
    label = ROWS.get(row, (None, None, row))[2]
    return f'{label} (`{preset}`)' if preset else label


@dataclass
class Curve:
    r"""Test HR@20 / MRR@20 after every epoch of one run (papers' protocol)."""
    dataset: str
    row: str
    preset: str
    seed: int
    points: List[Tuple[int, float, float]]   # (epoch, HR@20, MRR@20)
    lrs: List[float]

    @property
    def label(self) -> str:
        return row_label(self.row, self.preset)


def curve_series(runs: Iterable[Mapping[str, Any]]) -> List[Curve]:
    r"""The per-epoch test curves of the papers'-protocol runs (the only protocol
    that tests after every epoch), one per (data set, row, preset, seed): the
    record with the longest curve wins (of two as long, the later file), since an
    epoch-by-epoch run leaves one record per epoch whose curves are prefixes of
    each other. Records of one preset name whose settings differ (a preset changed
    between runs) are different runs. Runs with data caps (``max_train``/
    ``max_test``) are left out; epoch overrides are what these curves are made of.
    Ordered like the tables.

    Raises:
        ValueError: a curve entry with test figures but no ``epoch`` (the file is
            named)."""
    best: Dict[Tuple[str, str, str, int, str], Curve] = {}
    for rec in runs:
        key = _series_key(rec)
        if key is None:
            continue
        points, lrs = [], []
        for entry in rec.get('curve') or []:
            test = entry.get('test') if isinstance(entry, Mapping) else None
            if not isinstance(test, Mapping) or 'HR@20' not in test or 'MRR@20' not in test:
                continue
            if 'epoch' not in entry:
                raise ValueError(f"{rec.get('_file', rec['row'])}: a curve entry has test "
                                 f"figures but no 'epoch'")
            points.append((int(entry['epoch']), float(test['HR@20']), float(test['MRR@20'])))
            lrs.append(float(entry['lr']) if entry.get('lr') is not None else math.nan)
        if not points:
            continue
        if key not in best or len(points) >= len(best[key].points):
            best[key] = Curve(*key[:4], points=points, lrs=lrs)
    return [best[k] for k in sorted(best, key=_series_order)]


SeriesKey = Tuple[str, str, str, int, str]


def _series_key(rec: Mapping[str, Any]) -> Optional[SeriesKey]:
    r"""``(data set, row, preset name, seed, preset settings)`` of a
    papers'-protocol record without data caps (the records of one run, epoch by
    epoch, share it), else :obj:`None`."""
    limits = rec.get('limits') or {}
    if rec.get('protocol') != 'paper' or any(
            v is not None for k, v in limits.items() if k != 'epochs'):
        return None
    preset = rec.get('preset')
    name = preset.get('name', '') if isinstance(preset, Mapping) else str(preset or '')
    settings = json.dumps({k: v for k, v in preset.items() if k != 'description'}
                          if isinstance(preset, Mapping) else preset,
                          sort_keys=True, default=str)
    return (rec['dataset'], rec['row'], name, int(rec['seed']), settings)


def _series_order(k: SeriesKey) -> Tuple[Any, ...]:
    ds, row, preset, seed, _ = k
    return (DATASETS.index(ds) if ds in DATASETS else len(DATASETS), ds,
            list(ROWS).index(row) if row in ROWS else len(ROWS), row, preset, seed)


@dataclass
class EpochTimes:
    r"""Wall time of each epoch of one run, from its records' cumulative
    ``wall_s`` (training plus the test pass after every epoch)."""
    dataset: str
    row: str
    preset: str
    minutes: List[float]      # one entry per epoch timed
    devices: List[str]

    @property
    def label(self) -> str:
        return row_label(self.row, self.preset)


def epoch_times(runs: Iterable[Mapping[str, Any]]) -> List[EpochTimes]:
    r"""Per-epoch wall times of the papers'-protocol runs, seeds pooled per
    (data set, row, preset). A run's records (one per finished epoch when run
    epoch by epoch) are ordered by the epochs they hold; the first gives
    ``wall_s / epochs`` per epoch, each later one ``(wall_s - previous wall_s) /
    (epochs - previous epochs)``. A record that was not resumed (``resumed``
    false: trained from scratch, beside older records of the run) or whose
    ``wall_s`` does not grow starts afresh; one without ``wall_s`` is left out."""
    chains: Dict[SeriesKey, Dict[int, Tuple[float, str, bool]]] = {}
    for rec in runs:
        key = _series_key(rec)
        done = len([e for e in rec.get('curve') or [] if isinstance(e, Mapping)
                    and isinstance(e.get('test'), Mapping)])
        wall = rec.get('wall_s')
        if key is None or done == 0 or not isinstance(wall, (int, float)) or wall <= 0:
            continue
        chains.setdefault(key, {})[done] = (float(wall), str(rec.get('device', '')),
                                            rec.get('resumed') is False)
    pooled: Dict[Tuple[str, str, str], EpochTimes] = {}
    for key in sorted(chains, key=_series_order):
        prev_epochs, prev_wall = 0, 0.0
        times = pooled.setdefault(key[:3], EpochTimes(*key[:3], minutes=[], devices=[]))
        for n in sorted(chains[key]):
            wall, device, from_scratch = chains[key][n]
            if from_scratch or wall <= prev_wall:
                prev_epochs, prev_wall = 0, 0.0
            span = n - prev_epochs
            times.minutes += [(wall - prev_wall) / span / 60.0] * span
            if device and device not in times.devices:
                times.devices.append(device)
            prev_epochs, prev_wall = n, wall
    return list(pooled.values())


def epoch_time_lines(times: Sequence[EpochTimes]) -> List[str]:
    r"""Markdown: median (min-max) minutes per epoch of every timed run."""
    if not times:
        return ['No timed papers\' protocol run yet.']
    out = ['| data set | model | epochs timed | minutes per epoch: median (min-max) | '
           'device |', '|---|---|---|---|---|']
    for t in times:
        m = t.minutes
        out.append(f"| {DATASET_NAMES.get(t.dataset, t.dataset)} | {t.label} | {len(m)} | "
                   f"{statistics.median(m):.1f} ({min(m):.1f}-{max(m):.1f}) | "
                   f"{'; '.join(t.devices)} |")
    return out


def curve_lines(curves: Sequence[Curve]) -> List[str]:
    r"""Markdown: per data set, a table of test HR@20 / MRR@20 by epoch, one column
    per run, and the published (converged) figure as the last line."""
    if not curves:
        return ['No run with per-epoch test figures yet.']
    out: List[str] = []
    for ds in [d for d in DATASETS if any(c.dataset == d for c in curves)] + sorted(
            {c.dataset for c in curves} - set(DATASETS)):
        cs = [c for c in curves if c.dataset == ds]
        seeds = {c.seed for c in cs}
        heads = [c.label + (f', seed {c.seed}' if len(seeds) > 1 else '') for c in cs]
        out.append(f"**{DATASET_NAMES.get(ds, ds)}** (test HR@20 / MRR@20 after each "
                   f"epoch; learning rate in brackets where it changed)")
        out.append('')
        out.append('| epoch | ' + ' | '.join(heads) + ' |')
        out.append('|---|' + '---|' * len(cs))
        last = max(p[0] for c in cs for p in c.points)
        for epoch in range(1, last + 1):
            cells = []
            for c in cs:
                at = [i for i, p in enumerate(c.points) if p[0] == epoch]
                if not at:
                    cells.append('')
                    continue
                i = at[0]
                lr, before = c.lrs[i], c.lrs[i - 1] if i > 0 else math.nan
                changed = (i > 0 and not math.isnan(lr) and not math.isnan(before)
                           and not math.isclose(lr, before))
                cells.append(f'{c.points[i][1]:.2f} / {c.points[i][2]:.2f}'
                             + (f' (lr {lr:g})' if changed else ''))
            out.append(f'| {epoch} | ' + ' | '.join(cells) + ' |')
        published = []
        for c in cs:
            ref = PAPER.get((COMPARED_AS.get(c.row, c.row), c.dataset))
            published.append(f'{ref[0]:.2f} / {ref[1]:.2f}' if ref else '-')
        out.append('| published (converged) | ' + ' | '.join(published) + ' |')
        out.append('')
    return out[:-1]


def splice(doc: str, block: str) -> str:
    r"""Replace the text between :data:`BEGIN` and :data:`END` in ``doc`` with
    ``block`` (appending both markers when absent).

    Raises:
        ValueError: when only one of the markers is present, or END precedes BEGIN.
    """
    has_b, has_e = BEGIN in doc, END in doc
    if has_b != has_e:
        raise ValueError(f"docs/results.md has {'BEGIN' if has_b else 'END'} but not "
                         f"{'END' if has_b else 'BEGIN'} marker: restore both "
                         f"({BEGIN!r} ... {END!r})")
    if not has_b:
        sep = '' if doc.endswith('\n') or not doc else '\n'
        return f"{doc}{sep}\n{BEGIN}\n{block}{END}\n"
    start = doc.index(BEGIN) + len(BEGIN)
    stop = doc.index(END)
    if stop < start:
        raise ValueError("docs/results.md: the END marker comes before the BEGIN marker")
    return doc[:start] + '\n' + block + doc[stop:]


# ------------------------------------------------------------------ figure


def figure_data(runs: Sequence[Mapping[str, Any]]
                ) -> List[Tuple[str, str, float, float, Optional[float], Optional[float]]]:
    r"""Bars of the figure: ``(dataset, label, ours HR@20, ours MRR@20, reference
    HR@20, reference MRR@20)``: every row with a published figure from full runs
    under the papers' protocol (baselines: protocol ``'none'``), then the
    one-epoch runs beside the released code's one-epoch figures (label suffix
    ``'(1 epoch)'``)."""
    out = []
    groups = group_runs(runs)
    for g in groups:
        if g.limits or g.protocol not in ('paper', 'none') or g.paper() is None:
            continue
        paper = g.paper()
        label = g.label if not g.preset or 'released' not in g.preset \
            else f'{g.label} (released)'
        out.append((g.dataset, label, g.stat('HR@20')[0], g.stat('MRR@20')[0],
                    paper[0] if paper else None, paper[1] if paper else None))
    for g in groups:
        ref = g.one_epoch_released()
        if ref is None or g.protocol != 'paper' or g.limits != '1 epoch':
            continue
        out.append((g.dataset, f'{g.label} (1 epoch)', g.stat('HR@20')[0],
                    g.stat('MRR@20')[0], ref[0], ref[1]))
    return out


def _pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or ``None`` (with a message on
    stderr) when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'tagnn-pyg[docs]' or "
              "pip install matplotlib): figure skipped", file=sys.stderr)
        return None
    return plt


def _save_figure(plt: Any, fig: Any, path: Path) -> Path:
    """Lay out ``fig``, write it to ``path`` (creating the folder) and close it."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_figure(runs: Sequence[Mapping[str, Any]], path: Path) -> Optional[Path]:
    r"""Bar chart of HR@20 and MRR@20 (ours vs the papers), one panel per data
    set and metric. Returns ``path``, or ``None`` (with a message on stderr)
    when matplotlib is missing or there is nothing to draw."""
    plt = _pyplot()
    if plt is None:
        return None
    data = figure_data(runs)
    if not data:
        print("no run with a published figure to compare with yet (full runs "
              "under the papers' protocol, baselines, one-epoch checks): figure "
              "skipped", file=sys.stderr)
        return None
    datasets = [d for d in DATASETS if any(r[0] == d for r in data)]
    fig, axes = plt.subplots(len(datasets), 2, figsize=(11, 3.6 * len(datasets)),
                             squeeze=False)
    for i, ds in enumerate(datasets):
        rows = [r for r in data if r[0] == ds]
        labels = [r[1] for r in rows]
        x = list(range(len(rows)))
        for j, (metric, col) in enumerate((('HR@20', 2), ('MRR@20', 3))):
            ax = axes[i][j]
            ours = [r[col] for r in rows]
            paper = [r[col + 2] if r[col + 2] is not None else math.nan for r in rows]
            w = 0.4
            b1 = ax.bar([v - w / 2 for v in x], ours, w, label="ours (papers' protocol)",
                        color='#1f77b4')
            b2 = ax.bar([v + w / 2 for v in x], paper, w,
                        label='published ("1 epoch" bars: released code)',
                        color='#bbbbbb')
            for bars in (b1, b2):
                ax.bar_label(bars, fmt='%.1f', fontsize=6, padding=1)
            ax.set_xticks(x)
            ax.set_xticklabels(labels, rotation=30, ha='right', fontsize=8)
            ax.set_ylabel(f'{metric} (%)')
            ax.set_title(f'{DATASET_NAMES[ds]}: {metric}')
            ax.grid(axis='y', alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    return _save_figure(plt, fig, path)


def render_curves_figure(runs: Sequence[Mapping[str, Any]], path: Path) -> Optional[Path]:
    r"""Line chart of the per-epoch test HR@20 and MRR@20 (:func:`curve_series`),
    one panel per data set and metric, the published converged figure of each
    row as a dashed line of its colour. Returns ``path``, or ``None`` (with a
    message on stderr) when matplotlib is missing or there is no curve."""
    plt = _pyplot()
    if plt is None:
        return None
    curves = curve_series(runs)
    if not curves:
        print("no papers'-protocol run with per-epoch test figures yet: curve "
              "figure skipped", file=sys.stderr)
        return None
    datasets = [d for d in DATASETS if any(c.dataset == d for c in curves)]
    fig, axes = plt.subplots(len(datasets), 2, figsize=(11, 3.6 * len(datasets)),
                             squeeze=False)
    colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for i, ds in enumerate(datasets):
        cs = [c for c in curves if c.dataset == ds]
        for j, metric in enumerate(('HR@20', 'MRR@20')):
            ax = axes[i][j]
            values: List[float] = []
            for n, c in enumerate(cs):
                colour = colours[n % len(colours)]
                ys = [p[1 + j] for p in c.points]
                ax.plot([p[0] for p in c.points], ys, marker='o', ms=3, color=colour,
                        label=c.label.replace('`', ''))
                values += ys
                ref = PAPER.get((COMPARED_AS.get(c.row, c.row), c.dataset))
                if ref is not None:
                    ax.axhline(ref[j], color=colour, ls='--', lw=0.8, alpha=0.7)
                    values.append(ref[j])
            pad = 0.05 * (max(values) - min(values) or 1.0)
            ax.set_ylim(min(values) - pad, max(values) + pad)
            ax.set_xlabel('epoch')
            ax.set_ylabel(f'test {metric} (%)')
            ax.set_title(f'{DATASET_NAMES[ds]}: {metric} (dashed: published, converged)',
                         fontsize=9)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    return _save_figure(plt, fig, path)


# ------------------------------------------------------------------ entry point


def write_report(results_dir: Path = RESULTS_DIR, doc: Path = DOC,
                 figure: Optional[Path] = FIGURE, knn: Optional[Path] = KNN_RESULTS,
                 curves_figure: Optional[Path] = CURVES_FIGURE) -> str:
    r"""Aggregate ``results_dir`` (and the session k-NN records ``knn``) into
    ``doc`` (and the images ``figure`` and ``curves_figure``); returns the block."""
    runs = load_runs(results_dir)
    knn_records = load_knn(knn) if knn is not None else []
    refs: List[Optional[str]] = []
    for path, render in ((figure, render_figure), (curves_figure, render_curves_figure)):
        made = render(runs, path) if path is not None else None
        if made is None:
            refs.append(None)
            continue
        try:
            refs.append(str(made.resolve().relative_to(doc.resolve().parent)))
        except ValueError:
            refs.append(str(made))
        print(f"figure written to {made}")
    block = render_markdown(runs, refs[0], knn_records, curves_figure=refs[1])
    text = doc.read_text() if doc.exists() else '# Reproducing the papers\n'
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(splice(text, block))
    print(f"{doc}: {len(runs)} run(s) aggregated")
    return block


def exit_status(run: Callable[[], Any], *errors: Type[BaseException]) -> int:
    """The exit status of a command doing ``run()``: 0, or 1 with ``error: <message>`` on
    stderr when it raises one of ``errors`` (the expected failures: missing or bad input)."""
    try:
        run()
    except errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--results', type=Path, default=RESULTS_DIR, help='run JSON folder')
    p.add_argument('--doc', type=Path, default=DOC, help='markdown file to update')
    p.add_argument('--figure', type=Path, default=FIGURE, help='PNG to write')
    p.add_argument('--curves-figure', type=Path, default=CURVES_FIGURE,
                   help='PNG of the per-epoch test curves to write')
    p.add_argument('--no-figure', action='store_true', help='write neither PNG')
    args = p.parse_args(argv)
    return exit_status(lambda: write_report(
        args.results, args.doc, None if args.no_figure else args.figure,
        curves_figure=None if args.no_figure else args.curves_figure), ValueError)


if __name__ == '__main__':
    sys.exit(main())
