"""Tests of the SR-GNN pickle folder reader/writer (real data + hand-made folders)."""
import os
import pickle

import pytest

from conftest import require_shared
from tagnn_pyg.data.safe_pickle import UnsafePickleError
from tagnn_pyg.data.srgnn_format import read_srgnn_folder, write_srgnn_folder
from tagnn_pyg.testing.released import process_seqs


# published counts (datasets/README.md, SR-GNN/TAGNN papers)
REAL = {
    'diginetica': dict(train_sessions=186_670, train=719_470, test=60_858, num_items=43_098),
    'yoochoose1_64': dict(train_sessions=116_167, train=369_859, test=55_898, num_items=37_484),
}


_CACHE = {}


def _read_real(name):
    folder = require_shared(name)
    if name not in _CACHE:  # each real folder is read once per test session
        _CACHE[name] = read_srgnn_folder(folder)
    return folder, _CACHE[name]


@pytest.mark.parametrize('name', sorted(REAL))
def test_real_folder_counts(name):
    _, data = _read_real(name)
    want = REAL[name]
    assert len(data.train_sessions) == want['train_sessions']
    assert len(data.train) == want['train']
    assert len(data.test) == want['test']
    assert data.num_items == want['num_items']
    assert data.train.targets.numel() == want['train']
    assert data.test.targets.numel() == want['test']
    # spot-check the expansion against the released loop on a slice of sessions
    first = data.train_sessions[:500]
    seqs, labs = process_seqs(first)
    assert data.train[:len(seqs)].to_lists() == seqs
    assert data.train.targets[:len(labs)].tolist() == labs
    last = data.train_sessions[-300:]
    seqs, labs = process_seqs(last)
    assert data.train[len(data.train) - len(seqs):].to_lists() == seqs
    assert data.train.targets[len(data.train) - len(labs):].tolist() == labs


def test_real_test_file_matches_plain_pickle():
    folder, data = _read_real('diginetica')
    with open(folder / 'test.txt', 'rb') as f:  # trusted reference file
        seqs, labs = pickle.load(f)
    assert data.test.to_lists() == seqs
    assert data.test.targets.tolist() == labs


def test_round_trip_hand_made(tmp_path):
    train = [[1, 2, 3], [2, 4], [5, 1, 5, 6]]
    test = [[2, 3, 7], [1, 1]]
    out = write_srgnn_folder(tmp_path / 'ds', train, test)
    assert sorted(os.listdir(out)) == ['all_train_seq.txt', 'manifest.json', 'test.txt',
                                       'train.txt']
    with open(out / 'all_train_seq.txt', 'rb') as f:
        assert pickle.load(f) == train
    with open(out / 'train.txt', 'rb') as f:
        assert pickle.load(f) == ([[1, 2], [1], [2], [5, 1, 5], [5, 1], [5]],
                                  [3, 2, 4, 6, 5, 1])
    with open(out / 'test.txt', 'rb') as f:
        assert pickle.load(f) == ([[2, 3], [2], [1]], [7, 3, 1])
    data = read_srgnn_folder(out)
    assert data.train_sessions == train
    assert data.train.to_lists() == [[1, 2], [1], [2], [5, 1, 5], [5, 1], [5]]
    assert data.train.targets.tolist() == [3, 2, 4, 6, 5, 1]
    assert data.test.to_lists() == [[2, 3], [2], [1]]
    assert data.test.targets.tolist() == [7, 3, 1]
    assert data.num_items == 8  # id 7 only in the test set, plus padding
    # train.txt only (the released code's input), as a foreign folder (no manifest)
    os.remove(out / 'all_train_seq.txt')
    os.remove(out / 'manifest.json')
    d2 = read_srgnn_folder(out)
    assert d2.train_sessions is None and d2.train.equals(data.train)


def test_train_from_option_and_train_override(tmp_path):
    import torch

    from tagnn_pyg.data.sequences import SessionSequences
    tr = SessionSequences.from_lists([[3, 4]], targets=[5])
    write_srgnn_folder(tmp_path, [[1, 2, 3, 4, 5]], [[1, 2]], train=tr)
    assert read_srgnn_folder(tmp_path, train_from='train').train.to_lists() == [[3, 4]]
    auto = read_srgnn_folder(tmp_path)  # train.txt wins, as in the released code
    assert auto.train.to_lists() == [[3, 4]] and auto.train_sessions == [[1, 2, 3, 4, 5]]
    expanded = read_srgnn_folder(tmp_path, train_from='all_train_seq')
    assert len(expanded.train) == 4 and expanded.train.targets.tolist() == [5, 4, 3, 2]
    with pytest.raises(ValueError, match='train_from'):
        read_srgnn_folder(tmp_path, train_from='x')
    with pytest.raises(ValueError, match='targets'):
        write_srgnn_folder(tmp_path, [[1, 2]], [[1, 2]],
                           train=SessionSequences(torch.tensor([1]), torch.tensor([0, 1])))


