"""The vectorised batch builder and loader against PyG's own collation of
``SessionData.from_sequence`` graphs (the reference path)."""
import random

import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from tagnn_pyg.data import SessionData, SessionSequences
from tagnn_pyg.data.batching import SessionLoader, build_session_batch

KEYS = ('x', 'edge_index', 'edge_weight_in', 'edge_weight_out', 'seq', 'seq_batch',
        'last', 'y', 'batch', 'ptr')


def random_sessions(num, seed, max_len=12, num_items=9):
    """Short sessions over few items: many repeats, self-loops, length-1 sessions."""
    rng = random.Random(seed)
    seqs = []
    for _ in range(num):
        n = rng.choice([1, 1, 2, 3, rng.randint(1, max_len)])
        s = [rng.randint(1, num_items)]
        for _ in range(n - 1):  # sticky: often repeat the previous click
            s.append(s[-1] if rng.random() < 0.3 else rng.randint(1, num_items))
        seqs.append(s)
    targets = [rng.randint(1, num_items) for _ in seqs]
    return seqs, targets


def flat(seqs):
    items = torch.tensor([i for s in seqs for i in s])
    ptr = torch.tensor([0] + [len(s) for s in seqs]).cumsum(0)
    return items, ptr


def reference(seqs, targets, weighting):
    return Batch.from_data_list([
        SessionData.from_sequence(s, None if targets is None else t, weighting)
        for s, t in zip(seqs, targets or [None] * len(seqs))])


def assert_same_batch(fast, ref):
    assert set(fast.keys()) == set(ref.keys())
    for key in ref.keys():
        a, b = fast[key], ref[key]
        assert a.dtype == b.dtype, key
        assert torch.equal(a, b), key  # bit-identical, weights included
    assert fast.num_graphs == ref.num_graphs
    assert fast.num_nodes == ref.num_nodes
    for key in ref._slice_dict:
        assert torch.equal(fast._slice_dict[key], ref._slice_dict[key]), key
        assert torch.equal(torch.as_tensor(fast._inc_dict[key]),
                           torch.as_tensor(ref._inc_dict[key])), key
    assert type(fast) is type(ref)


@pytest.mark.parametrize('weighting', ['binary', 'count'])
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_equals_from_data_list(weighting, seed):
    seqs, targets = random_sessions(200, seed)
    seqs[:4] = [[1, 2, 1, 3], [5, 5, 5], [7], [2, 9, 2, 9, 2, 4, 4]]
    items, ptr = flat(seqs)
    fast = build_session_batch(items, ptr, torch.tensor(targets), weighting=weighting)
    assert_same_batch(fast, reference(seqs, targets, weighting))


def test_without_targets_and_pyg_api():
    seqs, _ = random_sessions(30, 5)
    items, ptr = flat(seqs)
    fast = build_session_batch(items, ptr)
    ref = reference(seqs, None, 'binary')
    assert 'y' not in fast
    assert_same_batch(fast, ref)
    # PyG's batch API: separation back into graphs, indexing, re-collation.
    for i in (0, 7, 29):
        one, want = fast[i], SessionData.from_sequence(seqs[i])
        assert isinstance(one, SessionData)
        for key in want.keys():
            assert torch.equal(one[key], want[key]), (i, key)
    assert len(fast.to_data_list()) == 30
    sub = fast.index_select([3, 1])
    assert [d.items.tolist() for d in sub] == [seqs[3], seqs[1]]
    again = Batch.from_data_list(fast.to_data_list())
    assert_same_batch(again, ref)


def test_hand_worked_batch():
    b = build_session_batch(torch.tensor([1, 2, 1, 3, 5, 5, 5]), torch.tensor([0, 4, 7]),
                            torch.tensor([4, 6]))
    assert b.x.tolist() == [1, 2, 3, 5]
    assert b.seq.tolist() == [0, 1, 0, 2, 3, 3, 3]
    assert b.seq_batch.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert b.last.tolist() == [2, 3]
    assert b.edge_index.tolist() == [[0, 0, 1, 3], [1, 2, 0, 3]]
    assert b.edge_weight_in.tolist() == [1.0, 1.0, 1.0, 1.0]
    assert b.edge_weight_out.tolist() == [0.5, 0.5, 1.0, 1.0]
    assert b.batch.tolist() == [0, 0, 0, 1] and b.ptr.tolist() == [0, 3, 4]
    assert b.y.tolist() == [4, 6]


def test_single_session_and_device_argument():
    b = build_session_batch(torch.tensor([3]), torch.tensor([0, 1]), device='cpu')
    ref = reference([[3]], None, 'binary')
    assert_same_batch(b, ref)
    assert b.edge_index.shape == (2, 0)


