"""Session k-NN baselines (SKNN, V-SKNN, STAN): a small grid tuned on the honest
validation split, then the full test sets.

Two stages, each resumable (records already in the JSON are not recomputed):

* ``--stage tune``: fit every grid point on the honest training split (all but
  the most recent 10 % of the training sessions,
  :func:`tagnn_pyg.data.temporal_session_split`) and evaluate it on the most
  recent ``--max-valid`` validation sequences (the prefixes of those held-out
  sessions, full ranking). Writes ``benchmarks/results/knn_tuning.{json,md}``
  and picks, per (method, data set), the grid point with the best validation
  HR@20 (the trainer's ``select_metric``), MRR@20 breaking ties.
* ``--stage test``: the full test set, full ranking, ties against the model,
  under two protocols, both fitted on all training sessions
  (``all_train_seq.txt``):

  - ``paper``: the default hyper-parameters (those of the papers/session-rec,
    see :mod:`tagnn_pyg.baselines`), no model selection;
  - ``honest``: the hyper-parameters the tune stage chose on validation.

  Writes ``benchmarks/results/session_knn.{json,md}``.

Usage::

    nice -n 19 python benchmarks/knn_tuning.py --stage tune
    nice -n 19 python benchmarks/knn_tuning.py --stage test
    python benchmarks/knn_tuning.py --stage test --datasets diginetica --methods stan
"""
from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from torch_geometric.data import Batch

from tagnn_pyg.baselines import BASELINES
from tagnn_pyg.data import SessionData
from tagnn_pyg.data.loading import load_session_data
from tagnn_pyg.train import TrainConfig, evaluate, make_splits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'benchmarks'))
from baselines import device_name  # noqa: E402  (benchmarks/baselines.py)

DEFAULT_ROOT = REPO.parent / 'shared' / 'datasets'
RESULTS = REPO / 'benchmarks' / 'results'
METHODS = ('sknn', 'vsknn', 'stan')
NAMES = {'sknn': 'SKNN', 'vsknn': 'V-SKNN', 'stan': 'STAN'}
CPU = device_name(torch.device('cpu'))
DATASET_NAMES = {'diginetica': 'Diginetica', 'yoochoose1_64': 'Yoochoose 1/64'}
KS = (5, 10, 20)


def _grid(**axes: List[Any]) -> List[Dict[str, Any]]:
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


#: The grids: small on purpose (2 shared CPU cores). The first block of each
#: method is the original grid; the others extend it past the edges where a
#: choice sat (k, sample_size, IDF boost, STAN's lambda1, lambda3 and anchor)
#: and add session-rec's own code defaults (SKNN: sample_size=1000, Jaccard).
GRIDS: Dict[str, List[Dict[str, Any]]] = {
    'sknn': _grid(k=[50, 100, 200, 500], sample_size=[500, 2000], similarity=['cosine'])
    + _grid(k=[100, 500], sample_size=[500], similarity=['jaccard'])
    + _grid(k=[1000, 2000], sample_size=[2000, 5000], similarity=['cosine'])
    + _grid(k=[100, 1000], sample_size=[1000], similarity=['jaccard', 'cosine']),
    'vsknn': _grid(k=[100, 500], sample_size=[1000], weighting=['div'],
                   weighting_score=['div', 'quadratic'], idf_weighting=[0.0, 5.0])
    + _grid(k=[100, 500, 1000], sample_size=[1000], weighting=['div'],
            weighting_score=['div', 'quadratic'], idf_weighting=[10.0, 20.0])
    + _grid(k=[500, 1000], sample_size=[2000, 5000], weighting=['div'],
            weighting_score=['div', 'quadratic'], idf_weighting=[10.0])
    + _grid(k=[500], sample_size=[1000], weighting=['quadratic', 'log', 'same'],
            weighting_score=['quadratic'], idf_weighting=[10.0])
    + _grid(k=[2000], sample_size=[5000], weighting=['div'],
            weighting_score=['div', 'quadratic'], idf_weighting=[10.0]),
    'stan': _grid(k=[100, 500], sample_size=[5000], lambda1=[1.02, 3.0],
                  lambda2=[2000.0, 20000.0, None], lambda3=[2.05])
    + _grid(k=[1000, 2000], sample_size=[5000, 10000], lambda1=[1.02],
            lambda2=[20000.0, None], lambda3=[2.05])
    + _grid(k=[500], sample_size=[5000], lambda1=[1.02], lambda2=[20000.0, None],
            lambda3=[0.5, 5.0, 10.0])
    + _grid(k=[500], sample_size=[5000], lambda1=[1.02], lambda2=[20000.0, None],
            lambda3=[2.05], anchor=['last'])
    + _grid(k=[100, 500], sample_size=[5000], lambda1=[5.0, 10.0], lambda2=[None],
            lambda3=[2.05]),
}


