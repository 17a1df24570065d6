r"""Session-based nearest neighbours: SKNN, V-SKNN (Ludewig and Jannach, 2018) and
STAN (Garg et al., 2019), vectorised over sparse session-item structures."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from tagnn_pyg.baselines.base import Baseline, TrainData, expand_rows, flatten_training
from tagnn_pyg.utils.checks import check_flag

__all__ = ['SKNN', 'VSKNN', 'STAN']


def _positive_int(value: Any, name: str, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        extra = ' or None (all)' if allow_none else ''
        raise ValueError(f"{name} must be a positive int{extra}, got {value!r}")
    return int(value)


def _decay_length(value: Any, name: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating,
                                                         np.integer)) \
            or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number or None (no "
                         f"decay), got {value!r}")
    return float(value)


def _choice(value: Any, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, "
                         f"got {value!r}")
    return str(value)


def _top_k_per_row(row: Tensor, value: Tensor, k: int, num_rows: int) -> Tensor:
    r"""Indices of the ``k`` largest ``value`` of every row.

    The entries must be grouped by ``row`` (ascending) and, within a row, in
    ascending session order; ties are broken in favour of the later entry (the
    more recent session). Two stable sorts, no loop over rows.
    """
    num = row.numel()
    rev = torch.arange(num - 1, -1, -1, device=row.device)
    order = rev[torch.sort(value[rev], descending=True, stable=True).indices]
    order = order[torch.sort(row[order], stable=True).indices]
    count = torch.bincount(row, minlength=num_rows)
    start = torch.cumsum(count, 0) - count
    rank = torch.arange(num, device=row.device) - start[row[order]]
    return order[rank < k]


class _Pairs:
    r"""Candidate (current session :math:`b`, training session :math:`n`)
    pairs with what the similarities need: per pair ``b``, ``n``, ``overlap``
    (:math:`\sum_{i \in s \cap n} w(i \mid s)`), ``common``
    (:math:`|s \cap n|`), ``recent`` (:math:`\max_{i \in s \cap n} p_s(i)`),
    ``anchor`` and ``n_size`` (:math:`|n|`); per current session ``q_size``
    (:math:`|s|`), ``q_len`` (clicks) and ``q_norm2``
    (:math:`\sum_{i \in s} w(i \mid s)^2`), indexed by ``b``."""

    PER_PAIR = ('b', 'n', 'overlap', 'common', 'recent', 'anchor', 'n_size')
    __slots__ = PER_PAIR + ('q_size', 'q_len', 'q_norm2')

    def __init__(self, **fields: Optional[Tensor]) -> None:
        for name in self.__slots__:
            setattr(self, name, fields.get(name))

    def __getitem__(self, index: Tensor) -> '_Pairs':
        fields = {name: getattr(self, name) for name in self.__slots__}
        for name in self.PER_PAIR:
            if fields[name] is not None:
                fields[name] = fields[name][index]
        return _Pairs(**fields)


class _SessionKNN(Baseline):
    r"""The machinery shared by the session-based k-NN baselines.

    Fitting stores the training sessions as two sparse (CSR) structures over
    the same entries, one per distinct (session, item) pair: session -> items
    and item -> sessions, each entry with the item's **last** position in the
    session (1-based, counting every click). Sessions are numbered in training
    order, which is their date order in the SR-GNN files: session
    :math:`n` is more recent than session :math:`n' < n`. Scoring a batch is a
    fixed sequence of tensor operations (no loop over sessions):

    1. the current sessions' distinct items with weights
       :math:`w(i \mid s)` (a subclass' position weighting);
    2. candidate neighbours: every training session sharing an item with
       :math:`s` (the item -> session rows of :math:`s`' items, coalesced by
       (b, n) with :func:`torch.unique`); this is the sparse product
       :math:`W X^\top` of the current-session weights and the training
       session-item matrix;
    3. the ``sample_size`` most recent candidates of each session
       (session-rec's ``sampling='recent'``);
    4. a similarity per pair, the ``k`` most similar per session (ties: the
       more recent session first);
    5. the scores :math:`z_{s,i} = \sum_{n \in N_k(s)} \mathrm{sim}(s, n)\,
       \phi(s, n, i)\, [i \in n]`: the neighbours' item rows gathered and
       accumulated with :meth:`~torch.Tensor.index_add_`, i.e. the sparse
       product of the neighbour weights and :math:`X` (with a per-entry
       factor :math:`\phi`, 1 unless the subclass says otherwise).

    With ``remind=False`` the items of the current session score 0.
    Scores are accumulated and returned in float64: rounding them to float32
    could merge close but distinct scores into ties, counted against the model.
    """

    _uses_anchor: bool = False

    def __init__(self, k: int, sample_size: Optional[int], remind: bool) -> None:
        super().__init__()
        self.k = _positive_int(k, 'k')
        self.sample_size = _positive_int(sample_size, 'sample_size', allow_none=True)
        self.remind = check_flag('remind', remind)
        self.num_sessions: int = 0
        for name in ('sess_ptr', 'item_ptr'):
            self.register_buffer(name, torch.zeros(1, dtype=torch.long))
        for name in ('sess_item', 'sess_pos', 'item_sess', 'item_pos'):
            self.register_buffer(name, torch.zeros(0, dtype=torch.long))
        self.register_buffer('clicks', torch.zeros(0, dtype=torch.float64))

    def fit(self, train: TrainData, num_items: int) -> '_SessionKNN':
        r"""Index the training sessions (see the module docstring for what
        ``train`` may be).

        Args:
            train (list of sessions or SessionSequences): the training data, in
                date order (the most recent session last).
            num_items (int): number of score columns (item ids incl. padding 0).
        """
        items, session, num_sessions = flatten_training(train, num_items)
        order = np.argsort(session, kind='stable')  # a sequence's target last
        items, session = items[order], session[order]
        length = np.bincount(session, minlength=num_sessions)
        pos = np.arange(items.size) - (np.cumsum(length) - length)[session] + 1
        pairs, inverse = np.unique(session * num_items + items, return_inverse=True)
        last = np.zeros(pairs.size, dtype=np.int64)
        np.maximum.at(last, inverse.reshape(-1), pos)
        sess, item = pairs // num_items, pairs % num_items
        by_item = np.lexsort((sess, item))
        device = self.sess_ptr.device

        def ptr(rows: np.ndarray, size: int) -> Tensor:
            counts = np.bincount(rows, minlength=size)
            return torch.from_numpy(np.concatenate([[0], np.cumsum(counts)])).to(device)

        self.sess_ptr = ptr(sess, num_sessions)
        self.sess_item = torch.from_numpy(item).to(device)
        self.sess_pos = torch.from_numpy(last).to(device)
        self.item_ptr = ptr(item, num_items)
        self.item_sess = torch.from_numpy(sess[by_item]).to(device)
        self.item_pos = torch.from_numpy(last[by_item]).to(device)
        self.clicks = torch.from_numpy(
            np.bincount(items, minlength=num_items).astype(np.float64)).to(device)
        self.num_sessions = int(num_sessions)
        self.num_items = int(num_items)
        return self

    # -- the parts a method defines ---------------------------------------
    def _position_weight(self, pos: Tensor, length: Tensor) -> Tensor:
        r"""Weight of a current-session item at (last) position ``pos`` of
        ``length`` clicks."""
        return torch.ones_like(pos)

    def _similarity(self, pairs: _Pairs) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _pair_factor(self, pairs: _Pairs) -> Optional[Tensor]:
        r"""A factor on a neighbour's contribution that does not take part in
        choosing the neighbours (None: 1)."""
        return None

    def _item_factor(self, item: Tensor, pos: Tensor,
                     anchor: Optional[Tensor]) -> Optional[Tensor]:
        r"""A factor per (neighbour, item) entry (None: 1); ``pos`` is the
        item's position in the neighbour, ``anchor`` the neighbour's anchor
        position (only for ``_uses_anchor``)."""
        return None

    # -- the pipeline --------------------------------------------------------
    def _current(self, batch: Any) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        r"""``(session, item, last position, clicks per session)`` of the
        distinct items of the batch's sessions."""
        items, index, num_sessions = self._clicks(batch)
        order = torch.sort(index, stable=True).indices  # click order kept
        items, index = items[order], index[order]
        length = torch.bincount(index, minlength=num_sessions)
        pos = (torch.arange(items.numel(), device=items.device)
               - (torch.cumsum(length, 0) - length)[index] + 1)
        keys, inverse = torch.unique(index * self.num_items + items,
                                     return_inverse=True)
        last = torch.zeros(keys.numel(), dtype=torch.long, device=items.device)
        last.scatter_reduce_(0, inverse, pos, 'amax', include_self=False)
        return keys // self.num_items, keys % self.num_items, last, length

    def neighbours(self, batch: Any) -> Tuple[_Pairs, Tensor, Tuple[Tensor, Tensor]]:
        r"""The ``k`` nearest training sessions of every session of ``batch``.

        Returns:
            ``(pairs, similarity, (session, item))``: the chosen pairs (grouped
            by current session, most similar first), their similarity, and the
            current sessions' distinct items.
        """
        self._check_fitted()
        q_b, q_item, q_pos, length = self._current(batch)
        num_sessions = batch.last.numel()
        q_len = length.to(torch.float64)
        q_w = self._position_weight(q_pos.to(torch.float64), q_len[q_b])
        q_size = torch.bincount(q_b, minlength=num_sessions).to(torch.float64)
        q_norm2 = torch.zeros(num_sessions, dtype=torch.float64, device=q_w.device)
        q_norm2.index_add_(0, q_b, q_w * q_w)

        owner, index = expand_rows(self.item_ptr, q_item)
        total = self.num_sessions
        keys, inverse = torch.unique(q_b[owner] * total + self.item_sess[index],
                                     return_inverse=True)
        num = keys.numel()
        b, n = keys // total, keys % total
        overlap = torch.zeros(num, dtype=torch.float64, device=keys.device)
        overlap.index_add_(0, inverse, q_w[owner])
        entry_pos = q_pos[owner]
        recent = torch.zeros(num, dtype=torch.long, device=keys.device)
        recent.scatter_reduce_(0, inverse, entry_pos, 'amax', include_self=False)
        anchor = None
        if self._uses_anchor:
            anchor = self._anchor(inverse, entry_pos, recent, self.item_pos[index], num)
        pairs = _Pairs(b=b, n=n, overlap=overlap,
                       common=torch.bincount(inverse, minlength=num).to(torch.float64),
                       recent=recent, anchor=anchor, q_size=q_size, q_len=q_len,
                       q_norm2=q_norm2)
        if self.sample_size is not None:  # the most recent candidates
            count = torch.bincount(b, minlength=num_sessions)
            from_end = (torch.cumsum(count, 0)[b] - 1
                        - torch.arange(num, device=keys.device))
            pairs = pairs[from_end < self.sample_size]
        pairs.n_size = (self.sess_ptr[pairs.n + 1]
                        - self.sess_ptr[pairs.n]).to(torch.float64)
        sim = self._similarity(pairs)
        top = _top_k_per_row(pairs.b, sim, self.k, num_sessions)
        return pairs[top], sim[top], (q_b, q_item)

    def _anchor(self, inverse: Tensor, entry_pos: Tensor, recent: Tensor,
                neighbour_pos: Tensor, num: int) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def scores(self, batch: Any) -> Tensor:
        pairs, weight, (q_b, q_item) = self.neighbours(batch)
        factor = self._pair_factor(pairs)
        if factor is not None:
            weight = weight * factor
        owner, index = expand_rows(self.sess_ptr, pairs.n)
        item = self.sess_item[index]
        value = weight[owner]
        factor = self._item_factor(item, self.sess_pos[index],
                                   None if pairs.anchor is None else pairs.anchor[owner])
        if factor is not None:
            value = value * factor
        num_sessions = batch.last.numel()
        out = torch.zeros(num_sessions * self.num_items, dtype=torch.float64,
                          device=value.device)
        out.index_add_(0, pairs.b[owner] * self.num_items + item, value)
        out = out.view(num_sessions, self.num_items)
        if not self.remind:
            out[q_b, q_item] = 0.0
        return out

    def extra_repr(self) -> str:
        return (f'k={self.k}, sample_size={self.sample_size}, remind={self.remind}, '
                + super().extra_repr())


class SKNN(_SessionKNN):
    r"""Session-based k-nearest neighbours (SKNN; Jannach & Ludewig, RecSys
    2017, "When Recurrent Neural Networks meet the Neighborhood for
    Session-Based Recommendation"; session-rec's ``ContextKNN``).

    The current session :math:`s` and every training session :math:`n` are
    binary item sets. The candidates are the ``sample_size`` most recent
    training sessions sharing an item with :math:`s`; of those, the ``k`` most
    similar form :math:`N_k(s)`, with

    .. math::
        \mathrm{sim}_{\cos}(s, n) = \frac{|s \cap n|}{\sqrt{|s|\,|n|}}
        \quad\text{or}\quad
        \mathrm{sim}_{\mathrm{jac}}(s, n) = \frac{|s \cap n|}{|s \cup n|},

    and the score of item :math:`i` is

    .. math::
        z_{s,i} = \sum_{n \in N_k(s)} \mathrm{sim}(s, n)\, [i \in n].

    (session-rec's ``cosine`` computes ``li / sqrt(la) * sqrt(lb)``, an
    operator-precedence slip; this is the cosine.) Items of :math:`s` are
    scored too unless ``remind=False``; items in no neighbour score 0 (and
    tie, counted against the model). ``ContextKNN``'s own ``remind`` is
    another option (a boost of the last three clicks, off by default) and is
    not built; its code defaults are ``sample_size=1000`` and Jaccard, ours
    the paper's cosine and the ``sample_size=500`` its docstring gives.

    Args:
        k (int, optional): number of neighbours. (default: :obj:`100`)
        sample_size (int, optional): candidates kept per session, the most
            recent ones; :obj:`None` keeps all. (default: :obj:`500`)
        similarity (str, optional): ``'cosine'`` or ``'jaccard'``.
            (default: :obj:`'cosine'`)
        remind (bool, optional): score the current session's own items.
            (default: :obj:`True`)

    Shapes:
        - **input** a batch of :math:`B` sessions
        - **output** :math:`(B, \text{num\_items})`, float64, column 0
          :math:`-\infty`
    """

    SIMILARITIES = ('cosine', 'jaccard')

    def __init__(self, k: int = 100, sample_size: Optional[int] = 500,
                 similarity: str = 'cosine', remind: bool = True) -> None:
        super().__init__(k, sample_size, remind)
        self.similarity = _choice(similarity, 'similarity', self.SIMILARITIES)

    def _similarity(self, pairs: _Pairs) -> Tensor:
        if self.similarity == 'cosine':
            return pairs.common / torch.sqrt(pairs.q_size[pairs.b] * pairs.n_size)
        return pairs.common / (pairs.q_size[pairs.b] + pairs.n_size - pairs.common)

    def extra_repr(self) -> str:
        return f'similarity={self.similarity!r}, ' + super().extra_repr()


class VSKNN(_SessionKNN):
    r"""Vector multiplication session k-NN (V-SKNN; Ludewig & Jannach, UMUAI
    2018, "Evaluation of Session-based Recommendation Algorithms";
    session-rec's ``VMContextKNN``).

    The current session :math:`s = (s_1, \dots, s_L)` becomes a real vector
    whose entries decay towards the session's start: item :math:`i` at (last)
    position :math:`p_s(i)` gets :math:`w(i \mid s) = f(p_s(i), L)` with
    ``weighting`` :math:`f` one of

    .. math::
        \text{same}: 1, \quad \text{div}: \frac{p}{L}, \quad
        \text{quadratic}: \Bigl(\frac{p}{L}\Bigr)^2, \quad
        \text{log}: \frac{1}{\log_{10}(L - p + 1.7)}.

    The similarity to a binary training session :math:`n` is the dot product
    divided by the number of distinct items of :math:`s` (session-rec's
    ``vec``):

    .. math::
        \mathrm{sim}(s, n) = \frac{1}{|s|} \sum_{i \in s \cap n} w(i \mid s).

    Neighbours as in :class:`SKNN`. A neighbour's contribution decays with how
    far back in :math:`s` its most recent shared item lies: with
    :math:`r = \max\{p_s(i) : i \in s \cap n\}` and
    :math:`\mathrm{step} = L - r + 1` (1 when the last click is in :math:`n`),
    ``weighting_score`` :math:`g` one of same :math:`1`, div
    :math:`1/\mathrm{step}`, quadratic :math:`1/\mathrm{step}^2`, log
    :math:`1/\log_{10}(\mathrm{step} + 1.7)`, and optionally an IDF boost
    :math:`\mathrm{idf}(i) = \log(|\mathcal{S}| / \mathrm{clicks}(i))`
    (session-rec counts clicks, not sessions):

    .. math::
        z_{s,i} = \sum_{n \in N_k(s)} \mathrm{sim}(s, n)\, g(\mathrm{step}_{s,n})
        \bigl(1 + \gamma\, \mathrm{idf}(i)\bigr)\, [i \in n],

    :math:`\gamma` = ``idf_weighting`` (0: off).

    Args:
        k (int, optional): number of neighbours. (default: :obj:`100`)
        sample_size (int, optional): candidates kept per session, the most
            recent ones; :obj:`None` keeps all. (default: :obj:`1000`)
        weighting (str, optional): the position weighting :math:`f`.
            (default: :obj:`'div'`)
        weighting_score (str, optional): the neighbour decay :math:`g`.
            (default: :obj:`'div'`)
        idf_weighting (float, optional): :math:`\gamma \ge 0`.
            (default: :obj:`0.0`)
        remind (bool, optional): score the current session's own items.
            (default: :obj:`True`)

    Shapes:
        - **input** a batch of :math:`B` sessions
        - **output** :math:`(B, \text{num\_items})`, float64, column 0
          :math:`-\infty`
    """

    WEIGHTINGS = ('same', 'div', 'quadratic', 'log')

    def __init__(self, k: int = 100, sample_size: Optional[int] = 1000,
                 weighting: str = 'div', weighting_score: str = 'div',
                 idf_weighting: float = 0.0, remind: bool = True) -> None:
        super().__init__(k, sample_size, remind)
        self.weighting = _choice(weighting, 'weighting', self.WEIGHTINGS)
        self.weighting_score = _choice(weighting_score, 'weighting_score',
                                       self.WEIGHTINGS)
        if isinstance(idf_weighting, bool) or not isinstance(
                idf_weighting, (int, float, np.integer, np.floating)) \
                or not np.isfinite(idf_weighting) or idf_weighting < 0:
            raise ValueError(f"idf_weighting must be a finite number >= 0, got "
                             f"{idf_weighting!r}")
        self.idf_weighting = float(idf_weighting)

    def _position_weight(self, pos: Tensor, length: Tensor) -> Tensor:
        if self.weighting == 'same':
            return torch.ones_like(pos)
        if self.weighting == 'div':
            return pos / length
        if self.weighting == 'quadratic':
            return (pos / length) ** 2
        return 1.0 / torch.log10(length - pos + 1.7)

    def _similarity(self, pairs: _Pairs) -> Tensor:
        return pairs.overlap / pairs.q_size[pairs.b]

    def _pair_factor(self, pairs: _Pairs) -> Optional[Tensor]:
        step = pairs.q_len[pairs.b] - pairs.recent + 1
        if self.weighting_score == 'same':
            return None
        if self.weighting_score == 'div':
            return 1.0 / step
        if self.weighting_score == 'quadratic':
            return 1.0 / (step * step)
        return 1.0 / torch.log10(step + 1.7)

    def _item_factor(self, item: Tensor, pos: Tensor,
                     anchor: Optional[Tensor]) -> Optional[Tensor]:
        if self.idf_weighting == 0:
            return None
        idf = torch.log(self.num_sessions / self.clicks[item])
        return 1.0 + self.idf_weighting * idf

    def extra_repr(self) -> str:
        return (f'weighting={self.weighting!r}, weighting_score='
                f'{self.weighting_score!r}, idf_weighting={self.idf_weighting}, '
                + super().extra_repr())


class STAN(_SessionKNN):
    r"""Sequence and Time Aware Neighbourhood (STAN; Garg, Gupta, Agarwal, Kumar
    and Gupta, SIGIR 2019).

    Three exponential decays on top of :class:`SKNN`:

    1. **sequence-aware current session.** Item :math:`i` of :math:`s =
       (s_1, \dots, s_L)` at (last) position :math:`p_s(i)` weighs
       :math:`w_1(i \mid s) = \exp\bigl((p_s(i) - L) / \lambda_1\bigr)`, and

       .. math::
           \mathrm{sim}(s, n) = \frac{\sum_{i \in s \cap n} w_1(i \mid s)}
           {\sqrt{\sum_{i \in s} w_1(i \mid s)^2}\,\sqrt{|n|}}
           \cdot w_2(n)

       (the cosine of the weighted :math:`s` and the binary :math:`n`, as
       session-rec computes it; the paper normalises by
       :math:`\sqrt{l(s)\,l(n)}`: the two differ by a factor constant per
       current session, so the rankings are the same).
    2. **neighbour recency.** :math:`w_2(n) = \exp\bigl(-(t(s) - t(n)) /
       \lambda_2\bigr)`. The SR-GNN files carry no timestamps, so time is
       ordinal: :math:`t(n)` is the session's index in the (date-ordered)
       training data and :math:`t(s) - t(n) = |\mathcal{S}| - 1 - n`
       sessions ago, counted from the most recent training session (the
       current session's own offset is a constant factor per session and
       does not change its ranking). :math:`\lambda_2` is a number of
       sessions (session-rec's default is 5 days; Diginetica's training data
       hold about 1,300 sessions a day). On both SR-GNN data sets the honest
       validation split prefers no such decay (``lambda2=None``; see
       ``docs/baselines.md``): session order is a weak proxy for time.
    3. **neighbour positions.** An item of a neighbour counts more the closer
       it is, in :math:`n`, to the anchor :math:`a(s, n)`:

       .. math::
           w_3(i \mid s, n) = \exp\bigl(-|p_n(i) - p_n(a)| / \lambda_3\bigr),
           \qquad z_{s,i} = \sum_{n \in N_k(s)} \mathrm{sim}(s, n)\,
           w_3(i \mid s, n)\, [i \in n].

       With ``anchor='recent'`` (the paper's definition) :math:`a` is the most
       recent item of :math:`s` that occurs in :math:`n`; with
       ``anchor='last'`` (session-rec's ``pos_i_star``) :math:`p_n(a)` is the
       last position in :math:`n` holding any item of :math:`s`. Positions
       :math:`p_n(\cdot)` are last occurrences, 1-based, counting all clicks.

    Any :math:`\lambda` set to :obj:`None` switches its decay off.

    Args:
        k (int, optional): number of neighbours. (default: :obj:`100`)
        sample_size (int, optional): candidates kept per session, the most
            recent ones; :obj:`None` keeps all. (default: :obj:`5000`)
        lambda1 (float, optional): :math:`\lambda_1`, in clicks.
            (default: :obj:`1.02`)
        lambda2 (float, optional): :math:`\lambda_2`, in training sessions.
            (default: :obj:`6500.0`, about 5 days of Diginetica)
        lambda3 (float, optional): :math:`\lambda_3`, in clicks.
            (default: :obj:`2.05`)
        anchor (str, optional): ``'recent'`` or ``'last'``.
            (default: :obj:`'recent'`)
        remind (bool, optional): score the current session's own items.
            (default: :obj:`True`)

    Shapes:
        - **input** a batch of :math:`B` sessions
        - **output** :math:`(B, \text{num\_items})`, float64, column 0
          :math:`-\infty`
    """

    ANCHORS = ('recent', 'last')
    _uses_anchor = True

    def __init__(self, k: int = 100, sample_size: Optional[int] = 5000,
                 lambda1: Optional[float] = 1.02, lambda2: Optional[float] = 6500.0,
                 lambda3: Optional[float] = 2.05, anchor: str = 'recent',
                 remind: bool = True) -> None:
        super().__init__(k, sample_size, remind)
        self.lambda1 = _decay_length(lambda1, 'lambda1')
        self.lambda2 = _decay_length(lambda2, 'lambda2')
        self.lambda3 = _decay_length(lambda3, 'lambda3')
        self.anchor = _choice(anchor, 'anchor', self.ANCHORS)

    def _position_weight(self, pos: Tensor, length: Tensor) -> Tensor:
        if self.lambda1 is None:
            return torch.ones_like(pos)
        return torch.exp((pos - length) / self.lambda1)

    def _similarity(self, pairs: _Pairs) -> Tensor:
        sim = pairs.overlap / torch.sqrt(pairs.q_norm2[pairs.b] * pairs.n_size)
        if self.lambda2 is not None:
            ago = (self.num_sessions - 1 - pairs.n).to(torch.float64)
            sim = sim * torch.exp(-ago / self.lambda2)
        return sim

    def _anchor(self, inverse: Tensor, entry_pos: Tensor, recent: Tensor,
                neighbour_pos: Tensor, num: int) -> Tensor:
        anchor = torch.zeros(num, dtype=torch.long, device=inverse.device)
        if self.anchor == 'last':
            return anchor.scatter_reduce_(0, inverse, neighbour_pos, 'amax',
                                          include_self=False)
        is_recent = entry_pos == recent[inverse]  # one entry per pair
        anchor[inverse[is_recent]] = neighbour_pos[is_recent]
        return anchor

    def _item_factor(self, item: Tensor, pos: Tensor,
                     anchor: Optional[Tensor]) -> Optional[Tensor]:
        if self.lambda3 is None:
            return None
        assert anchor is not None
        return torch.exp(-(pos - anchor).abs().to(torch.float64) / self.lambda3)

    def extra_repr(self) -> str:
        return (f'lambda1={self.lambda1}, lambda2={self.lambda2}, lambda3='
                f'{self.lambda3}, anchor={self.anchor!r}, ' + super().extra_repr())

