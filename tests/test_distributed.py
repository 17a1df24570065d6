"""Distributed training and evaluation on the CPU with Gloo: N processes compute
what one process computes (weights, gradients, metrics), a killed process stops
the run in bounded time, and ``--resume`` continues it exactly.

Processes are started with ``torch.multiprocessing`` (the library's own
``init_from_env`` reads the same variables torchrun sets) and with ``torchrun``
itself for the command line; every wait has a timeout.
"""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tagnn_pyg import distributed
from tagnn_pyg.data.batching import SessionLoader
from tagnn_pyg.data.sequences import expand_prefixes
from tagnn_pyg.data.synthetic import make_synthetic_sessions
from tagnn_pyg.models import MODELS
from tagnn_pyg.train import NonFiniteLossError, TrainConfig, Trainer, evaluate

from conftest import REPO

BATCH = 7          # odd: every global batch splits 4 + 3 over two processes
STEPS_PER_EPOCH = 120
N_TRAIN = BATCH * (STEPS_PER_EPOCH - 1) + 1   # the last batch holds 1 sequence
EPOCHS = 2         # 240 steps
TIMEOUT = 240      # seconds for a whole multi-process launch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _data():
    train, test = make_synthetic_sessions(num_items=120, num_train_sessions=500,
                                          num_test_sessions=60, seed=3, num_interests=6,
                                          mean_length=5.0)
    num_items = max(max(map(max, train)), max(map(max, test))) + 1
    train_seqs = expand_prefixes(train)
    assert len(train_seqs) >= N_TRAIN
    return train_seqs[:N_TRAIN], expand_prefixes(test), num_items


def _model(num_items, seed=0, name='srgnn'):
    torch.manual_seed(seed)
    return MODELS[name](num_items=num_items, hidden_channels=16)


def _cfg() -> TrainConfig:
    # AGC on: it must act on the summed gradients. The papers' lr 1e-3: at 1e-2
    # Adam turns the float reassociation of parameters whose gradient is ~0 into
    # whole steps (observed: 1e-4..1e-3 relative on such tensors, 1e-6 elsewhere)
    return TrainConfig(epochs=EPOCHS, batch_size=BATCH, lr=1e-3,
                       device='cpu', seed=0, progress=False, protocol='paper',
                       agc=True, agc_clipping=0.05, eval_batch_size=13)


def _run(out: Path, rank: int):
    """Train and evaluate; what this process computed."""
    train, test, num_items = _data()
    model = _model(num_items, seed=1, name='tagnn')
    evals = {'full': evaluate(model, test, batch_size=13, distributed=True),
             'one_case': evaluate(model, test[:1], batch_size=13, distributed=True)}
    grads = {}

    def capture(epoch, k):
        if epoch == 1 and k in (0, STEPS_PER_EPOCH - 1):
            grads[k] = {n: p.grad.detach().clone() for n, p in
                        trainer.model.named_parameters() if p.grad is not None}

    trainer = Trainer(_model(num_items), _cfg(), on_batch_end=capture)
    result = trainer.fit(train, test=test)
    return {'evals': evals, 'grads': grads, 'steps': trainer.step,
            'non_finite': _non_finite_on_one_rank(train, test, num_items, rank),
            'state': {k: v.clone() for k, v in trainer.model.state_dict().items()},
            'history': [h['train_loss'] for h in result['history']],
            'test': result['test'], 'distributed': result.get('distributed')}


def _non_finite_on_one_rank(train, test, num_items, rank):
    """Under 2 processes: NaN scores on rank 1 only, in its 4th batch; what
    each rank raised."""
    if not distributed.current().active:
        return None
    model = _model(num_items)
    real, calls = model.forward, []

    def forward(batch):
        calls.append(1)
        scores = real(batch)
        return scores * float('nan') if rank == 1 and len(calls) == 4 else scores

    model.forward = forward
    try:
        Trainer(model, _cfg()).fit(train, test=test)
    except NonFiniteLossError as err:
        return str(err)
    return 'no error'


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
                      TAGNN_PYG_DIST_TIMEOUT='60')
    torch.set_num_threads(1)
    ctx = distributed.init_from_env()
    assert ctx.active and ctx.rank == rank and ctx.backend == 'gloo'
    try:
        torch.save(_run(Path(out), rank), Path(out) / f'rank{rank}.pt')
    finally:
        distributed.destroy()


