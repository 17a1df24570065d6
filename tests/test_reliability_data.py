"""Issue 13, data side: prepared folders are units (items 1), loaders are bounded
(item 3), and malformed raw input is one line (items 5, 6)."""
import errno
import gzip
import json
import os
import pickle
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tagnn_pyg.cli import main
from tagnn_pyg.data.limits import LimitError, LoadLimits
from tagnn_pyg.data.manifest import FolderMismatchError
from tagnn_pyg.data.srgnn_format import read_srgnn_folder, write_srgnn_folder
from tagnn_pyg.utils.io import atomic_write_text

from conftest import require_shared

OLD = ([[1, 2, 3], [2, 4], [5, 1, 5, 6]], [[2, 3, 6], [1, 1]])
NEW = ([[3, 2, 1], [4, 2, 4]], [[6, 5], [2, 2, 1]])


def _contents(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _fail_nth_file_fsync(monkeypatch, n: int) -> None:
    """Make the n-th fsync of a regular file fail with ENOSPC (a disk that fills
    up while a folder is written)."""
    real = os.fsync
    calls = []

    def fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            calls.append(fd)
            if len(calls) == n:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    monkeypatch.setattr(os, 'fsync', fsync)


# --------------------------------------------------------------- 1. units


def test_failed_rewrite_leaves_the_old_folder_intact(tmp_path, monkeypatch):
    folder = write_srgnn_folder(tmp_path / 'ds', *OLD)
    before = _contents(folder)
    _fail_nth_file_fsync(monkeypatch, 2)  # the disk fills up at the second file
    with pytest.raises(OSError) as info:
        write_srgnn_folder(folder, *NEW)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert _contents(folder) == before  # nothing of the new write, nothing lost
    assert read_srgnn_folder(folder).train_sessions == OLD[0]
    assert [p.name for p in tmp_path.iterdir()] == ['ds']  # no staging left


def test_mixed_folder_is_refused_naming_the_file(tmp_path):
    a = write_srgnn_folder(tmp_path / 'a', *OLD)
    b = write_srgnn_folder(tmp_path / 'b', *NEW)
    (a / 'train.txt').write_bytes((b / 'train.txt').read_bytes())  # one file of another run
    with pytest.raises(FolderMismatchError, match=r'a/train.txt does not match'):
        read_srgnn_folder(a)
    # a file of the set that the manifest does not list is a mix too
    c = write_srgnn_folder(tmp_path / 'c', *OLD)
    atomic_write_text(c / 'item_ids.json', json.dumps([None, 'x']))
    with pytest.raises(FolderMismatchError, match=r'item_ids.json is not part of the write'):
        read_srgnn_folder(c)


def test_interrupted_commit_is_refused_as_half_written(tmp_path, monkeypatch):
    folder = write_srgnn_folder(tmp_path / 'ds', *OLD)
    real = os.replace
    calls = []

    def replace(src, dst):  # the process dies after moving one file into place
        if Path(dst).parent == folder:
            calls.append(dst)
            if len(calls) == 3:  # (1: manifest "incomplete", 2: a file, 3: the next)
                raise KeyboardInterrupt
        return real(src, dst)
    monkeypatch.setattr(os, 'replace', replace)
    with pytest.raises(KeyboardInterrupt):
        write_srgnn_folder(folder, *NEW)
    monkeypatch.undo()
    with pytest.raises(FolderMismatchError, match='is half-written'):
        read_srgnn_folder(folder)
    write_srgnn_folder(folder, *NEW)  # re-running the write repairs it
    assert read_srgnn_folder(folder).train_sessions == NEW[0]


def test_prepare_into_a_folder_keeps_foreign_files(tmp_path):
    raw = require_shared('raw', 'diginetica-sample-train-item-views.csv')
    out = tmp_path / 'prepared'
    out.mkdir()
    (out / 'notes.txt').write_text('mine')
    assert main(['prepare', 'diginetica', str(raw), str(out)]) == 0
    assert (out / 'notes.txt').read_text() == 'mine'
    manifest = json.loads((out / 'manifest.json').read_text())
    assert sorted(manifest['files']) == ['all_train_seq.txt', 'item_ids.json',
                                         'stats.json', 'test.txt', 'train.txt']
    read_srgnn_folder(out)


# ------------------------------------------------------------ 3. limits

HOSTILE = {
    # one 20,000-click list referenced 20,000 times (memo BINGET): ~100 KB
    'shared': ('all_train_seq.txt', 'pickle.dumps([list(range(1, 20001))] * 20000, 4)'),
    # one 100,000-click session: its prefix expansion would be 5e9 clicks
    'long': ('all_train_seq.txt', 'pickle.dumps([[i % 250 + 1 for i in range(100000)]], 4)'),
    # item id 10**12: a 10**12-row embedding
    'sparse': ('test.txt', 'pickle.dumps(([[1, 2], [10**12]], [3, 1]), 4)'),
}

_LOAD_SCRIPT = textwrap.dedent('''
    import json, pickle, resource, sys, time
    from pathlib import Path
    from tagnn_pyg.data.limits import LoadLimits
    from tagnn_pyg.data.srgnn_format import read_srgnn_folder
    folder, name, expr, max_len = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    folder.mkdir()
    pickle.dump([[1, 2, 3], [2, 3]], open(folder / 'all_train_seq.txt', 'wb'))
    pickle.dump(([[1], [2]], [2, 3]), open(folder / 'test.txt', 'wb'))
    (folder / name).write_bytes(eval(expr))
    vm = int(next(l for l in open('/proc/self/status') if l.startswith('VmSize')).split()[1])
    budget = vm * 1024 + 512 * 2**20  # 512 MiB above what the interpreter holds
    resource.setrlimit(resource.RLIMIT_AS, (budget, budget))
    limits = LoadLimits() if max_len == '-' else LoadLimits(max_session_length=int(max_len))
    t0 = time.perf_counter()
    try:
        read_srgnn_folder(folder, limits=limits)
        out = {'error': None}
    except BaseException as e:
        out = {'error': type(e).__name__, 'message': str(e)}
    out['seconds'] = time.perf_counter() - t0
    out['bytes'] = (folder / name).stat().st_size
    print(json.dumps(out))
''')


def _load_hostile(tmp_path, which: str, max_len: str = '-') -> dict:
    name, expr = HOSTILE[which]
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run([sys.executable, '-c', _LOAD_SCRIPT, str(tmp_path / which), name,
                           expr, max_len], capture_output=True, text=True, timeout=180,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='RLIMIT_AS, /proc')
@pytest.mark.parametrize('which, expected', [
    ('shared', r'all_train_seq.txt: refused: the pickle expands to more than [\d,]+ '
               r'elements .* shared lists'),
    ('long', r'all_train_seq.txt: session 0 has 100,000 clicks, more than the limit of '
             r'1,000 clicks per session'),
    ('sparse', r'test.txt: sequence 1 holds item id 1,000,000,000,000, but the files hold '
               r'only 4 distinct ids: the largest id allowed is 1,000,000'),
])
def test_hostile_files_refused_in_seconds_within_512_mib(tmp_path, which, expected):
    import re
    out = _load_hostile(tmp_path, which)
    assert out['error'] in ('UnsafePickleError', 'LimitError'), out
    assert re.search(expected, out['message']), out['message']
    assert out['seconds'] < 10, out
    assert out['bytes'] < 250_000


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='RLIMIT_AS, /proc')
def test_raised_session_limit_still_bounds_the_expansion(tmp_path):
    out = _load_hostile(tmp_path, 'long', max_len='200000')
    assert out['error'] == 'LimitError', out
    assert 'more than 100,000,000 clicks after prefix expansion by session 0' \
        in out['message']


