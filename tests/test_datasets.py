"""PyG data sets over SR-GNN folders: published counts on the real data, examples
equal to ``SessionData.from_sequence`` of the released prefix expansion, cache
rules (raw content, options, force_reload) on small hand-made folders."""
import os
import pickle
import shutil

import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from tagnn_pyg.data import SessionData, SessionLoader
from tagnn_pyg.data.datasets import Diginetica, SessionDataset, SyntheticSessions, Yoochoose
from tagnn_pyg.data.safe_pickle import safe_pickle_load

from conftest import require_shared


def copy_raw(src, root):
    raw = root / 'raw'
    raw.mkdir(parents=True)
    for name in ('all_train_seq.txt', 'test.txt'):
        shutil.copyfile(src / name, raw / name)
    return root


def released_prefix(sessions, index):
    """The ``index``-th example of the released ``process_seqs`` expansion
    (for each session: for i in 1..len-1: prefix seq[:-i], target seq[-i])."""
    for seq in sessions:
        if index < len(seq) - 1:
            i = index + 1
            return seq[:-i], seq[-i]
        index -= len(seq) - 1
    raise IndexError(index)


def assert_graph_equal(got, want):
    assert set(got.keys()) == set(want.keys())
    for key in want.keys():
        assert torch.equal(got[key], want[key]), key


@pytest.fixture(scope='module')
def diginetica(tmp_path_factory):
    src = require_shared('diginetica')
    root = copy_raw(src, tmp_path_factory.mktemp('diginetica'))
    return root, safe_pickle_load(src / 'all_train_seq.txt'), safe_pickle_load(src / 'test.txt')


def test_diginetica_counts_and_examples(diginetica):
    root, sessions, (test_x, test_y) = diginetica
    train = Diginetica(str(root), log=False)
    test = Diginetica(str(root), split='test', log=False)
    assert len(train) == 719470 and len(test) == 60858
    assert train.num_items == test.num_items == 43098
    for i in (0, 1, 2, 12345, 400000, 719469):
        seq, target = released_prefix(sessions, i)
        assert_graph_equal(train[i], SessionData.from_sequence(seq, target))
    for i in (0, 30000, 60857):
        assert_graph_equal(test[i], SessionData.from_sequence(test_x[i], test_y[i]))
    # PyG's DataLoader over the dataset and the fast loader over .sequences agree
    # with the per-session reference.
    idx = list(range(1000, 1100))
    want = Batch.from_data_list([SessionData.from_sequence(*released_prefix(sessions, i))
                                 for i in idx])
    got_pyg = next(iter(DataLoader(train[1000:1100], batch_size=100)))
    got_fast = next(iter(SessionLoader(train[1000:1100].sequences, batch_size=100)))
    for got in (got_pyg, got_fast):
        for key in want.keys():
            assert torch.equal(got[key], want[key]), key
    seqs = test.sequences
    assert len(seqs) == 60858 and seqs.targets.tolist()[:50] == test_y[:50]
    assert seqs[:50].to_lists() == test_x[:50]


def test_diginetica_temporal_validation(diginetica):
    root, sessions, _ = diginetica
    train = Diginetica(str(root), valid='temporal', log=False)
    valid = Diginetica(str(root), split='valid', valid='temporal', log=False)
    assert len(train) + len(valid) == 719470
    n_train = round(len(sessions) * 0.9)  # 168,003 older sessions for training
    assert len(valid) == sum(len(s) - 1 for s in sessions[n_train:])
    # the first validation example is the longest prefix of the first held-out session
    s = sessions[n_train]
    assert_graph_equal(valid[0], SessionData.from_sequence(s[:-1], s[-1]))
    assert train.num_items == valid.num_items == 43098


def test_yoochoose_1_64_counts(tmp_path):
    root = copy_raw(require_shared('yoochoose1_64'), tmp_path)
    train = Yoochoose(str(root), fraction=64, log=False)
    test = Yoochoose(str(root), fraction=64, split='test', log=False)
    assert len(train) == 369859 and len(test) == 55898
    assert train.num_items == test.num_items == 37484


# ---------------------------------------------------------------- small folders
SESSIONS = [[1, 2, 1, 3], [5, 5, 5], [2, 4], [4, 3, 2, 1], [6, 2, 6, 2], [3, 1],
            [2, 2, 7], [1, 5], [5, 1, 5], [7, 6]]
TEST = ([[1, 2], [5], [3, 3, 1]], [3, 5, 2])


