"""GatedSessionConv against a dense port of the released SR-GNN/TAGNN ``GNNCell``.

The reference builds the padded dense ``A = [A_in | A_out]`` of every session with
numpy loops (as the released ``utils.Data.get_slice`` does) and runs the released
gate equations written out by hand, with the module's weights copied in.
"""
import numpy as np
import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.typing import WITH_TORCH_SPARSE, SparseTensor

from tagnn_pyg.data.session_data import SessionData
from tagnn_pyg.nn import GatedSessionConv
from tagnn_pyg.testing.released import dense_adjacency, released_gnn_cell

SESSIONS = [[1, 2, 1, 3], [5, 5, 5], [7], [4, 2, 4, 2, 9, 9, 2], [3, 8], [6, 6]]


def padded_batch(sessions, weighting='binary'):
    nodes, As = zip(*(dense_adjacency(s, weighting) for s in sessions))
    n_max = max(len(n) for n in nodes)
    A = np.zeros((len(sessions), n_max, 2 * n_max))
    for b, (node, a) in enumerate(zip(nodes, As)):
        n = len(node)
        A[b, :n, :n] = a[:, :n]
        A[b, :n, n_max:n_max + n] = a[:, n:]
    return nodes, torch.tensor(A)


def reference(sessions, emb, conv, weighting='binary'):
    nodes, A = padded_batch(sessions, weighting)
    n_max = A.shape[1]
    items = torch.tensor([list(n) + [0] * (n_max - len(n)) for n in nodes])
    hidden = emb[items].double()
    for _ in range(conv.num_steps):
        hidden = released_gnn_cell(A, hidden, conv)
    return torch.cat([hidden[b, :len(n)] for b, n in enumerate(nodes)])


def make_batch(sessions, weighting='binary'):
    return Batch.from_data_list(
        [SessionData.from_sequence(s, weighting=weighting) for s in sessions])


@pytest.mark.parametrize('num_steps', [1, 2])
@pytest.mark.parametrize('weighting', ['binary', 'count'])
@pytest.mark.parametrize('sessions', [
    [[1, 2, 1, 3]], [[5, 5, 5]], [[7]], SESSIONS])
def test_equals_released_dense_gnn_cell(sessions, weighting, num_steps):
    torch.manual_seed(0)
    d = 8
    emb = torch.randn(10, d)
    conv = GatedSessionConv(d, num_steps=num_steps).double()
    batch = make_batch(sessions, weighting)
    out = conv(emb[batch.x].double(), batch.edge_index,
               batch.edge_weight_in, batch.edge_weight_out)
    expected = reference(sessions, emb, conv, weighting)
    assert out.shape == (batch.num_nodes, d)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_float32_and_default_weights_are_released_binary():
    torch.manual_seed(1)
    d = 16
    emb = torch.randn(10, d)
    conv = GatedSessionConv(d)
    batch = make_batch(SESSIONS)
    out = conv(emb[batch.x], batch.edge_index)  # weights from degrees
    expected = reference(SESSIONS, emb, conv.double()).float()
    conv.float()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def _dense_counts(batch):
    """Block-diagonal [N, N] transition-count matrix of a batch (numpy loops)."""
    n = batch.num_nodes
    A = np.zeros((n, n))
    offset = 0
    for s in SESSIONS:
        node = np.unique(s)
        idx = {item: offset + k for k, item in enumerate(node)}
        for a, b in zip(s[:-1], s[1:]):
            A[idx[a], idx[b]] += 1
        offset += len(node)
    return torch.tensor(A)


@pytest.mark.filterwarnings('ignore:Sparse CSR tensor support')
@pytest.mark.filterwarnings('ignore:Sparse invariant checks')
@pytest.mark.parametrize('weighting', ['binary', 'count'])
@pytest.mark.parametrize('layout', ['coo', 'csr', 'csc', 'sparse_tensor'])
def test_sparse_matrix_equals_edge_index(weighting, layout):
    if layout == 'sparse_tensor' and not WITH_TORCH_SPARSE:
        pytest.skip('torch_sparse not installed')
    torch.manual_seed(2)
    d = 8
    emb = torch.randn(10, d, dtype=torch.double)
    conv = GatedSessionConv(d, num_steps=2).double()
    batch = make_batch(SESSIONS, weighting)
    x = emb[batch.x]
    expected = conv(x, batch.edge_index, batch.edge_weight_in, batch.edge_weight_out)
    A = _dense_counts(batch)
    if weighting == 'binary':
        A = (A > 0).double()
    A = A.t()  # PyG's adj_t convention: adj_t[target, source]
    if layout == 'coo':
        adj = A.to_sparse_coo()
    elif layout == 'csr':
        adj = A.to_sparse_csr()
    elif layout == 'csc':
        adj = A.to_sparse_csc()
    else:
        adj = SparseTensor.from_dense(A)
    # SessionData stores its weights in float32; the matrix path is float64.
    torch.testing.assert_close(conv(x, adj), expected, atol=1e-6, rtol=0)


