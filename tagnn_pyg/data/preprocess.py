r"""Raw click logs -> the SR-GNN data format, with the SR-GNN protocol.

A faithful port of the released SR-GNN ``datasets/preprocess.py``
(CRIPAC-DIG/SR-GNN) for DIGINETICA ``train-item-views.csv`` and YOOCHOOSE
``yoochoose-clicks.dat``, plus a generic CSV reader with the same protocol.
Plain :mod:`csv` + :mod:`numpy` (no pandas); malformed rows raise a
:class:`ValueError` naming the file and line.

The protocol (:func:`srgnn_protocol`), as the released script runs it:

1. group clicks by session (a dict, so a session's rows need not be
   contiguous); DIGINETICA: sort each session's clicks by ``timeframe``
   (stable); YOOCHOOSE: keep file order (the released script does not sort);
   a session's date is that of the last row of its last block of rows;
2. drop sessions of length 1;
3. count item occurrences over the remaining sessions, remove items seen
   fewer than ``min_item_support`` (5) times from every session, then drop
   sessions left shorter than 2 clicks;
4. ``split_date = max_date - test_days * 86400`` (7 days DIGINETICA, 1 day
   YOOCHOOSE); train = sessions dated **before** it, test = sessions dated
   **after** it: a session dated exactly at the split date belongs to neither
   side. Each side is sorted by date (stable: equal dates keep file order);
5. renumber items from 1 in order of first appearance in the date-sorted
   training sessions; drop test items that never occur in training, then test
   sessions shorter than 2 clicks;
6. prefix expansion (:func:`~tagnn_pyg.data.expand_prefixes`);
7. YOOCHOOSE fractions (``fraction=64`` or ``4``): the training examples are
   the last ``int(P / fraction)`` of the ``P`` prefix-expanded training
   sequences, and ``all_train_seq`` the training sessions from the session of
   the first of them on; ids are **not** renumbered (the id range is that of
   the full training period). As in the released slicing ``seqs[-k:]``,
   ``k = 0`` (fewer than ``fraction`` sequences) keeps everything.

Dates are read as UTC (the released script uses local time via
``time.mktime``, which only matters around daylight-saving changes).
"""
from __future__ import annotations

import calendar
import csv
import datetime as _dt
import gzip
import io
import json
import operator
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

from .limits import (DEFAULT_LIMITS, LoadLimits,
                     check_sequence_sizes)
from .sequences import SessionSequences, expand_prefixes
from .srgnn_format import write_srgnn_folder

PathLike = Union[str, os.PathLike]
DAY = 86400.0

KINDS = ('diginetica', 'yoochoose', 'csv')

#: Protocol options every kind accepts, with their per-kind defaults.
DEFAULTS: Dict[str, Dict[str, Any]] = {
    'diginetica': dict(test_days=7.0, min_item_support=5, min_session_length=2,
                       fraction=1),
    'yoochoose': dict(test_days=1.0, min_item_support=5, min_session_length=2,
                      fraction=64),
    'csv': dict(test_days=7.0, min_item_support=5, min_session_length=2, fraction=1,
                delimiter=',', session_column='session_id', item_column='item_id',
                time_column='timestamp', time_format='iso', sort_within_session=True),
}

DIGINETICA_HEADERS = (
    ('sessionId', 'userId', 'itemId', 'timeframe', 'eventdate'),
    ('session_id', 'user_id', 'item_id', 'timeframe', 'eventdate'),
)


# ----------------------------------------------------------------------------- I/O
def _open_text(path: Path) -> IO[str]:
    if not path.is_file():
        raise FileNotFoundError(f"raw file not found: {path}")
    if path.suffix == '.gz':
        return io.TextIOWrapper(gzip.open(path, 'rb'), encoding='utf-8', newline='')
    return open(path, 'r', encoding='utf-8', newline='')


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, 'rb') if path.suffix == '.gz' else open(path, 'rb')


def _first_non_utf8_line(path: Path) -> Tuple[int, str]:
    """Line number (1-based) and reason of the first line that is not UTF-8
    (the text reader decodes in blocks, so it cannot tell the line itself)."""
    with _open_binary(path) as f:
        for number, raw in enumerate(f, start=1):
            try:
                raw.decode('utf-8')
            except UnicodeDecodeError as e:
                return number, f"byte 0x{raw[e.start]:02x} at column {e.start + 1}: {e.reason}"
    return 0, 'undecodable bytes'


