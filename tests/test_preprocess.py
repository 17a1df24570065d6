"""Tests of the SR-GNN preprocessing protocol (raw click logs -> SR-GNN folder).

DIGINETICA is checked against an independent port of the released SR-GNN
``datasets/preprocess.py`` (written below, the reference) on the real sample and
on perturbed copies of it; YOOCHOOSE and the generic CSV reader against small
hand-made files whose expected output is worked out by hand in the comments.
"""
import calendar
import csv
import json
import operator
import pickle
import time

import pytest

from conftest import require_shared
from tagnn_pyg.cli import main
from tagnn_pyg.cli.prepare import KINDS as CLI_KINDS
from tagnn_pyg.data.preprocess import KINDS, make_time_parser, prepare
from tagnn_pyg.testing.released import process_seqs

SAMPLE = ('raw', 'diginetica-sample-train-item-views.csv')


# ------------------------------------------------------------------ reference
def released_preprocess(path):
    """Port of the released SR-GNN preprocess.py, DIGINETICA/sample branch.

    Differences from the released file: reads ``path``, accepts the
    ``sessionId/itemId`` header spelling, and parses dates as UTC
    (``calendar.timegm`` instead of the local-time ``time.mktime``).
    Returns (tra_seqs, (tr_seqs, tr_labs), (te_seqs, te_labs), item_ctr).
    """
    with open(path, 'r') as f:
        reader = csv.DictReader(f, delimiter=';')
        sess_clicks = {}
        sess_date = {}
        curid = -1
        curdate = None
        for data in reader:
            sessid = data.get('session_id', data.get('sessionId'))
            if curdate and not curid == sessid:
                date = calendar.timegm(time.strptime(curdate, '%Y-%m-%d'))
                sess_date[curid] = date
            curid = sessid
            item = data.get('item_id', data.get('itemId')), int(data['timeframe'])
            curdate = data['eventdate']
            if sessid in sess_clicks:
                sess_clicks[sessid] += [item]
            else:
                sess_clicks[sessid] = [item]
        date = calendar.timegm(time.strptime(curdate, '%Y-%m-%d'))
        for i in list(sess_clicks):
            sorted_clicks = sorted(sess_clicks[i], key=operator.itemgetter(1))
            sess_clicks[i] = [c[0] for c in sorted_clicks]
        sess_date[curid] = date
    for s in list(sess_clicks):
        if len(sess_clicks[s]) == 1:
            del sess_clicks[s]
            del sess_date[s]
    iid_counts = {}
    for s in sess_clicks:
        for iid in sess_clicks[s]:
            iid_counts[iid] = iid_counts.get(iid, 0) + 1
    for s in list(sess_clicks):
        filseq = list(filter(lambda i: iid_counts[i] >= 5, sess_clicks[s]))
        if len(filseq) < 2:
            del sess_clicks[s]
            del sess_date[s]
        else:
            sess_clicks[s] = filseq
    dates = list(sess_date.items())
    maxdate = dates[0][1]
    for _, date in dates:
        if maxdate < date:
            maxdate = date
    splitdate = maxdate - 86400 * 7
    tra_sess = sorted(filter(lambda x: x[1] < splitdate, dates), key=operator.itemgetter(1))
    tes_sess = sorted(filter(lambda x: x[1] > splitdate, dates), key=operator.itemgetter(1))
    item_dict = {}
    item_ctr = 1
    tra_seqs = []
    for s, date in tra_sess:
        outseq = []
        for i in sess_clicks[s]:
            if i in item_dict:
                outseq += [item_dict[i]]
            else:
                outseq += [item_ctr]
                item_dict[i] = item_ctr
                item_ctr += 1
        if len(outseq) < 2:
            continue
        tra_seqs += [outseq]
    tes_seqs = []
    for s, date in tes_sess:
        outseq = [item_dict[i] for i in sess_clicks[s] if i in item_dict]
        if len(outseq) < 2:
            continue
        tes_seqs += [outseq]

    return tra_seqs, process_seqs(tra_seqs), process_seqs(tes_seqs), item_ctr