def test_gradients_finite_and_reach_every_parameter():
    torch.manual_seed(3)
    conv = GatedSessionConv(8, num_steps=2)
    batch = make_batch(SESSIONS)
    x = torch.randn(batch.num_nodes, 8, requires_grad=True)
    out = conv(x, batch.edge_index, batch.edge_weight_in, batch.edge_weight_out)
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in conv.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_init_repr_and_errors():
    d = 25
    conv = GatedSessionConv(d, num_steps=3)
    bound = 1 / d ** 0.5
    names = {n for n, _ in conv.named_parameters()}
    assert names == {'lin_in.weight', 'lin_in.bias', 'lin_out.weight', 'lin_out.bias',
                     'bias_in', 'bias_out', 'gru.weight_ih', 'gru.weight_hh',
                     'gru.bias_ih', 'gru.bias_hh'}
    for p in conv.parameters():
        assert p.abs().max() <= bound
    assert repr(conv) == 'GatedSessionConv(25, num_steps=3, bias=True)'
    no_bias = GatedSessionConv(4, bias=False)
    assert {n for n, _ in no_bias.named_parameters()} == {
        'lin_in.weight', 'lin_out.weight', 'gru.weight_ih', 'gru.weight_hh'}
    batch = make_batch(SESSIONS)
    with pytest.raises(ValueError, match=r'\[num_nodes, 25\]'):
        conv(torch.randn(batch.num_nodes, 4), batch.edge_index)
    with pytest.raises(ValueError, match='edge_weight_in'):
        conv(torch.randn(batch.num_nodes, d), batch.edge_index,
             batch.edge_weight_in[:-1])
    with pytest.raises(ValueError, match='num_steps'):
        GatedSessionConv(4, num_steps=0)
    with pytest.raises(TypeError, match='got list'):
        conv(torch.randn(batch.num_nodes, d), batch.edge_index.tolist())
    with pytest.raises(ValueError, match=r'\[2, num_edges\]'):
        conv(torch.randn(batch.num_nodes, d), batch.edge_index[:1])
    with pytest.raises(ValueError, match=r'adj_t must have shape \[17, 17\]'):
        conv(torch.randn(17, d), torch.eye(4).to_sparse_csr())
    with pytest.raises(ValueError, match='cannot be given together'):
        conv(torch.randn(4, d), torch.eye(4).to_sparse_csr(), torch.ones(4))


def test_message_bias_false_is_papers_single_bias():
    torch.manual_seed(4)
    d = 8
    batch = make_batch(SESSIONS)
    x = torch.randn(batch.num_nodes, d, dtype=torch.double)
    conv = GatedSessionConv(d, message_bias=False).double()
    assert conv.lin_in.bias is None and conv.bias_in is not None
    assert repr(conv) == 'GatedSessionConv(8, num_steps=1, bias=True, message_bias=False)'
    # The released layer with c_in = c_out = 0 computes the same.
    released = GatedSessionConv(d).double()
    released.load_state_dict(conv.state_dict(), strict=False)
    with torch.no_grad():
        released.lin_in.bias.zero_()
        released.lin_out.bias.zero_()
    torch.testing.assert_close(conv(x, batch.edge_index), released(x, batch.edge_index))


def _conv_and_inputs():
    torch.manual_seed(5)
    conv = GatedSessionConv(8, num_steps=2)
    batch = make_batch(SESSIONS, 'count')
    x = torch.randn(batch.num_nodes, 8)
    return conv, x, batch.edge_index, batch.edge_weight_in, batch.edge_weight_out


@pytest.mark.filterwarnings('ignore:`torch.jit.script')
def test_jit_script():
    # As PyG's own test_gated_graph_conv.py (2.8) does for GatedGraphConv.
    conv, x, edge_index, w_in, w_out = _conv_and_inputs()
    jit = torch.jit.script(conv)
    torch.testing.assert_close(jit(x, edge_index), conv(x, edge_index), atol=1e-6, rtol=0)
    torch.testing.assert_close(jit(x, edge_index, w_in, w_out),
                               conv(x, edge_index, w_in, w_out), atol=1e-6, rtol=0)


def test_torch_compile_without_graph_breaks():
    import torch._dynamo as dynamo
    conv, x, edge_index, w_in, w_out = _conv_and_inputs()
    explanation = dynamo.explain(conv)(x, edge_index, w_in, w_out)
    assert explanation.graph_break_count == 0
    expected = conv(x, edge_index, w_in, w_out)
    out = torch.compile(conv)(x, edge_index, w_in, w_out)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