def _rows(path: Path, delimiter: str) -> Iterator[Tuple[int, List[str]]]:
    """Yield ``(line_number, fields)`` of the non-blank rows of a delimited file.

    Raises:
        ValueError: naming the file and line of a non-UTF-8 byte or malformed
            CSV, or a truncated or corrupt ``.gz``.
    """
    with _open_text(path) as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                yield reader.line_num, row
        except UnicodeDecodeError:
            line, why = _first_non_utf8_line(path)
            raise ValueError(f"{path}:{line}: not UTF-8 text ({why})") from None
        except csv.Error as e:
            raise ValueError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
        except EOFError as e:
            raise ValueError(f"{path}: truncated gzip file after line {reader.line_num} "
                             f"({e})") from None
        except (gzip.BadGzipFile, zlib.error) as e:
            raise ValueError(f"{path}: corrupt gzip file after line {reader.line_num} "
                             f"({e})") from None


class _Malformed(ValueError):
    pass


def _err(path: Path, line: int, msg: str) -> ValueError:
    return ValueError(f"{path}:{line}: {msg}")


# ------------------------------------------------------------------------ dates
def _utc_seconds(d: _dt.datetime) -> float:
    if d.tzinfo is not None:
        return d.timestamp()
    return float(calendar.timegm(d.timetuple())) + d.microsecond / 1e6


def _parse_day(s: str) -> float:
    """``YYYY-MM-DD`` -> UTC seconds at midnight (strict)."""
    if len(s) != 10 or s[4] != '-' or s[7] != '-':
        raise _Malformed(f"date {s!r} is not YYYY-MM-DD")
    try:
        d = _dt.date(int(s[0:4]), int(s[5:7]), int(s[8:10]))
    except ValueError as e:
        raise _Malformed(f"date {s!r} is not a valid YYYY-MM-DD date ({e})") from None
    return float(calendar.timegm(d.timetuple()))


class _IsoSeconds:
    """Fast strict parser of ``YYYY-MM-DDTHH:MM:SS`` (the first 19 characters,
    as the released script reads YOOCHOOSE timestamps) to UTC seconds."""

    def __init__(self) -> None:
        self.days: Dict[str, float] = {}

    def __call__(self, s: str) -> float:
        if len(s) < 19 or s[10] != 'T' or s[13] != ':' or s[16] != ':':
            raise _Malformed(f"timestamp {s!r} is not YYYY-MM-DDTHH:MM:SS")
        day = s[:10]
        base = self.days.get(day)
        if base is None:
            base = self.days[day] = _parse_day(day)
        try:
            h, m, sec = int(s[11:13]), int(s[14:16]), int(s[17:19])
        except ValueError:
            raise _Malformed(f"timestamp {s!r} is not YYYY-MM-DDTHH:MM:SS") from None
        if not (0 <= h < 24 and 0 <= m < 60 and 0 <= sec < 62):
            raise _Malformed(f"timestamp {s!r} has an invalid time of day")
        return base + h * 3600 + m * 60 + sec


def make_time_parser(time_format: str) -> Callable[[str], float]:
    r"""A function turning a time field into UTC seconds.

    Args:
        time_format (str): ``'iso'`` (ISO 8601, e.g. ``2016-05-09``,
            ``2014-04-07T10:51:09.277Z``, ``2020-01-01 10:00:00+02:00``; naive
            times are UTC), ``'unix'`` (seconds since the epoch), ``'unix_ms'``
            (milliseconds), or a :func:`~datetime.datetime.strptime` pattern
            containing ``%`` (naive results are UTC).

    Returns:
        Callable[[str], float]
    """
    if time_format == 'unix':
        def parse(s: str) -> float:
            try:
                return float(s)
            except ValueError:
                raise _Malformed(f"time {s!r} is not a number of seconds") from None
        return parse
    if time_format == 'unix_ms':
        def parse_ms(s: str) -> float:
            try:
                return float(s) / 1000.0
            except ValueError:
                raise _Malformed(f"time {s!r} is not a number of milliseconds") from None
        return parse_ms
    if time_format == 'iso':
        cache: Dict[str, float] = {}

        def parse_iso(s: str) -> float:
            v = cache.get(s)
            if v is not None:
                return v
            t = s.strip()
            if t.endswith('Z') or t.endswith('z'):
                t = t[:-1] + '+00:00'
            try:
                v = _utc_seconds(_dt.datetime.fromisoformat(t))
            except ValueError:
                raise _Malformed(f"time {s!r} is not an ISO 8601 date/time") from None
            if len(cache) < 1_000_000:
                cache[s] = v
            return v
        return parse_iso
    if '%' in time_format:
        def parse_fmt(s: str) -> float:
            try:
                return _utc_seconds(_dt.datetime.strptime(s, time_format))
            except ValueError:
                raise _Malformed(f"time {s!r} does not match {time_format!r}") from None
        return parse_fmt
    raise ValueError(f"time_format must be 'iso', 'unix', 'unix_ms' or a strptime "
                     f"pattern with '%', got {time_format!r}")