def test_limits_and_the_cli_flag(tmp_path, capsys):
    folder = tmp_path / 'ds'
    folder.mkdir()
    with open(folder / 'all_train_seq.txt', 'wb') as f:
        pickle.dump([[1, 2], list(range(1, 31))], f)
    with open(folder / 'test.txt', 'wb') as f:
        pickle.dump(([[1]], [2]), f)
    with pytest.raises(LimitError, match=r'session 1 has 30 clicks, more than the limit '
                                         r'of 20'):
        read_srgnn_folder(folder, limits=LoadLimits(max_session_length=20))
    assert read_srgnn_folder(folder).num_items == 31
    code = main(['baseline', '--data', str(folder), '--method', 'pop',
                 '--max-session-length', '20', '--no-progress'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith('tagnn-pyg: error: ') \
        and 'more than the limit of 20 clicks per session' in err[-1]
    with pytest.raises(ValueError, match='max_session_length must be a positive integer'):
        LoadLimits(max_session_length=0)


def test_real_folders_pass_the_default_limits():
    for name in ('diginetica', 'yoochoose1_64'):
        data = read_srgnn_folder(require_shared(name))  # no manifest: foreign, accepted
        assert data.fingerprint is not None and len(data.fingerprint) == 64


# --------------------------------------------------- 5, 6. raw input errors


def _raw_rows(n: int) -> list:
    rows = ['session_id;user_id;item_id;timeframe;eventdate']
    rows += [f'{i // 3 + 1};;{i % 7 + 1};{i};2016-05-0{1 + i % 9}' for i in range(n)]
    return rows


def test_non_utf8_byte_reported_on_its_line(tmp_path):
    from tagnn_pyg.data.preprocess import read_diginetica
    rows = [r.encode() for r in _raw_rows(120)]
    rows[101] = rows[101].replace(b';;', b';\xff;')  # line 102
    path = tmp_path / 'views.csv'
    path.write_bytes(b'\n'.join(rows) + b'\n')
    with pytest.raises(ValueError, match=r'views.csv:102: not UTF-8 text \(byte 0xff'):
        read_diginetica(path)


def test_truncated_gzip_is_one_line(tmp_path, capsys):
    path = tmp_path / 'views.csv.gz'
    data = gzip.compress(('\n'.join(_raw_rows(5000)) + '\n').encode())
    path.write_bytes(data[:len(data) // 2])
    code = main(['prepare', 'diginetica', str(path), str(tmp_path / 'out')])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert 'views.csv.gz: truncated gzip file' in err[0]
    assert 'internal error' not in err[0]
    assert not (tmp_path / 'out').exists()


def test_prepare_over_an_existing_file_is_one_line(tmp_path, capsys):
    raw = require_shared('raw', 'diginetica-sample-train-item-views.csv')
    target = tmp_path / 'taken'
    target.write_text('a file, not a folder')
    code = main(['prepare', 'diginetica', str(raw), str(target)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert f'{target}: Not a directory' in err[0] and 'internal error' not in err[0]
    assert target.read_text() == 'a file, not a folder'