@pytest.mark.parametrize('items,ptr,targets,match', [
    ([1, 2], [0, 2, 2], None, 'session 1 has 0 clicks'),
    ([1, 0, 2], [0, 1, 3], None, 'session 1 holds item id 0'),
    ([1, 2], [0, 1], None, 'ptr must start at 0 and end at items.numel'),
    ([1, 2], [1, 2], None, 'ptr must start at 0'),
    ([1, 2], [0, 1, 2], [3], r'targets must have shape \[B\] = \[2\]'),
    ([1, 2], [0, 1, 2], [3, 0], 'target 1 is item id 0'),
    ([1, 2], [0], None, 'B >= 1'),
])
def test_bad_input_is_named(items, ptr, targets, match):
    with pytest.raises(ValueError, match=match):
        build_session_batch(torch.tensor(items), torch.tensor(ptr),
                            None if targets is None else torch.tensor(targets))


def test_bad_weighting_and_dtype():
    with pytest.raises(ValueError, match="'dense'"):
        build_session_batch(torch.tensor([1]), torch.tensor([0, 1]), weighting='dense')
    with pytest.raises(ValueError, match='integer tensor, got dtype torch.float32'):
        build_session_batch(torch.tensor([1.0]), torch.tensor([0, 1]))


def loader_reference(seqs, targets, order, batch_size, drop_last, weighting='binary'):
    graphs = [SessionData.from_sequence(seqs[i], targets[i], weighting) for i in order]
    return list(DataLoader(graphs, batch_size=batch_size, shuffle=False,
                           drop_last=drop_last))


@pytest.mark.parametrize('drop_last', [False, True])
def test_loader_in_order_matches_pyg_dataloader(drop_last):
    seqs, targets = random_sessions(103, 11)
    data = SessionSequences.from_lists(seqs, targets)
    loader = SessionLoader(data, batch_size=10, drop_last=drop_last, weighting='count')
    got = list(loader)
    want = loader_reference(seqs, targets, range(103), 10, drop_last, 'count')
    assert len(loader) == len(got) == len(want) == (10 if drop_last else 11)
    for a, b in zip(got, want):
        assert_same_batch(a, b)


def test_loader_shuffle_is_a_reproducible_permutation():
    seqs, targets = random_sessions(57, 3)
    data = SessionSequences.from_lists(seqs, targets)
    loader = SessionLoader(data, batch_size=8, shuffle=True, seed=123)
    epoch0 = list(loader)
    epoch1 = list(loader)  # epoch advanced automatically
    order0 = loader.permutation(0).tolist()
    assert sorted(order0) == list(range(57)) and order0 != list(range(57))
    for a, b in zip(epoch0, loader_reference(seqs, targets, order0, 8, False)):
        assert_same_batch(a, b)
    order1 = loader.permutation(1).tolist()
    assert order1 != order0
    for a, b in zip(epoch1, loader_reference(seqs, targets, order1, 8, False)):
        assert_same_batch(a, b)
    # A fresh loader resumed at epoch 1 sees the same order as the first run.
    resumed = SessionLoader(data, batch_size=8, shuffle=True, seed=123)
    resumed.set_epoch(1)
    for a, b in zip(resumed, epoch1):
        assert torch.equal(a.y, b.y) and torch.equal(a.x, b.x)
    # Global seeding fixes the default seed too.
    torch.manual_seed(0)
    s1 = SessionLoader(data, batch_size=8, shuffle=True).seed
    torch.manual_seed(0)
    assert SessionLoader(data, batch_size=8, shuffle=True).seed == s1


def test_loader_generator_and_prefetch():
    seqs, targets = random_sessions(40, 4)
    data = SessionSequences.from_lists(seqs, targets)
    g1 = torch.Generator().manual_seed(7)
    got = list(SessionLoader(data, batch_size=6, shuffle=True, generator=g1))
    order = torch.randperm(40, generator=torch.Generator().manual_seed(7)).tolist()
    want = loader_reference(seqs, targets, order, 6, False)
    for a, b in zip(got, want):
        assert_same_batch(a, b)
    threaded = list(SessionLoader(data, batch_size=6, prefetch=2))
    plain = list(SessionLoader(data, batch_size=6))
    assert len(threaded) == len(plain) == 7
    for a, b in zip(threaded, plain):
        assert_same_batch(a, b)
    # Leaving a prefetching loop early does not hang.
    for i, _ in enumerate(SessionLoader(data, batch_size=1, prefetch=2)):
        if i == 2:
            break


def test_loader_errors():
    data = SessionSequences.from_lists([[1, 2], [3]], [3, 4])
    with pytest.raises(ValueError, match='batch_size must be a positive int, got 0'):
        SessionLoader(data, batch_size=0)
    with pytest.raises(ValueError, match='either seed or generator'):
        SessionLoader(data, 2, seed=1, generator=torch.Generator())
    with pytest.raises(TypeError, match='SessionSequences, got list'):
        SessionLoader([[1, 2]], 2)