@pytest.fixture(scope='module')
def two_and_one(tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp')
    ctx = mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=False)
    deadline = time.monotonic() + TIMEOUT
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"2-process run did not finish in {TIMEOUT} s")
    torch.set_num_threads(1)
    single = _run(out, 0)
    return [torch.load(out / f'rank{r}.pt', weights_only=False) for r in range(2)], single


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def test_two_processes_reach_the_weights_of_one(two_and_one):
    (r0, r1), single = two_and_one
    assert r0['steps'] == r1['steps'] == single['steps'] == EPOCHS * STEPS_PER_EPOCH
    # the first step (same weights: 4 + 3 examples) and the last of the epoch (one
    # example: rank 1 empty), over the whole gradient vector
    for k, tol in ((0, 1e-5), (STEPS_PER_EPOCH - 1, 1e-3)):
        assert set(r0['grads'][k]) == set(single['grads'][k])
        names = sorted(single['grads'][k])
        flat = [torch.cat([g[k][n].view(-1) for n in names])
                for g in (r0['grads'], r1['grads'], single['grads'])]
        assert _rel(flat[0], flat[2]) < tol, k
        assert torch.equal(flat[0], flat[1])
    for name, w in single['state'].items():
        assert _rel(r0['state'][name], w) < 1e-4, name
        assert torch.equal(r0['state'][name], r1['state'][name]), name  # ranks agree
    assert r0['history'] == pytest.approx(single['history'], rel=1e-5)
    assert r0['test'] == r1['test']  # every rank decided on the same numbers
    assert r0['distributed']['world_size'] == 2
    assert len(r0['distributed']['max_rss_mib']) == 2


def test_a_non_finite_loss_on_one_rank_stops_all_at_the_same_batch(two_and_one):
    (r0, r1), _ = two_and_one
    assert 'epoch 1, batch 4 of' in r0['non_finite']
    assert r0['non_finite'] == r1['non_finite']


def test_sharded_evaluation_equals_one_process(two_and_one):
    (r0, r1), single = two_and_one
    for key in ('full', 'one_case'):  # 'one_case': rank 1 ranks nothing
        a, b = r0['evals'][key], single['evals'][key]
        assert r1['evals'][key] == a
        assert a['count'] == b['count']
        for name, value in b.items():
            if name.startswith('HR@'):  # integer hit counts, exactly
                assert round(a[name] * a['count'] / 100) == round(value * b['count'] / 100)
                assert a[name] == pytest.approx(value, abs=1e-12)
            else:
                assert a[name] == pytest.approx(value, rel=1e-12, abs=1e-12)


# ------------------------------------------------------------------ no processes


def test_without_torchrun_nothing_changes(monkeypatch):
    for name in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        monkeypatch.delenv(name, raising=False)
    assert distributed.init_from_env() == distributed.SINGLE
    assert not torch.distributed.is_initialized()
    with distributed.session() as ctx:
        assert not ctx.active and ctx.is_main
    assert distributed.run_on_main(lambda: 5, 'x') == 5
    t = torch.ones(3)
    assert distributed.all_reduce(t) is t and t.tolist() == [1, 1, 1]


def test_env_context_checks_the_variables(monkeypatch):
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setenv('RANK', '2')
    with pytest.raises(ValueError, match='RANK=2'):
        distributed.env_context()
    monkeypatch.setenv('RANK', 'x')
    with pytest.raises(ValueError, match="RANK='x'"):
        distributed.env_context()
    monkeypatch.setenv(distributed.TIMEOUT_ENV, '-1')
    with pytest.raises(ValueError, match=distributed.TIMEOUT_ENV):
        distributed.timeout_s()


def test_shard_bounds_cover_the_range_in_order():
    for n in range(0, 12):
        for world in (1, 2, 3, 5):
            parts = [distributed.shard_bounds(n, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            sizes = [hi - lo for lo, hi in parts]
            assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match='rank 2 of world_size 2'):
        distributed.shard_bounds(4, 2, 2)


def test_sharded_loader_splits_the_batches_of_one_process():
    train, _, _ = _data()
    train = train[:BATCH * 3 + 1]
    whole = SessionLoader(train, BATCH, shuffle=True, seed=5)
    parts = [SessionLoader(train, BATCH, shuffle=True, seed=5, shard=(r, 2))
             for r in range(2)]
    for loader in [whole] + parts:
        loader.set_epoch(2, start=1)
    got = [list(p) for p in parts]
    for k, batch in enumerate(whole, start=1):
        assert parts[0].global_batch_size(k) == batch.y.numel()
        pieces = [g[k - 1] for g in got if g[k - 1] is not None]
        assert torch.equal(torch.cat([p.y for p in pieces]), batch.y)
        assert torch.equal(torch.cat([p.x.view(-1) for p in pieces]), batch.x.view(-1))
    assert got[1][-1] is None and got[0][-1].y.numel() == 1  # last batch: 1 session
    with pytest.raises(ValueError, match='rank 2 of world_size 2'):
        SessionLoader(train, BATCH, shard=(2, 2))


# ----------------------------------------------------- command line, torchrun

KILLER = '''
import os, signal, sys
from tagnn_pyg.train import trainer as T

real = T.Trainer._train_step_distributed

def step(self, batch, size, state, e, k, n):
    real(self, batch, size, state, e, k, n)
    if self.dist.rank == 1 and e == 1 and k == 7:  # epoch 2, after batch 8
        os.kill(os.getpid(), signal.SIGKILL)

T.Trainer._train_step_distributed = step
from tagnn_pyg.cli import main
sys.exit(main(sys.argv[1:]))
'''


def _torchrun(target, args, cwd, timeout=TIMEOUT):
    env = {'TAGNN_PYG_DIST_TIMEOUT': '60', **os.environ, 'OMP_NUM_THREADS': '1',
           'PYTHONPATH': str(REPO)}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
           '--nproc_per_node', '2', *target, *args]
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                         env=env)
    return out, time.monotonic() - t0


