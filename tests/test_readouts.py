"""Readouts against per-session dense computations written here (released formulas)."""
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn.aggr import MeanAggregation

from tagnn_pyg.nn import LastItemReadout, SoftAttentionReadout

LENGTHS = [4, 1, 3, 7, 2]


def positions(d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(LENGTHS), d, generator=g, dtype=torch.double)
    index = torch.repeat_interleave(torch.arange(len(LENGTHS)), torch.tensor(LENGTHS))
    ptr = torch.tensor([0] + LENGTHS).cumsum(0)
    return x, index, ptr


def sessions(x):
    return list(torch.split(x, LENGTHS))


def released_soft_attention(hidden, readout, softmax):
    """The released ``compute_scores`` global part for one unpadded session [L, d]."""
    hidden = hidden.unsqueeze(0)                       # 1 x L x d
    ht = hidden[:, -1]                                 # 1 x d
    q1 = F.linear(ht, readout.lin_last.weight, readout.lin_last.bias).view(1, 1, -1)
    q2 = F.linear(hidden, readout.lin_pos.weight, readout.lin_pos.bias)
    alpha = F.linear(torch.sigmoid(q1 + q2), readout.lin_q.weight)  # 1 x L x 1
    if softmax:
        alpha = F.softmax(alpha, 1)
    return torch.sum(alpha * hidden, 1)[0]


def test_last_item_readout():
    x, index, ptr = positions()
    expected = torch.stack([s[-1] for s in sessions(x)])
    readout = LastItemReadout()
    torch.testing.assert_close(readout(x, index), expected, rtol=0, atol=0)
    torch.testing.assert_close(readout(x, ptr=ptr), expected, rtol=0, atol=0)
    # An empty trailing session gives zeros; interleaved positions still pick
    # each session's highest position.
    out = readout(x, index, dim_size=len(LENGTHS) + 1)
    assert out[-1].abs().sum() == 0
    perm_index = torch.tensor([1, 0, 1, 0, 0])
    out = readout(x[:5], perm_index)
    torch.testing.assert_close(out, x[[4, 2]])
    assert repr(readout) == 'LastItemReadout()'


@pytest.mark.parametrize('softmax', [False, True])
def test_soft_attention_readout_equals_released(softmax):
    torch.manual_seed(0)
    x, index, ptr = positions()
    readout = SoftAttentionReadout(6, softmax=softmax).double()
    expected = torch.stack([released_soft_attention(s, readout, softmax)
                            for s in sessions(x)])
    torch.testing.assert_close(readout(x, index), expected)
    torch.testing.assert_close(readout(x, ptr=ptr), expected)
    # An explicit `last` (e.g. from another layer) replaces the last position.
    last = torch.randn(len(LENGTHS), 6, dtype=torch.double)
    out = readout(x, index, last=last)
    manual = []
    for b, s in enumerate(sessions(x)):
        a = readout.lin_q(torch.sigmoid(readout.lin_last(last[b]) + readout.lin_pos(s)))
        if softmax:
            a = a.softmax(0)
        manual.append((a * s).sum(0))
    torch.testing.assert_close(out, torch.stack(manual))


def test_soft_attention_alone_equals_batched_and_grads():
    torch.manual_seed(1)
    x, index, _ = positions()
    x.requires_grad_()
    readout = SoftAttentionReadout(6, softmax=True).double()
    out = readout(x, index)
    for b, s in enumerate(sessions(x)):
        alone = readout(s, torch.zeros(len(s), dtype=torch.long))
        torch.testing.assert_close(alone[0], out[b])
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in readout.parameters())


def test_soft_attention_init_repr_errors():
    readout = SoftAttentionReadout(16)
    assert all(p.abs().max() <= 0.25 for p in readout.parameters())
    assert readout.lin_q.bias is None and readout.lin_last.bias is not None
    assert repr(readout) == 'SoftAttentionReadout(16, softmax=False)'
    x, index, _ = positions(d=16)
    with pytest.raises(ValueError, match=r'last must have shape \[5, 16\]'):
        readout(x.float(), index, last=torch.zeros(4, 16))
    with pytest.raises(ValueError, match='16 channels'):
        readout(torch.zeros(3, 8), torch.zeros(3, dtype=torch.long))


def test_mean_pooling_is_pyg_mean_aggregation():
    x, index, _ = positions()
    expected = torch.stack([s.mean(0) for s in sessions(x)])
    torch.testing.assert_close(MeanAggregation()(x, index), expected)


def test_ptr_paths_equal_index_paths_with_empty_sessions():
    # Aggregation.__call__ passes ptr through: LastItemReadout reads ptr[1:] - 1,
    # SoftAttentionReadout uses PyG's softmax(..., ptr=).
    torch.manual_seed(2)
    x, _, _ = positions()
    lengths = [4, 0, 1, 3, 7, 0, 2]
    ptr = torch.tensor([0] + lengths).cumsum(0)
    index = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    last = LastItemReadout()
    torch.testing.assert_close(last(x, ptr=ptr), last(x, index, dim_size=len(lengths)),
                               rtol=0, atol=0)
    assert last(x, ptr=ptr)[[1, 5]].abs().sum() == 0
    for softmax in (False, True):
        readout = SoftAttentionReadout(6, softmax=softmax).double()
        torch.testing.assert_close(readout(x, ptr=ptr),
                                   readout(x, index, dim_size=len(lengths)))


def test_resolve_index_and_input_checks():
    from tagnn_pyg.nn.readouts import resolve_index
    x, index, ptr = positions()
    assert torch.equal(resolve_index(x, ptr=ptr), index)
    assert torch.equal(resolve_index(x), torch.zeros(x.size(0), dtype=torch.long))
    with pytest.raises(ValueError, match=r'index must have shape \[17\]'):
        resolve_index(x, index[:-1])
    with pytest.raises(ValueError, match='two-dimensional'):
        LastItemReadout()(x.view(1, *x.shape), index)
