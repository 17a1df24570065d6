r"""The non-neural baselines of the SR-GNN / TAGNN / TAGNN++ papers (POP, S-POP
and Item-KNN) and the session-based nearest-neighbour methods that recent
evaluations find as strong as the neural models (SKNN, V-SKNN, STAN), with the
same interface as the models.

Every baseline is fitted on the training data with ``.fit(train, num_items)``
and then called like a model: ``baseline(batch) -> Tensor[B, num_items]``, where
``batch`` is a PyG :class:`~torch_geometric.data.Batch` of
:class:`~tagnn_pyg.data.SessionData` (the clicks of session :math:`b` are
``batch.x[batch.seq][batch.seq_batch == b]``, its last click
``batch.x[batch.last][b]``). Column :math:`j` of the scores is item id
:math:`j`; column 0 (padding) is :math:`-\infty`. ``baseline(batch,
candidates)`` returns the scores of the given item ids only.

**What "training sessions" are.** ``train`` is either

* a list of whole sessions (``list[list[int]]``, e.g. the SR-GNN
  ``all_train_seq.txt``): every click of every session counts once (this is
  what the papers' baselines use); or
* a :class:`~tagnn_pyg.data.SessionSequences` (or any object with the flat
  ``items``, ``ptr`` and ``targets`` tensors): each sequence together with its
  target is taken as one session ``items[ptr[b]:ptr[b+1]] + [targets[b]]``.
  Given prefix-expanded training sequences (``train.txt``), a click is then
  counted once for every prefix it appears in or ends; pass the whole sessions
  to reproduce the papers.

The modules: ``baselines.base`` (:class:`Baseline`, the shared plumbing),
``baselines.popularity`` (POP, S-POP), ``baselines.item_knn`` (Item-KNN),
``baselines.session_knn`` (SKNN, V-SKNN, STAN).
"""
from __future__ import annotations

from typing import Dict, Type

from tagnn_pyg.baselines.base import Baseline
from tagnn_pyg.baselines.item_knn import ItemKNN
from tagnn_pyg.baselines.popularity import POP, SPOP
from tagnn_pyg.baselines.session_knn import SKNN, STAN, VSKNN

__all__ = ['POP', 'SPOP', 'ItemKNN', 'SKNN', 'VSKNN', 'STAN', 'BASELINES', 'Baseline']

BASELINES: Dict[str, Type[Baseline]] = {'pop': POP, 'spop': SPOP, 'itemknn': ItemKNN,
                                         'sknn': SKNN, 'vsknn': VSKNN, 'stan': STAN}