def _comparable(metrics: dict) -> dict:
    keep = ('valid', 'test', 'epoch_chosen', 'epochs_run', 'stopped')
    out = {k: metrics[k] for k in keep}
    out['history'] = [{k: v for k, v in h.items() if not k.endswith('_s')}
                      for h in metrics['history']]
    return out


def test_killed_process_stops_the_run_and_resume_ends_like_an_uninterrupted_one(
        tmp_path):
    from tagnn_pyg.data.loading import write_synthetic_folder
    from tagnn_pyg.cli import main

    data = write_synthetic_folder(tmp_path / 'data', num_items=80, num_train_sessions=150,
                                  num_test_sessions=40, seed=1, num_interests=6)
    common = ['train', '--data', str(data), '--model', 'srgnn', '--hidden', '8',
              '--epochs', '2', '--batch-size', '7', '--checkpoint-every', '3',
              '--device', 'cpu', '--threads', '1', '--no-progress']
    out, _ = _torchrun(['-m', 'tagnn_pyg'], common + ['--out', 'whole'], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (tmp_path / 'killer.py').write_text(KILLER)
    out, seconds = _torchrun([str(tmp_path / 'killer.py')], common + ['--out', 'cut'],
                             tmp_path)
    assert out.returncode != 0
    assert seconds < 120, f"the survivors took {seconds:.0f} s to stop"
    assert 'exitcode' in out.stderr and 'Signal 9' in out.stderr, out.stderr[-3000:]
    ckpt = torch.load(tmp_path / 'cut' / 'last.pt', weights_only=True)
    assert ckpt['state']['partial']['epoch'] == 1
    assert ckpt['state']['partial']['batches'] == 6
    assert len(ckpt['rng_per_rank']) == 2
    assert not (tmp_path / 'cut' / 'metrics.json').exists()
    out, _ = _torchrun(['-m', 'tagnn_pyg'], ['train', '--data', str(data), '--out', 'cut',
                                             '--resume', '--no-progress', '--threads',
                                             '1'], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'resumed from' in out.stderr and 'after batch 6' in out.stderr
    whole = json.loads((tmp_path / 'whole' / 'metrics.json').read_text())
    resumed = json.loads((tmp_path / 'cut' / 'metrics.json').read_text())
    assert _comparable(resumed) == _comparable(whole)

    # the 2-process checkpoint evaluates in one process and in two alike
    ev = ['evaluate', '--checkpoint', 'cut/best.pt', '--data', str(data), '--device',
          'cpu', '--no-progress', '--batch-size', '9']
    out, _ = _torchrun(['-m', 'tagnn_pyg'], ev + ['--out', 'two.json'], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert main(ev + ['--out', 'one.json']) == 0
    finally:
        os.chdir(cwd)
    two = json.loads((tmp_path / 'two.json').read_text())['metrics']
    one = json.loads((tmp_path / 'one.json').read_text())['metrics']
    assert two['count'] == one['count'] == whole['test']['count']
    assert two == pytest.approx(one, rel=1e-12)
    assert one == pytest.approx(whole['test'], rel=1e-12)


def test_hung_process_fails_the_run_after_the_timeout(tmp_path, monkeypatch):
    """A process that stops answering (here: sleeps) is not waited for 30
    minutes: the collective fails after TAGNN_PYG_DIST_TIMEOUT seconds on the
    others, and the launcher then stops the hung one."""
    from tagnn_pyg.data.loading import write_synthetic_folder

    data = write_synthetic_folder(tmp_path / 'data', num_items=80, num_train_sessions=60,
                                  num_test_sessions=20, seed=1, num_interests=6)
    (tmp_path / 'hang.py').write_text(KILLER.replace(
        'os.kill(os.getpid(), signal.SIGKILL)', 'import time; time.sleep(600)').replace(
        'e == 1 and k == 7', 'e == 0 and k == 2'))
    monkeypatch.setenv('TAGNN_PYG_DIST_TIMEOUT', '5')
    out, seconds = _torchrun(
        [str(tmp_path / 'hang.py')],
        ['train', '--data', str(data), '--model', 'srgnn', '--hidden', '8',
         '--epochs', '1', '--batch-size', '7', '--device', 'cpu', '--threads', '1',
         '--no-progress', '--out', 'run'], tmp_path, timeout=180)
    assert out.returncode != 0
    assert 'rank 0 of 2: the loss all-reduce failed' in out.stderr, out.stderr[-3000:]
    assert 'timeout 5 s' in out.stderr and '--resume' in out.stderr
    assert seconds < 120, f"the run took {seconds:.0f} s to stop"
