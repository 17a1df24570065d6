"""Issue 13, run side: one writer per run directory (item 2), checkpoints know
their data (item 4), disk-full and OS errors as one line (item 5), and the
smaller items 6 (stale temporaries, folder fsync, option checks, divergence)."""
import errno
import io
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tagnn_pyg.checkpoint import CheckpointError, atomic_torch_save, load_checkpoint
from tagnn_pyg.cli import main
from tagnn_pyg.data.sequences import expand_prefixes
from tagnn_pyg.data.srgnn_format import write_srgnn_folder
from tagnn_pyg.data.synthetic import make_synthetic_sessions
from tagnn_pyg.models import MODELS
from tagnn_pyg.train import TrainConfig, Trainer, make_splits
from tagnn_pyg.utils.io import SafeFileHandler, atomic_write_text
from tagnn_pyg.utils.lock import FolderLock, FolderLockedError

TINY = ['--epochs', '1', '--hidden', '8', '--batch-size', '50', '--max-test', '100',
        '--threads', '1', '--no-progress', '--device', 'cpu']


def _sessions(seed: int, num_items: int = 80):
    return make_synthetic_sessions(num_items=num_items, num_train_sessions=150,
                                   num_test_sessions=40, seed=seed, num_interests=4)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory) -> Path:
    return write_srgnn_folder(tmp_path_factory.mktemp('tiny') / 'data', *_sessions(1))