# -------------------------------------------------------------------- the protocol
@dataclass
class RawSessions:
    r"""Clicks grouped by session, as the released script holds them.

    Attributes:
        clicks (dict): session id -> item codes in the session's click order.
        dates (dict): session id -> session date (UTC seconds); insertion order
            is the file order of the sessions.
        item_names (list of str): raw item id of each item code.
    """
    clicks: Dict[str, List[int]]
    dates: Dict[str, float]
    item_names: List[str]


@dataclass
class ProtocolResult:
    r"""Output of :func:`srgnn_protocol`.

    Attributes:
        train_sessions (list of list of int): training sessions by date, ids from 1
            (after the fraction cut).
        test_sessions (list of list of int): test sessions by date.
        train (SessionSequences): training examples (prefixes + next items).
        test (SessionSequences): test examples.
        num_items (int): number of item ids ``1..num_items`` (padding excluded):
            the items of the whole training period, also with a fraction.
        split_date (float): UTC seconds; sessions dated exactly here are dropped.
        max_date (float): UTC seconds of the latest session.
        item_ids (list of str): raw item id of each new id (``item_ids[i - 1]``
            for id ``i``).
        test_sessions_before_unseen_filter (int): test sessions before items
            unseen in training are dropped.
    """
    train_sessions: List[List[int]]
    test_sessions: List[List[int]]
    train: SessionSequences
    test: SessionSequences
    num_items: int
    split_date: float
    max_date: float
    item_ids: List[str] = field(default_factory=list)
    test_sessions_before_unseen_filter: int = 0


def srgnn_protocol(raw: RawSessions, test_days: float = 7.0, min_item_support: int = 5,
                   min_session_length: int = 2, fraction: int = 1,
                   limits: LoadLimits = DEFAULT_LIMITS) -> ProtocolResult:
    r"""Apply the SR-GNN filtering, temporal split, renumbering, prefix expansion
    and fraction selection (steps 2-7 of the module docstring).

    Args:
        raw (RawSessions): clicks per session (in the order to keep) and dates.
        test_days (float, optional): test window in days before the latest date.
        min_item_support (int, optional): items seen fewer times are removed.
        min_session_length (int, optional): shorter sessions are dropped (the
            released script: 2; must be >= 2, a prefix needs a next item).
        fraction (int, optional): keep the most recent ``1/fraction`` of the
            training sequences as the released YOOCHOOSE script does (1 = all).
        limits (LoadLimits, optional): session length and clicks after prefix
            expansion, checked before the expansion.

    Returns:
        ProtocolResult

    Raises:
        LimitError: a session or the expansion exceeds ``limits``.
    """
    _check_protocol_options(test_days, min_item_support, min_session_length, fraction)
    filtered = _filter_sessions(raw, min_session_length, min_item_support)
    tra, tes, split_date, max_date = _temporal_split(raw.dates, filtered, test_days)
    item_dict, train_sessions, test_sessions = _renumber(tra, tes, filtered,
                                                         min_session_length, test_days)
    # 6. prefix expansion (bounded: quadratic in the session length)
    check_sequence_sizes(train_sessions, 'training sessions', limits, expand=True,
                         what='session')
    check_sequence_sizes(test_sessions, 'test sessions', limits, expand=True,
                         what='session')
    train = expand_prefixes(train_sessions)
    test = expand_prefixes(test_sessions)
    train, train_sessions = _most_recent_fraction(train, train_sessions, fraction)
    names = [''] * len(item_dict)
    for code, new in item_dict.items():
        names[new - 1] = raw.item_names[code]
    return ProtocolResult(train_sessions=train_sessions, test_sessions=test_sessions,
                          train=train, test=test, num_items=len(item_dict),
                          split_date=split_date, max_date=max_date, item_ids=names,
                          test_sessions_before_unseen_filter=len(tes))


