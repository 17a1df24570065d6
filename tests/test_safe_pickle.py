"""Tests of the restricted unpickler and atomic writes."""
import os
import pickle

import pytest

from tagnn_pyg.data.safe_pickle import (UnsafePickleError, safe_pickle_load,
                                        safe_pickle_loads)
from tagnn_pyg.utils.io import atomic_write_bytes, atomic_write_text, atomic_writer


class _CreatesFile:
    """Unpickling this calls ``open(path, 'w')``: it would create the file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, 'w'))


class _RunsShell:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f'touch {self.path}',))


@pytest.mark.parametrize('protocol', [0, 2, 4, 5])
def test_round_trip_lists_tuples_ints(tmp_path, protocol):
    obj = ([[1, 2, 3], [4], [2**40, -7, 0]], [5, 6, 2**70])
    p = tmp_path / 'ok.txt'
    p.write_bytes(pickle.dumps(obj, protocol=protocol))
    assert safe_pickle_load(p) == obj
    shared = [1, 2]
    assert safe_pickle_loads(pickle.dumps([shared, shared], protocol=protocol)) == [[1, 2]] * 2
    assert safe_pickle_loads(pickle.dumps((), protocol=protocol)) == ()


@pytest.mark.parametrize('payload', [_CreatesFile, _RunsShell])
@pytest.mark.parametrize('protocol', [0, 2, 4])
def test_payload_is_refused_and_runs_nothing(tmp_path, payload, protocol):
    target = tmp_path / 'pwned'
    # the payload hides after valid data, inside the expected structure
    evil = ([[1, 2], [3, payload(target)]], [4, 5])
    p = tmp_path / 'test.txt'
    p.write_bytes(pickle.dumps(evil, protocol=protocol))
    assert not target.exists()
    with pytest.raises(UnsafePickleError) as info:
        safe_pickle_load(p)
    msg = str(info.value)
    assert str(p) in msg
    assert 'GLOBAL' in msg  # the refused opcode is named
    assert ('open' in msg) or ('system' in msg)  # ... with the refused global
    assert not target.exists()
    assert isinstance(info.value, ValueError)


def test_unpickler_layer_refuses_globals_by_name():
    # the second layer on its own (bypassing the opcode scan)
    import io

    from tagnn_pyg.data.safe_pickle import _RestrictedUnpickler
    data = pickle.dumps(_CreatesFile('/nonexistent/x'), protocol=2)
    with pytest.raises(UnsafePickleError, match=r'refused global (builtins|io)\.open'):
        _RestrictedUnpickler(io.BytesIO(data)).load()


@pytest.mark.parametrize('obj, what', [
    ([[1, 2.5]], 'BINFLOAT'),
    ([['a']], 'UNICODE'),
    ([{1: 2}], 'DICT'),
    ([None], 'NONE'),
    ([True], 'NEWTRUE'),
    ([b'x'], 'BYTES'),
    ({1, 2}, 'SET'),
])
def test_other_types_refused(obj, what):
    with pytest.raises(UnsafePickleError, match=what):
        safe_pickle_loads(pickle.dumps(obj, protocol=4))


def test_protocol0_bool_refused():
    with pytest.raises(UnsafePickleError, match='boolean'):
        safe_pickle_loads(pickle.dumps([1, True], protocol=0))


def test_corrupt_and_self_referencing():
    with pytest.raises(ValueError, match='not a valid pickle'):
        safe_pickle_loads(pickle.dumps([1, 2, 3])[:-3])
    a = [1]
    a.append(a)
    with pytest.raises(UnsafePickleError, match='nested deeper'):
        safe_pickle_loads(pickle.dumps(a, protocol=2))


def test_atomic_writes(tmp_path):
    p = tmp_path / 'f.bin'
    assert atomic_write_bytes(p, b'abc') == p and p.read_bytes() == b'abc'
    atomic_write_text(p, 'héllo\n')
    assert p.read_text(encoding='utf-8') == 'héllo\n'
    with pytest.raises(RuntimeError):
        with atomic_writer(p) as f:
            f.write(b'partial')
            raise RuntimeError('boom')
    assert p.read_text(encoding='utf-8') == 'héllo\n'  # untouched
    assert sorted(os.listdir(tmp_path)) == ['f.bin']  # no temporary left behind
    with pytest.raises(FileNotFoundError, match='does not exist'):
        atomic_write_bytes(tmp_path / 'no' / 'f.bin', b'')
