r"""A seeded synthetic session data set with structure a GNN can learn.

:func:`make_synthetic_sessions` generates click sessions from a simple latent
model, so that what helps on real data (item-to-item transitions, the
session's interests, repeated clicks) matters here too, while global
popularity does not predict much:

1. The items ``1..num_items`` are split at random into ``num_interests``
   latent interests (groups). Inside an interest, items have Zipf popularity
   :math:`p(\text{rank } r) \propto r^{-a}`.
2. Every item gets ``out_degree`` successors drawn from its own interest
   (by popularity, without replacement, not itself); the :math:`k`-th successor
   is followed with probability :math:`\propto 1/k`. This sparse item-to-item
   transition graph is the main signal.
3. A session picks one interest (two with probability ``two_interest_prob``),
   starts at a popular item of its first interest and then, per click: revisits
   one of its earlier clicks (``revisit_prob``), switches to a popular item of
   its other interest (``switch_prob``, two-interest sessions only), jumps to a
   popular item of the current interest (``jump_prob``) or, otherwise, follows
   the transition graph from the current item.
4. Lengths are :math:`\min(2 + \text{Poisson}(\bar L - 2), L_{max})`.

Sessions are generated in "chronological" order: the first
``num_train_sessions`` form the training set, the rest the test set; as in the
SR-GNN protocol, test clicks on items never seen in training are dropped and
test sessions shorter than 2 are removed. Everything is vectorised over
sessions with numpy (one loop over click positions), so 100k sessions take a
fraction of a second.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np

__all__ = ['make_synthetic_sessions']


def _check_int(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def _check_prob(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _sample_rank(rng: np.random.Generator, cdf: np.ndarray) -> np.ndarray:
    """One rank per row of ``cdf`` ``[S, K]`` (rows non-decreasing, last = 1)."""
    u = rng.random(cdf.shape[0])[:, None]
    return np.minimum((u > cdf).sum(1), cdf.shape[1] - 1)


def make_synthetic_sessions(
    num_items: int = 1000,
    num_train_sessions: int = 10000,
    num_test_sessions: int = 2000,
    seed: int = 0,
    num_interests: int = 20,
    out_degree: int = 6,
    mean_length: float = 6.0,
    max_length: int = 20,
    zipf: float = 1.0,
    two_interest_prob: float = 0.3,
    revisit_prob: float = 0.1,
    switch_prob: float = 0.1,
    jump_prob: float = 0.1,
) -> Tuple[List[List[int]], List[List[int]]]:
    r"""Generate training and test sessions with latent interests and
    item-to-item transitions (see the module docstring for the model).

    Args:
        num_items (int, optional): number of items; ids are ``1..num_items``.
        num_train_sessions (int, optional): sessions in the training part.
        num_test_sessions (int, optional): sessions generated for the test part
            (fewer remain if unseen items make some shorter than 2).
        seed (int, optional): seed of everything; equal seeds give equal data.
        num_interests (int, optional): number of latent interests (item groups);
            each needs at least ``out_degree + 1`` items.
        out_degree (int, optional): successors per item in the transition graph.
        mean_length (float, optional): mean session length (>= 2).
        max_length (int, optional): longest session.
        zipf (float, optional): Zipf exponent of popularity inside an interest.
        two_interest_prob (float, optional): share of sessions with two interests.
        revisit_prob (float, optional): per click, chance to repeat an earlier click.
        switch_prob (float, optional): per click, chance to switch interest
            (two-interest sessions).
        jump_prob (float, optional): per click, chance of a popular item of the
            current interest instead of a transition.

    Returns:
        (train_sessions, test_sessions): lists of sessions (lists of int item
        ids), in generation ("chronological") order.

    Shapes:
        - **output:** ``num_train_sessions`` and at most ``num_test_sessions``
          sessions of length 2 to ``max_length``.

    Example:
        >>> train, test = make_synthetic_sessions(200, 500, 100, seed=1,
        ...                                       num_interests=5)
        >>> len(train), min(map(len, train)) >= 2
        (500, True)
    """
    opts = _checked_options(
        num_items=num_items, num_train_sessions=num_train_sessions,
        num_test_sessions=num_test_sessions, seed=seed, num_interests=num_interests,
        out_degree=out_degree, mean_length=mean_length, max_length=max_length, zipf=zipf,
        two_interest_prob=two_interest_prob, revisit_prob=revisit_prob,
        switch_prob=switch_prob, jump_prob=jump_prob)
    rng = np.random.default_rng(opts['seed'])
    members, interest_of, pop, pop_cdf = _interests(rng, opts['num_items'],
                                                    opts['num_interests'], opts['zipf'])
    successors, succ_cdf = _successors(rng, members, interest_of, pop, opts['out_degree'])
    clicks, lengths = _walk(rng, members, interest_of, pop_cdf, successors, succ_cdf, opts)
    n_train = opts['num_train_sessions']
    all_sessions = [row[:n].tolist() for row, n in zip(clicks, lengths)]
    seen = np.zeros(opts['num_items'] + 1, dtype=bool)
    seen[clicks[:n_train][np.arange(opts['max_length'])[None, :]
                          < lengths[:n_train, None]]] = True
    test = []
    for s in all_sessions[n_train:]:  # SR-GNN protocol: unseen items out
        kept = [i for i in s if seen[i]]
        if len(kept) >= 2:
            test.append(kept)
    return all_sessions[:n_train], test


def _checked_options(**opts: Any) -> Dict[str, Any]:
    """The generator's options, validated (errors name the option and the bound)."""
    for name, low in (('num_items', 2), ('num_train_sessions', 1), ('num_test_sessions', 0),
                      ('seed', 0), ('num_interests', 1), ('out_degree', 1),
                      ('max_length', 2)):
        opts[name] = _check_int(name, opts[name], low)
    mean_length, max_length = opts['mean_length'], opts['max_length']
    if isinstance(mean_length, bool) or not isinstance(mean_length, (int, float)) \
            or not 2 <= mean_length <= max_length:
        raise ValueError(f"mean_length must be a number in [2, max_length="
                         f"{max_length}], got {mean_length!r}")
    zipf = opts['zipf']
    if isinstance(zipf, bool) or not isinstance(zipf, (int, float)) or zipf < 0:
        raise ValueError(f"zipf must be a number >= 0, got {zipf!r}")
    for name in ('two_interest_prob', 'revisit_prob', 'switch_prob', 'jump_prob'):
        opts[name] = _check_prob(name, opts[name])
    if opts['revisit_prob'] + opts['switch_prob'] + opts['jump_prob'] > 1:
        raise ValueError(f"revisit_prob + switch_prob + jump_prob must be <= 1, got "
                         f"{opts['revisit_prob']} + {opts['switch_prob']} + "
                         f"{opts['jump_prob']}")
    per_group = opts['num_items'] // opts['num_interests']
    if per_group < opts['out_degree'] + 1:
        raise ValueError(f"num_items={opts['num_items']} over num_interests="
                         f"{opts['num_interests']} gives {per_group} items per interest; "
                         f"out_degree={opts['out_degree']} needs at least "
                         f"{opts['out_degree'] + 1}")
    return opts


