"""SessionData against a direct dense construction of the released code's graphs."""
import numpy as np
import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from tagnn_pyg.data import SessionData
from tagnn_pyg.testing.released import dense_adjacency


def released_dense_adjacency(items):
    """The released ``get_slice`` weights for one session: ``A_in[v, u]`` and
    ``A_out[u, v]``."""
    node, A = dense_adjacency(items)
    n = len(node)
    return node, A[:, :n], A[:, n:]


def count_dense_adjacency(items):
    node = np.unique(items)
    n = len(node)
    c = np.zeros((n, n))
    for i in range(len(items) - 1):
        c[np.searchsorted(node, items[i]), np.searchsorted(node, items[i + 1])] += 1
    into = c.sum(0)
    out = c.sum(1)
    w_in = np.divide(c, into[None, :], out=np.zeros_like(c), where=into[None, :] > 0)
    w_out = np.divide(c, out[:, None], out=np.zeros_like(c), where=out[:, None] > 0)
    return node, w_in, w_out


def dense_from_edges(data, key):
    n = data.num_nodes
    m = np.zeros((n, n))
    for (u, v), w in zip(data.edge_index.t().tolist(), data[key].tolist()):
        m[u, v] = w
    return m


SESSIONS = [[1, 2, 1, 3], [5, 5, 5], [7], [4, 3, 2, 1], [2, 9, 2, 9, 2, 4, 4],
            [10, 11, 10, 11, 12]]


@pytest.mark.parametrize('items', SESSIONS)
def test_binary_weights_match_released_code(items):
    data = SessionData.from_sequence(items, target=6)
    node, a_in_t, a_out_t = released_dense_adjacency(items)
    assert data.x.tolist() == node.tolist()
    assert data.x[data.seq].tolist() == items
    assert data.last.tolist() == [int(np.searchsorted(node, items[-1]))]
    assert data.y.tolist() == [6]
    assert data.seq_batch.tolist() == [0] * len(items)
    # in-message of v: sum_u A_in[v, u] h_u with A_in[v, u] = w_in(u -> v)
    assert np.allclose(dense_from_edges(data, 'edge_weight_in').T, a_in_t)
    # out-message of u: sum_v A_out[u, v] h_v with A_out[u, v] = w_out(u -> v)
    assert np.allclose(dense_from_edges(data, 'edge_weight_out'), a_out_t)


@pytest.mark.parametrize('items', SESSIONS)
def test_count_weights_match_paper(items):
    data = SessionData.from_sequence(items, weighting='count')
    _, w_in, w_out = count_dense_adjacency(items)
    assert np.allclose(dense_from_edges(data, 'edge_weight_in'), w_in)
    assert np.allclose(dense_from_edges(data, 'edge_weight_out'), w_out)


def test_hand_worked_examples():
    d = SessionData.from_sequence([1, 2, 1, 3])
    assert d.edge_index.tolist() == [[0, 0, 1], [1, 2, 0]]  # no self-loop
    assert d.edge_weight_in.tolist() == [1.0, 1.0, 1.0]
    assert d.edge_weight_out.tolist() == [0.5, 0.5, 1.0]  # node 1 goes to 2 and 3
    d = SessionData.from_sequence([5, 5, 5])
    assert d.x.tolist() == [5]
    assert d.edge_index.tolist() == [[0], [0]]  # 5 -> 5
    d = SessionData.from_sequence([2, 9, 2, 9, 2], weighting='count')
    # 2->9 twice, 9->2 twice: each node's only in/out edge
    assert d.edge_weight_in.tolist() == [1.0, 1.0]
    d = SessionData.from_sequence([1, 2, 1, 2, 1, 3], weighting='count')
    # out of item 1: 1->2 twice, 1->3 once
    assert d.edge_index.tolist() == [[0, 0, 1], [1, 2, 0]]
    assert np.allclose(d.edge_weight_out.tolist(), [2 / 3, 1 / 3, 1.0])


def test_pyg_batching_offsets():
    graphs = [SessionData.from_sequence(s, target=1) for s in SESSIONS]
    for batch in (Batch.from_data_list(graphs),
                  next(iter(DataLoader(graphs, batch_size=len(graphs))))):
        assert batch.num_graphs == len(SESSIONS)
        lengths = [len(s) for s in SESSIONS]
        assert batch.seq_batch.tolist() == sum(([i] * n for i, n in enumerate(lengths)), [])
        assert batch.x[batch.seq].tolist() == sum(SESSIONS, [])
        assert batch.x[batch.last].tolist() == [s[-1] for s in SESSIONS]
        assert batch.y.tolist() == [1] * len(SESSIONS)
        # every edge stays inside its own graph
        assert torch.equal(batch.batch[batch.edge_index[0]], batch.batch[batch.edge_index[1]])


@pytest.mark.parametrize('bad,match', [
    ([], 'empty'), ([1, 0, 2], 'item id 0'), ([1, -3], 'item id -3'),
    ([[1, 2]], '1-D'), ([1.5, 2.0], 'integer'),
])
def test_bad_sessions_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        SessionData.from_sequence(bad)


def test_bad_target_and_weighting():
    with pytest.raises(ValueError, match='target item id'):
        SessionData.from_sequence([1, 2], target=0)
    with pytest.raises(ValueError, match="'dense'"):
        SessionData.from_sequence([1, 2], weighting='dense')