def write_folder(root, sessions=SESSIONS, test=TEST):
    raw = root / 'raw'
    raw.mkdir(parents=True, exist_ok=True)
    with open(raw / 'all_train_seq.txt', 'wb') as f:
        pickle.dump(sessions, f)
    with open(raw / 'test.txt', 'wb') as f:
        pickle.dump(test, f)
    return raw


@pytest.fixture
def count_process(monkeypatch):
    calls = []
    original = SessionDataset.process

    def process(self):
        calls.append(type(self).__name__)
        original(self)

    monkeypatch.setattr(SessionDataset, 'process', process)
    return calls


def test_cache_rebuilt_when_raw_or_options_change(tmp_path, count_process):
    raw = write_folder(tmp_path)
    ds = SessionDataset(str(tmp_path), log=False)
    assert len(ds) == sum(len(s) - 1 for s in SESSIONS) and count_process == ['SessionDataset']
    assert ds.num_items == 8
    SessionDataset(str(tmp_path), log=False)
    SessionDataset(str(tmp_path), split='test', log=False)
    assert len(count_process) == 1  # cached
    # touching without changing the content keeps the cache (keyed on content)
    st = os.stat(raw / 'test.txt')
    os.utime(raw / 'test.txt', ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    SessionDataset(str(tmp_path), log=False)
    assert len(count_process) == 1
    # a content change rebuilds, and the stale files of these options go away
    old = set(os.listdir(tmp_path / 'processed'))
    write_folder(tmp_path, sessions=SESSIONS + [[7, 7, 1]])
    ds = SessionDataset(str(tmp_path), log=False)
    assert len(count_process) == 2
    assert len(ds) == sum(len(s) - 1 for s in SESSIONS) + 2
    assert_graph_equal(ds[len(ds) - 1], SessionData.from_sequence([7], 7))
    new = set(os.listdir(tmp_path / 'processed'))
    assert not {f for f in old if f.endswith('.pt') and f.startswith(('train', 'test'))} & new
    # an option change builds a separate cache
    counted = SessionDataset(str(tmp_path), weighting='count', log=False)
    assert len(count_process) == 3
    g = counted[0]  # prefix [1, 2, 1] of [1, 2, 1, 3]: 1->2, 2->1
    assert_graph_equal(g, SessionData.from_sequence([1, 2, 1], 3, weighting='count'))
    SessionDataset(str(tmp_path), log=False)  # binary cache still there
    assert len(count_process) == 3
    SessionDataset(str(tmp_path), force_reload=True, log=False)
    assert len(count_process) == 4
    # a train.txt next to all_train_seq.txt is what read_srgnn_folder uses
    with open(raw / 'train.txt', 'wb') as f:
        pickle.dump(([[1, 2], [4]], [3, 3]), f)
    ds = SessionDataset(str(tmp_path), log=False)
    assert len(count_process) == 5 and ds.sequences.to_lists() == [[1, 2], [4]]


def test_validation_options(tmp_path):
    write_folder(tmp_path)
    total = sum(len(s) - 1 for s in SESSIONS)
    tr = SessionDataset(str(tmp_path), valid='temporal', valid_fraction=0.2, log=False)
    va = SessionDataset(str(tmp_path), split='valid', valid='temporal',
                        valid_fraction=0.2, log=False)
    # the last 2 of 10 sessions, [5, 1, 5] and [7, 6], prefix-expanded
    assert va.sequences.to_lists() == [[5, 1], [5], [7]]
    assert va.sequences.targets.tolist() == [5, 1, 6]
    assert len(tr) == total - 3
    rtr = SessionDataset(str(tmp_path), valid='random', valid_fraction=0.2,
                         valid_seed=1, log=False)
    rva = SessionDataset(str(tmp_path), split='valid', valid='random',
                         valid_fraction=0.2, valid_seed=1, log=False)
    assert len(rtr) + len(rva) == total and len(rva) == round(total * 0.2)
    pairs = sorted(zip(map(tuple, rtr.sequences.to_lists() + rva.sequences.to_lists()),
                       rtr.sequences.targets.tolist() + rva.sequences.targets.tolist()))
    full = SessionDataset(str(tmp_path), log=False).sequences
    assert pairs == sorted(zip(map(tuple, full.to_lists()), full.targets.tolist()))


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="split must be one of .* got 'dev'"):
        SessionDataset(str(tmp_path), split='dev')
    with pytest.raises(ValueError, match="needs a validation split"):
        SessionDataset(str(tmp_path), split='valid')
    with pytest.raises(ValueError, match="valid must be one of .* got 'last'"):
        SessionDataset(str(tmp_path), valid='last')
    with pytest.raises(ValueError, match='valid_fraction must be strictly between 0 and 1, got 1.5'):
        SessionDataset(str(tmp_path), valid='temporal', valid_fraction=1.5)
    with pytest.raises(ValueError, match="one of \\('binary', 'count'\\), got 'dense'"):
        SessionDataset(str(tmp_path), weighting='dense')
    with pytest.raises(FileNotFoundError, match='codalab.org/competitions/11161'):
        Diginetica(str(tmp_path / 'none'), log=False)
    with pytest.raises(ValueError, match='fraction must be 64 .* got 16'):
        Yoochoose(str(tmp_path), fraction=16)
    # a folder with train.txt only cannot give a temporal split
    raw = tmp_path / 'prefixes' / 'raw'
    raw.mkdir(parents=True)
    with open(raw / 'train.txt', 'wb') as f:
        pickle.dump(([[1], [1, 2]], [2, 3]), f)
    with open(raw / 'test.txt', 'wb') as f:
        pickle.dump(([[2]], [3]), f)
    assert len(SessionDataset(str(tmp_path / 'prefixes'), log=False)) == 2
    with pytest.raises(ValueError, match="valid='temporal' needs whole training sessions"):
        SessionDataset(str(tmp_path / 'prefixes'), valid='temporal', log=False)