def _load(folder):
    out = {}
    for name in ('all_train_seq', 'train', 'test'):
        with open(folder / f'{name}.txt', 'rb') as f:  # our own output: trusted
            out[name] = pickle.load(f)
    return out


def _assert_same_as_reference(raw, out_dir):
    stats = prepare('diginetica', raw, out_dir)
    tra_seqs, tra, tes, item_ctr = released_preprocess(raw)
    got = _load(out_dir)
    assert got['all_train_seq'] == tra_seqs
    assert got['train'] == tra
    assert got['test'] == tes
    assert stats['num_items'] == item_ctr - 1
    return stats


# ----------------------------------------------------------------- diginetica
def test_diginetica_sample_counts_and_released_sequences(tmp_path):
    raw = require_shared(*SAMPLE)
    stats = _assert_same_as_reference(raw, tmp_path / 'out')
    # datasets/README.md
    assert stats['train_sessions'] == 469
    assert stats['train_sequences'] == 1205
    assert stats['test_sessions'] == 39
    assert stats['test_sequences'] == 99
    assert stats['num_items'] == 309
    assert stats['num_embeddings'] == 310
    assert stats['test_sessions_before_unseen_filter'] == 47
    on_disk = json.loads((tmp_path / 'out' / 'stats.json').read_text())
    assert on_disk == json.loads(json.dumps(stats))
    for key in ('train_sessions', 'train_sequences', 'test_sessions', 'test_sequences',
                'num_items'):
        assert key in on_disk


def _sample_lines():
    raw = require_shared(*SAMPLE)
    lines = raw.read_text().splitlines()
    return lines[0], lines[1:]


def test_diginetica_camelcase_header_same_output(tmp_path):
    header, rows = _sample_lines()
    assert header == 'session_id;user_id;item_id;timeframe;eventdate'
    camel = tmp_path / 'train-item-views.csv'
    camel.write_text('\n'.join(['sessionId;userId;itemId;timeframe;eventdate'] + rows) + '\n')
    a = prepare('diginetica', camel, tmp_path / 'a')
    b = prepare('diginetica', require_shared(*SAMPLE), tmp_path / 'b')
    assert {k: a[k] for k in ('train_sequences', 'test_sequences', 'num_items')} == \
        {k: b[k] for k in ('train_sequences', 'test_sequences', 'num_items')}
    assert _load(tmp_path / 'a') == _load(tmp_path / 'b')


@pytest.mark.parametrize('perturbation', ['reversed', 'scattered'])
def test_diginetica_perturbed_sample_matches_reference(tmp_path, perturbation):
    # reversed rows: sessions and clicks in reverse file order (timeframe sort and
    # date sort must still agree); scattered: every 7th row moved to the end, so
    # sessions have non-contiguous blocks (date = last row of the last block)
    header, rows = _sample_lines()
    if perturbation == 'reversed':
        rows = rows[::-1]
    else:
        rows = [r for i, r in enumerate(rows) if i % 7] + rows[::7]
    raw = tmp_path / 'raw.csv'
    raw.write_text('\n'.join([header] + rows) + '\n')
    _assert_same_as_reference(raw, tmp_path / 'out')