def _check_protocol_options(test_days: float, min_item_support: int,
                            min_session_length: int, fraction: int) -> None:
    if min_session_length < 2:
        raise ValueError(f"min_session_length must be >= 2 (an example needs a prefix "
                         f"and a next item), got {min_session_length}")
    if min_item_support < 1:
        raise ValueError(f"min_item_support must be >= 1, got {min_item_support}")
    if not test_days > 0:
        raise ValueError(f"test_days must be > 0, got {test_days}")
    if int(fraction) != fraction or fraction < 1:
        raise ValueError(f"fraction must be a positive integer (4 for 1/4, 64 for "
                         f"1/64, 1 for all), got {fraction}")


def _filter_sessions(raw: RawSessions, min_session_length: int,
                     min_item_support: int) -> Dict[str, List[int]]:
    """Steps 2-3: drop short sessions, then items seen fewer than
    ``min_item_support`` times in the remaining ones, then sessions that became
    short."""
    clicks = raw.clicks
    kept = [s for s in clicks if len(clicks[s]) >= min_session_length]
    if not kept:
        raise ValueError(f"no session has {min_session_length} or more clicks")
    counts = np.bincount(np.fromiter((i for s in kept for i in clicks[s]), dtype=np.int64),
                         minlength=len(raw.item_names))
    ok = (counts >= min_item_support).tolist()
    filtered: Dict[str, List[int]] = {}
    for s in kept:
        seq = [i for i in clicks[s] if ok[i]]
        if len(seq) >= min_session_length:
            filtered[s] = seq
    if not filtered:
        raise ValueError(f"no session is left after removing items seen fewer than "
                         f"{min_item_support} times")
    return filtered


def _temporal_split(dates: Dict[str, float], filtered: Dict[str, List[int]],
                    test_days: float) -> Tuple[List[Tuple[str, float]],
                                               List[Tuple[str, float]], float, float]:
    """Step 4: (training sessions, test sessions) as ``(id, date)`` sorted by date
    (stable), strictly before / after the split date; the split and latest dates."""
    sess_dates = [(s, dates[s]) for s in dates if s in filtered]
    max_date = max(d for _, d in sess_dates)
    split_date = max_date - DAY * test_days
    tra = sorted((x for x in sess_dates if x[1] < split_date), key=operator.itemgetter(1))
    tes = sorted((x for x in sess_dates if x[1] > split_date), key=operator.itemgetter(1))
    return tra, tes, split_date, max_date


def _renumber(tra: List[Tuple[str, float]], tes: List[Tuple[str, float]],
              filtered: Dict[str, List[int]], min_session_length: int, test_days: float
              ) -> Tuple[Dict[int, int], List[List[int]], List[List[int]]]:
    """Step 5: ids from 1 in order of first appearance in the date-sorted training
    sessions; test sessions mapped, their unseen items dropped, then short ones."""
    item_dict: Dict[int, int] = {}
    train_sessions: List[List[int]] = []
    for s, _ in tra:
        out = []
        for i in filtered[s]:
            new = item_dict.get(i)
            if new is None:
                new = item_dict[i] = len(item_dict) + 1
            out.append(new)
        train_sessions.append(out)
    if not train_sessions:
        raise ValueError(f"no training session: every session is within "
                         f"{test_days} days of the latest date")
    test_sessions: List[List[int]] = []
    for s, _ in tes:
        out = [item_dict[i] for i in filtered[s] if i in item_dict]
        if len(out) >= min_session_length:
            test_sessions.append(out)
    return item_dict, train_sessions, test_sessions


def _most_recent_fraction(train: SessionSequences, train_sessions: List[List[int]],
                          fraction: int) -> Tuple[SessionSequences, List[List[int]]]:
    """Step 7: the most recent ``1/fraction`` of the training sequences and the
    sessions from the one of its first sequence on (ids not renumbered)."""
    k = int(len(train) / fraction)
    if fraction <= 1 or k == 0:  # released seqs[-0:] keeps everything
        return train, train_sessions
    n_pre = torch.tensor([len(x) - 1 for x in train_sessions])
    sess_of = torch.repeat_interleave(torch.arange(len(train_sessions)), n_pre)
    first = int(sess_of[len(train) - k])
    return train[len(train) - k:], train_sessions[first:]


