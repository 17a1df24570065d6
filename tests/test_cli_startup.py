"""The command line answers ``--help`` / ``--version`` without importing torch or
PyG, its training options are TrainConfig's own, and a run's ``config.json``
re-runs it."""
import dataclasses
import json
import subprocess
import sys

import pytest

from tagnn_pyg.cli import build_parser, main
from tagnn_pyg.cli.common import BUILTIN_DATA
from tagnn_pyg.cli.config_options import docstring_args
from tagnn_pyg.data.loading import BUILTIN_DATA as LOADER_BUILTIN_DATA
from tagnn_pyg.data.srgnn_format import write_srgnn_folder
from tagnn_pyg.data.synthetic import make_synthetic_sessions
from tagnn_pyg.train import TrainConfig

HEAVY = ('torch', 'torch_geometric', 'numpy', 'scipy', 'sklearn')


@pytest.mark.parametrize('argv', [['--version'], ['--help'], ['train', '--help'],
                                  ['evaluate', '--help'], ['recommend', '--help'],
                                  ['baseline', '--help'], ['prepare', '--help'],
                                  ['demo', '--help']])
def test_help_imports_no_torch(argv):
    code = ("import sys\nfrom tagnn_pyg.cli import main\n"
            "try:\n    main(%r)\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print('HEAVY', [m for m in %r if m in sys.modules])" % (argv, HEAVY))
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == 'HEAVY []', out.stdout[-500:]


def test_python_dash_m_is_the_command():
    out = subprocess.run([sys.executable, '-m', 'tagnn_pyg', '--version'],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith('tagnn-pyg '), out


def test_builtin_names_agree():
    assert BUILTIN_DATA == LOADER_BUILTIN_DATA


def test_train_options_are_trainconfig_fields(capsys):
    """Every TrainConfig field has a documented flag whose help shows its default."""
    with pytest.raises(SystemExit):
        main(['train', '--help'])
    text = ' '.join(capsys.readouterr().out.split())
    helps = docstring_args(TrainConfig.__doc__)
    for f in dataclasses.fields(TrainConfig):
        assert f.name in helps, f"TrainConfig docstring does not document {f.name}"
        assert '--' + f.name.replace('_', '-') in text, f.name
    assert '--epochs N maximum number of epochs (default: 30)' in text
    assert '--lr X initial learning rate (default: 0.001)' in text
    assert '--ks K,K,... cut-offs of HR@K, MRR@K, NDCG@K (default: 5,10,20)' in text


def test_docstring_args_parser():
    doc = """Title.

    Args:
        a (int): first line
            continued :math:`\\lambda` and ``code``.
        b (str, optional): second.

    Returns:
        int: not an argument.
    """
    assert docstring_args(doc) == {'a': 'first line continued lambda and code.',
                                   'b': 'second.'}


def test_flags_reach_trainconfig():
    args = build_parser().parse_args(
        ['train', '--data', 'x', '--out', 'y', '--model', 'tagnn', '--epochs', '2',
         '--no-progress', '--threads', '3', '--step-at-epoch-end', '--ks', '10,20',
         '--agc'])
    from tagnn_pyg.cli.config_options import config_overrides
    over = config_overrides(args, args._config_fields)
    assert over == {'epochs': 2, 'progress': False, 'num_threads': 3,
                    'scheduler_step_at_epoch_start': False, 'ks': (10, 20), 'agc': True}


def test_bad_option_value_is_refused_before_any_work(tmp_path, capsys):
    code = main(['train', '--data', str(tmp_path / 'missing'), '--model', 'tagnn',
                 '--out', str(tmp_path / 'run'), '--valid-fraction', '1.5'])
    err = capsys.readouterr().err
    assert code == 1 and 'valid_fraction must be strictly between 0 and 1' in err
    assert not (tmp_path / 'run').exists()


@pytest.fixture(scope='module')
def tiny_folder(tmp_path_factory):
    train, test = make_synthetic_sessions(num_items=60, num_train_sessions=120,
                                          num_test_sessions=30, seed=3, num_interests=3)
    return write_srgnn_folder(tmp_path_factory.mktemp('tiny') / 'data', train, test)


def test_config_json_reruns_the_run(tiny_folder, tmp_path):
    first, second = tmp_path / 'a', tmp_path / 'b'
    assert main(['train', '--data', str(tiny_folder), '--model', 'srgnn', '--out',
                 str(first), '--epochs', '2', '--hidden', '8', '--batch-size', '40',
                 '--lr', '0.01', '--threads', '1', '--no-progress', '--device',
                 'cpu', '--seed', '5']) == 0
    saved = json.loads((first / 'config.json').read_text())
    assert saved['model'] == {'name': 'srgnn', 'preset': None,
                              'kwargs': {'hidden_channels': 8}}
    assert saved['train']['lr'] == 0.01 and saved['train']['seed'] == 5
    assert saved['data']['data'] == str(tiny_folder.resolve())
    assert main(['train', '--config', str(first / 'config.json'), '--out',
                 str(second)]) == 0
    a = json.loads((first / 'metrics.json').read_text())
    b = json.loads((second / 'metrics.json').read_text())
    assert a['test'] == b['test'] and a['history'][-1]['train_loss'] == \
        b['history'][-1]['train_loss']
    # a flag beside --config overrides it
    third = tmp_path / 'c'
    assert main(['train', '--config', str(first / 'config.json'), '--out', str(third),
                 '--epochs', '1']) == 0
    assert json.loads((third / 'config.json').read_text())['train']['epochs'] == 1


def test_config_yaml(tiny_folder, tmp_path):
    yaml = pytest.importorskip('yaml')
    cfg = {'data': {'data': str(tiny_folder)},
           'model': {'name': 'srgnn', 'kwargs': {'hidden_channels': 8}},
           'train': {'epochs': 1, 'batch_size': 40, 'progress': False, 'device': 'cpu',
                     'num_threads': 1}}
    path = tmp_path / 'run.yaml'
    path.write_text(yaml.safe_dump(cfg))
    assert main(['train', '--config', str(path), '--out', str(tmp_path / 'r')]) == 0
    saved = json.loads((tmp_path / 'r' / 'config.json').read_text())
    assert saved['train']['batch_size'] == 40


@pytest.mark.parametrize('content, message', [
    ('{"model": {}}', "must be a mapping with 'model' and 'train'"),
    ('not json', 'is not valid JSON'),
])
def test_bad_config_file(tmp_path, capsys, content, message):
    path = tmp_path / 'c.json'
    path.write_text(content)
    assert main(['train', '--config', str(path), '--out', str(tmp_path / 'r')]) == 1
    assert message in capsys.readouterr().err


def _subparsers():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == 'command')
    return sub.choices


