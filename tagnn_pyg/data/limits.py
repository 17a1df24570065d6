r"""What a data file may make the loaders allocate: :class:`LoadLimits`.

Every bound is checked on the unpickled lists (lengths only, no copy) **before**
the allocation that depends on it: session length and total clicks before the
clicks are flattened or prefix-expanded (expansion is quadratic in the session
length), the largest item id before anything of that size (an embedding table,
a popularity count) exists. A refusal is one line naming the file, the record
and the limit, and how to raise it.

Defaults (:data:`DEFAULT_LIMITS`), far above the public data sets (DIGINETICA:
longest session 70 clicks, 3.8 million clicks after expansion; YOOCHOOSE 1/4
about 30 million):

=========================== ============== ===================================
``max_session_length``      1,000          clicks in one session or sequence
                                           (``--max-session-length``)
``max_clicks``              100,000,000    clicks in one file, after prefix
                                           expansion (``--max-clicks``)
``id_factor``,              16, 1,000,000  the largest item id may be at most
``id_allowance``                           ``max(16 x distinct ids, 1,000,000)``
``max_file_bytes``          4 GiB          size of one pickle file
=========================== ============== ===================================

Only the standard library is imported.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class LoadLimits:
    r"""Resource bounds of the SR-GNN readers (module docstring).

    Args:
        max_session_length (int): most clicks in one session or sequence.
        max_clicks (int): most clicks in one file, after prefix expansion.
        id_factor (int): the largest id may be this many times the number of
            distinct ids ...
        id_allowance (int): ... or this large, whichever is more.
        max_file_bytes (int): largest pickle file read.

    Raises:
        ValueError: a bound that is not a positive integer.
    """
    max_session_length: int = 1_000
    max_clicks: int = 100_000_000
    id_factor: int = 16
    id_allowance: int = 1_000_000
    max_file_bytes: int = 4 * 2**30

    def __post_init__(self) -> None:
        for name in ('max_session_length', 'max_clicks', 'id_factor', 'id_allowance',
                     'max_file_bytes'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LoadLimits.{name} must be a positive integer, got "
                                 f"{value!r}")

    def largest_id(self, distinct: int) -> int:
        """The largest item id accepted when the files hold ``distinct`` ids."""
        return max(self.id_factor * distinct, self.id_allowance)

    @classmethod
    def with_overrides(cls, max_session_length: Any = None,
                       max_clicks: Any = None) -> 'LoadLimits':
        """The defaults with the bounds the command line can raise (``None``:
        keep the default)."""
        given = {k: v for k, v in (('max_session_length', max_session_length),
                                   ('max_clicks', max_clicks)) if v is not None}
        return cls(**given)


DEFAULT_LIMITS = LoadLimits()


class LimitError(ValueError):
    """A data file exceeds a :class:`LoadLimits` bound; the message names the
    file, the record and the limit."""


def _lengths(seqs: Sequence[Any]) -> list:
    # records that are not sequences are left to the validation that follows
    return [len(s) if isinstance(s, (list, tuple)) else 0 for s in seqs]


def check_sequence_sizes(seqs: Sequence[Any], where: str, limits: LoadLimits,
                         expand: bool = False, what: str = 'sequence') -> int:
    r"""Check the length of each record and the total clicks of a file, before
    the clicks are flattened or expanded.

    Args:
        seqs (list of list of int): the unpickled records (not yet validated).
        where (str): the file, for messages.
        limits (LoadLimits): the bounds.
        expand (bool, optional): the records are whole sessions that will be
            prefix-expanded: count the clicks of the expansion,
            :math:`\sum_s L_s (L_s - 1) / 2`.
        what (str, optional): the record's name in messages.

    Returns:
        int: the clicks the file will hold in memory (after expansion).

    Raises:
        LimitError: naming ``where``, the record and the bound.
    """
    lengths = _lengths(seqs)
    longest = max(lengths, default=0)
    if longest > limits.max_session_length:
        i = lengths.index(longest)
        raise LimitError(f"{where}: {what} {i} has {longest:,} clicks, more than the limit "
                         f"of {limits.max_session_length:,} clicks per session (raise it "
                         f"with --max-session-length / LoadLimits.max_session_length)")
    total = 0
    for i, n in enumerate(lengths):
        total += n * (n - 1) // 2 if expand else n
        if total > limits.max_clicks:
            kind = 'clicks after prefix expansion' if expand else 'clicks'
            raise LimitError(f"{where}: more than {limits.max_clicks:,} {kind} by {what} "
                             f"{i}: over the limit per file (raise it with --max-clicks / "
                             f"LoadLimits.max_clicks)")
    return total


def check_largest_id(largest: int, distinct: int, where: str, record: str,
                     limits: LoadLimits) -> None:
    """Refuse item ids far sparser than the ids in use, before anything of
    ``largest + 1`` rows is allocated.

    Args:
        largest (int): the largest item id in the files.
        distinct (int): the number of distinct ids in the files.
        where (str): the file holding ``largest``.
        record (str): the record holding it (e.g. ``'sequence 17'``).
        limits (LoadLimits): the bounds.

    Raises:
        LimitError: naming the file, the record, the id and the bound.
    """
    allowed = limits.largest_id(distinct)
    if largest > allowed:
        raise LimitError(
            f"{where}: {record} holds item id {largest:,}, but the files hold only "
            f"{distinct:,} distinct ids: the largest id allowed is {allowed:,} "
            f"(max({limits.id_factor} x distinct ids, {limits.id_allowance:,})); the "
            f"model would need {largest + 1:,} embedding rows. Renumber the items from 1 "
            f"(tagnn-pyg prepare does)")


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    r"""Add ``--max-session-length`` and ``--max-clicks`` (the bounds of
    :class:`~tagnn_pyg.data.limits.LoadLimits` a user may need to raise).

    Args:
        parser (argparse.ArgumentParser): the (sub)command's parser.
    """
    g = parser.add_argument_group('resource limits')
    g.add_argument('--max-session-length', type=int, default=None, metavar='N',
                   help=f'refuse sessions longer than N clicks (default '
                        f'{DEFAULT_LIMITS.max_session_length:,})')
    g.add_argument('--max-clicks', type=int, default=None, metavar='N',
                   help=f'refuse a file of more than N clicks after prefix expansion '
                        f'(default {DEFAULT_LIMITS.max_clicks:,})')


def limits_from_args(args: argparse.Namespace) -> LoadLimits:
    r"""The :class:`~tagnn_pyg.data.limits.LoadLimits` of parsed arguments.

    Args:
        args (argparse.Namespace): with ``max_session_length``/``max_clicks``
            (missing or ``None``: the default).

    Returns:
        LoadLimits

    Raises:
        ValueError: a bound that is not a positive integer.
    """
    return LoadLimits.with_overrides(getattr(args, 'max_session_length', None),
                                     getattr(args, 'max_clicks', None))


__all__ = ['add_limit_arguments', 'limits_from_args', 'LoadLimits', 'DEFAULT_LIMITS', 'LimitError', 'check_sequence_sizes',
           'check_largest_id']
