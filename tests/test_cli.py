"""The ``tagnn-pyg`` command on tiny synthetic data: train / evaluate / recommend /
baseline / prepare, and one-line errors with a non-zero exit status."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tagnn_pyg.checkpoint import load_checkpoint
from tagnn_pyg.cli import main
from tagnn_pyg.data.srgnn_format import write_srgnn_folder
from tagnn_pyg.data.synthetic import make_synthetic_sessions

from conftest import require_shared

TINY = ['--epochs', '1', '--hidden', '8', '--batch-size', '50', '--max-test', '100',
        '--threads', '1', '--no-progress', '--device', 'cpu']


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory) -> Path:
    train, test = make_synthetic_sessions(num_items=80, num_train_sessions=150,
                                          num_test_sessions=40, seed=1, num_interests=4)
    return write_srgnn_folder(tmp_path_factory.mktemp('tiny') / 'data', train, test)


@pytest.fixture(scope='module')
def run_dir(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('run') / 'run'
    assert main(['train', '--data', str(data_dir), '--model', 'tagnn', '--out', str(out),
                 '--lr', '0.01', *TINY]) == 0
    return out


def _one_error_line(capsys, code: int, rc: int = 1) -> str:
    """The one error line (the last line of stderr, after any log lines), no traceback."""
    assert code == rc
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith('tagnn-pyg: error: ')]
    assert len(errors) == 1 and err[-1] == errors[0], err
    assert not any(line.startswith('Traceback') for line in err), err
    return errors[0]


def test_train_writes_run(run_dir):
    for name in ('best.pt', 'last.pt', 'metrics.json', 'log.csv', 'log.jsonl', 'train.log'):
        assert (run_dir / name).exists(), name
    metrics = json.loads((run_dir / 'metrics.json').read_text())
    assert metrics['protocol'] == 'honest' and metrics['epoch_chosen'] == 1
    for k in (5, 10, 20):
        for m in ('HR', 'MRR', 'NDCG'):
            assert 0 <= metrics['test'][f'{m}@{k}'] <= 100
    assert metrics['test']['count'] == 100
    ckpt = load_checkpoint(run_dir / 'best.pt')
    assert ckpt['model']['config']['hidden_channels'] == 8
    assert ckpt['train_config']['lr'] == 0.01


def test_train_resume_and_paper_protocol(data_dir, tmp_path, capsys):
    out = tmp_path / 'paper'
    args = ['train', '--data', str(data_dir), '--model', 'srgnn', '--out', str(out),
            '--protocol', 'paper', *TINY]
    assert main(args) == 0
    assert "papers' protocol" in capsys.readouterr().out
    args[args.index('--epochs') + 1] = '2'
    assert main(args + ['--resume', '--checkpoint-every', '3']) == 0  # may change
    assert load_checkpoint(out / 'last.pt')['train_config']['checkpoint_every'] == 3
    capsys.readouterr()
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['protocol'] == 'paper' and metrics['epochs_run'] == 2
    assert set(metrics['epoch_chosen']) == {'HR@20', 'MRR@20'}
    assert "resumed from" in (out / 'train.log').read_text()
    # the checkpoint carries the training clicks per item (serving's popularity
    # fallback): every click of every whole training session, counted directly
    train, _ = make_synthetic_sessions(num_items=80, num_train_sessions=150,
                                       num_test_sessions=40, seed=1, num_interests=4)
    ckpt = load_checkpoint(out / 'last.pt')
    direct = [0] * ckpt['num_items']
    for session in train:
        for item in session:
            direct[item] += 1
    assert ckpt['item_counts'].tolist() == direct and sum(direct) > 0
    # ... so a session of unknown ids is served the most clicked items, no data needed
    from tagnn_pyg.serve import Recommender
    fallback = Recommender.from_checkpoint(out / 'best.pt').recommend(
        [['999']], k=3, unknown='drop')[0]
    assert fallback.fallback == 'popularity'
    top = sorted(range(len(direct)), key=lambda i: -direct[i])[:3]
    assert [direct[int(i)] for i in fallback.items] == [direct[i] for i in top]
    # changing a training setting on resume is refused with one line
    code = main(args + ['--resume', '--lr', '0.5'])
    assert 'training settings differ: lr' in _one_error_line(capsys, code)


def test_evaluate_prints_and_writes(run_dir, data_dir, tmp_path, capsys):
    out = tmp_path / 'eval.json'
    assert main(['evaluate', '--checkpoint', str(run_dir / 'best.pt'), '--data',
                 str(data_dir), '--max-test', '100', '--out', str(out),
                 '--no-progress']) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    train_metrics = json.loads((run_dir / 'metrics.json').read_text())['test']
    assert printed['metrics'] == pytest.approx(train_metrics)
    assert main(['evaluate', '--checkpoint', str(run_dir / 'best.pt'), '--data',
                 str(data_dir), '--split', 'valid', '--no-progress']) == 0
    valid = json.loads(capsys.readouterr().out)['metrics']
    chosen = json.loads((run_dir / 'metrics.json').read_text())['valid']
    assert valid == pytest.approx(chosen)


def test_recommend_top_k_json(run_dir, capsys):
    assert main(['recommend', '--checkpoint', str(run_dir / 'best.pt'), '--items',
                 '3,17,42', '-k', '5']) == 0
    res = json.loads(capsys.readouterr().out)
    assert res['session'] == [3, 17, 42] and len(res['recommendations']) == 5
    scores = [r['score'] for r in res['recommendations']]
    assert scores == sorted(scores, reverse=True)
    assert all(1 <= r['item'] <= 80 for r in res['recommendations'])
    # same as scoring with the model directly
    from tagnn_pyg.checkpoint import build_model
    from tagnn_pyg.data.batching import build_session_batch
    model = build_model(load_checkpoint(run_dir / 'best.pt')).eval()
    with torch.no_grad():
        z = model(build_session_batch(torch.tensor([3, 17, 42]), torch.tensor([0, 3])))[0]
    assert [r['item'] for r in res['recommendations']] == z.topk(5).indices.tolist()


def test_recommend_unknown_ids(run_dir, capsys):
    ckpt = str(run_dir / 'best.pt')
    line = _one_error_line(capsys, main(['recommend', '--checkpoint', ckpt,
                                         '--items', '3,999']))
    assert "unknown item ids ['999']" in line and '--drop-unknown' in line
    assert main(['recommend', '--checkpoint', ckpt, '--items', '3,999,abc',
                 '--drop-unknown', '-k', '2']) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)['dropped'] == ['999', 'abc']
    assert 'warning' in captured.err
    line = _one_error_line(capsys, main(['recommend', '--checkpoint', ckpt, '--items',
                                         '0,999', '--drop-unknown']))
    assert 'nothing is left' in line


def test_recommend_with_released_padding_needs_the_pad_length(tmp_path, capsys):
    from tagnn_pyg.checkpoint import save_checkpoint
    from tagnn_pyg.data.batching import build_session_batch
    from tagnn_pyg.models import TAGNN
    torch.manual_seed(0)
    model = TAGNN(30, 8, released_padding=True)
    ckpt = str(save_checkpoint(tmp_path / 'padded.pt', model=model, model_name='tagnn',
                               num_items=30, train_config={'weighting': 'binary'}))
    line = _one_error_line(capsys, main(['recommend', '--checkpoint', ckpt, '--items',
                                         '3,7']))
    assert 'released_padding=True): pass --pad-length L' in line
    assert main(['recommend', '--checkpoint', ckpt, '--items', '3,7', '-k', '3',
                 '--pad-length', '6']) == 0
    got = [r['item'] for r in json.loads(capsys.readouterr().out)['recommendations']]
    model.eval().pad_length = 6
    with torch.no_grad():
        z = model(build_session_batch(torch.tensor([3, 7]), torch.tensor([0, 2])))[0]
    assert got == z.topk(3).indices.tolist()
    plain = str(save_checkpoint(tmp_path / 'plain.pt', model=TAGNN(30, 8), model_name='tagnn',
                                num_items=30, train_config={'weighting': 'binary'}))
    line = _one_error_line(capsys, main(['recommend', '--checkpoint', plain, '--items', '3',
                                         '--pad-length', '6']))
    assert '--pad-length applies only to models with released_padding=True' in line


def test_baseline_same_protocol(data_dir, tmp_path, capsys):
    assert main(['baseline', '--data', str(data_dir), '--method', 'pop', '--out',
                 str(tmp_path), '--no-progress']) == 0
    res = json.loads(capsys.readouterr().out)
    assert res['protocol'] == 'honest' and 'valid' in res and 'HR@20' in res['test']
    assert res['fitted_on'] == 'whole training sessions'
    assert json.loads((tmp_path / 'metrics.json').read_text()) == res
    assert main(['baseline', '--data', str(data_dir), '--method', 'itemknn',
                 '--protocol', 'paper', '--no-progress']) == 0
    res = json.loads(capsys.readouterr().out)
    assert res['protocol'] == 'paper' and 'valid' not in res


def test_prepare_then_train_and_recommend_raw_ids(tmp_path, capsys):
    raw = require_shared('raw', 'diginetica-sample-train-item-views.csv')
    out = tmp_path / 'prepared'
    assert main(['prepare', 'diginetica', str(raw), str(out)]) == 0
    stats = json.loads((out / 'stats.json').read_text())
    assert stats['num_items'] in (309, 310)
    run = tmp_path / 'run'
    assert main(['train', '--data', str(out), '--model', 'srgnn', '--out', str(run),
                 *TINY]) == 0
    ids = json.loads((out / 'item_ids.json').read_text())
    raw_a, raw_b = ids[1], ids[2]
    capsys.readouterr()
    assert main(['recommend', '--checkpoint', str(run / 'best.pt'), '--items',
                 f'{raw_a},{raw_b}', '-k', '3']) == 0
    res = json.loads(capsys.readouterr().out)
    assert res['session'] == [raw_a, raw_b]
    assert all(r['item'] in ids[1:] for r in res['recommendations'])


@pytest.mark.parametrize('argv, expected', [
    (['train', '--data', '/no/such/folder', '--model', 'tagnn', '--out', 'x'],
     "neither an existing folder nor a built-in data set"),
    (['train', '--data', 'diginetica', '--root', '/no/such/root', '--model', 'tagnn',
      '--out', 'x'], "built-in data set 'diginetica' not found"),
    (['train', '--data', 'synthetic', '--preset', 'nope', '--out', 'x'],
     "unknown preset 'nope'"),
    (['train', '--data', 'synthetic', '--preset', 'srgnn', '--model', 'tagnn',
      '--out', 'x'], "is a 'srgnn' preset"),
    (['evaluate', '--checkpoint', '/no/such.pt', '--data', 'synthetic'],
     'checkpoint /no/such.pt does not exist'),
])
def test_user_errors_are_one_line(argv, expected, capsys):
    line = _one_error_line(capsys, main(argv))
    assert expected in line


def test_more_user_errors(run_dir, data_dir, tmp_path, capsys):
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'garbage')
    line = _one_error_line(capsys, main(['recommend', '--checkpoint', str(bad),
                                         '--items', '1']))
    assert 'bad.pt is not a torch checkpoint' in line
    # wrong format: test.txt is not a pickle of lists
    wrong = tmp_path / 'wrong'
    wrong.mkdir()
    (wrong / 'test.txt').write_text('hello')
    (wrong / 'all_train_seq.txt').write_text('hello')
    line = _one_error_line(capsys, main(['train', '--data', str(wrong), '--model',
                                         'srgnn', '--out', str(tmp_path / 'r')]))
    assert 'all_train_seq.txt' in line or 'test.txt' in line
    # data with more items than the checkpoint knows
    big_train, big_test = make_synthetic_sessions(num_items=300, num_train_sessions=100,
                                                  num_test_sessions=30, seed=2)
    big = write_srgnn_folder(tmp_path / 'big', big_train, big_test)
    line = _one_error_line(capsys, main(['evaluate', '--checkpoint',
                                         str(run_dir / 'best.pt'), '--data', str(big)]))
    assert 'was trained on other data: item count' in line
    # resume without a run
    line = _one_error_line(capsys, main(['train', '--data', str(data_dir), '--model',
                                         'srgnn', '--out', str(tmp_path / 'none'),
                                         '--resume']))
    assert 'last.pt does not exist' in line
    # bad model argument
    line = _one_error_line(capsys, main(['train', '--data', str(data_dir), '--model',
                                         'srgnn', '--out', str(tmp_path / 'm'),
                                         '--model-arg', 'colour=3', *TINY]))
    assert "bad model argument for 'srgnn'" in line


def test_bad_options_exit_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(['train', '--data', 'synthetic', '--model', 'tagnn', '--out', 'x',
              '--epochs', '0'])
    line = _one_error_line(capsys, info.value.code, rc=2)
    assert 'argument --epochs: expected a positive integer, got 0' in line
    with pytest.raises(SystemExit) as info:
        main(['train', '--data', 'synthetic', '--model', 'gpt', '--out', 'x'])
    assert "invalid choice: 'gpt'" in _one_error_line(capsys, info.value.code, rc=2)


def test_console_script_one_line_error(tmp_path):
    """The installed entry point: no traceback, exit status 1, one line."""
    exe = Path(sys.executable).with_name('tagnn-pyg')
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-m', 'tagnn_pyg.cli']
    proc = subprocess.run(cmd + ['recommend', '--checkpoint', str(tmp_path / 'no.pt'),
                                 '--items', '1'], capture_output=True, text=True,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'}, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"tagnn-pyg: error: checkpoint {tmp_path / 'no.pt'} does not exist"]
    assert 'Traceback' not in proc.stderr