@pytest.mark.parametrize('command', sorted(_subparsers()))
def test_every_option_says_what_it_does_and_its_default(command):
    """--help of every command: each option has a help text, and each option
    that takes a value names its default (or says it is required)."""
    import argparse
    for action in _subparsers()[command]._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        assert action.help, f"{command} {action.option_strings}: no help text"
        takes_value = action.nargs != 0 and not isinstance(
            action, (argparse._StoreTrueAction, argparse._StoreFalseAction,
                     argparse.BooleanOptionalAction, argparse._AppendAction))
        if takes_value and not action.required:
            text = action.help.lower()
            assert 'default' in text or 'none' in text, \
                f"{command} {action.option_strings}: help names no default: {action.help!r}"


def test_config_json_of_a_builtin_name_reruns_from_elsewhere(tmp_path, monkeypatch):
    """A built-in name is saved with the absolute root it was found under."""
    monkeypatch.chdir(tmp_path)
    assert main(['train', '--data', 'synthetic', '--model', 'srgnn', '--out', 'a',
                 '--epochs', '1', '--hidden', '8', '--max-train', '300', '--max-test',
                 '100', '--threads', '1', '--no-progress', '--device', 'cpu']) == 0
    saved = json.loads((tmp_path / 'a' / 'config.json').read_text())
    assert saved['data'] == {'data': 'synthetic', 'root': str(tmp_path / 'data'),
                             'num_items': saved['data']['num_items']}
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(['train', '--config', str(tmp_path / 'a' / 'config.json'), '--out',
                 'b']) == 0
    a = json.loads((tmp_path / 'a' / 'metrics.json').read_text())
    b = json.loads((elsewhere / 'b' / 'metrics.json').read_text())
    assert a['test'] == b['test']
    assert not (elsewhere / 'data').exists()  # the saved root was used
