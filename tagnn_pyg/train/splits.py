"""Training / validation / test sequences for a protocol: :func:`make_splits`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .config import TrainConfig


@dataclass
class Splits:
    r"""The sequences a run trains, selects and tests on, with a description.

    Attributes:
        train, valid, test (SessionSequences or None): prefix-expanded data.
        notes (list of str): what was done (split kind, caps), for the record.
        train_sessions (list of list of int, optional): the whole sessions that
            ``train`` was expanded from, when known (what the papers' baselines
            are fitted on).
    """
    train: Any
    valid: Any = None
    test: Any = None
    notes: List[str] = field(default_factory=list)
    train_sessions: Optional[List[List[int]]] = None

    def sizes(self) -> Dict[str, Optional[int]]:
        return {k: (len(v) if v is not None else None)
                for k, v in (('train', self.train), ('valid', self.valid),
                             ('test', self.test))}


def _recent_sessions(sessions: List[List[int]], max_sequences: int) -> List[List[int]]:
    """The most recent whole sessions holding at most ``max_sequences`` prefixes
    (at least one session)."""
    total, keep = 0, 0
    for s in reversed(sessions):
        n = max(len(s) - 1, 0)
        if keep and total + n > max_sequences:
            break
        total += n
        keep += 1
    return list(sessions[len(sessions) - keep:])


def make_splits(
    cfg: TrainConfig,
    *,
    train: Any = None,
    test: Any = None,
    train_sessions: Optional[Sequence[Sequence[int]]] = None,
) -> Splits:
    r"""Build the train / validation / test sequences of ``cfg``'s protocol.

    * ``'paper'``: all training sequences; no validation split.
    * ``'honest'`` + ``valid='temporal'``: the most recent ``valid_fraction`` of
      the training *sessions* (whole sessions; needs ``train_sessions``, i.e.
      ``all_train_seq.txt``) become validation, both sides prefix-expanded.
    * ``'honest'`` + ``valid='random'``: a random ``valid_fraction`` of the
      prefix-expanded training sequences (the released ``--validation``).

    The papers' protocol and the random split use ``train`` when given (the
    released code reads ``train.txt``), else the expansion of ``train_sessions``.

    Caps: ``max_train`` keeps the most recent training data (whole sessions for
    the temporal split and the baselines, the last sequences of ``train``
    otherwise), before the split; ``max_valid`` keeps the last validation sequences;
    ``max_test`` keeps the first test sequences.

    Args:
        cfg (TrainConfig): protocol, split and caps.
        train (SessionSequences, optional): prefix-expanded training sequences
            (used when ``train_sessions`` is not given, or for the random split).
        test (SessionSequences, optional): test sequences.
        train_sessions (list of list of int, optional): whole training sessions
            in date order.
    """
    from ..data.sequences import expand_prefixes

    notes: List[str] = []
    if train_sessions is None and train is None:
        raise ValueError("make_splits needs training data: train or train_sessions")
    sessions = [list(s) for s in train_sessions] if train_sessions is not None else None
    if sessions is not None and cfg.max_train is not None:
        sessions = _recent_sessions(sessions, cfg.max_train)
        notes.append(f"training sessions capped to the {len(sessions)} most recent "
                     f"(max_train={cfg.max_train} sequences)")

    def sequences() -> Any:
        """All training sequences: ``train`` as given (``train.txt``, as the
        released code reads it) or the expansion of the sessions; capped."""
        if train is None:
            return expand_prefixes(sessions)
        if cfg.max_train is not None and len(train) > cfg.max_train:
            notes.append(f"training sequences capped to the last {cfg.max_train}")
            return train[len(train) - cfg.max_train:]
        return train

    train, valid, used_sessions = _split_train(cfg, sessions, sequences, notes)
    if valid is not None and cfg.max_valid is not None and len(valid) > cfg.max_valid:
        valid = valid[len(valid) - cfg.max_valid:]
        notes.append(f"validation capped to its last {cfg.max_valid} sequences")
    if test is not None and cfg.max_test is not None and len(test) > cfg.max_test:
        test = test[:cfg.max_test]
        notes.append(f"test set capped to its first {cfg.max_test} sequences")
    return Splits(train=train, valid=valid, test=test, notes=notes,
                  train_sessions=used_sessions)


def _split_train(cfg: TrainConfig, sessions: Optional[List[List[int]]],
                 sequences: Callable[[], Any], notes: List[str]
                 ) -> Tuple[Any, Any, Optional[List[List[int]]]]:
    """(training sequences, validation sequences or ``None``, the whole sessions
    the training sequences come from or ``None``) under ``cfg``'s protocol."""
    from ..data.sequences import expand_prefixes
    from ..data.split import random_prefix_split, temporal_session_split

    if cfg.protocol == 'paper':
        notes.append("papers' protocol: no validation split, all training sequences used")
        return sequences(), None, sessions
    if cfg.valid == 'temporal':
        if sessions is None:
            raise ValueError(
                "the temporal validation split needs whole training sessions "
                "(all_train_seq.txt), but only prefix-expanded sequences (train.txt) "
                "are available; use the random prefix split (valid='random', "
                "--valid random)")
        tr, va = temporal_session_split(sessions, cfg.valid_fraction)
        notes.append(f"validation: the most recent {len(va)} of {len(sessions)} training "
                     f"sessions ({cfg.valid_fraction:.0%}), whole sessions")
        return expand_prefixes(tr), expand_prefixes(va), list(tr)
    train, valid = random_prefix_split(sequences(), cfg.valid_fraction, seed=cfg.seed)
    notes.append(f"validation: random {cfg.valid_fraction:.0%} of the training "
                 f"sequences (released --validation; prefixes of one session can "
                 f"fall on both sides)")
    return train, valid, None  # the random split cuts sessions
