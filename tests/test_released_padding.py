"""Emulation of the released code's softmaxes over padded slots (``released_padding``).

Each piece is checked against a literal computation that really pads: the session's
position features followed by ``pad_count`` padded slots, one dense softmax over all of
them, as the released ``compute_scores`` does. The whole TAGNN with ``released_padding``
must give the scores and gradients of the dense re-implementation of the released code
(``tagnn_pyg.testing.released``) on a batch padded to the data set's longest session.
"""
from __future__ import annotations

from typing import List

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tagnn_pyg.data import SessionSequences
from tagnn_pyg.data.batching import build_session_batch
from tagnn_pyg.models import TAGNN
from tagnn_pyg.models.tagnn import padded_like_released
from tagnn_pyg.nn import SoftAttentionReadout, TargetAttention
from tagnn_pyg.nn import target_attention as ta_module

from tagnn_pyg.testing.released import (TAGNN_PARAMETER_MAP, ReleasedSessionData,
                                        released_copy, released_scores)
from test_reference_equivalence import D, NUM_ITEMS, SESSIONS, TARGETS

LENGTHS = [1, 3, 4, 2]
PAD = [5, 0, 2, 3]          # padded slots per session (a session of full length has none)


def _inputs(dtype=torch.float64):
    g = torch.Generator().manual_seed(3)
    n, d, t = sum(LENGTHS), 6, 11
    x = torch.randn(n, d, generator=g, dtype=dtype)
    target = torch.randn(t, d, generator=g, dtype=dtype)
    value = torch.randn(t, d, generator=g, dtype=dtype)
    index = torch.repeat_interleave(torch.arange(len(LENGTHS)), torch.tensor(LENGTHS))
    return x, target, value, index


def _literal_target_attention(w: torch.Tensor, x: torch.Tensor, target: torch.Tensor,
                              value: torch.Tensor, pad: List[int]) -> torch.Tensor:
    """Per session: append ``pad`` zero rows, E = (W x) . v_t, softmax over all rows,
    o_t = sum_i beta_i (x_i . u_t)."""
    rows, start = [], 0
    for n, k in zip(LENGTHS, pad):
        xs = torch.cat([x[start:start + n], x.new_zeros(k, x.size(1))])
        beta = torch.softmax((xs @ w.t()) @ target.t(), dim=0)     # [n + k, T]
        rows.append((beta * (xs @ value.t())).sum(0))
        start += n
    return torch.stack(rows)


@pytest.mark.parametrize('method', ['chunked', 'dense'])
@pytest.mark.parametrize('keep', [True, False])
def test_target_attention_padding_equals_literal(method: str, keep: bool,
                                                 monkeypatch) -> None:
    if not keep:  # force the backward that recomputes the chunks from lse
        monkeypatch.setattr(ta_module, 'SAVE_ELEMENTS', 0)
    x, target, value, index = _inputs()
    att = TargetAttention(6, chunk_size=4, method=method).double()
    leaves = [x, target, value]
    for t in leaves:
        t.requires_grad_(True)
    out = att(x, index, dim_size=4, target=target, value=value,
              pad_count=torch.tensor(PAD))
    expected = _literal_target_attention(att.lin.weight, x, target, value, PAD)
    torch.testing.assert_close(out, expected)
    # and padding really changes the result (the check can fail)
    plain = att(x, index, dim_size=4, target=target, value=value)
    assert not torch.allclose(plain[0], expected[0], atol=1e-3)
    torch.testing.assert_close(plain[1], expected[1])          # no padded slot: same

    g = torch.randn_like(out)
    grads = torch.autograd.grad((out * g).sum(), leaves + [att.lin.weight])
    grads_ref = torch.autograd.grad((expected * g).sum(), leaves + [att.lin.weight])
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b)


def test_target_attention_padding_with_candidates() -> None:
    x, target, value, index = _inputs()
    att = TargetAttention(6, chunk_size=2).double()
    candidates = torch.tensor([[0, 3, 5], [1, 2, 10], [4, 4, 7], [9, 8, 6]])
    out = att(x, index, dim_size=4, target=target, value=value, candidates=candidates,
              pad_count=torch.tensor(PAD))
    full = _literal_target_attention(att.lin.weight, x, target, value, PAD)
    torch.testing.assert_close(out, full.gather(1, candidates))


def test_target_attention_padding_large_logits_stay_finite() -> None:
    """All E very negative: the padded exp(0) dominates; no overflow in exp(-max)."""
    x, target, value, index = _inputs()
    att = TargetAttention(6).double()
    with torch.no_grad():
        att.lin.weight.copy_(-200.0 * torch.eye(6, dtype=torch.float64))
    out = att(x, index, dim_size=4, target=x[:1].expand(11, 6).contiguous(),
              value=value, pad_count=torch.tensor(PAD))
    assert torch.isfinite(out).all()


def _literal_soft_attention(readout: SoftAttentionReadout, x: torch.Tensor,
                            pad_x: torch.Tensor, pad: List[int]) -> torch.Tensor:
    """Per session: append ``pad`` copies of ``pad_x``; softmax of
    q^T sigmoid(W1 v_last + W2 v_i) over all slots; sum over the real ones only."""
    rows, start = [], 0
    for n, k in zip(LENGTHS, pad):
        xs = torch.cat([x[start:start + n], pad_x.expand(k, -1)])
        last = x[start + n - 1]
        logits = readout.lin_q(torch.sigmoid(readout.lin_last(last) + readout.lin_pos(xs)))
        alpha = torch.softmax(logits, dim=0)[:n]
        rows.append((alpha * x[start:start + n]).sum(0))
        start += n
    return torch.stack(rows)


