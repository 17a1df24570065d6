"""Validation splits: hand-made sessions and the released ``split_validation``."""
import numpy as np
import pytest

from tagnn_pyg.data import SessionSequences, expand_prefixes
from tagnn_pyg.data.split import random_prefix_split, temporal_session_split


def released_split_validation(train_set, valid_portion):
    """``split_validation`` of the released SR-GNN ``pytorch_code/utils.py``."""
    train_set_x, train_set_y = train_set
    n_samples = len(train_set_x)
    sidx = np.arange(n_samples, dtype='int32')
    np.random.shuffle(sidx)
    n_train = int(np.round(n_samples * (1. - valid_portion)))
    valid_set_x = [train_set_x[s] for s in sidx[n_train:]]
    valid_set_y = [train_set_y[s] for s in sidx[n_train:]]
    train_set_x = [train_set_x[s] for s in sidx[:n_train]]
    train_set_y = [train_set_y[s] for s in sidx[:n_train]]
    return (train_set_x, train_set_y), (valid_set_x, valid_set_y)


SESSIONS = [[1, 2, 3], [4, 5], [1, 1, 2, 6], [7, 8, 9, 7], [2, 3], [5], [6, 5, 4],
            [3, 3], [9, 8], [1, 9, 2, 8]]  # chronological


def test_temporal_split_takes_the_most_recent_whole_sessions():
    train, valid = temporal_session_split(SESSIONS, 0.1)
    assert train == SESSIONS[:9] and valid == [[1, 9, 2, 8]]
    train, valid = temporal_session_split(SESSIONS, 0.25)  # round(10 * .75) = 8
    assert train == SESSIONS[:8] and valid == SESSIONS[8:]
    # prefix expansion per side: no session contributes to both sides
    tr, va = expand_prefixes(train), expand_prefixes(valid)
    assert va.to_lists() == [[9], [1, 9, 2], [1, 9], [1]]
    assert va.targets.tolist() == [8, 8, 2, 9]
    assert len(tr) + len(va) == len(expand_prefixes(SESSIONS))


def test_temporal_split_of_session_sequences():
    seqs = SessionSequences.from_lists(SESSIONS)
    train, valid = temporal_session_split(seqs, 0.3)
    assert isinstance(train, SessionSequences)
    assert train.to_lists() == SESSIONS[:7] and valid.to_lists() == SESSIONS[7:]


@pytest.mark.parametrize('seed', [0, 3, 2024])
@pytest.mark.parametrize('fraction', [0.1, 0.35])
def test_random_prefix_split_is_the_released_split(seed, fraction):
    data = expand_prefixes(SESSIONS * 3)
    np.random.seed(seed)
    (tx, ty), (vx, vy) = released_split_validation(
        (data.to_lists(), data.targets.tolist()), fraction)
    train, valid = random_prefix_split(data, fraction, seed=seed)
    assert train.to_lists() == tx and train.targets.tolist() == ty
    assert valid.to_lists() == vx and valid.targets.tolist() == vy
    again, _ = random_prefix_split(data, fraction, seed=seed)
    assert again.equals(train)


@pytest.mark.parametrize('fraction', [0, 1, -0.1, 1.5, float('nan'), '0.1', True])
def test_bad_fraction_is_named(fraction):
    with pytest.raises(ValueError, match='strictly between 0 and 1, got'):
        temporal_session_split(SESSIONS, fraction)
    with pytest.raises(ValueError, match='strictly between 0 and 1'):
        random_prefix_split(expand_prefixes(SESSIONS), fraction)


def test_too_few_sessions():
    with pytest.raises(ValueError, match='cannot split 1 sessions.*0 for validation'):
        temporal_session_split([[1, 2]], 0.1)
    with pytest.raises(ValueError, match='cannot split 3 sessions'):
        temporal_session_split([[1, 2], [3], [4]], 0.1)  # round(2.7) = 3 train
    with pytest.raises(ValueError, match='cannot split 2 sequences'):
        random_prefix_split(SessionSequences.from_lists([[1], [2]], [3, 4]), 0.1)
    with pytest.raises(TypeError, match='SessionSequences, got list'):
        random_prefix_split([[1]], 0.5)