def test_diginetica_hand_made_equal_date_and_support(tmp_path):
    # items A,B seen 5 times (kept); C 4 times (removed). Max date 2016-01-15, split
    # 2016-01-08: session 4 (dated 01-08) belongs to neither side.
    rows = ['sessionId;userId;itemId;timeframe;eventdate',
            '1;NA;A;20;2016-01-01', '1;NA;B;10;2016-01-01',       # -> [B, A]
            '2;NA;A;1;2016-01-02', '2;NA;C;2;2016-01-02', '2;NA;B;3;2016-01-02',
            '3;NA;C;1;2016-01-03', '3;NA;C;2;2016-01-03',         # only C: dropped
            '4;NA;A;1;2016-01-08', '4;NA;B;2;2016-01-08',         # at split: dropped
            '5;NA;B;1;2016-01-15', '5;NA;A;2;2016-01-15', '5;NA;C;3;2016-01-15',
            '6;NA;A;5;2016-01-14',                                # length 1: dropped
            '7;NA;B;2;2016-01-04', '7;NA;A;1;2016-01-04']         # -> [A, B]
    # counts after dropping s6: A 5 (s1 s2 s4 s5 s7), B 5, C 4 -> C removed
    raw = tmp_path / 'views.csv'
    raw.write_text('\n'.join(rows) + '\n')
    stats = prepare('diginetica', raw, tmp_path / 'out')
    got = _load(tmp_path / 'out')
    # train by date: s1 [B, A] -> [1, 2]; s2 [A, B] (C removed) -> [2, 1]; s7 -> [2, 1]
    assert got['all_train_seq'] == [[1, 2], [2, 1], [2, 1]]
    assert got['train'] == ([[1], [2], [2]], [2, 1, 1])
    assert got['test'] == ([[1]], [2])  # s5 [B, A] (C removed)
    assert (stats['train_sessions'], stats['train_sequences'], stats['test_sessions'],
            stats['test_sequences'], stats['num_items']) == (3, 3, 1, 1, 2)
    assert stats['split_date'].startswith('2016-01-08T00:00:00')


# ------------------------------------------------------------------ yoochoose
YOOCHOOSE_ROWS = [
    # session,timestamp,item,category
    '1,2014-04-01T10:00:00.123Z,214,0',
    '1,2014-04-01T10:05:00.000Z,215,0',
    '1,2014-04-01T09:00:00.000Z,216,0',   # not sorted: s1 stays [214, 215, 216]
    '2,2014-04-02T11:00:00.000Z,215,S',
    '2,2014-04-02T11:01:00.000Z,216,S',
    '8,2014-04-02T12:00:00.000Z,214,0',
    '8,2014-04-02T12:01:00.000Z,215,0',
    '8,2014-04-02T12:02:00.000Z,216,0',
    '8,2014-04-02T12:03:00.000Z,214,0',
    '3,2014-04-03T08:00:00.000Z,999,0',   # length 1: dropped before counting
    '4,2014-04-03T12:00:00.000Z,214,0',
    '4,2014-04-03T12:01:00.000Z,777,0',   # 777 seen once: removed, s4 too short
    '5,2014-04-04T12:00:00.000Z,216,0',   # s5 dated exactly at the split date
    '5,2014-04-04T12:00:00.000Z,214,0',
    '6,2014-04-05T12:00:00.000Z,214,0',   # max date 04-05T12:00 -> split 04-04T12:00
    '6,2014-04-05T12:00:00.000Z,216,0',
    '6,2014-04-05T12:00:00.000Z,888,0',   # 888: twice, never in training
    '7,2014-04-05T01:00:00.000Z,888,0',
    '7,2014-04-05T02:00:00.000Z,215,0',
]
# Worked by hand (min_item_support=2): train by date s1, s2, s8 ->
# s1 [214,215,216] = [1,2,3]; s2 [215,216] = [2,3]; s8 [214,215,216,214] = [1,2,3,1].
# Test by date: s7 [888,215] -> [2] dropped; s6 [214,216,888] -> [1,3].
# Prefixes: s1 ([1,2],3) ([1],2); s2 ([2],3); s8 ([1,2,3],1) ([1,2],3) ([1],2): P = 6.
ALL_TRAIN = [[1, 2, 3], [2, 3], [1, 2, 3, 1]]
ALL_PREFIXES = ([[1, 2], [1], [2], [1, 2, 3], [1, 2], [1]], [3, 2, 3, 1, 3, 2])