@pytest.fixture(scope='module')
def run_dir(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('run') / 'run'
    assert main(['train', '--data', str(data_dir), '--model', 'srgnn', '--out', str(out),
                 *TINY]) == 0
    return out


def _error_line(capsys, code: int, rc: int = 1) -> str:
    assert code == rc
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith('tagnn-pyg: error: '), err
    assert not any(line.startswith('Traceback') for line in err), err
    return err[-1]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------- 2. one writer


def test_second_writer_fails_at_once_naming_the_owner(data_dir, tmp_path, capsys):
    out = tmp_path / 'run'
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import sys, time; from tagnn_pyg.utils.lock import '
         'FolderLock; l = FolderLock(sys.argv[1], "train").acquire(); print("locked", '
         'flush=True); time.sleep(60)', str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        t0 = time.perf_counter()
        code = main(['train', '--data', str(data_dir), '--model', 'srgnn', '--out',
                     str(out), *TINY])
        took = time.perf_counter() - t0
        line = _error_line(capsys, code)
    finally:
        holder.kill()
        holder.wait()
    assert f'is in use by pid {holder.pid} on host {socket.gethostname()}' in line
    assert took < 5  # refused before loading data or training
    assert not (out / 'last.pt').exists()
    # the owner died (kill -9): its lock is taken over, and training proceeds
    assert main(['train', '--data', str(data_dir), '--model', 'srgnn', '--out', str(out),
                 *TINY]) == 0


def test_stale_lock_of_a_dead_pid_is_taken_over(tmp_path):
    dead = _dead_pid()
    tmp_path.joinpath('.lock').write_text(json.dumps({'pid': dead,
                                                      'host': socket.gethostname()}))
    with FolderLock(tmp_path) as lock:
        assert lock.took_over['pid'] == dead
        with FolderLock(tmp_path):  # re-entrant in one process
            pass
        assert json.loads(tmp_path.joinpath('.lock').read_text())['pid'] == os.getpid()


def test_lock_without_flock_refuses_live_and_takes_over_dead(tmp_path, monkeypatch):
    import tagnn_pyg.utils.lock as lock_module
    monkeypatch.setattr(lock_module, 'fcntl', None)
    sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        tmp_path.joinpath('.lock').write_text(json.dumps({'pid': sleeper.pid,
                                                          'host': socket.gethostname()}))
        with pytest.raises(FolderLockedError, match=f'pid {sleeper.pid}'):
            FolderLock(tmp_path).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    tmp_path.joinpath('.lock').write_text(json.dumps({'pid': _dead_pid(),
                                                      'host': socket.gethostname()}))
    with FolderLock(tmp_path):
        assert json.loads(tmp_path.joinpath('.lock').read_text())['pid'] == os.getpid()
    assert not tmp_path.joinpath('.lock').exists()


def test_new_run_over_a_finished_one_needs_overwrite(data_dir, tmp_path, capsys):
    out = tmp_path / 'run'
    args = ['train', '--data', str(data_dir), '--model', 'srgnn', '--out', str(out), *TINY]
    assert main(args) == 0
    (out / 'evaluate-best-data-test.json').write_text('{}')  # derived from the old run
    before = (out / 'best.pt').read_bytes()
    capsys.readouterr()
    line = _error_line(capsys, main(args))
    assert 'already holds a finished run (1 epochs)' in line and '--overwrite' in line
    assert (out / 'best.pt').read_bytes() == before  # untouched
    assert main(args + ['--lr', '0.05', '--overwrite']) == 0
    assert load_checkpoint(out / 'best.pt')['train_config']['lr'] == 0.05
    assert not (out / 'evaluate-best-data-test.json').exists()
    args[args.index('--epochs') + 1] = '2'
    assert main(args + ['--lr', '0.05', '--resume']) == 0  # resuming needs no --overwrite


# ------------------------------------------------------ 4. trained-on data


def test_evaluate_refuses_other_data_unless_allowed(run_dir, data_dir, tmp_path, capsys):
    ckpt = run_dir / 'best.pt'
    same_items = write_srgnn_folder(tmp_path / 'other', *_sessions(7))
    assert read_num_items(same_items) == read_num_items(data_dir)
    line = _error_line(capsys, main(['evaluate', '--checkpoint', str(ckpt), '--data',
                                     str(same_items), '--no-progress']))
    assert 'was trained on other data: data fingerprint' in line
    assert '--allow-other-data' in line
    assert main(['evaluate', '--checkpoint', str(ckpt), '--data', str(same_items),
                 '--no-progress', '--allow-other-data', '--out',
                 str(tmp_path / 'e.json')]) == 0
    assert 'used anyway' in capsys.readouterr().err
    fewer = write_srgnn_folder(tmp_path / 'fewer', *_sessions(1, num_items=40))
    line = _error_line(capsys, main(['evaluate', '--checkpoint', str(ckpt), '--data',
                                     str(fewer), '--no-progress']))
    assert 'item count' in line
    mapped = write_srgnn_folder(tmp_path / 'mapped', *_sessions(1), extra_files={
        'item_ids.json': json.dumps([None] + [f'x{i}' for i in range(1, 80)]).encode()})
    line = _error_line(capsys, main(['evaluate', '--checkpoint', str(ckpt), '--data',
                                     str(mapped), '--no-progress']))
    assert 'only the data has an item-id mapping' in line
    line = _error_line(capsys, main(['recommend', '--checkpoint', str(ckpt), '--items',
                                     '1,2', '--data', str(same_items)]))
    assert 'was trained on other data' in line
    assert main(['recommend', '--checkpoint', str(ckpt), '--items', '1,2', '--data',
                 str(data_dir)]) == 0


def read_num_items(folder: Path) -> int:
    from tagnn_pyg.data.srgnn_format import read_srgnn_folder
    return read_srgnn_folder(folder).num_items


#: The keys of a checkpoint written before checkpoints recorded their data.
TODAYS_KEYS = ('format', 'format_version', 'tagnn_pyg_version', 'model', 'num_items',
               'item_ids', 'optimizer', 'scheduler', 'rng', 'epoch', 'step', 'history',
               'best', 'protocol', 'train_config', 'state', 'extra', 'best_state_dict')
TODAYS_TRAIN_CONFIG = (
    'epochs', 'batch_size', 'eval_batch_size', 'optimizer', 'lr', 'weight_decay',
    'lr_decay', 'lr_decay_step', 'scheduler_step_at_epoch_start', 'patience', 'protocol',
    'valid', 'valid_fraction', 'select_metric', 'agc', 'agc_clipping', 'agc_eps',
    'agc_exempt_embedding', 'amp', 'device', 'seed', 'deterministic', 'num_threads', 'ks',
    'weighting', 'max_train', 'max_valid', 'max_test', 'progress', 'tensorboard',
    'check_every', 'log_interval_s', 'checkpoint_every')


def _as_written_before(path: Path) -> None:
    ckpt = torch.load(path, weights_only=True)
    old = {k: ckpt[k] for k in TODAYS_KEYS}
    assert set(old['train_config']) == set(TODAYS_TRAIN_CONFIG)
    atomic_torch_save(old, path)


def test_checkpoints_from_before_still_evaluate_and_resume(data_dir, tmp_path, capsys):
    out = tmp_path / 'run'
    args = ['train', '--data', str(data_dir), '--model', 'srgnn', '--out', str(out), *TINY]
    assert main(args) == 0
    _as_written_before(out / 'last.pt')
    _as_written_before(out / 'best.pt')
    capsys.readouterr()
    assert main(['evaluate', '--checkpoint', str(out / 'best.pt'), '--data', str(data_dir),
                 '--no-progress']) == 0
    assert 'does not record the data it was trained on' in capsys.readouterr().err
    args[args.index('--epochs') + 1] = '2'
    assert main(args + ['--resume']) == 0
    resumed = load_checkpoint(out / 'last.pt')
    assert resumed['epoch'] == 2 and resumed['data']['fingerprint'] is not None


def test_resume_refuses_other_data(data_dir, tmp_path, capsys):
    out = tmp_path / 'run'
    assert main(['train', '--data', str(data_dir), '--model', 'srgnn', '--out', str(out),
                 *TINY]) == 0
    other = write_srgnn_folder(tmp_path / 'other', *_sessions(7))
    line = _error_line(capsys, main(['train', '--data', str(other), '--model', 'srgnn',
                                     '--out', str(out), '--resume', *TINY[:1], '2',
                                     *TINY[2:]]))
    assert 'cannot resume' in line and 'trained on other data: data fingerprint' in line


# -------------------------------------------------------------- 5. OS errors


class _FullDisk(io.RawIOBase):
    """A file that accepts ``room`` bytes, then fails with ENOSPC."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if len(b) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(b)
        return self.f.write(b)

    def fileno(self) -> int:
        return self.f.fileno()

    def flush(self) -> None:
        if not self.f.closed:
            self.f.flush()

    def close(self) -> None:
        super().close()
        self.f.close()


def test_checkpoint_write_on_a_full_disk_names_the_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / 'last.pt'
    atomic_torch_save({'old': torch.ones(3)}, path)
    before = path.read_bytes()
    real = os.fdopen
    monkeypatch.setattr(os, 'fdopen', lambda fd, *a, **k: _FullDisk(real(fd, *a, **k), 600))
    with pytest.raises(OSError) as info:
        atomic_torch_save({'w': torch.zeros(10_000)}, path)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ['last.pt']
    # and the command line shows it as one line naming the file and the cause
    from tagnn_pyg.cli import _message
    assert _message(info.value) == f'{path}: No space left on device (ENOSPC)'


def test_log_on_a_full_disk_is_one_warning_line(tmp_path, capsys):
    handler = SafeFileHandler(tmp_path / 'train.log')
    handler.stream = _FullDisk(open(tmp_path / 'train.log', 'w'), 0)
    log = logging.getLogger('tagnn_pyg.test_full_disk')
    log.addHandler(handler)
    log.propagate = False
    try:
        for i in range(4):
            log.warning('line %d', i)
    finally:
        log.removeHandler(handler)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f'tagnn-pyg: warning: cannot write the log {tmp_path / "train.log"}: '
                   f'No space left on device (ENOSPC); further log lines go to stderr only']


def test_write_errors_name_the_destination_not_the_temporary(tmp_path, monkeypatch):
    import tempfile

    def mkstemp(prefix='', suffix='', dir=None):
        raise PermissionError(errno.EACCES, 'Permission denied',
                              os.path.join(dir, f'{prefix}abc{suffix}'))
    monkeypatch.setattr(tempfile, 'mkstemp', mkstemp)
    with pytest.raises(PermissionError) as info:
        atomic_write_text(tmp_path / 'metrics.json', '{}')
    assert info.value.filename == str(tmp_path / 'metrics.json')


def test_out_over_an_existing_file_is_one_line(data_dir, tmp_path, capsys):
    taken = tmp_path / 'taken'
    taken.write_text('x')
    line = _error_line(capsys, main(['train', '--data', str(data_dir), '--model',
                                     'srgnn', '--out', str(taken), *TINY]))
    assert str(taken) in line and 'internal error' not in line


def test_refused_checkpoint_names_the_global_and_not_the_unsafe_advice(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ('echo pwned',))
    torch.save({'format': 'tagnn-pyg-checkpoint', 'x': Evil()}, tmp_path / 'evil.pt')
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / 'evil.pt')
    msg = str(info.value)
    assert 'refused the global posix.system' in msg or 'refused the global os.system' in msg
    assert 'weights_only' not in msg and 'False' not in msg


# ------------------------------------------------------------------- 6.


def _tiny_trainer(tmp_path, **cfg):
    train, test = _sessions(1)
    config = TrainConfig(epochs=1, batch_size=50, device='cpu', progress=False,
                         **{'lr': 1e-2, **cfg})
    splits = make_splits(config, train_sessions=train, test=expand_prefixes(test))
    torch.manual_seed(0)
    num_items = max(max(map(max, train)), max(map(max, test))) + 1
    model = MODELS['srgnn'](num_items=num_items, hidden_channels=8)
    return Trainer(model, config, out_dir=tmp_path / 'run'), splits


def test_stale_temporaries_are_removed_on_start(tmp_path):
    trainer, sp = _tiny_trainer(tmp_path)
    (tmp_path / 'run').mkdir()
    stale = tmp_path / 'run' / '.last.pt.k2j3h4.tmp'
    stale.write_bytes(b'half a checkpoint')
    trainer.fit(sp.train, sp.valid, sp.test)
    assert not stale.exists()
    assert 'removed' in (tmp_path / 'run' / 'train.log').read_text()


def test_atomic_write_syncs_the_folder(tmp_path, monkeypatch):
    real = os.fsync
    kinds = []

    def fsync(fd):
        kinds.append('dir' if stat.S_ISDIR(os.fstat(fd).st_mode) else 'file')
        return real(fd)
    monkeypatch.setattr(os, 'fsync', fsync)
    atomic_write_text(tmp_path / 'x.json', '{}')
    assert kinds == ['file', 'dir']  # the data, then the rename


def test_bad_cut_offs_are_refused_before_any_work(data_dir, tmp_path, capsys):
    out = tmp_path / 'run'
    with pytest.raises(SystemExit) as info:
        main(['train', '--data', str(data_dir), '--model', 'srgnn', '--out', str(out),
              '--ks', '0,20', *TINY])
    line = _error_line(capsys, info.value.code, rc=2)
    assert 'expected positive cut-offs like 5,10,20, got 0' in line
    assert not out.exists()
    with pytest.raises(ValueError, match=r'ks must be positive integer cut-offs'):
        TrainConfig(ks=(0, 20))


def test_diverging_loss_warns(tmp_path, caplog):
    trainer, sp = _tiny_trainer(tmp_path, lr=1e6)
    with caplog.at_level(logging.WARNING, logger='tagnn_pyg.train'):
        result = trainer.fit(sp.train, sp.valid, sp.test)
    assert 'training diverged' in caplog.text
    assert result['warnings'] and 'times the starting loss' in result['warnings'][0]
    trainer, sp = _tiny_trainer(tmp_path / 'ok')
    assert 'warnings' not in trainer.fit(sp.train, sp.valid, sp.test)


def test_a_failed_command_leaves_no_empty_run_dir(tmp_path, capsys):
    out = tmp_path / 'never'
    _error_line(capsys, main(['train', '--data', str(tmp_path / 'no-data'), '--model',
                              'srgnn', '--out', str(out)]))
    assert not out.exists()
