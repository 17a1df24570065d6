"""Every script in examples/ (except the nn one, see test_examples_nn.py) runs at a
tiny size."""
import os
import subprocess
import sys
from pathlib import Path

from conftest import require_shared

EXAMPLES = Path(__file__).resolve().parents[1] / 'examples'


def _run(script: str, *args: str, timeout: int = 300) -> str:
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def test_train_synthetic_then_recommend(tmp_path):
    out = _run('train_tagnn_synthetic.py', '--num-items', '150', '--train-sessions', '300',
               '--test-sessions', '60', '--epochs', '1', '--hidden', '16',
               '--out', str(tmp_path / 'run'))
    assert 'TAGNN' in out and 'POP' in out and 'honest protocol' in out
    out = _run('recommend_from_checkpoint.py', str(tmp_path / 'run' / 'best.pt'),
               '--items', '3,17,42', '-k', '4')
    lines = out.strip().splitlines()
    assert len(lines) == 4 and lines[0].strip().startswith('1. item ')


def test_custom_model():
    out = _run('custom_model.py', '--steps', '10', '--sessions', '200', '--hidden', '8')
    assert 'GatedSessionConv' in out and 'TargetAttention' in out
    assert 'after training' in out and 'step 10: loss' in out


def test_train_diginetica_capped(tmp_path):
    folder = require_shared('diginetica')
    out = _run('train_diginetica.py', str(folder), '--model', 'srgnn', '--epochs', '1',
               '--hidden', '8', '--max-train', '300', '--max-test', '200',
               '--device', 'cpu', '--out', str(tmp_path / 'run'))
    assert "{'train': " in out and "'test': 200" in out and 'test HR@20' in out
    assert (tmp_path / 'run' / 'best.pt').exists()


def test_train_diginetica_from_raw(tmp_path):
    raw = require_shared('raw', 'diginetica-sample-train-item-views.csv')
    out = _run('train_diginetica.py', str(tmp_path / 'prepared'), '--raw', str(raw),
               '--model', 'tagnn', '--epochs', '1', '--hidden', '8', '--device', 'cpu')
    assert '"train_sessions": 469' in out and 'test HR@20' in out