def _write(path, lines, header=None):
    path.write_text('\n'.join(([header] if header else []) + lines) + '\n')
    return path


@pytest.mark.parametrize('header', [None, 'session_id,timestamp,item_id,category'])
def test_yoochoose_hand_made(tmp_path, header):
    raw = _write(tmp_path / 'yoochoose-clicks.dat', YOOCHOOSE_ROWS, header)
    # default fraction 64: int(6 / 64) = 0 -> the released slicing keeps everything
    stats = prepare('yoochoose', raw, tmp_path / 'all', min_item_support=2)
    got = _load(tmp_path / 'all')
    assert got['all_train_seq'] == ALL_TRAIN
    assert got['train'] == ALL_PREFIXES
    assert got['test'] == ([[1]], [3])
    assert (stats['train_sessions'], stats['train_sequences'], stats['test_sessions'],
            stats['test_sequences'], stats['num_items']) == (3, 6, 1, 1, 3)
    assert stats['split_date'].startswith('2014-04-04T12:00:00')


@pytest.mark.parametrize('fraction, train, all_train', [
    # int(6/4) = 1: the last prefix, from s8 on
    (4, ([[1]], [2]), [[1, 2, 3, 1]]),
    # int(6/3) = 2: the last two prefixes of s8 (its first prefix is not kept,
    # but all_train_seq holds the whole s8, as in the released script)
    (3, ([[1, 2], [1]], [3, 2]), [[1, 2, 3, 1]]),
    # int(6/2) = 3: s8's three prefixes
    (2, ([[1, 2, 3], [1, 2], [1]], [1, 3, 2]), [[1, 2, 3, 1]]),
    (1, ALL_PREFIXES, ALL_TRAIN),
])
def test_yoochoose_fractions(tmp_path, fraction, train, all_train):
    raw = _write(tmp_path / 'clicks.dat', YOOCHOOSE_ROWS)
    stats = prepare('yoochoose', raw, tmp_path / 'out', min_item_support=2,
                    fraction=fraction)
    got = _load(tmp_path / 'out')
    assert got['train'] == train
    assert got['all_train_seq'] == all_train
    assert got['test'] == ([[1]], [3])
    assert stats['num_items'] == 3  # ids not renumbered after the cut
    assert stats['train_sequences'] == len(train[0])
    assert stats['train_sessions'] == len(all_train)


def test_yoochoose_default_support(tmp_path):
    # default min_item_support 5 (counts after dropping s3): 214 x6, 216 x5 kept;
    # 215 x4, 888 x2, 777 x1 removed. s1 [214,216] -> [1,2]; s2 [216] dropped;
    # s8 [214,216,214] -> [1,2,1]; s4 dropped; s5 at split; s6 [214,216] -> [1,2];
    # s7 empty. int(3/64) = 0 keeps all training sequences.
    raw = _write(tmp_path / 'clicks.dat', YOOCHOOSE_ROWS)
    stats = prepare('yoochoose', raw, tmp_path / 'out')
    got = _load(tmp_path / 'out')
    assert got['all_train_seq'] == [[1, 2], [1, 2, 1]]
    assert got['train'] == ([[1], [1, 2], [1]], [2, 1, 2])
    assert got['test'] == ([[1]], [2])
    assert stats['num_items'] == 2 and stats['options']['fraction'] == 64
    assert stats['options']['test_days'] == 1


# ------------------------------------------------------------------------ csv
CSV_ROWS = [
    'user;sid;ts;product',
    'u;a;1000;10',
    'u;a;900;11',          # a sorted by time: [11, 10]
    'u;b;2000;10',
    'u;b;2100;12',
    'u;c;90000;11',
    'u;c;90100;10',
    'u;d;200000;12',       # max time 200060, split 113660: a, b, c train; d test
    'u;d;200050;10',
    'u;d;200060;13',       # 13 never in training
]