def fit_evaluate(method: str, params: Dict[str, Any], sessions: List[List[int]],
                 num_items: int, sequences: Any, batch_size: int
                 ) -> Tuple[Any, Dict[str, float], float, float]:
    """``(model, metrics, fit seconds, evaluation seconds)``, full ranking, CPU."""
    t0 = time.perf_counter()
    model = BASELINES[method](**params).fit(sessions, num_items)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = evaluate(model, sequences, batch_size=batch_size, ks=KS)
    return model, metrics, fit_s, time.perf_counter() - t0


def score_dtype(model: Any) -> str:
    """The dtype of ``model``'s scores (float32 scores can tie where float64
    ones do not, so records of either kind are not mixed)."""
    probe = Batch.from_data_list([SessionData.from_sequence([1])])
    return str(model(probe).dtype).replace('torch.', '')


def commands_footer(records: List[Dict[str, Any]]) -> List[str]:
    cmds = sorted({r['command'] for r in records})
    return ['', 'Commands:', ''] + [f'    {c}' for c in cmds]


def _load(path: Path) -> List[Dict[str, Any]]:
    return json.loads(path.read_text()) if path.exists() else []


def _key(record: Dict[str, Any]) -> str:
    return json.dumps([record['dataset'], record['model'], record.get('protocol'),
                       record['params']], sort_keys=True)


def _save(records: List[Dict[str, Any]], path: Path,
          drop: Optional[set] = None) -> List[Dict[str, Any]]:
    """Merge ``records`` into the file (another run may have written it since
    this one read it; this run's records win), leave out the records whose key
    is in ``drop``, and return the merged list."""
    mine = {_key(r) for r in records} | (drop or set())
    merged = [r for r in _load(path) if _key(r) not in mine] + list(records)
    path.write_text(json.dumps(merged, indent=1) + '\n')
    return merged


def _fmt(params: Dict[str, Any]) -> str:
    return ', '.join(f'{k}={v}' for k, v in params.items())


def best(records: List[Dict[str, Any]], dataset: str, method: str
         ) -> Optional[Dict[str, Any]]:
    rows = [r for r in records if r['dataset'] == dataset and r['model'] == method]
    if not rows:
        return None
    cases = {r['valid_cases'] for r in rows}
    if len(cases) > 1:
        raise ValueError(f"{dataset} {method}: grid points were evaluated on different "
                         f"validation sizes {sorted(cases)}; rerun --stage tune with one "
                         f"--max-valid")
    return max(rows, key=lambda r: (r['valid']['HR@20'], r['valid']['MRR@20']))


