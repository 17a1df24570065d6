"""POP, S-POP and Item-KNN against rankings and similarities worked out by hand."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch_geometric.data import Batch, Data

from tagnn_pyg.baselines import BASELINES, POP, SPOP, ItemKNN
from tagnn_pyg.data import SessionData
from tagnn_pyg.data.sequences import SessionSequences

# Toy training sessions over item ids 1..5 (num_items = 6 columns incl. padding):
TRAIN = [[1, 2, 3], [2, 3, 2], [3, 4], [1, 3]]
NUM_ITEMS = 6
# Clicks per item: 1 -> 2, 2 -> 3, 3 -> 4, 4 -> 1, 5 -> 0
POPULARITY = [0, 2, 3, 4, 1, 0]
# Sessions containing each item: S1 = {0, 3}, S2 = {0, 1}, S3 = {0, 1, 2, 3},
# S4 = {2}, S5 = {} -> cosine = |Si & Sj| / sqrt(|Si| |Sj|):
SIM = {
    (1, 2): 1 / math.sqrt(2 * 2),  # 0.5
    (1, 3): 2 / math.sqrt(2 * 4),  # 0.7071
    (2, 3): 2 / math.sqrt(2 * 4),  # 0.7071
    (3, 4): 1 / math.sqrt(4 * 1),  # 0.5
}


def sim(i, j):
    return SIM.get((min(i, j), max(i, j)), 0.0)


def batch_of(*sessions):
    return Batch.from_data_list([SessionData.from_sequence(s) for s in sessions])


def ranking(row):
    """Item ids 1.. in decreasing score order (stable: ties keep id order)."""
    order = torch.argsort(-row[1:].double(), stable=True) + 1
    return order.tolist()


def test_pop_counts_and_ranking():
    pop = POP().fit(TRAIN, NUM_ITEMS)
    assert pop.popularity.tolist() == POPULARITY
    out = pop(batch_of([5], [1, 2, 1]))
    assert out.shape == (2, NUM_ITEMS)
    assert torch.isinf(out[:, 0]).all() and (out[:, 0] < 0).all()
    assert out[0, 1:].tolist() == POPULARITY[1:] == out[1, 1:].tolist()
    assert ranking(out[0]) == [3, 2, 1, 4, 5]


def test_pop_from_session_sequences_counts_prefix_and_target():
    # each sequence + its target is one session: the same clicks as TRAIN
    seqs = SessionSequences.from_lists([[1, 2], [2, 3], [3], [1]], targets=[3, 2, 4, 3])
    assert POP().fit(seqs, NUM_ITEMS).popularity.tolist() == POPULARITY


def test_spop_session_counts_then_popularity():
    spop = SPOP().fit(TRAIN, NUM_ITEMS)
    out = spop(batch_of([4, 1, 4], [1, 2], [5]))
    # [4, 1, 4]: 4 twice, 1 once, then the rest by popularity 3 > 2 > 5
    assert ranking(out[0]) == [4, 1, 3, 2, 5]
    # [1, 2]: once each -> tie broken by popularity (2 has 3 clicks, 1 has 2)
    assert ranking(out[1]) == [2, 1, 3, 4, 5]
    assert out[1, 2] > out[1, 1] > out[1, 3]  # strict, no tie left
    # [5]: unseen in training (popularity 0) but clicked -> first
    assert ranking(out[2]) == [5, 3, 2, 1, 4]
    assert torch.isinf(out[:, 0]).all()


def test_spop_other_sessions_do_not_leak():
    spop = SPOP().fit(TRAIN, NUM_ITEMS)
    alone = spop(batch_of([1, 2]))
    together = spop(batch_of([4, 4, 4], [1, 2], [5]))
    assert torch.equal(alone[0], together[1])


def test_itemknn_cosine_values():
    knn = ItemKNN().fit(TRAIN, NUM_ITEMS)
    dense = knn.similarity.to_dense()
    for i in range(1, NUM_ITEMS):
        for j in range(1, NUM_ITEMS):
            expected = 0.0 if i == j else sim(i, j)
            assert dense[i, j].item() == pytest.approx(expected, abs=1e-6), (i, j)
    out = knn(batch_of([4, 3], [2, 2, 1], [1, 4]))  # scored from the last click
    expected = torch.tensor([[sim(l, j) if j != l else 0.0 for j in range(1, NUM_ITEMS)]
                             for l in (3, 1, 4)])
    torch.testing.assert_close(out[:, 1:], expected)
    assert torch.isinf(out[:, 0]).all()
    assert ranking(out[0])[:3] == [1, 2, 4]  # 0.707, 0.707, 0.5


def test_itemknn_self_and_top_k():
    with_self = ItemKNN(exclude_self=False).fit(TRAIN, NUM_ITEMS)
    out = with_self(batch_of([3]))
    assert out[0, 3].item() == pytest.approx(1.0)
    top1 = ItemKNN(k=1).fit(TRAIN, NUM_ITEMS)
    out = top1(batch_of([3], [4]))
    # row 3: items 1 and 2 tie at 0.707 -> the lower id is kept
    assert out[0, 1:].tolist() == pytest.approx([SIM[(1, 3)], 0, 0, 0, 0])
    assert out[1, 1:].tolist() == pytest.approx([0, 0, 0.5, 0, 0])


def test_candidates_and_errors():
    pop = POP().fit(TRAIN, NUM_ITEMS)
    cand = torch.tensor([[3, 1], [5, 2]])
    assert pop(batch_of([1], [2]), cand).tolist() == [[4, 2], [0, 3]]
    with pytest.raises(RuntimeError, match='not fitted'):
        SPOP()(batch_of([1]))
    with pytest.raises(ValueError, match='item id 7'):
        POP().fit([[1, 7]], NUM_ITEMS)
    with pytest.raises(ValueError, match='training session 1 holds item id 0'):
        ItemKNN().fit([[1], [0, 2]], NUM_ITEMS)
    with pytest.raises(ValueError, match='item id 9'):
        ItemKNN().fit(TRAIN, NUM_ITEMS)(batch_of([9]))
    with pytest.raises(ValueError, match='k must be'):
        ItemKNN(k=0)
    assert set(BASELINES) == {'pop', 'spop', 'itemknn', 'sknn', 'vsknn', 'stan'}


@pytest.mark.parametrize('name', ['pop', 'spop', 'itemknn', 'sknn', 'vsknn', 'stan'])
def test_bad_input_is_named(name):
    # Item ids that are not ints are refused, not truncated (2.7 -> 2) or parsed.
    with pytest.raises(TypeError, match=r"training session 1 holds 2\.7 \(float\)"):
        BASELINES[name]().fit([[1, 2], [3, 2.7]], NUM_ITEMS)
    # the first offending click, not the first click equal to it (2.0 == 2)
    with pytest.raises(TypeError, match=r"training session 2 holds 2\.0 \(float\)"):
        BASELINES[name]().fit([[1, 2], [3], [4, 2.0]], NUM_ITEMS)
    with pytest.raises(TypeError, match=r"training session 0 holds '3' \(str\)"):
        BASELINES[name]().fit([['3']], NUM_ITEMS)
    with pytest.raises(TypeError, match='train.items must hold integer item ids'):
        BASELINES[name]().fit(SimpleNamespace(items=torch.tensor([1.0, 2.0]),
                                              ptr=torch.tensor([0, 2]), targets=None),
                              NUM_ITEMS)  # duck-typed like SessionSequences
    model = BASELINES[name]().fit(TRAIN, NUM_ITEMS)
    with pytest.raises(TypeError, match='candidates must be a LongTensor of item ids, '
                                        'got dtype torch.float32'):
        model(batch_of([1], [2]), torch.ones(2, 2))
    with pytest.raises(ValueError, match="batch lacks the SessionData field '(last|seq)'"):
        model(Data(x=torch.tensor([1])))