def test_synthetic_sessions(tmp_path):
    kw = dict(num_items=200, num_train_sessions=300, num_test_sessions=60,
              generator_options=dict(num_interests=5), log=False)
    train = SyntheticSessions(str(tmp_path), **kw)
    test = SyntheticSessions(str(tmp_path), split='test', **kw)
    assert train.num_items <= 201 and len(train) > 300 and len(test) > 0
    other = SyntheticSessions(str(tmp_path), seed=1, **kw)
    assert other.raw_dir != train.raw_dir
    assert not torch.equal(other.sequences.items[:50], train.sequences.items[:50])
    again = SyntheticSessions(str(tmp_path), **kw)
    assert again.sequences.equals(train.sequences)


def test_diginetica_from_raw_log(tmp_path):
    """A raw ``train-item-views.csv`` in ``raw/`` is preprocessed on first use
    (counts of the shared sample's README)."""
    (tmp_path / 'raw').mkdir()
    shutil.copyfile(require_shared('raw', 'diginetica-sample-train-item-views.csv'),
                    tmp_path / 'raw' / 'train-item-views.csv')
    train = Diginetica(str(tmp_path), log=False)
    test = Diginetica(str(tmp_path), split='test', log=False)
    assert len(train) == 1205 and len(test) == 99 and train.num_items == 310


class MarkLength:
    """A pre_transform with a stable repr: stores the prefix length as ``length``."""

    def __call__(self, data):
        data.length = torch.tensor([data.seq.numel()])
        return data

    def __repr__(self):
        return 'MarkLength()'


def test_pre_transform_and_pre_filter(tmp_path, count_process):
    write_folder(tmp_path)
    plain = SessionDataset(str(tmp_path), log=False)
    keep_long = lambda d: d.seq.numel() >= 2  # noqa: E731
    ds = SessionDataset(str(tmp_path), pre_transform=MarkLength(), pre_filter=keep_long,
                        log=False)
    assert len(count_process) == 2  # keyed on the pre-transform and pre-filter
    expected = [plain[i] for i in range(len(plain)) if plain[i].seq.numel() >= 2]
    assert len(ds) == len(expected) > 0
    for i, want in enumerate(expected):
        got = ds[i]
        assert_graph_equal(SessionData(**{k: got[k] for k in want.keys()}), want)
        assert got.length.item() == want.seq.numel()
    # the flat sequences follow the filtered examples
    assert ds.sequences.to_lists() == [e.x[e.seq].tolist() for e in expected]
    SessionDataset(str(tmp_path), pre_transform=MarkLength(), pre_filter=keep_long,
                   log=False)
    assert len(count_process) == 2  # cached under the same key


def test_sequences_of_a_shuffled_subset(tmp_path):
    write_folder(tmp_path)
    ds = SessionDataset(str(tmp_path), log=False)
    perm = torch.tensor([3, 0, 2])
    sub = ds[perm]
    assert sub.sequences.to_lists() == [ds[int(i)].x[ds[int(i)].seq].tolist() for i in perm]
    assert sub.sequences.targets.tolist() == [ds[int(i)].y.item() for i in perm]