# --------------------------------------------------------------------- the readers
class _Items:
    """Interns raw item ids to consecutive codes (equality as the released
    script's string keys)."""

    def __init__(self) -> None:
        self.codes: Dict[str, int] = {}
        self.names: List[str] = []

    def __call__(self, name: str) -> int:
        c = self.codes.get(name)
        if c is None:
            c = self.codes[name] = len(self.names)
            self.names.append(name)
        return c


class _SessionGrouper:
    """Groups rows into sessions as the released script does: the clicks of a
    session in file order, and its date taken from the last row of each block of
    consecutive rows (so the last row of its last block wins)."""

    def __init__(self) -> None:
        self.clicks: Dict[str, List[Any]] = {}
        self.dates: Dict[str, float] = {}
        self._current: Optional[str] = None
        self._date = 0.0

    def add(self, sid: str, click: Any, date: float) -> None:
        if self._current is not None and self._current != sid:
            self.dates[self._current] = self._date
        self._current, self._date = sid, date
        lst = self.clicks.get(sid)
        if lst is None:
            self.clicks[sid] = [click]
        else:
            lst.append(click)

    def finish(self, empty_message: str) -> Tuple[Dict[str, List[Any]], Dict[str, float]]:
        """(clicks, dates) per session; ``ValueError(empty_message)`` when no row came."""
        if self._current is None:
            raise ValueError(empty_message)
        self.dates[self._current] = self._date
        return self.clicks, self.dates


def read_diginetica(path: PathLike) -> RawSessions:
    r"""Read DIGINETICA ``train-item-views.csv`` as the released script does.

    ``;``-separated with a header ``sessionId;userId;itemId;timeframe;eventdate``
    (or the ``session_id;user_id;item_id;timeframe;eventdate`` spelling). Clicks
    of a session are sorted by ``timeframe`` (stable); a session's date is the
    ``eventdate`` of the last row of its last block of rows.

    Args:
        path (str or PathLike): the CSV file (``.gz`` allowed).

    Returns:
        RawSessions

    Raises:
        ValueError: naming the file and line of a malformed row or header.
    """
    path = Path(path)
    rows = _rows(path, ';')
    first = next(rows, None)
    if first is None:
        raise ValueError(f"{path}: empty file (expected a header "
                         f"{';'.join(DIGINETICA_HEADERS[0])})")
    line, header = first
    if tuple(h.strip() for h in header) not in DIGINETICA_HEADERS:
        raise _err(path, line, f"unexpected header {';'.join(header)!r}: expected "
                   + ' or '.join(repr(';'.join(h)) for h in DIGINETICA_HEADERS))
    items = _Items()
    sessions = _SessionGrouper()
    day_cache: Dict[str, float] = {}
    for line, row in rows:
        if len(row) != 5:
            raise _err(path, line, f"expected 5 ';'-separated fields "
                       f"(session;user;item;timeframe;eventdate), got {len(row)}: "
                       f"{';'.join(row)!r:.80}")
        sid, _, item, tf, day = row
        if not sid or not item:
            raise _err(path, line, f"empty {'session' if not sid else 'item'} id")
        try:
            tfv = int(tf)
        except ValueError:
            raise _err(path, line, f"timeframe {tf!r} is not an integer") from None
        d = day_cache.get(day)
        if d is None:
            try:
                d = day_cache[day] = _parse_day(day)
            except _Malformed as e:
                raise _err(path, line, str(e)) from None
        sessions.add(sid, (items(item), tfv), d)
    clicks, dates = sessions.finish(f"{path}: no data rows after the header")
    key = operator.itemgetter(1)
    sorted_clicks = {s: [c for c, _ in sorted(v, key=key)] for s, v in clicks.items()}
    return RawSessions(sorted_clicks, _in_click_order(dates, sorted_clicks), items.names)


def _in_click_order(dates: Dict[str, float], clicks: Dict[str, Any]) -> Dict[str, float]:
    # the released sess_date gets its keys at the end of each session's first
    # block of rows, which is the order of first appearance (as sess_clicks)
    return {s: dates[s] for s in clicks}


