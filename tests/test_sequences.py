"""Tests of SessionSequences and expand_prefixes (SR-GNN prefix expansion)."""
import numpy as np
import pytest
import torch

from tagnn_pyg.data import SessionSequences, expand_prefixes
from tagnn_pyg.testing.released import process_seqs


def test_from_lists_layout():
    s = SessionSequences.from_lists([[1, 2], [3], [4, 5, 6]], targets=[3, 4, 7])
    assert s.items.tolist() == [1, 2, 3, 4, 5, 6]
    assert s.ptr.tolist() == [0, 2, 3, 6]
    assert s.targets.tolist() == [3, 4, 7]
    assert s.items.dtype == s.ptr.dtype == s.targets.dtype == torch.long
    assert len(s) == 3
    assert s.lengths.tolist() == [2, 1, 3]
    assert s.max_length == 3
    assert s.num_items == 8  # max id 7 (a target) + padding row
    assert s.batch.tolist() == [0, 0, 1, 2, 2, 2]
    assert s.to_lists() == [[1, 2], [3], [4, 5, 6]]
    assert 'num_sequences=3' in repr(s)


def test_num_items_without_targets_and_empty():
    assert SessionSequences.from_lists([[2, 9], [3]]).num_items == 10
    e = SessionSequences.from_lists([])
    assert len(e) == 0 and e.num_items == 1 and e.to_lists() == []
    assert e.ptr.tolist() == [0]


def test_getitem_int_slice_tensor_mask():
    lists = [[1], [2, 3], [4, 5, 6], [7, 8], [9]]
    tg = [10, 11, 12, 13, 14]
    s = SessionSequences.from_lists(lists, targets=tg)
    assert s[2].to_lists() == [[4, 5, 6]] and s[2].targets.tolist() == [12]
    assert s[-1].to_lists() == [[9]]
    assert s[1:4].to_lists() == lists[1:4] and s[1:4].targets.tolist() == tg[1:4]
    assert s[1:4].ptr.tolist() == [0, 2, 5, 7]
    assert s[::2].to_lists() == lists[::2] and s[::2].targets.tolist() == tg[::2]
    assert s[3:3].to_lists() == [] and len(s[3:3]) == 0
    idx = torch.tensor([4, 0, 2, 2, -2])
    sub = s[idx]
    assert sub.to_lists() == [lists[i] for i in idx.tolist()]
    assert sub.targets.tolist() == [tg[i] for i in idx.tolist()]
    mask = torch.tensor([True, False, True, False, True])
    assert s[mask].to_lists() == [lists[0], lists[2], lists[4]]
    assert s[[1, 3]].to_lists() == [lists[1], lists[3]]
    assert s[np.array([3])].to_lists() == [lists[3]]
    with pytest.raises(IndexError, match='5'):
        s[5]
    with pytest.raises(IndexError):
        s[torch.tensor([0, 7])]
    with pytest.raises(IndexError, match='mask'):
        s[torch.tensor([True, False])]


def test_random_gather_matches_python():
    g = np.random.default_rng(0)
    lists = [list(g.integers(1, 50, size=g.integers(1, 8)).tolist()) for _ in range(300)]
    s = SessionSequences.from_lists(lists, targets=list(range(1, 301)))
    perm = torch.from_numpy(g.permutation(300))
    sub = s[perm]
    assert sub.to_lists() == [lists[i] for i in perm.tolist()]
    assert sub.targets.tolist() == [i + 1 for i in perm.tolist()]


def test_validation_names_record():
    with pytest.raises(ValueError, match='sequence 1 is empty'):
        SessionSequences.from_lists([[1], [], [2]])
    with pytest.raises(ValueError, match=r'sequence 2 holds item id 0'):
        SessionSequences.from_lists([[1], [2, 3], [4, 0]])
    with pytest.raises(ValueError, match=r'sequence 0 holds item id -3'):
        SessionSequences.from_lists([[-3]])
    with pytest.raises(ValueError, match='3 targets for 2 sequences'):
        SessionSequences.from_lists([[1], [2]], targets=[1, 2, 3])
    with pytest.raises(ValueError, match='target of sequence 1 is 0'):
        SessionSequences.from_lists([[1], [2]], targets=[1, 0])
    with pytest.raises(ValueError, match=r"record 1 holds 'x'"):
        SessionSequences.from_lists([[1], [2, 'x']])
    with pytest.raises(ValueError, match=r"record 0 holds 1.5"):
        SessionSequences.from_lists([[1.5]])
    with pytest.raises(ValueError, match='record 1 must be a list'):
        SessionSequences.from_lists([[1], 5])
    with pytest.raises(ValueError, match='target 1'):
        SessionSequences.from_lists([[1], [2]], targets=[1, 'a'])
    with pytest.raises(ValueError, match='ptr must end'):
        SessionSequences(torch.tensor([1, 2]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match='LongTensor'):
        SessionSequences(torch.tensor([1.0]), torch.tensor([0, 1]))


def test_from_lists_accepts_arrays_and_tensors():
    s = SessionSequences.from_lists([np.array([1, 2]), torch.tensor([3])],
                                    targets=torch.tensor([5, 6]))
    assert s.to_lists() == [[1, 2], [3]] and s.targets.tolist() == [5, 6]


def test_expand_prefixes_hand_example():
    # session [a, b, c, d] = [1, 2, 3, 4]: ([1,2,3],4), ([1,2],3), ([1],2)
    s = expand_prefixes([[1, 2, 3, 4], [7], [5, 5]])
    assert s.to_lists() == [[1, 2, 3], [1, 2], [1], [5]]
    assert s.targets.tolist() == [4, 3, 2, 5]
    assert s.ptr.tolist() == [0, 3, 5, 6, 7]


def test_expand_prefixes_matches_released_loop_random():
    g = np.random.default_rng(1)
    sessions = [g.integers(1, 30, size=g.integers(1, 12)).tolist() for _ in range(500)]
    s = expand_prefixes(sessions)
    seqs, labs = process_seqs(sessions)
    assert s.to_lists() == seqs
    assert s.targets.tolist() == labs
    # also from a SessionSequences of whole sessions
    s2 = expand_prefixes(SessionSequences.from_lists(sessions))
    assert s2.equals(s)


def test_expand_prefixes_degenerate_and_errors():
    e = expand_prefixes([[3], [4]])
    assert len(e) == 0 and e.targets.tolist() == [] and e.items.numel() == 0
    assert len(expand_prefixes([])) == 0
    with pytest.raises(ValueError, match='session 1 is empty'):
        expand_prefixes([[1, 2], []])
    with pytest.raises(ValueError, match='session 2 holds item id 0'):
        expand_prefixes([[1, 2], [3], [4, 0]])
    with pytest.raises(ValueError, match="session 0 holds 'a'"):
        expand_prefixes([['a', 1]])


def test_to_and_equals():
    s = SessionSequences.from_lists([[1, 2], [3]], targets=[3, 4])
    assert s.to('cpu').equals(s)
    assert not s.equals(SessionSequences.from_lists([[1, 2], [3]]))
    assert not s.equals(SessionSequences.from_lists([[1, 2], [4]], targets=[3, 4]))