def _csv_opts(**kw):
    base = dict(delimiter=';', session_column='sid', item_column='product',
                time_column='ts', time_format='unix', test_days=1, min_item_support=1)
    base.update(kw)
    return base


def test_csv_hand_made_sorted(tmp_path):
    raw = _write(tmp_path / 'log.csv', CSV_ROWS)
    stats = prepare('csv', raw, tmp_path / 'out', **_csv_opts())
    got = _load(tmp_path / 'out')
    # a [11,10] -> [1,2]; b [10,12] -> [2,3]; c [11,10] -> [1,2]; d [12,10,13] -> [3,2]
    assert got['all_train_seq'] == [[1, 2], [2, 3], [1, 2]]
    assert got['train'] == ([[1], [2], [1]], [2, 3, 2])
    assert got['test'] == ([[3]], [2])
    assert (stats['train_sessions'], stats['train_sequences'], stats['test_sessions'],
            stats['test_sequences'], stats['num_items']) == (3, 3, 1, 1, 3)
    assert json.loads((tmp_path / 'out' / 'item_ids.json').read_text()) == \
        [None, '11', '10', '12']


def test_csv_hand_made_file_order(tmp_path):
    raw = _write(tmp_path / 'log.csv', CSV_ROWS)
    prepare('csv', raw, tmp_path / 'out', **_csv_opts(sort_within_session=False))
    got = _load(tmp_path / 'out')
    # a [10,11] -> [1,2]; b [10,12] -> [1,3]; c [11,10] -> [2,1]; d [12,10,13] -> [3,1]
    assert got['all_train_seq'] == [[1, 2], [1, 3], [2, 1]]
    assert got['test'] == ([[3]], [1])


def test_csv_min_session_length_and_iso_times(tmp_path):
    rows = ['session_id,item_id,timestamp',
            's1,x,2020-01-01T00:00:00Z', 's1,y,2020-01-01T00:01:00Z',
            's1,x,2020-01-01T00:02:00Z',
            's2,y,2020-01-02 00:00:00', 's2,x,2020-01-02 00:00:01',   # 2 clicks
            's3,x,2020-01-20T00:00:00+00:00', 's3,y,2020-01-20T01:00:00+00:00',
            's3,x,2020-01-20T02:00:00+00:00']
    raw = _write(tmp_path / 'log.csv', rows)
    stats = prepare('csv', raw, tmp_path / 'out', min_item_support=1,
                    min_session_length=3)
    got = _load(tmp_path / 'out')
    assert got['all_train_seq'] == [[1, 2, 1]]  # s2 too short for length 3
    assert got['test'] == ([[1, 2], [1]], [1, 2])
    assert stats['num_items'] == 2


def test_time_parsers():
    assert make_time_parser('iso')('2016-05-09') == 1462752000
    assert make_time_parser('iso')('2014-04-07T10:51:09Z') == 1396867869
    assert make_time_parser('iso')('2020-01-01T10:00:00+02:00') == 1577865600
    assert make_time_parser('unix')('1396867869') == 1396867869
    assert make_time_parser('unix_ms')('1396867869500') == 1396867869.5
    assert make_time_parser('%d/%m/%Y')('09/05/2016') == 1462752000
    with pytest.raises(ValueError, match='time_format'):
        make_time_parser('seconds')


# ------------------------------------------------------------------ malformed
@pytest.mark.parametrize('bad_row, message', [
    ('2;NA;5;abc;2016-01-02', "timeframe 'abc' is not an integer"),
    ('2;NA;5;3', 'expected 5'),
    ('2;NA;5;3;2016-13-02', 'not a valid YYYY-MM-DD'),
    ('2;NA;5;3;02/01/2016', 'not YYYY-MM-DD'),
    ('2;NA;;3;2016-01-02', 'empty item id'),
])
def test_diginetica_malformed_row_names_file_and_line(tmp_path, bad_row, message):
    raw = _write(tmp_path / 'views.csv', ['1;NA;5;1;2016-01-01', '1;NA;6;2;2016-01-01',
                                          '', bad_row],
                 header='sessionId;userId;itemId;timeframe;eventdate')
    with pytest.raises(ValueError) as info:
        prepare('diginetica', raw, tmp_path / 'out')
    assert f'{raw}:5:' in str(info.value)  # line 5 (header, 2 rows, blank line)
    assert message in str(info.value)
    assert not (tmp_path / 'out').exists()


