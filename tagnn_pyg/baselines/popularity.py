r"""Popularity baselines of the SR-GNN / TAGNN papers: POP and S-POP."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tagnn_pyg.baselines.base import Baseline, TrainData, click_counts, flatten_training
from tagnn_pyg.utils.checks import require_fields

__all__ = ['POP', 'SPOP']


class POP(Baseline):
    r"""Global popularity: every session gets the same ranking, items by their
    number of clicks in the training sessions.

    .. math::
        z_{b,j} = \mathrm{pop}(j) = \sum_{s \in \mathcal{S}_{train}}
        \bigl|\{\, k : s_k = j \,\}\bigr|

    i.e. the count of item :math:`j` over all clicks of all training sessions
    (targets included: with whole sessions, every click counts once; see the
    module docstring for :class:`~tagnn_pyg.data.SessionSequences`). Items never
    clicked in training score 0.

    Shapes:
        - **input** a batch of :math:`B` sessions
        - **output** :math:`(B, \text{num\_items})`, float32 counts, column 0
          :math:`-\infty`
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer('popularity', torch.zeros(0))

    def fit(self, train: TrainData, num_items: int) -> 'POP':
        r"""Count the training clicks.

        Args:
            train (list of sessions or SessionSequences): the training data.
            num_items (int): number of score columns (item ids incl. padding 0).
        """
        items, _, _ = flatten_training(train, num_items)
        self.popularity = click_counts(items, num_items).to(
            torch.float32).to(self.popularity.device)
        self.num_items = int(num_items)
        return self

    def scores(self, batch: Any) -> Tensor:
        require_fields(batch, 'last')
        num_sessions = batch.last.numel()
        return self.popularity.view(1, -1).repeat(num_sessions, 1)


class SPOP(Baseline):
    r"""Session popularity (S-POP): the items of the current session first, by
    their number of clicks in it, ties among them and all other items by their
    global training popularity (as :class:`POP`).

    The score is an exact integer that encodes this lexicographic order:

    .. math::
        z_{b,j} = c_b(j) \cdot U + \rho(j)

    where :math:`c_b(j)` is the number of clicks on :math:`j` in session
    :math:`b`, :math:`\rho(j) \in \{0, \dots, U - 1\}` is the dense rank of
    :math:`\mathrm{pop}(j)` among the :math:`U` distinct popularity values
    (equal popularity, equal :math:`\rho`), so every item clicked in the
    session scores above every item that was not. Scores are float32 while
    they are exact integers (:math:`(L + 1) U < 2^{24}` with :math:`L` the
    clicks in the batch), float64 otherwise.

    Shapes:
        - **input** a batch of :math:`B` sessions
        - **output** :math:`(B, \text{num\_items})`, column 0 :math:`-\infty`
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer('popularity', torch.zeros(0))
        self.register_buffer('pop_rank', torch.zeros(0))
        self.num_levels: int = 0

    def fit(self, train: TrainData, num_items: int) -> 'SPOP':
        r"""Count the training clicks (see :class:`POP`).

        Args:
            train (list of sessions or SessionSequences): the training data.
            num_items (int): number of score columns (item ids incl. padding 0).
        """
        items, _, _ = flatten_training(train, num_items)
        pop = click_counts(items, num_items)
        levels, rank = torch.unique(pop, sorted=True, return_inverse=True)
        device = self.popularity.device
        self.popularity = pop.to(torch.float32).to(device)
        self.pop_rank = rank.to(torch.float64).to(device)
        self.num_levels = int(levels.numel())
        self.num_items = int(num_items)
        return self

    def scores(self, batch: Any) -> Tensor:
        items, index, num_sessions = self._clicks(batch)
        exact32 = (items.numel() + 1) * self.num_levels < 2**24
        dtype = torch.float32 if exact32 else torch.float64
        out = self.pop_rank.to(dtype).view(1, -1).repeat(num_sessions, 1)
        flat = index * self.num_items + items
        out.view(-1).index_add_(
            0, flat, torch.full(flat.shape, float(self.num_levels), dtype=dtype,
                                device=out.device))
        return out