def read_yoochoose(path: PathLike) -> RawSessions:
    r"""Read YOOCHOOSE ``yoochoose-clicks.dat`` as the released script does.

    ``session,timestamp,item,category`` rows, no header (a header line such as the
    ``session_id,timestamp,item_id,category`` the released script needs is
    skipped). Clicks keep file order (no sort); a session's date is the first 19
    characters (``YYYY-MM-DDTHH:MM:SS``) of the timestamp of the last row of its
    last block of rows, read as UTC.

    Args:
        path (str or PathLike): the ``.dat`` file (``.gz`` allowed).

    Returns:
        RawSessions

    Raises:
        ValueError: naming the file and line of a malformed row.
    """
    path = Path(path)
    items = _Items()
    parse = _IsoSeconds()
    sessions = _SessionGrouper()
    for line, row in _rows(path, ','):
        if len(row) != 4:
            raise _err(path, line, f"expected 4 ','-separated fields "
                       f"(session,timestamp,item,category), got {len(row)}: "
                       f"{','.join(row)!r:.80}")
        sid, ts, item, _ = row
        if line == 1 and not sid.strip().isdigit() and not ts[:1].isdigit():
            continue  # a header line (the released script needs one)
        if not sid or not item:
            raise _err(path, line, f"empty {'session' if not sid else 'item'} id")
        try:
            d = parse(ts)
        except _Malformed as e:
            raise _err(path, line, str(e)) from None
        sessions.add(sid, items(item), d)
    clicks, dates = sessions.finish(f"{path}: no data rows")
    return RawSessions(clicks, _in_click_order(dates, clicks), items.names)


def read_csv_sessions(path: PathLike, delimiter: str = ',',
                      session_column: str = 'session_id', item_column: str = 'item_id',
                      time_column: str = 'timestamp', time_format: str = 'iso',
                      sort_within_session: bool = True) -> RawSessions:
    r"""Read a generic click log: a delimited file with a header naming the
    session, item and time columns (other columns are ignored).

    Clicks of a session are sorted by time (stable, so equal times keep file
    order) unless ``sort_within_session=False``; a session's date is its latest
    click time.

    Args:
        path (str or PathLike): the file (``.gz`` allowed).
        delimiter (str, optional): field separator (default ``,``).
        session_column (str, optional): header of the session id column.
        item_column (str, optional): header of the item id column.
        time_column (str, optional): header of the time column.
        time_format (str, optional): see :func:`make_time_parser`.
        sort_within_session (bool, optional): sort each session's clicks by time.

    Returns:
        RawSessions

    Raises:
        ValueError: a missing column, or a malformed row (file and line named).
    """
    path = Path(path)
    if len(delimiter) != 1:
        raise ValueError(f"delimiter must be one character, got {delimiter!r}")
    parse = make_time_parser(time_format)
    rows = _rows(path, delimiter)
    first = next(rows, None)
    if first is None:
        raise ValueError(f"{path}: empty file (expected a header row)")
    line, header = first
    header = [h.strip() for h in header]
    cols = []
    for what, name in (('session', session_column), ('item', item_column),
                       ('time', time_column)):
        if name not in header:
            raise _err(path, line, f"no {what} column {name!r} in the header "
                       f"{header} (delimiter {delimiter!r})")
        cols.append(header.index(name))
    si, ii, ti = cols
    width = len(header)
    items = _Items()
    clicks: Dict[str, List[Tuple[int, float]]] = {}
    for line, row in rows:
        if len(row) != width:
            raise _err(path, line, f"expected {width} fields like the header, got "
                       f"{len(row)}: {delimiter.join(row)!r:.80}")
        sid, item = row[si], row[ii]
        if not sid or not item:
            raise _err(path, line, f"empty {'session' if not sid else 'item'} id")
        try:
            t = parse(row[ti])
        except _Malformed as e:
            raise _err(path, line, str(e)) from None
        lst = clicks.get(sid)
        if lst is None:
            clicks[sid] = [(items(item), t)]
        else:
            lst.append((items(item), t))
    if not clicks:
        raise ValueError(f"{path}: no data rows after the header")
    key = operator.itemgetter(1)
    out: Dict[str, List[int]] = {}
    dates: Dict[str, float] = {}
    for s, v in clicks.items():
        if sort_within_session:
            v = sorted(v, key=key)
        out[s] = [c for c, _ in v]
        dates[s] = max(t for _, t in v)
    return RawSessions(out, dates, items.names)