def test_malformed_headers_and_rows(tmp_path):
    raw = _write(tmp_path / 'v.csv', ['1;2;3;4;5'], header='a;b;c;d;e')
    with pytest.raises(ValueError, match=r'v\.csv:1: unexpected header'):
        prepare('diginetica', raw, tmp_path / 'out')
    raw = _write(tmp_path / 'y.dat', ['1,2014-04-01T10:00:00.000Z,214,0',
                                      '1,2014-04-01 10:00,215,0'])
    with pytest.raises(ValueError, match=r'y\.dat:2: timestamp .* is not YYYY-MM-DDTHH'):
        prepare('yoochoose', raw, tmp_path / 'out')
    raw = _write(tmp_path / 'y.dat', ['1,2014-04-01T10:00:00.000Z,214'])
    with pytest.raises(ValueError, match=r'y\.dat:1: expected 4'):
        prepare('yoochoose', raw, tmp_path / 'out')
    raw = _write(tmp_path / 'c.csv', ['a,1,1'], header='session,item,time')
    with pytest.raises(ValueError, match=r"c\.csv:1: no session column 'session_id'"):
        prepare('csv', raw, tmp_path / 'out')
    raw = _write(tmp_path / 'c.csv', ['a,1,1', 'a,2,x'], header='session_id,item_id,timestamp')
    with pytest.raises(ValueError, match=r"c\.csv:3: time 'x' is not a number"):
        prepare('csv', raw, tmp_path / 'out', time_format='unix')
    raw = tmp_path / 'latin.csv'
    raw.write_bytes(b'session_id,item_id,timestamp\na,\xe9,1\n')
    with pytest.raises(ValueError, match='not UTF-8'):
        prepare('csv', raw, tmp_path / 'out', time_format='unix')
    with pytest.raises(FileNotFoundError, match='raw file not found'):
        prepare('csv', tmp_path / 'missing.csv', tmp_path / 'out')
    with pytest.raises(ValueError, match='kind must be one of'):
        prepare('tsv', raw, tmp_path / 'out')
    with pytest.raises(TypeError, match="unknown option.*'delimiter'"):
        prepare('diginetica', raw, tmp_path / 'out', delimiter=',')
    with pytest.raises(ValueError, match='fraction'):
        prepare('yoochoose', _write(tmp_path / 'z.dat', YOOCHOOSE_ROWS), tmp_path / 'o',
                fraction=0)


# ------------------------------------------------------------------------ cli
def test_cli_prepare(tmp_path, capsys):
    raw = _write(tmp_path / 'log.csv', CSV_ROWS)
    out = tmp_path / 'out'
    assert main(['prepare', 'csv', str(raw), str(out), '--delimiter', ';',
                 '--session-column', 'sid', '--item-column', 'product', '--time-column',
                 'ts', '--time-format', 'unix', '--test-days', '1',
                 '--min-item-support', '1']) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed['train_sequences'] == 3 and printed['num_items'] == 3
    assert json.loads((out / 'stats.json').read_text())['test_sequences'] == 1
    # errors: one line, exit status 1, no traceback
    assert main(['prepare', 'csv', str(raw), str(out)]) == 1
    assert "no session column 'session_id'" in capsys.readouterr().err
    assert main(['prepare', 'diginetica', str(raw), str(out), '--delimiter', ',']) == 1
    assert "apply to 'csv' only" in capsys.readouterr().err


def test_cli_kinds_are_the_preprocessing_kinds():
    assert CLI_KINDS == KINDS
