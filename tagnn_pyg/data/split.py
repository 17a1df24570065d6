r"""Validation splits for model selection.

* :func:`temporal_session_split` (recommended): the most recent
  ``valid_fraction`` of the *training sessions* (``all_train_seq.txt`` is in
  date order) become the validation set, as whole sessions, so no prefix of one
  session is on both sides and validation lies after training in time; the
  prefix expansion then happens on each side.
* :func:`random_prefix_split`: the released SR-GNN/TAGNN ``--validation``
  behaviour (``utils.split_validation``): a random ``valid_fraction`` of the
  already expanded training *prefixes*. Prefixes of one session land on both
  sides, so it is optimistic; offered for reproducing the released runs.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple, TypeVar, Union

import numpy as np

from .sequences import SessionSequences

__all__ = ['temporal_session_split', 'random_prefix_split']

S = TypeVar('S', bound=Union[Sequence[Sequence[int]], SessionSequences])


def _check_fraction(valid_fraction: float) -> float:
    if isinstance(valid_fraction, bool) or not isinstance(valid_fraction, (int, float)) \
            or not math.isfinite(valid_fraction) or not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must be a number strictly between 0 and 1, "
                         f"got {valid_fraction!r}")
    return float(valid_fraction)


def _num_train(n: int, valid_fraction: float, what: str) -> int:
    """``round(n * (1 - valid_fraction))`` as the released code, with both sides
    required to be non-empty."""
    n_train = int(np.round(n * (1.0 - valid_fraction)))
    if n_train < 1 or n_train >= n:
        raise ValueError(f"cannot split {n} {what} with valid_fraction="
                         f"{valid_fraction}: it leaves {n_train} for training and "
                         f"{n - n_train} for validation (both need at least one)")
    return n_train


def temporal_session_split(
    sessions: S,
    valid_fraction: float = 0.1,
) -> Tuple[S, S]:
    r"""Hold out the most recent ``valid_fraction`` of the training sessions.

    With :math:`n` sessions in chronological order, the first
    :math:`n_{train} = \mathrm{round}(n (1 - f))` are kept for training and the
    last :math:`n - n_{train}` (the most recent) form the validation set. Whole
    sessions are moved: expand prefixes (:func:`~tagnn_pyg.data.expand_prefixes`)
    on each side afterwards.

    Args:
        sessions (list of list of int or SessionSequences): whole training
            sessions in chronological order (``all_train_seq.txt``).
        valid_fraction (float, optional): share of sessions for validation,
            strictly between 0 and 1. (default: :obj:`0.1`)

    Returns:
        (train_sessions, valid_sessions), of the same type as ``sessions``
        (lists for a list input), order preserved.

    Shapes:
        - **input:** :math:`n` sessions
        - **output:** :math:`n_{train}` and :math:`n - n_{train}` sessions

    Example:
        >>> temporal_session_split([[1, 2], [3, 4], [5, 6], [7, 8]], 0.25)
        ([[1, 2], [3, 4], [5, 6]], [[7, 8]])
    """
    valid_fraction = _check_fraction(valid_fraction)
    if isinstance(sessions, (str, bytes)) or not hasattr(sessions, '__len__'):
        raise TypeError(f"sessions must be a list of sessions or SessionSequences, "
                        f"got {type(sessions).__name__}")
    n_train = _num_train(len(sessions), valid_fraction, 'sessions')
    if isinstance(sessions, SessionSequences):
        return sessions[:n_train], sessions[n_train:]  # type: ignore[return-value]
    seq = list(sessions)
    return seq[:n_train], seq[n_train:]  # type: ignore[return-value]


def random_prefix_split(
    sequences: SessionSequences,
    valid_fraction: float = 0.1,
    seed: int = 0,
) -> Tuple[SessionSequences, SessionSequences]:
    r"""The released code's validation split: a random share of the prefixes.

    Mirrors ``split_validation`` of the released SR-GNN/TAGNN ``utils.py``:
    ``sidx = arange(n)``, shuffled, :math:`n_{train} = \mathrm{round}(n (1 - f))`,
    validation = ``sidx[n_train:]``, training = ``sidx[:n_train]`` (both in
    the shuffled order). The shuffle uses ``np.random.RandomState(seed)``, so
    the split equals the released one run after ``np.random.seed(seed)``.

    Prefixes of the same session end up on both sides, which makes this
    validation set optimistic; prefer :func:`temporal_session_split`.

    Args:
        sequences (SessionSequences): prefix-expanded training examples with
            targets.
        valid_fraction (float, optional): share of prefixes for validation,
            strictly between 0 and 1. (default: :obj:`0.1`)
        seed (int, optional): seed of the shuffle. (default: :obj:`0`)

    Returns:
        (train, valid) :class:`SessionSequences`.

    Shapes:
        - **input:** :math:`n` sequences
        - **output:** :math:`n_{train}` and :math:`n - n_{train}` sequences
    """
    valid_fraction = _check_fraction(valid_fraction)
    if not isinstance(sequences, SessionSequences):
        raise TypeError(f"sequences must be a SessionSequences, got "
                        f"{type(sequences).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    n = len(sequences)
    n_train = _num_train(n, valid_fraction, 'sequences')
    sidx = np.arange(n, dtype='int32')
    np.random.RandomState(int(seed)).shuffle(sidx)
    sidx64 = sidx.astype(np.int64)
    return sequences[sidx64[:n_train]], sequences[sidx64[n_train:]]