# ------------------------------------------------------------------- entry points
def prepare(kind: str, raw_file: PathLike, out_dir: PathLike,
            limits: Optional[LoadLimits] = None, **options: Any) -> Dict[str, Any]:
    r"""Preprocess a raw click log into an SR-GNN folder with the SR-GNN protocol.

    Writes ``all_train_seq.txt``, ``train.txt``, ``test.txt`` (see
    :func:`~tagnn_pyg.data.write_srgnn_folder`), ``stats.json`` and
    ``item_ids.json`` (a JSON list whose element ``i`` is the raw item id, as a
    string, of internal id ``i``; element 0, the padding id, is ``null``) in
    ``out_dir``, with ``manifest.json``, as one unit: an existing ``out_dir``
    is left as it was if anything fails.

    Args:
        kind (str): ``'diginetica'`` (``train-item-views.csv``), ``'yoochoose'``
            (``yoochoose-clicks.dat``) or ``'csv'`` (generic, see
            :func:`read_csv_sessions`).
        raw_file (str or PathLike): the raw file.
        out_dir (str or PathLike): output folder (created if missing).
        limits (LoadLimits, optional): bounds on session length and expanded
            clicks (default :data:`~tagnn_pyg.data.limits.DEFAULT_LIMITS`).
        **options: ``test_days`` (7; YOOCHOOSE 1), ``min_item_support`` (5),
            ``min_session_length`` (2), ``fraction`` (YOOCHOOSE 64, use 4 for
            1/4; others 1 = all); for ``'csv'`` also ``delimiter``,
            ``session_column``, ``item_column``, ``time_column``, ``time_format``,
            ``sort_within_session``. ``None`` values mean the default.

    Returns:
        dict: the content of ``stats.json``: ``train_sessions`` (sessions in
        ``all_train_seq.txt``), ``train_sequences`` (examples in ``train.txt``),
        ``test_sessions``, ``test_sequences``, ``num_items`` (the number of item
        ids ``1..num_items``, **padding not counted**; a model needs
        ``num_items + 1`` embedding rows, given as ``num_embeddings``), plus
        ``kind``, ``split_date``/``max_date`` (UTC, ISO 8601), ``options`` and
        ``test_sessions_before_unseen_filter``.

    Raises:
        ValueError: unknown kind or option value, malformed input (file and line).
        TypeError: an unknown option name.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    defaults = DEFAULTS[kind]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(f"prepare({kind!r}) got unknown option(s) {unknown}; "
                        f"allowed: {sorted(defaults)}")
    opts = dict(defaults)
    opts.update({k: v for k, v in options.items() if v is not None})
    protocol_keys = ('test_days', 'min_item_support', 'min_session_length', 'fraction')
    proto = {k: opts[k] for k in protocol_keys}
    if kind == 'diginetica':
        raw = read_diginetica(raw_file)
    elif kind == 'yoochoose':
        raw = read_yoochoose(raw_file)
    else:
        raw = read_csv_sessions(raw_file, **{k: v for k, v in opts.items()
                                             if k not in protocol_keys})
    res = srgnn_protocol(raw, **proto, limits=limits or DEFAULT_LIMITS)
    out = Path(out_dir)

    def iso(t: float) -> str:
        return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat()

    stats = {
        'train_sessions': len(res.train_sessions),
        'train_sequences': len(res.train),
        'test_sessions': len(res.test_sessions),
        'test_sequences': len(res.test),
        'num_items': res.num_items,
        'num_embeddings': res.num_items + 1,
        'test_sessions_before_unseen_filter': res.test_sessions_before_unseen_filter,
        'kind': kind,
        'raw_file': Path(raw_file).name,
        'split_date': iso(res.split_date),
        'max_date': iso(res.max_date),
        'options': opts,
    }
    # element i = raw id of internal id i (0 is padding: null); one unit with the
    # SR-GNN files (staged, then committed; a failure leaves the old folder intact)
    extra = {'item_ids.json': (json.dumps([None] + res.item_ids) + '\n').encode('utf-8'),
             'stats.json': (json.dumps(stats, indent=2) + '\n').encode('utf-8')}
    write_srgnn_folder(out, res.train_sessions, res.test_sessions, train=res.train,
                       extra_files=extra)
    return stats


__all__ = ['prepare', 'srgnn_protocol', 'read_diginetica', 'read_yoochoose',
           'read_csv_sessions', 'make_time_parser', 'RawSessions', 'ProtocolResult']