def tune(args: argparse.Namespace, command: str) -> None:
    path = args.out / 'knn_tuning.json'
    records = _load(path)
    done = {(r['dataset'], r['model'], json.dumps(r['params'], sort_keys=True),
             r['valid_cases']) for r in records}
    cfg = TrainConfig(protocol='honest', valid='temporal', max_valid=args.max_valid)
    for name in args.datasets:
        data = load_session_data(name, root=args.root)
        splits = make_splits(cfg, train=data.train, test=data.test,
                             train_sessions=data.train_sessions)
        print(f'{name}: fit on {len(splits.train_sessions):,} sessions, validation '
              f'{len(splits.valid):,} sequences ({"; ".join(splits.notes)})', flush=True)
        for method in args.methods:
            for params in GRIDS[method]:
                key = (name, method, json.dumps(params, sort_keys=True), len(splits.valid))
                if key in done:
                    continue
                # a point measured on another validation size is replaced
                records = [r for r in records if _key(r) != _key(
                    {'dataset': name, 'model': method, 'params': params})]
                model, valid, fit_s, eval_s = fit_evaluate(
                    method, params, splits.train_sessions, data.num_items,
                    splits.valid, args.batch_size)
                records.append({
                    'model': method, 'dataset': name, 'params': params,
                    'variant': repr(model), 'valid': valid,
                    'fit_sessions': len(splits.train_sessions),
                    'valid_cases': len(splits.valid), 'split_notes': splits.notes,
                    'fit_s': round(fit_s, 2), 'eval_s': round(eval_s, 2),
                    'device': CPU, 'command': command})
                print(f"  {NAMES[method]:7s} {_fmt(params):70s} HR@20 "
                      f"{valid['HR@20']:6.2f} MRR@20 {valid['MRR@20']:6.2f} "
                      f"({eval_s:.0f} s)", flush=True)
                _save(records, path)
    write_tuning_markdown(_save(records, path), args.out / 'knn_tuning.md')


def test(args: argparse.Namespace, command: str) -> None:
    path = args.out / 'session_knn.json'
    records = _load(path)
    tuned = _load(args.out / 'knn_tuning.json')
    # each method's score dtype now: a row of another dtype is recomputed
    scores = {m: score_dtype(BASELINES[m]().fit([[1, 2]], 3)) for m in args.methods}
    stale: set = set()
    for name in args.datasets:
        data = None
        for method in args.methods:
            for protocol in args.protocols:
                if protocol == 'paper':
                    params: Dict[str, Any] = {}
                else:
                    chosen = best(tuned, name, method)
                    if chosen is None:
                        print(f'  {name} {method}: not tuned yet, skipping honest',
                              flush=True)
                        continue
                    params = chosen['params']
                same = [r for r in records if r['dataset'] == name
                        and r['model'] == method and r['protocol'] == protocol]
                if any(r['params'] == params and r.get('scores') == scores[method]
                       for r in same):
                    continue
                # A grid extended since (the honest row of the old choice) or
                # scores of another dtype: the row is stale.
                stale |= {_key(r) for r in same}
                records = [r for r in records if not any(r is x for x in same)]
                if data is None:
                    data = load_session_data(name, root=args.root)
                model, metrics, fit_s, eval_s = fit_evaluate(
                    method, params, data.train_sessions, data.num_items, data.test,
                    args.batch_size)
                records.append({
                    'model': method, 'model_name': NAMES[method], 'dataset': name,
                    'protocol': protocol,
                    'protocol_description': (
                        'default hyper-parameters, fitted on all training sessions'
                        if protocol == 'paper' else
                        'hyper-parameters chosen on the honest validation split '
                        '(benchmarks/results/knn_tuning.json), then fitted on all '
                        'training sessions'),
                    'params': params, 'variant': repr(model), 'metrics': metrics,
                    'scores': score_dtype(model),
                    'train_sessions': len(data.train_sessions),
                    'test_cases': len(data.test), 'num_items': data.num_items,
                    'fit_s': round(fit_s, 2), 'eval_s': round(eval_s, 2),
                    'wall_s': round(fit_s + eval_s, 2), 'device': CPU,
                    'torch': torch.__version__, 'command': command})
                print(f"  {name} {NAMES[method]:7s} {protocol:6s} HR@20 "
                      f"{metrics['HR@20']:6.2f} MRR@20 {metrics['MRR@20']:6.2f} "
                      f"(fit {fit_s:.1f} s, eval {eval_s:.0f} s)", flush=True)
                _save(records, path, stale)
    order = {(d, m, p): i for i, (d, m, p) in enumerate(
        itertools.product(DATASET_NAMES, METHODS, ('paper', 'honest')))}
    records = _save(records, path, stale)
    records.sort(key=lambda r: order.get((r['dataset'], r['model'], r['protocol']), 99))
    path.write_text(json.dumps(records, indent=1) + '\n')
    write_test_markdown(records, args.out / 'session_knn.md')