def _interests(rng: np.random.Generator, num_items: int, G: int, zipf: float
               ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A random partition of the items into ``G`` groups of near-equal size, with
    Zipf popularity inside each: (members ``[G, K]``, interest of each item,
    popularity ``[G, K]`` and its CDF)."""
    perm = rng.permutation(num_items) + 1
    size = np.full(G, num_items // G)
    size[:num_items % G] += 1
    K = int(size.max())
    members = np.zeros((G, K), dtype=np.int64)   # item of rank r in group g
    interest_of = np.zeros(num_items + 1, dtype=np.int64)
    start = 0
    for g in range(G):  # G iterations, not per session
        members[g, :size[g]] = perm[start:start + size[g]]
        interest_of[perm[start:start + size[g]]] = g
        start += size[g]
    ranks = np.arange(1, K + 1, dtype=np.float64)
    pop = np.where(np.arange(K)[None, :] < size[:, None], ranks[None, :] ** -zipf, 0.0)
    pop /= pop.sum(1, keepdims=True)
    pop_cdf = np.cumsum(pop, 1)
    pop_cdf[:, -1] = 1.0
    return members, interest_of, pop, pop_cdf


def _successors(rng: np.random.Generator, members: np.ndarray, interest_of: np.ndarray,
                pop: np.ndarray, out_degree: int) -> Tuple[np.ndarray, np.ndarray]:
    r"""Per item, ``out_degree`` distinct items of its group (not itself), drawn by
    popularity (Gumbel top-k on log-popularity, vectorised), and the CDF of
    choosing the r-th successor (:math:`\propto 1/r`)."""
    num_items = interest_of.size - 1
    item_group = interest_of[1:]                          # [num_items]
    logp = np.log(np.maximum(pop[item_group], 1e-300))    # [num_items, K]
    logp[pop[item_group] == 0] = -np.inf
    own_rank = np.argmax(members[item_group] == np.arange(1, num_items + 1)[:, None], 1)
    logp[np.arange(num_items), own_rank] = -np.inf
    keys = logp + rng.gumbel(size=logp.shape)
    succ_rank = np.argsort(-keys, axis=1)[:, :out_degree]
    successors = np.zeros((num_items + 1, out_degree), dtype=np.int64)
    successors[1:] = members[item_group[:, None], succ_rank]
    succ_p = 1.0 / np.arange(1, out_degree + 1)
    succ_cdf = np.cumsum(succ_p / succ_p.sum())
    succ_cdf[-1] = 1.0
    return successors, succ_cdf


def _walk(rng: np.random.Generator, members: np.ndarray, interest_of: np.ndarray,
          pop_cdf: np.ndarray, successors: np.ndarray, succ_cdf: np.ndarray,
          opts: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
    """All sessions, vectorised over sessions, one step per click position:
    (clicks ``[S, max_length]``, lengths ``[S]``)."""
    G, max_length = members.shape[0], opts['max_length']
    revisit_p, switch_p, jump_p = opts['revisit_prob'], opts['switch_prob'], opts['jump_prob']
    S = opts['num_train_sessions'] + opts['num_test_sessions']
    lengths = np.minimum(2 + rng.poisson(opts['mean_length'] - 2, S), max_length)
    first = rng.integers(0, G, S)
    second = (first + rng.integers(1, max(G, 2), S)) % G if G > 1 else first.copy()
    two = (rng.random(S) < opts['two_interest_prob']) & (G > 1)
    clicks = np.zeros((S, max_length), dtype=np.int64)
    clicks[:, 0] = members[first, _sample_rank(rng, pop_cdf[first])]
    rows = np.arange(S)
    out_degree = successors.shape[1]
    for t in range(1, max_length):
        cur = clicks[:, t - 1]
        g_cur = interest_of[cur]
        nxt = successors[cur, _sample_rank(rng, np.broadcast_to(succ_cdf, (S, out_degree)))]
        u = rng.random(S)
        jump = (u >= revisit_p + switch_p) & (u < revisit_p + switch_p + jump_p)
        jumped = members[g_cur, _sample_rank(rng, pop_cdf[g_cur])]
        nxt = np.where(jump, jumped, nxt)
        switch = two & (u >= revisit_p) & (u < revisit_p + switch_p)
        other = np.where(g_cur == first, second, first)
        switched = members[other, _sample_rank(rng, pop_cdf[other])]
        nxt = np.where(switch, switched, nxt)
        revisit = (u < revisit_p) & (t >= 2)
        earlier = clicks[rows, (rng.random(S) * (t - 1)).astype(np.int64)]  # not cur's slot
        nxt = np.where(revisit, earlier, nxt)
        clicks[:, t] = nxt
    return clicks, lengths
