r"""Item-KNN (Sarwar et al., 2001), the papers' item-to-item baseline."""
from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.preprocessing import normalize
from torch import Tensor

from tagnn_pyg.baselines.base import Baseline, TrainData, expand_rows, flatten_training
from tagnn_pyg.utils.checks import check_flag

__all__ = ['ItemKNN']


class ItemKNN(Baseline):
    r"""Item-based nearest neighbours (Sarwar et al., 2001) as in the papers:
    items similar to the session's **last** click, similarity being the cosine
    of the items' occurrence vectors over the training sessions.

    With :math:`X \in \{0, 1\}^{\text{num\_items} \times |\mathcal{S}|}`,
    :math:`X_{j,s} = 1` iff item :math:`j` occurs in training session :math:`s`
    (a repeat counts once),

    .. math::
        \mathrm{sim}(i, j) = \frac{X_i \cdot X_j}{\lVert X_i \rVert\,
        \lVert X_j \rVert} = \frac{|S_i \cap S_j|}{\sqrt{|S_i|\,|S_j|}},
        \qquad z_{b,j} = \mathrm{sim}(\text{last}_b, j),

    :math:`S_i` being the set of training sessions containing :math:`i`. The
    last item itself gets 0 (``exclude_self=True``, as in the GRU4Rec
    baseline code), and with ``k`` only the :math:`k` most similar items of each
    item keep their similarity. Items with no co-occurrence score 0 (and tie,
    counted against the model by :mod:`tagnn_pyg.metrics`).

    The similarity matrix is built with SciPy sparse products (rows
    L2-normalised with :func:`sklearn.preprocessing.normalize`) and kept as
    CSR buffers; scoring gathers the last items' rows, vectorised.

    Args:
        k (int, optional): keep only the :math:`k` nearest neighbours of each
            item (all by default).
        exclude_self (bool, optional): score the last item itself 0 rather than
            its self-similarity 1. (default: :obj:`True`)

    Shapes:
        - **input** a batch of :math:`B` sessions
        - **output** :math:`(B, \text{num\_items})`, float32, column 0 :math:`-\infty`
    """

    def __init__(self, k: Optional[int] = None, exclude_self: bool = True) -> None:
        super().__init__()
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer))
                              or k < 1):
            raise ValueError(f"k must be a positive number of neighbours or None, "
                             f"got {k!r}")
        self.k = None if k is None else int(k)
        self.exclude_self = check_flag('exclude_self', exclude_self)
        self.register_buffer('crow', torch.zeros(1, dtype=torch.long))
        self.register_buffer('col', torch.zeros(0, dtype=torch.long))
        self.register_buffer('value', torch.zeros(0))

    def fit(self, train: TrainData, num_items: int) -> 'ItemKNN':
        r"""Build the item-item cosine similarity matrix.

        Args:
            train (list of sessions or SessionSequences): the training data.
            num_items (int): number of score columns (item ids incl. padding 0).
        """
        items, session, num_sessions = flatten_training(train, num_items)
        occ = sp.csr_matrix((np.ones(items.size, dtype=np.float64), (items, session)),
                            shape=(num_items, num_sessions))
        occ.data[:] = 1.0  # duplicates were summed: binary occurrence
        occ = normalize(occ, norm='l2', axis=1)
        sim = (occ @ occ.T).tocsr()
        if self.exclude_self:
            sim.setdiag(0.0)
        sim.eliminate_zeros()
        sim.sort_indices()
        if self.k is not None:
            sim = self._top_k(sim, self.k)
        device = self.value.device
        self.crow = torch.from_numpy(sim.indptr.astype(np.int64)).to(device)
        self.col = torch.from_numpy(sim.indices.astype(np.int64)).to(device)
        self.value = torch.from_numpy(sim.data.astype(np.float32)).to(device)
        self.num_items = int(num_items)
        return self

    @staticmethod
    def _top_k(sim: sp.csr_matrix, k: int) -> sp.csr_matrix:
        r"""Keep the ``k`` largest entries of every row (ties: lower item id)."""
        rows = np.repeat(np.arange(sim.shape[0]), np.diff(sim.indptr))
        order = np.lexsort((sim.indices, -sim.data, rows))
        start = sim.indptr[rows[order]]
        keep = order[(np.arange(order.size) - start) < k]
        out = sp.csr_matrix((sim.data[keep], (rows[keep], sim.indices[keep])),
                            shape=sim.shape)
        out.sort_indices()
        return out

    @property
    def similarity(self) -> Tensor:
        r"""The item-item similarity as a sparse CSR tensor
        :math:`(\text{num\_items}, \text{num\_items})`."""
        self._check_fitted()
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter('ignore', UserWarning)
            return torch.sparse_csr_tensor(self.crow, self.col, self.value,
                                           size=(self.num_items, self.num_items),
                                           check_invariants=True)

    def scores(self, batch: Any) -> Tensor:
        last = self._last_items(batch)
        rows, pos = expand_rows(self.crow, last)
        out = torch.zeros(last.numel(), self.num_items, dtype=self.value.dtype,
                          device=last.device)
        out[rows, self.col[pos]] = self.value[pos]
        return out

    def extra_repr(self) -> str:
        return (f'k={self.k}, exclude_self={self.exclude_self}, '
                + super().extra_repr())

