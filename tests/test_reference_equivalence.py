"""The library's SR-GNN / TAGNN against the dense re-implementation of the released code.

``tagnn_pyg.testing.released`` recomputes what the released code computes (dense
per-session adjacency, padding to the data set maximum, the ``[batch, items, d]`` target
tensor). Where the released padding quirks do not matter -- one session per batch, padded to
its own length, so there is no padding node -- the two must give the same scores and gradients
when they hold the same weights. This validates the reference (used for the speed benchmarks)
and the library at once. Tiny sizes only: timing lives in ``benchmarks/``.
"""
from __future__ import annotations

from typing import List

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tagnn_pyg.data import SessionSequences
from tagnn_pyg.data.batching import build_session_batch
from tagnn_pyg.testing.released import (TAGNN_PARAMETER_MAP, ReleasedSessionData,
                                        ReleasedSessionGraph, released_copy,
                                        released_scores)

NUM_ITEMS = 13  # ids 1..12 plus padding 0
D = 8
SESSIONS: List[List[int]] = [[3], [5, 5, 5], [1, 2, 1, 3], [4, 7, 9, 7, 4, 12, 1],
                             [12, 11, 10, 11, 12, 6, 6, 2]]
TARGETS: List[int] = [2, 1, 12, 3, 7]


def _library_model(kind: str, hybrid: bool) -> torch.nn.Module:
    from tagnn_pyg.models import SRGNN, TAGNN
    torch.manual_seed(0)
    if kind == 'srgnn':
        return SRGNN(NUM_ITEMS, D, hybrid=hybrid)
    return TAGNN(NUM_ITEMS, D, hybrid=hybrid)


def _library_batch():
    seqs = SessionSequences.from_lists(SESSIONS, TARGETS)
    return build_session_batch(seqs.items, seqs.ptr, seqs.targets)


def _reference_scores(ref: ReleasedSessionGraph) -> torch.Tensor:
    """Scores of each session alone, padded to its own length (no padding node)."""
    rows = []
    for session, target in zip(SESSIONS, TARGETS):
        data = ReleasedSessionData([session], [target])
        assert data.len_max == len(session)
        scores, _ = released_scores(ref, data.get_slice(np.arange(1)), 'cpu')
        rows.append(scores)
    return torch.cat(rows)


def test_released_slice_hand_worked() -> None:
    """[1, 2, 1, 3]: nodes 1, 2, 3; transitions 1->2, 2->1, 1->3. Padded by one slot
    ([1, 2, 1, 3, 0] in a data set whose longest sequence has 5 clicks), node 0 comes first."""
    data = ReleasedSessionData([[1, 2, 1, 3], [4, 4, 4, 4, 4]], [5, 6])
    assert data.len_max == 5
    batch = data.get_slice(np.array([0]))
    assert batch.items.tolist() == [[0, 1, 2, 3]]
    assert batch.alias_inputs.tolist() == [[1, 2, 1, 3, 0]]
    assert batch.mask.tolist() == [[1, 1, 1, 1, 0]]
    n = 4
    w_in, w_out = batch.A[0, :, :n], batch.A[0, :, n:]
    # in-block row v: A[u, v] / indeg(v); every node has one distinct in-neighbour
    expect_in = np.zeros((n, n))
    expect_in[2, 1] = 1.0   # 1 -> 2
    expect_in[1, 2] = 1.0   # 2 -> 1
    expect_in[3, 1] = 1.0   # 1 -> 3
    # out-block row u: A[u, v] / outdeg(u); node 1 has two distinct out-neighbours
    expect_out = np.zeros((n, n))
    expect_out[1, 2] = expect_out[1, 3] = 0.5
    expect_out[2, 1] = 1.0
    np.testing.assert_array_equal(w_in, expect_in)
    np.testing.assert_array_equal(w_out, expect_out)
    # the padded batch of two: node lists padded to the larger count (4 vs 1)
    both = data.get_slice(np.array([0, 1]))
    assert both.items.tolist() == [[0, 1, 2, 3], [4, 0, 0, 0]]
    assert both.A.shape == (2, 4, 8)
    assert both.A[1, 0, 0] == 1.0 and both.A[1, 0, 4] == 1.0  # self-loop 4 -> 4


@pytest.mark.parametrize('kind,hybrid', [('srgnn', True), ('srgnn', False),
                                         ('tagnn', True), ('tagnn', False)])
def test_scores_equal_reference(kind: str, hybrid: bool) -> None:
    model = _library_model(kind, hybrid)
    ref = released_copy(model, kind, hybrid)
    ours = model(_library_batch())
    assert ours.shape == (len(SESSIONS), NUM_ITEMS)
    assert torch.isneginf(ours[:, 0]).all()
    expected = _reference_scores(ref)
    torch.testing.assert_close(ours[:, 1:], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('kind', ['srgnn', 'tagnn'])
def test_gradients_equal_reference(kind: str) -> None:
    """The training loss (summed over single-session batches) has the same gradients."""
    model = _library_model(kind, True)
    ref = released_copy(model, kind, True)
    targets = torch.tensor(TARGETS)
    F.cross_entropy(model(_library_batch())[:, 1:], targets - 1,
                    reduction='sum').backward()
    F.cross_entropy(_reference_scores(ref), targets - 1, reduction='sum').backward()
    ref_params = dict(ref.named_parameters())
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, ref_params[TAGNN_PARAMETER_MAP[name]].grad,
                                   atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def test_reference_padding_changes_tagnn_scores() -> None:
    """The released padding quirk is real: padding the same session to the data set maximum
    changes the reference's TAGNN scores (padded slots enter both softmaxes), while the
    library's scores do not depend on the other sessions of the data set."""
    model = _library_model('tagnn', True)
    ref = released_copy(model, 'tagnn', True)
    session, target = SESSIONS[2], TARGETS[2]
    alone = ReleasedSessionData([session], [target])
    padded = ReleasedSessionData([session, SESSIONS[4]], [target, TARGETS[4]])
    s_alone, _ = released_scores(ref, alone.get_slice(np.arange(1)), 'cpu')
    s_padded, _ = released_scores(ref, padded.get_slice(np.arange(1)), 'cpu')
    assert not torch.allclose(s_alone, s_padded, atol=1e-4)
    ours = model(_library_batch())[2, 1:]
    torch.testing.assert_close(ours, s_alone[0], atol=1e-5, rtol=1e-5)
