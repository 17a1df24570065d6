"""The nn example runs at tiny size and learns (TargetAttention in a plain PyG pipeline)."""
import importlib.util
from pathlib import Path


EXAMPLES = Path(__file__).resolve().parents[1] / 'examples'


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_target_attention_graphs_learns(capsys):
    example = load('target_attention_graphs')
    result = example.main(['--epochs', '3', '--num-graphs', '150', '--hidden', '16'])
    assert 'final test accuracy' in capsys.readouterr().out
    assert result['test_accuracy'] > 0.5     # 3 classes: chance is 1/3
    assert result['train_accuracy'] > 0.5