def write_tuning_markdown(records: List[Dict[str, Any]], path: Path) -> None:
    lines = ['# Session k-NN: validation grid', '',
             'Fitted on the honest training split (all but the most recent 10 % of the '
             'training sessions), evaluated on the most recent validation sequences '
             '(full ranking, ties against the model, percent). **bold** = chosen '
             '(best HR@20, then MRR@20).', '',
             '| dataset | model | hyper-parameters | HR@20 | MRR@20 | NDCG@20 | '
             'valid cases | eval s |', '|---|---|---|---|---|---|---|---|']
    for d in DATASET_NAMES:
        for m in METHODS:
            chosen = best(records, d, m)
            for r in (r for r in records if r['dataset'] == d and r['model'] == m):
                v = r['valid']
                mark = '**' if r is chosen else ''
                lines.append(f"| {DATASET_NAMES[d]} | {NAMES[m]} | {mark}{_fmt(r['params'])}"
                             f"{mark} | {v['HR@20']:.2f} | {v['MRR@20']:.2f} | "
                             f"{v['NDCG@20']:.2f} | {r['valid_cases']:,} | "
                             f"{r['eval_s']:.0f} |")
    lines += commands_footer(records)
    path.write_text('\n'.join(lines) + '\n')


def write_test_markdown(records: List[Dict[str, Any]], path: Path) -> None:
    lines = ['# Session k-NN baselines on the full test sets', '',
             'Full ranking over all items, ties counted against the model, percent. '
             'Fitted on all training sessions (`all_train_seq.txt`), every test '
             'sequence of `test.txt`. *paper* = default hyper-parameters (papers / '
             'session-rec); *honest* = chosen on the honest validation split '
             '(`knn_tuning.md`).', '',
             '| model | dataset | protocol | HR@5 | HR@10 | HR@20 | MRR@5 | MRR@10 | '
             'MRR@20 | NDCG@20 | hyper-parameters | test cases | fit s | eval s | '
             'device |', '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in records:
        m = r['metrics']
        lines.append(
            f"| {r['model_name']} | {DATASET_NAMES.get(r['dataset'], r['dataset'])} | "
            f"{r['protocol']} | "
            + ' | '.join(f"{m[k]:.2f}" for k in ('HR@5', 'HR@10', 'HR@20', 'MRR@5',
                                                  'MRR@10', 'MRR@20', 'NDCG@20'))
            + f" | {_fmt(r['params']) or 'defaults'} | {r['test_cases']:,} | "
            f"{r['fit_s']:.1f} | {r['eval_s']:.0f} | {r['device']} |")
    lines += commands_footer(records)
    path.write_text('\n'.join(lines) + '\n')


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--stage', choices=('tune', 'test'), required=True)
    parser.add_argument('--root', type=Path, default=DEFAULT_ROOT)
    parser.add_argument('--datasets', nargs='+', default=list(DATASET_NAMES),
                        choices=list(DATASET_NAMES))
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS)
    parser.add_argument('--protocols', nargs='+', default=['paper', 'honest'],
                        choices=('paper', 'honest'))
    parser.add_argument('--max-valid', type=int, default=10000,
                        help='the most recent validation sequences to tune on')
    parser.add_argument('--batch-size', type=int, default=300)
    parser.add_argument('--out', type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    command = 'nice -n 19 python ' + ' '.join(
        shlex.quote(a) for a in ['benchmarks/knn_tuning.py'] + sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (tune if args.stage == 'tune' else test)(args, command)


if __name__ == '__main__':
    main()