def test_soft_attention_padding_equals_literal() -> None:
    x, _, _, index = _inputs()
    readout = SoftAttentionReadout(6, softmax=True).double()
    pad_x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    x.requires_grad_(True)
    out = readout(x, index, dim_size=4, pad_count=torch.tensor(PAD), pad_x=pad_x)
    expected = _literal_soft_attention(readout, x, pad_x, PAD)
    torch.testing.assert_close(out, expected)
    plain = readout(x, index, dim_size=4)
    assert not torch.allclose(plain[0], expected[0], atol=1e-3)
    params = [x, pad_x] + list(readout.parameters())
    grads = torch.autograd.grad(out.sum(), params)
    grads_ref = torch.autograd.grad(expected.sum(), params)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b)


def test_padding_arguments_are_checked() -> None:
    x, target, _, index = _inputs()
    readout = SoftAttentionReadout(6, softmax=True).double()
    with pytest.raises(ValueError, match='go together'):
        readout(x, index, dim_size=4, pad_count=torch.tensor(PAD))
    with pytest.raises(ValueError, match=r'pad_count must have shape \[4\]'):
        readout(x, index, dim_size=4, pad_count=torch.tensor([1, 2]), pad_x=x[0])
    with pytest.raises(ValueError, match='needs softmax=True'):
        SoftAttentionReadout(6).double()(x, index, dim_size=4, pad_count=torch.tensor(PAD),
                                         pad_x=x[0])
    with pytest.raises(ValueError, match='pad_count must be >= 0'):
        TargetAttention(6).double()(x, index, dim_size=4, target=target,
                                    pad_count=torch.tensor([1, -1, 0, 0]))
    with pytest.raises(ValueError, match="session='mean' has none"):
        TAGNN(NUM_ITEMS, D, session='mean', released_padding=True)


# -- the whole model against the dense re-implementation of the released code ----------

def _padded_model() -> TAGNN:
    torch.manual_seed(0)
    return TAGNN(NUM_ITEMS, D, released_padding=True)


def _released_batch_scores(ref, rows: List[int]):
    """The released code on the whole data set of SESSIONS: every session padded to the
    longest one (8 clicks), the batch ``rows``."""
    data = ReleasedSessionData(SESSIONS, TARGETS)
    assert data.len_max == max(len(s) for s in SESSIONS)
    return released_scores(ref, data.get_slice(np.array(rows)), 'cpu')[0]


def test_tagnn_released_padding_equals_reference() -> None:
    model = _padded_model()
    ref = released_copy(model, 'tagnn', True)
    seqs = SessionSequences.from_lists(SESSIONS, TARGETS)
    rows = [0, 2, 3]                    # a batch without the longest session
    sub = seqs[torch.tensor(rows)]
    batch = build_session_batch(sub.items, sub.ptr, sub.targets)
    with padded_like_released(model, seqs):          # pad to the data set's longest
        assert model.pad_length == 8
        ours = model(batch)
    assert model.pad_length is None                  # restored
    expected = _released_batch_scores(ref, rows)
    torch.testing.assert_close(ours[:, 1:], expected, atol=1e-5, rtol=1e-5)
    # the per-session model differs: the emulation is what closes the gap
    assert TAGNN(**model.config()).released_padding       # survives a checkpoint
    plain = TAGNN(NUM_ITEMS, D)
    plain.load_state_dict(model.state_dict())
    assert not torch.allclose(plain(batch)[:, 1:], expected, atol=1e-4)


def test_tagnn_released_padding_gradients_equal_reference() -> None:
    model = _padded_model()
    ref = released_copy(model, 'tagnn', True)
    seqs = SessionSequences.from_lists(SESSIONS, TARGETS)
    rows = [0, 1, 2, 3]
    sub = seqs[torch.tensor(rows)]
    batch = build_session_batch(sub.items, sub.ptr, sub.targets)
    targets = torch.tensor([TARGETS[r] for r in rows])
    model.pad_length = 8
    F.cross_entropy(model(batch)[:, 1:], targets - 1).backward()
    F.cross_entropy(_released_batch_scores(ref, rows), targets - 1).backward()
    ref_params = dict(ref.named_parameters())
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, ref_params[TAGNN_PARAMETER_MAP[name]].grad,
                                   atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")
    # the padding item's embedding gets a gradient through the padded slots, as released
    assert model.embedding.weight.grad[0].abs().sum() > 0


def test_pad_length_shorter_than_a_session_is_an_error() -> None:
    model = _padded_model()
    seqs = SessionSequences.from_lists(SESSIONS, TARGETS)
    model.pad_length = 5
    with pytest.raises(ValueError, match=r'pad_length=5 is shorter than the longest '
                                         r'session of the batch \(8 clicks\)'):
        model(build_session_batch(seqs.items, seqs.ptr, seqs.targets))


def test_unset_pad_length_is_an_error() -> None:
    """A batch does not know its data set's longest session: scoring without
    ``pad_length`` is refused rather than padded to the batch's longest session."""
    model = _padded_model()
    seqs = SessionSequences.from_lists(SESSIONS, TARGETS)
    batch = build_session_batch(seqs.items, seqs.ptr, seqs.targets)
    with pytest.raises(ValueError, match=r'model\.pad_length is unset: set model\.pad_length '
                                         r'to that length .*padded_like_released'):
        model(batch)
    with padded_like_released(model, seqs):
        model(batch)
    with pytest.raises(ValueError, match='pad_length is unset'):   # restored afterwards
        model(batch)
