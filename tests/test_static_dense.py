"""StaticDenseBatch against PyG's to_dense_batch: the same left-aligned rows and
mask at any fixed length, the way back to the input order, and the refusal (eager)
or NaN (traced) of a session longer than the length."""
import pytest
import torch
from torch_geometric.utils import to_dense_batch

from tagnn_pyg.utils.static_dense import StaticDenseBatch

LENGTHS = [3, 1, 5, 0, 2]         # an empty session, a one-click one


def interleaved(seed=0, lengths=LENGTHS):
    g = torch.Generator().manual_seed(seed)
    labels = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    index = labels[torch.randperm(labels.numel(), generator=g)]
    x = torch.randn(index.numel(), 4, 2, generator=g)      # features of any shape
    return x, index


@pytest.mark.parametrize('length', [5, 7])
def test_equals_to_dense_batch_and_goes_back(length):
    x, index = interleaved()
    assert not (torch.diff(index) >= 0).all()
    perm = torch.sort(index, stable=True)[1]
    want, want_mask = to_dense_batch(x[perm], index[perm], batch_size=len(LENGTHS),
                                     max_num_nodes=length)
    slots = StaticDenseBatch(index, len(LENGTHS), length)
    assert torch.equal(slots.to_dense(x), want)
    assert torch.equal(slots.mask, want_mask)
    assert slots.counts.tolist() == LENGTHS
    assert torch.equal(slots.from_dense(slots.to_dense(x)), x)
    # from_dense reads only the real slots
    noisy = slots.to_dense(x) + 100.0 * (~slots.mask)[:, :, None, None]
    assert torch.equal(slots.from_dense(noisy), x)


def test_length_one_holds_one_click_sessions():
    # the smallest valid length: one slot per session, the click itself
    index = torch.tensor([2, 0, 1])
    x = torch.tensor([[30.0], [10.0], [20.0]])
    slots = StaticDenseBatch(index, 3, 1)
    assert slots.to_dense(x).tolist() == [[[10.0]], [[20.0]], [[30.0]]]
    assert slots.mask.tolist() == [[True], [True], [True]]
    assert torch.equal(slots.from_dense(slots.to_dense(x)), x)


def test_bad_arguments_and_too_long_sessions(monkeypatch):
    x, index = interleaved()
    with pytest.raises(ValueError, match='static_length needs dim_size'):
        StaticDenseBatch(index, None, 5)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match='static_length must be a positive int'):
            StaticDenseBatch(index, len(LENGTHS), bad)
    with pytest.raises(ValueError, match='a session has 5 clicks, more than '
                                         'static_length=4.*never truncated'):
        StaticDenseBatch(index, len(LENGTHS), 4)
    # in a traced graph the check cannot raise: the long session's positions are
    # NaN, every other session's exact
    monkeypatch.setattr(torch.compiler, 'is_compiling', lambda: True)
    slots = StaticDenseBatch(index, len(LENGTHS), 4)
    back = slots.from_dense(slots.to_dense(x))
    long_one = index == 2
    assert torch.isnan(back[long_one]).all()
    assert torch.equal(back[~long_one], x[~long_one])
