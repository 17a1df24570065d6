r"""Top-K ranking metrics for next-item recommendation: HR@K, MRR@K, NDCG@K.

Every test case is one session prefix with one target item :math:`t`. A model
scores all items (column :math:`j` of the score matrix is item id :math:`j`,
column 0 is the padding id and is never ranked), and the **rank** of the target
is computed over the full catalogue with ties counted against the model:

.. math::
    r = \bigl|\{\, j \ne 0 : z_j \ge z_t \,\}\bigr| \in \{1, \dots, M - 1\},

so an item scored equal to the target is ranked above it (an all-equal score
vector ranks the target last), and an item scored :math:`-\infty` never ranks
above a finite target score. Over :math:`n` test cases, in **percent**:

.. math::
    \mathrm{HR@K} &= \frac{100}{n} \sum_{c} [r_c \le K] \\
    \mathrm{MRR@K} &= \frac{100}{n} \sum_{c} \frac{[r_c \le K]}{r_c} \\
    \mathrm{NDCG@K} &= \frac{100}{n} \sum_{c} \frac{[r_c \le K]}{\log_2(r_c + 1)}

(a case whose target ranks beyond :math:`K` adds 0 to all three; with a single
relevant item the ideal DCG is 1).

Naming: HR@K is what the SR-GNN, TAGNN and TAGNN++ papers call **P@20**
("precision") or **Recall@20**: the share of test cases whose target is among the
top :math:`K`. It is *not* RecBole's ``Precision@K``, which divides the hits by
:math:`K` (so RecBole's Precision@20 = HR@20 / 20), while RecBole's ``Hit@K``
and ``Recall@K`` equal HR@K when there is one target per case.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from tagnn_pyg.utils.device import host_reads_are_free

__all__ = ['target_rank', 'TopKMetrics', 'Evaluator', 'METRIC_NAMES']

METRIC_NAMES: Tuple[str, ...] = ('HR', 'MRR', 'NDCG')


def _check_scores_target(scores: Tensor, target: Tensor, scores_name: str = 'scores',
                         target_name: str = 'target') -> Tensor:
    r"""Shape and dtype checks that need no device synchronisation; returns
    ``target`` as a vector (``[B, 1]`` is accepted). The names are those the
    caller's user knows the arguments by (``y_pred`` / ``y_true`` for
    :class:`Evaluator`)."""
    if not isinstance(scores, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"{scores_name} and {target_name} must be tensors, got "
                        f"{type(scores).__name__} and {type(target).__name__}")
    if scores.dim() != 2:
        raise ValueError(f"{scores_name} must be a [batch, num_items] matrix, got "
                         f"shape {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise ValueError(f"{scores_name} must hold floating-point scores, got dtype "
                         f"{scores.dtype}")
    if target.dim() == 2 and target.size(1) == 1:
        target = target.view(-1)
    if target.dim() != 1:
        raise ValueError(f"{target_name} must be a vector of item ids [batch] (or "
                         f"[batch, 1]), got shape {tuple(target.shape)}")
    if target.size(0) != scores.size(0):
        raise ValueError(f"{target.size(0)} targets for {scores.size(0)} score rows: "
                         f"{target_name} has {target.size(0)} cases but {scores_name} "
                         f"has {scores.size(0)} rows (one item id per row)")
    if target.dtype in (torch.bool, ) or target.is_floating_point() \
            or target.is_complex():
        raise ValueError(f"{target_name} must hold integer item ids, got dtype "
                         f"{target.dtype}")
    if scores.size(1) < 2:
        raise ValueError(f"{scores_name} must have at least 2 columns (column 0 is the "
                         f"padding id), got {scores.size(1)}")
    if target.device != scores.device:
        raise ValueError(f"{target_name} is on {target.device} but {scores_name} are "
                         f"on {scores.device}")
    return target


def _check_values(scores: Tensor, target: Tensor) -> None:
    r"""Value checks (these synchronise with the device when it is not the CPU)."""
    num_items = scores.size(1)
    if target.numel():
        bad = (target < 1) | (target >= num_items)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise ValueError(f"target of row {i} is item id {int(target[i])}, outside "
                             f"1..{num_items - 1} (0 is the padding id and the "
                             f"score matrix has {num_items} columns)")
    nan_rows = torch.isnan(scores.amax(dim=1))   # amax propagates NaN: one pass
    if bool(nan_rows.any()):
        i = int(nan_rows.nonzero()[0])
        raise ValueError(f"scores of row {i} (and {int(nan_rows.sum()) - 1} other "
                         f"rows) contain NaN: a NaN score cannot be ranked; check the "
                         f"model for non-finite values")


def _rank(scores: Tensor, target: Tensor) -> Tensor:
    r"""Rank without any check (no device synchronisation)."""
    target = target.view(-1).long()
    # Clamp only so that a bad id cannot index out of bounds; bad ids are
    # reported by the checks, never silently ranked.
    safe = target.clamp(0, scores.size(1) - 1)
    target_score = scores.gather(1, safe.view(-1, 1))
    # int32 accumulation: 5x faster than the default int64 sum of a bool matrix
    rank = (scores >= target_score).sum(dim=1, dtype=torch.int32).long()
    # Column 0 (padding) never takes part in the ranking:
    rank = rank - (scores[:, 0:1] >= target_score).view(-1).long()
    return rank


def target_rank(scores: Tensor, target: Tensor, validate: bool = True) -> Tensor:
    r"""The 1-based rank of each target item in a full ranking of all items.

    .. math::
        r_b = \bigl|\{\, j \in \{1, \dots, M - 1\} : z_{b,j} \ge z_{b,t_b} \,\}\bigr|

    Ties are counted against the model (an item scored equal to the target
    ranks above it, so an all-equal row ranks the target last, at
    :math:`M - 1`). Column 0 is the padding id and never counts, whatever its
    score; an item scored :math:`-\infty` never counts above a finite target
    score.

    Args:
        scores (Tensor): item scores, column :math:`j` = item id :math:`j`.
        target (LongTensor): the target item id of each row (``[B]`` or
            ``[B, 1]``), in :math:`1 \dots M-1`.
        validate (bool, optional): check target ids are in range and scores
            hold no NaN, raising a :class:`ValueError` naming the first bad
            row. These checks synchronise with a GPU; :class:`TopKMetrics`
            defers them to :meth:`~TopKMetrics.compute` instead.
            (default: :obj:`True`)

    Shapes:
        - **scores** :math:`(B, M)`, **target** :math:`(B,)` or :math:`(B, 1)`
        - **output** :math:`(B,)` long, on ``scores.device``

    Example:
        >>> scores = torch.tensor([[float('-inf'), 0.1, 0.7, 0.7, 0.2]])
        >>> target_rank(scores, torch.tensor([2]))  # item 3 ties: counted above
        tensor([2])
    """
    target = _check_scores_target(scores, target)
    if validate:
        _check_values(scores, target)
    return _rank(scores, target)


class TopKMetrics:
    r"""Streaming HR@K, MRR@K and NDCG@K (in percent) over many batches.

    For every batch, :meth:`update` ranks each target (see :func:`target_rank`)
    and adds

    .. math::
        [r \le K], \qquad \frac{[r \le K]}{r}, \qquad
        \frac{[r \le K]}{\log_2(r + 1)}

    to running sums for every :math:`K` in ``ks``; :meth:`compute` divides by
    the number of cases and multiplies by 100. HR@K is the papers' P@K /
    Recall@K (not RecBole's Precision@K = HR@K / K).

    The sums live on the device of the first scores given (float64 there, or
    float32 where float64 is unsupported): no score matrix is copied to the
    host and :meth:`update` never synchronises with the device. Value checks
    that need a synchronisation (target ids in range, NaN scores) are
    therefore accumulated as counters on the device and raised by
    :meth:`compute`; on the CPU they are raised by :meth:`update` at once.

    Args:
        ks (sequence of int, optional): the cut-offs :math:`K`.
            (default: :obj:`(5, 10, 20)`)

    Example:
        >>> metrics = TopKMetrics(ks=(1, 2))
        >>> metrics.update(torch.tensor([[-float('inf'), 3., 2., 1.]]),
        ...                torch.tensor([2]))
        >>> metrics.compute()
        {'HR@1': 0.0, 'HR@2': 100.0, 'MRR@1': 0.0, 'MRR@2': 50.0, 'NDCG@1': 0.0,
         'NDCG@2': 63.09...}
    """

    def __init__(self, ks: Sequence[int] = (5, 10, 20)) -> None:
        if isinstance(ks, int):
            ks = (ks, )
        ks = tuple(ks)
        if len(ks) == 0:
            raise ValueError("ks must hold at least one cut-off K, got ()")
        for k in ks:
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
                raise ValueError(f"every K in ks must be a positive integer, got "
                                 f"{k!r} in {ks}")
        if len(set(ks)) != len(ks):
            raise ValueError(f"ks holds a duplicate cut-off: {ks}")
        self.ks: Tuple[int, ...] = tuple(sorted(int(k) for k in ks))
        self.reset()

    def reset(self) -> None:
        r"""Forget every case seen so far."""
        self._sums: Optional[Tensor] = None  # [3, len(ks)]: HR, MRR, NDCG
        self._bad: Optional[Tensor] = None  # [2]: bad target rows, NaN rows
        self._count = 0

    @property
    def count(self) -> int:
        r"""Number of test cases seen since the last :meth:`reset` (known on the
        host from the batch shapes; no synchronisation)."""
        return self._count

    def update(self, scores: Tensor, target: Tensor) -> None:
        r"""Add one batch of test cases.

        Args:
            scores (Tensor): item scores, column :math:`j` = item id :math:`j`
                (column 0, the padding id, is ignored).
            target (LongTensor): target item id of each row.

        Shapes:
            - **scores** :math:`(B, M)`, **target** :math:`(B,)` or :math:`(B, 1)`
        """
        target = _check_scores_target(scores, target)
        scores = scores.detach()
        device = scores.device
        check_now = host_reads_are_free(device)
        if check_now:
            _check_values(scores, target)  # no device to wait for: fail early
        if self._sums is None:
            dtype = torch.float32 if device.type == 'mps' else torch.float64
            self._sums = torch.zeros(3, len(self.ks), dtype=dtype, device=device)
            self._bad = torch.zeros(2, dtype=torch.long, device=device)
        elif self._sums.device != device:
            raise ValueError(f"scores are on {device} but this TopKMetrics "
                             f"accumulates on {self._sums.device}; call reset() to "
                             f"switch devices")
        assert self._bad is not None
        if scores.size(0) == 0:
            return

        rank = _rank(scores, target).to(self._sums.dtype)  # [B]
        ks = torch.tensor(self.ks, dtype=self._sums.dtype, device=device)
        hit = (rank.view(-1, 1) <= ks.view(1, -1)).to(self._sums.dtype)  # [B, |K|]
        self._sums[0] += hit.sum(dim=0)
        self._sums[1] += (hit / rank.view(-1, 1)).sum(dim=0)
        self._sums[2] += (hit / torch.log2(rank.view(-1, 1) + 1)).sum(dim=0)
        if not check_now:
            bad_target = ((target < 1) | (target >= scores.size(1))).sum()
            nan_rows = torch.isnan(scores.amax(dim=1)).sum()
            self._bad += torch.stack([bad_target, nan_rows])
        self._count += scores.size(0)

    def packed_sums(self, device: Optional[torch.device] = None) -> Tensor:
        r"""The running state as one vector, so that processes can add theirs
        (``torch.distributed.all_reduce``) and :meth:`load_packed_sums` the total:
        ``[HR sums, MRR sums, NDCG sums]`` (:math:`|K|` each), then the counts of
        bad-target and NaN rows, then the number of cases. Zeros before any
        update (on ``device``, default CPU).

        Shapes:
            - **output:** :math:`(3|K| + 3)`, float64 (float32 on MPS)
        """
        k = len(self.ks)
        dev = self._sums.device if self._sums is not None else (device or torch.device('cpu'))
        dtype = self._sums.dtype if self._sums is not None else (
            torch.float32 if dev.type == 'mps' else torch.float64)
        packed = torch.zeros(3 * k + 3, dtype=dtype, device=dev)
        if self._sums is not None:
            assert self._bad is not None
            packed[:3 * k] = self._sums.reshape(-1)
            packed[3 * k:3 * k + 2] = self._bad.to(dtype)
        packed[-1] = float(self._count)
        return packed

    def load_packed_sums(self, packed: Tensor) -> None:
        r"""Replace the running state by ``packed`` (the layout of
        :meth:`packed_sums`)."""
        k = len(self.ks)
        if packed.dim() != 1 or packed.numel() != 3 * k + 3:
            raise ValueError(f"packed sums must be a vector of 3 * {k} + 3 = {3 * k + 3} "
                             f"values for ks={self.ks}, got shape {tuple(packed.shape)}")
        self._sums = packed[:3 * k].reshape(3, k).clone()
        self._bad = packed[3 * k:3 * k + 2].round().long()
        self._count = int(round(float(packed[-1])))

    def compute(self) -> Dict[str, float]:
        r"""The metrics in percent, keys ``'HR@K'``, ``'MRR@K'``, ``'NDCG@K'``
        for every :math:`K` (one device synchronisation).

        Raises:
            ValueError: if no case was seen, or some case had a target id out of
                range or a NaN score (detected on a GPU, reported here).
        """
        if self._count == 0 or self._sums is None:
            raise ValueError("TopKMetrics.compute() called before any update(): "
                             "no test case to average over")
        assert self._bad is not None
        bad_target, nan_rows = self._bad.tolist()
        if bad_target:
            raise ValueError(f"{bad_target} of {self._count} test cases had a target "
                             f"item id outside 1..num_items-1 (0 is the padding id)")
        if nan_rows:
            raise ValueError(f"{nan_rows} of {self._count} test cases had NaN scores: "
                             f"a NaN score cannot be ranked; check the model for "
                             f"non-finite values")
        values = (self._sums * (100.0 / self._count)).tolist()
        out: Dict[str, float] = {}
        for m, name in enumerate(METRIC_NAMES):
            for j, k in enumerate(self.ks):
                out[f'{name}@{k}'] = float(values[m][j])
        return out

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(ks={self.ks}, count={self._count})'


# ---------------------------------------------------------------------------
# OGB-style evaluator
# ---------------------------------------------------------------------------

#: Known data sets: the number of score columns (item ids incl. padding 0), or
#: ``None`` where it depends on how the data was built.
EVALUATOR_DATASETS: Dict[str, Optional[int]] = {
    'diginetica': 43098,
    'yoochoose1_64': 37484,
    'yoochoose1_4': 37484,
    'synthetic': None,
    'session': None,
}


class Evaluator:
    r"""Evaluator with the interface of OGB's ``ogb.*.Evaluator`` (``ogb`` is
    not needed): ``Evaluator(name).eval({'y_true': ..., 'y_pred': ...})``.

    ``y_true`` holds the target item id of each test case and ``y_pred`` the
    scores of all items (column :math:`j` = item id :math:`j`; column 0 is the
    padding id and is never ranked). The result holds HR@K, MRR@K and NDCG@K in
    percent for every :math:`K` in ``ks`` (see :class:`TopKMetrics`; HR@20 is
    the papers' P@20 / Recall@20); ``eval_metric`` names the headline metric.

    Args:
        name (str): the data set, one of ``'diginetica'``, ``'yoochoose1_64'``,
            ``'yoochoose1_4'`` (these also check the number of score columns),
            ``'synthetic'`` or ``'session'`` (any other data in the SR-GNN
            format).
        ks (sequence of int, optional): the cut-offs. (default: :obj:`(5, 10, 20)`)
        chunk_size (int, optional): rows ranked at a time, bounding the memory
            of the comparison matrices. (default: :obj:`4096`)

    Example:
        >>> evaluator = Evaluator('session')
        >>> evaluator.eval({'y_true': torch.tensor([1]),
        ...                 'y_pred': torch.tensor([[0., 2., 1.]])})['HR@5']
        100.0
    """

    def __init__(self, name: str, ks: Sequence[int] = (5, 10, 20),
                 chunk_size: int = 4096) -> None:
        if name not in EVALUATOR_DATASETS:
            raise ValueError(f"unknown evaluator name {name!r}: expected one of "
                             f"{sorted(EVALUATOR_DATASETS)} ('session' fits any "
                             f"data in the SR-GNN format)")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.name = name
        self.num_items: Optional[int] = EVALUATOR_DATASETS[name]
        self.ks = TopKMetrics(ks).ks
        self.chunk_size = int(chunk_size)
        self.eval_metric = f'HR@{max(self.ks)}'

    @property
    def expected_input_format(self) -> str:
        cols = self.num_items if self.num_items is not None else 'num_items'
        return (f"==== Expected input format of Evaluator: {self.name}\n"
                f"{{'y_true': y_true, 'y_pred': y_pred}}\n"
                f"- y_true: numpy ndarray or torch tensor of shape (num_cases,) "
                f"(or (num_cases, 1)), integer dtype: the target item id of each "
                f"test case, in 1..{cols}-1 (0 is the padding id)\n"
                f"- y_pred: numpy ndarray or torch tensor of shape (num_cases, "
                f"{cols}), floating dtype: the score of every item id (column j = "
                f"item id j; column 0 is ignored; ties are counted against the "
                f"model; NaN is an error)\n")

    @property
    def expected_output_format(self) -> str:
        keys = ', '.join(f"'{m}@{k}'" for m in METRIC_NAMES for k in self.ks)
        return (f"==== Expected output format of Evaluator: {self.name}\n"
                f"{{{keys}}}\n"
                f"- every value is a Python float in percent (0..100) over all "
                f"test cases; HR@K is the share of cases whose target ranks in the "
                f"top K (the papers' P@K / Recall@K), MRR@K the mean reciprocal "
                f"rank (0 beyond K), NDCG@K the mean 1/log2(rank+1) (0 beyond K)\n"
                f"- eval_metric: {self.eval_metric!r}\n")

    @staticmethod
    def _as_tensor(value: Any, key: str) -> Tensor:
        if isinstance(value, Tensor):
            return value
        if isinstance(value, np.ndarray):
            return torch.from_numpy(value)
        raise TypeError(f"input_dict[{key!r}] must be a numpy ndarray or a torch "
                        f"tensor, got {type(value).__name__}")

    def _parse_and_check_input(self, input_dict: Mapping[str, Any]) -> Tuple[Tensor, Tensor]:
        if not isinstance(input_dict, Mapping):
            raise TypeError(f"input_dict must be a dict with keys 'y_true' and "
                            f"'y_pred', got {type(input_dict).__name__}")
        missing = [k for k in ('y_true', 'y_pred') if k not in input_dict]
        if missing:
            raise KeyError(f"input_dict is missing {missing} (got keys "
                           f"{sorted(map(str, input_dict))}); "
                           f"{self.expected_input_format}")
        y_pred = self._as_tensor(input_dict['y_pred'], 'y_pred')
        y_true = self._as_tensor(input_dict['y_true'], 'y_true').to(y_pred.device)
        y_true = _check_scores_target(y_pred, y_true, 'y_pred', 'y_true')
        if y_true.size(0) == 0:
            raise ValueError("y_true and y_pred hold no test case")
        if self.num_items is not None and y_pred.size(1) != self.num_items:
            raise ValueError(f"y_pred has {y_pred.size(1)} columns but {self.name!r} "
                             f"has {self.num_items} item ids (incl. padding 0)")
        return y_true.long(), y_pred

    def eval(self, input_dict: Mapping[str, Any]) -> Dict[str, float]:
        r"""Rank every target among all items and return the metrics (percent).

        Args:
            input_dict (dict): ``{'y_true': [num_cases] target ids,
                'y_pred': [num_cases, num_items] scores}`` as numpy arrays or
                torch tensors (see :attr:`expected_input_format`).
        """
        y_true, y_pred = self._parse_and_check_input(input_dict)
        metrics = TopKMetrics(self.ks)
        for start in range(0, y_true.size(0), self.chunk_size):
            end = start + self.chunk_size
            metrics.update(y_pred[start:end], y_true[start:end])
        return metrics.compute()

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.name!r}, ks={self.ks})'
