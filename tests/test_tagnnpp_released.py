"""``TAGNNPlusPlus(layer='released', released_padding=True)`` against the dense port of the
released TAGNN++ forward (``tagnn_pyg.testing.released``, ``kind='tagnnpp'``: the
``The-Learning-Machines/SBR`` ``model.py`` computation on batches padded like its
``proc_utils.Dataset``: padded node lists, attention over them, the ``[B, m, d]`` target
tensor).

Scores and every parameter gradient must agree to 1e-5 on every session shape (repeats,
non-increasing ids, length 1, the data set's longest session, where the released node list has
no padding node), on hand-made sessions and on real Diginetica test batches; the paper-faithful
default and the click-order ``layer='released'`` must *not* agree (so the comparison can fail).
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import require_shared
from tagnn_pyg.data import SessionSequences
from tagnn_pyg.data.batching import build_session_batch
from tagnn_pyg.data.safe_pickle import safe_pickle_load
from tagnn_pyg.data.srgnn_format import parse_examples
from tagnn_pyg.models import TAGNN, TAGNNPlusPlus
from tagnn_pyg.models.tagnn import padded_like_released
from tagnn_pyg.presets import get_preset
from tagnn_pyg.testing.released import TAGNNPP_PARAMETER_MAP as PARAMETER_MAP
from tagnn_pyg.testing.released import (ReleasedSessionData, ReleasedSessionGraph,
                                        released_copy, released_scores)

NUM_ITEMS, D, HEADS = 13, 8, 2
# repeats, non-increasing ids, length 1, distinct increasing, and the longest (9 clicks)
SESSIONS: List[List[int]] = [[3], [5, 5, 5], [1, 2, 1, 3], [4, 7, 9, 7, 4, 12, 1],
                             [12, 11, 10, 11, 12, 6, 6, 2, 9], [2, 5, 8], [9, 3, 3, 1],
                             [7]]
TARGETS: List[int] = [2, 1, 12, 3, 7, 4, 6, 8]
LONGEST = 4


def _model(num_items: int = NUM_ITEMS, seed: int = 0, **kw) -> TAGNNPlusPlus:
    torch.manual_seed(seed)
    kw = {'layer': 'released', 'released_padding': True, **kw}
    return TAGNNPlusPlus(num_items, D, heads=HEADS, **kw).eval()


def _reference(model: TAGNNPlusPlus) -> ReleasedSessionGraph:
    """The dense released port holding ``model``'s weights (every parameter the released
    forward uses is set; ``linear_edge_f`` and ``linear_transform`` are unused, as released
    with ``nonhybrid=True``)."""
    return released_copy(model, 'tagnnpp', False, PARAMETER_MAP, HEADS).eval()


def _compare(model: TAGNNPlusPlus, seqs: SessionSequences, rows: np.ndarray,
             grads: bool = True) -> torch.Tensor:
    """Scores (and loss gradients) of the batch ``rows`` of ``seqs``: the library model
    with the released padding of ``seqs`` against the released port on the
    ``ReleasedSessionData`` batch. Returns the reference scores."""
    ref = _reference(model)
    data = ReleasedSessionData(seqs.to_lists(), seqs.targets.tolist())
    assert data.len_max == seqs.max_length
    expected, targets = released_scores(ref, data.get_slice(rows), 'cpu')
    sub = seqs[torch.as_tensor(rows)]
    batch = build_session_batch(sub.items, sub.ptr, sub.targets)
    with padded_like_released(model, seqs):
        ours = model(batch)
    torch.testing.assert_close(ours[:, 1:], expected, atol=1e-5, rtol=1e-5)
    if grads:
        model.zero_grad()
        F.cross_entropy(ours[:, 1:], targets - 1).backward()
        F.cross_entropy(expected, targets - 1).backward()
        ref_params = dict(ref.named_parameters())
        for name, param in model.named_parameters():
            torch.testing.assert_close(param.grad, ref_params[PARAMETER_MAP[name]].grad,
                                       atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")
    return expected.detach()


def _hand_made() -> SessionSequences:
    return SessionSequences.from_lists(SESSIONS, TARGETS)


@pytest.mark.parametrize('rows', [list(range(len(SESSIONS))), [1, 2, 6],
                                  [LONGEST], [0, LONGEST, 7], [6]])
def test_scores_and_gradients_equal_the_released_port(rows: List[int]) -> None:
    model = _model()
    _compare(model, _hand_made(), np.array(rows))
    # the padding item's embedding gets a gradient through node 0, as released
    if rows != [LONGEST]:
        assert model.embedding.weight.grad[0].abs().sum() > 0


def test_the_other_layers_do_not_match() -> None:
    """The default (paper) layer and the padding-free click-order ``layer='released'``
    hold the same weights but compute something else: the comparison can fail."""
    seqs, rows = _hand_made(), np.arange(len(SESSIONS))
    exact = _model()
    expected = _compare(exact, seqs, rows, grads=False)
    batch = build_session_batch(seqs.items, seqs.ptr, seqs.targets)
    click_order = _model(released_padding=False)
    click_order.load_state_dict(exact.state_dict())
    paper = TAGNNPlusPlus(NUM_ITEMS, D, heads=HEADS).eval()
    for other in (click_order, paper):
        with torch.no_grad():
            got = other(batch)[:, 1:]
        assert not torch.allclose(got, expected, atol=1e-3)
    # without the node-list attention (padding alone) it does not match either, except on
    # the longest session made of distinct increasing ids, which none of these is
    padded_tagnn = TAGNN(NUM_ITEMS, D, hybrid=False, released_padding=True).eval()
    padded_tagnn.load_state_dict({k: v for k, v in exact.state_dict().items()
                                  if not k.startswith('transformer.')})
    padded_tagnn.pad_length = seqs.max_length
    with torch.no_grad():
        assert not torch.allclose(padded_tagnn(batch)[:, 1:], expected, atol=1e-3)


def test_distinct_increasing_longest_session_equals_click_order_layer() -> None:
    """A session of the data set's full length with distinct increasing ids has no padding
    node and its node list is its click sequence: there the exact emulation and the
    click-order layer must coincide (both against the port)."""
    seqs = SessionSequences.from_lists([[2, 5, 8, 11], [4]], [3, 1])
    exact = _model()
    expected = _compare(exact, seqs, np.array([0]), grads=False)
    click_order = _model(released_padding=False)
    click_order.load_state_dict(exact.state_dict())
    batch = build_session_batch(seqs.items[:4], torch.tensor([0, 4]), seqs.targets[:1])
    with torch.no_grad():
        torch.testing.assert_close(click_order(batch)[:, 1:], expected, atol=1e-5,
                                   rtol=1e-5)


def test_without_gnn_the_padding_node_is_item_zero() -> None:
    """``use_gnn=False``: node states are the raw embeddings, node 0 included."""
    model = _model(use_gnn=False)
    seqs = _hand_made()
    ref = _reference_without_gnn(model)
    data = ReleasedSessionData(seqs.to_lists(), seqs.targets.tolist())
    expected = ref(data.get_slice(np.arange(len(SESSIONS))))
    batch = build_session_batch(seqs.items, seqs.ptr, seqs.targets)
    with padded_like_released(model, seqs), torch.no_grad():
        torch.testing.assert_close(model(batch)[:, 1:], expected, atol=1e-5, rtol=1e-5)


def _reference_without_gnn(model: TAGNNPlusPlus):
    """The released forward with the GNN cell removed (identity)."""
    full = _model(seed=1)
    state = {k: v for k, v in full.state_dict().items() if k.startswith('gnn.')}
    state.update(model.state_dict())
    full.load_state_dict(state)
    ref = _reference(full)
    ref.gnn.forward = lambda A, hidden: hidden

    def scores(b):
        alias, A, items, mask = (torch.from_numpy(b.alias_inputs), torch.from_numpy(b.A),
                                 torch.from_numpy(b.items), torch.from_numpy(b.mask))
        with torch.no_grad():
            return ref.scores(alias, A.float(), items, mask)
    return scores


def test_pad_length_is_required() -> None:
    model = _model()
    seqs = _hand_made()
    batch = build_session_batch(seqs.items, seqs.ptr, seqs.targets)
    with pytest.raises(ValueError, match=r'model\.pad_length is unset: set '
                                         r'model\.pad_length to that length'):
        model(batch)
    model.pad_length = 8
    with pytest.raises(ValueError, match=r'pad_length=8 is shorter than the longest '
                                         r'session of the batch \(9 clicks\)'):
        model(batch)


def test_option_errors_and_config() -> None:
    with pytest.raises(ValueError, match=r"layer='released'; got layer='paper'"):
        TAGNNPlusPlus(NUM_ITEMS, D, released_padding=True)
    with pytest.raises(ValueError, match='got positional=True'):
        TAGNNPlusPlus(NUM_ITEMS, D, layer='released', positional=True,
                      released_padding=True)
    # without the Transformer it is TAGNN's option, whatever the layer
    TAGNNPlusPlus(NUM_ITEMS, D, use_transformer=False, released_padding=True)
    model = _model()
    cfg = model.config()
    assert cfg['released_padding'] is True
    assert TAGNNPlusPlus(**cfg).config() == cfg
    assert TAGNNPlusPlus(NUM_ITEMS, D).config()['released_padding'] is False


@pytest.mark.parametrize('data_set', ['diginetica', 'yoochoose'])
def test_presets(data_set: str) -> None:
    exact = get_preset(f'tagnnpp-released-padded-{data_set}')
    plain = get_preset(f'tagnnpp-released-{data_set}')
    assert exact.model_kwargs == {**plain.model_kwargs, 'released_padding': True}
    assert exact.training == plain.training
    assert 'released_padding' not in get_preset('tagnnpp-paper-diginetica').model_kwargs


# -- real Diginetica test batches ------------------------------------------------------------

_REAL: Dict[str, SessionSequences] = {}


def _diginetica_test() -> SessionSequences:
    if 'test' not in _REAL:
        path = require_shared('diginetica', 'test.txt')
        _REAL['test'] = parse_examples(safe_pickle_load(path), str(path))
    return _REAL['test']


def _real_rows(seqs: SessionSequences) -> Dict[str, np.ndarray]:
    """Batches of 12 test sequences, each holding the wanted shape: the longest
    sequence of the test set (no padding node), length 1, repeated items,
    non-increasing ids."""
    lengths = seqs.lengths.numpy()
    lists = seqs.to_lists()
    longest = int(np.flatnonzero(lengths == lengths.max())[0])
    single = int(np.flatnonzero(lengths == 1)[0])
    repeats = [i for i in range(2000) if len(set(lists[i])) < len(lists[i])][:4]
    decreasing = [i for i in range(2000) if lengths[i] > 2
                  and any(b < a for a, b in zip(lists[i], lists[i][1:]))][:4]
    assert repeats and decreasing
    mixed = [longest, single] + repeats + decreasing
    rng = np.random.default_rng(0)
    return {'mixed': np.array(mixed + list(rng.integers(0, len(seqs), 12 - len(mixed)))),
            'longest-alone': np.array([longest]),
            'random': rng.integers(0, len(seqs), 12)}


def test_real_diginetica_batches_equal_the_released_port() -> None:
    seqs = _diginetica_test()
    assert seqs.max_length == 40                 # the released test Dataset's len_max
    model = _model(num_items=43_098)
    for name, rows in _real_rows(seqs).items():
        _compare(model, seqs, rows, grads=name != 'random')
    # and the default model does not match on them
    rows = _real_rows(seqs)['mixed']
    expected = _compare(model, seqs, rows, grads=False)
    sub = seqs[torch.as_tensor(rows)]
    batch = build_session_batch(sub.items, sub.ptr, sub.targets)
    paper = TAGNNPlusPlus(43_098, D, heads=HEADS).eval()
    click_order = _model(num_items=43_098, released_padding=False)
    click_order.load_state_dict(model.state_dict())
    for other in (paper, click_order):
        with torch.no_grad():
            assert not torch.allclose(other(batch)[:, 1:], expected, atol=1e-3)