def _dump(path, obj):
    with open(path, 'wb') as f:
        pickle.dump(obj, f)


def test_validation_errors_name_file_and_record(tmp_path):
    _dump(tmp_path / 'test.txt', ([[1, 2], [3]], [3, 4]))
    _dump(tmp_path / 'all_train_seq.txt', [[1, 2], [3, 4], []])
    with pytest.raises(ValueError, match=r'all_train_seq\.txt: session 2 is empty'):
        read_srgnn_folder(tmp_path)
    _dump(tmp_path / 'all_train_seq.txt', [[1, 2], [3, 0]])
    with pytest.raises(ValueError, match=r'all_train_seq\.txt: session 1 holds item id 0'):
        read_srgnn_folder(tmp_path)
    _dump(tmp_path / 'all_train_seq.txt', [[1, 2], 7])
    with pytest.raises(ValueError, match=r'all_train_seq\.txt: session 1 must be a list'):
        read_srgnn_folder(tmp_path)
    _dump(tmp_path / 'all_train_seq.txt', ([1, 2], [3, 4]))  # a tuple of sessions is fine
    assert len(read_srgnn_folder(tmp_path).train) == 2
    _dump(tmp_path / 'test.txt', ([[1, 2], [3]], [3]))
    with pytest.raises(ValueError, match=r'test\.txt: 2 sequences but 1 labels'):
        read_srgnn_folder(tmp_path)
    _dump(tmp_path / 'test.txt', ([[1, 2], [3], []], [3, 4, 5]))
    with pytest.raises(ValueError, match=r'test\.txt: sequence 2 is empty'):
        read_srgnn_folder(tmp_path)
    _dump(tmp_path / 'test.txt', ([[1, 2], [3, -1]], [3, 4]))
    with pytest.raises(ValueError, match=r'test\.txt: sequence 1 holds item id -1'):
        read_srgnn_folder(tmp_path)
    _dump(tmp_path / 'test.txt', ([[1, 2], [3]], [3, 0]))
    with pytest.raises(ValueError, match=r'test\.txt: target of sequence 1 is 0'):
        read_srgnn_folder(tmp_path)
    _dump(tmp_path / 'test.txt', [[[1, 2]], 3])
    with pytest.raises(ValueError, match=r'test\.txt: expected \(list of sequences'):
        read_srgnn_folder(tmp_path)
    _dump(tmp_path / 'test.txt', ([[1]], [2], [3]))
    with pytest.raises(ValueError, match=r'test\.txt: expected a pair'):
        read_srgnn_folder(tmp_path)


class _Evil:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, 'w'))


def test_unsafe_file_refused(tmp_path):
    marker = tmp_path / 'created'
    _dump(tmp_path / 'all_train_seq.txt', [[1, 2]])
    _dump(tmp_path / 'test.txt', ([[1], _Evil(marker)], [2, 2]))
    with pytest.raises(UnsafePickleError, match=r'test\.txt'):
        read_srgnn_folder(tmp_path)
    assert not marker.exists()


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='not found'):
        read_srgnn_folder(tmp_path / 'nope')
    with pytest.raises(FileNotFoundError, match='test.txt'):
        read_srgnn_folder(tmp_path)
    _dump(tmp_path / 'test.txt', ([[1]], [2]))
    with pytest.raises(FileNotFoundError, match='neither'):
        read_srgnn_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match='all_train_seq'):
        read_srgnn_folder(tmp_path, train_from='all_train_seq')


def test_write_validates_and_normalises(tmp_path):
    import numpy as np
    with pytest.raises(ValueError, match='train_sessions: session 1 is empty'):
        write_srgnn_folder(tmp_path / 'a', [[1, 2], []], [[1, 2]])
    with pytest.raises(ValueError, match='test_sessions: session 0 holds item id 0'):
        write_srgnn_folder(tmp_path / 'a', [[1, 2]], [[0, 2]])
    assert not (tmp_path / 'a').exists()  # nothing written on bad input
    # numpy ids are written as plain ints (so that the safe loader accepts them)
    write_srgnn_folder(tmp_path / 'b', [np.array([1, 2]), [np.int64(3), 4]], [[1, 2]])
    assert read_srgnn_folder(tmp_path / 'b').train_sessions == [[1, 2], [3, 4]]
