"""The synthetic generator: deterministic, well-formed, and learnable beyond POP."""
from collections import Counter, defaultdict

import pytest

from tagnn_pyg.data.synthetic import make_synthetic_sessions

SMALL = dict(num_items=300, num_train_sessions=2000, num_test_sessions=500,
             num_interests=10)


def hit_rates(train, test, k=20):
    """HR@k of POP and of 'most frequent training successors of the last click',
    both computed here from plain counts, over every test prefix."""
    pop = [i for i, _ in Counter(i for s in train for i in s).most_common(k)]
    succ = defaultdict(Counter)
    for s in train:
        for a, b in zip(s[:-1], s[1:]):
            succ[a][b] += 1
    hits_pop = hits_trans = n = 0
    for s in test:
        for t in range(1, len(s)):
            n += 1
            hits_pop += s[t] in pop
            hits_trans += s[t] in [i for i, _ in succ[s[t - 1]].most_common(k)]
    return hits_pop / n, hits_trans / n


def test_deterministic_and_well_formed():
    train, test = make_synthetic_sessions(**SMALL, seed=3)
    again = make_synthetic_sessions(**SMALL, seed=3)
    assert (train, test) == again
    assert make_synthetic_sessions(**SMALL, seed=4)[0] != train
    assert len(train) == 2000 and 400 < len(test) <= 500
    for s in train + test:
        assert 2 <= len(s) <= 20
        assert all(isinstance(i, int) and 1 <= i <= 300 for i in s)
    seen = {i for s in train for i in s}
    assert all(i in seen for s in test for i in s)  # unseen test items dropped
    assert any(len(set(s)) < len(s) for s in train)  # revisits happen


def test_transitions_beat_popularity():
    train, test = make_synthetic_sessions(**SMALL, seed=0)
    pop, trans = hit_rates(train, test)
    assert trans > 2 * pop, (pop, trans)
    assert trans > 0.5


@pytest.mark.parametrize('kwargs,match', [
    (dict(num_items=0), 'num_items must be an int >= 2, got 0'),
    (dict(num_train_sessions=-1), 'num_train_sessions'),
    (dict(revisit_prob=1.5), r'revisit_prob must be a probability in \[0, 1\], got 1.5'),
    (dict(revisit_prob=0.5, switch_prob=0.4, jump_prob=0.2), 'must be <= 1'),
    (dict(num_items=50, num_interests=10), 'gives 5 items per interest'),
    (dict(mean_length=1), 'mean_length'),
])
def test_bad_parameters_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic_sessions(**kwargs)
