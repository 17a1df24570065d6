r"""Training and evaluation: :class:`TrainConfig`, :class:`Trainer`, :func:`evaluate`.

The trainer knows a model only through the common interface of
:mod:`tagnn_pyg.models`: ``model(batch) -> [B, num_items]`` scores (column ``j``
is item id ``j``; column 0, the padding id, is :math:`-\infty`) and an
``embedding`` table. The loss is the released one,

.. math::
    \mathcal{L} = \mathrm{CE}(z_{1:m}, y - 1),

a softmax over items :math:`1..m` only.

Two evaluation protocols (see ``docs/training.md``):

* ``'honest'`` (default): the epoch is chosen on held-out *validation*
  sequences by ``select_metric`` (HR@20 by default), training stops early after
  ``patience`` epochs without improvement, and the test set is evaluated
  **once**, with the chosen weights, at the end.
* ``'paper'``: the released code's protocol: the *test* set is evaluated after
  every epoch and the best HR@20 and the best MRR@20 are reported separately
  (possibly from different epochs), with the released patience rule. The
  numbers are optimistic (selection on the test set) and labelled as such in
  every output.

Every run directory gets ``best.pt``, ``last.pt`` (atomic, each epoch),
``metrics.json``, ``log.csv``, ``log.jsonl`` and ``train.log``; resuming from
``last.pt`` continues exactly where the run stopped.

The package holds one module per job: :mod:`.config` (``TrainConfig``),
:mod:`.splits` (``make_splits``), :mod:`.evaluation`, :mod:`.runtime` (devices,
seeds, determinism) and :mod:`.trainer` (the loop, checkpoints, logs).
"""
from ..utils.lazy import lazy_exports

# Lazy (PEP 562): ``tagnn_pyg.train.config`` is torch-free and imported by the
# command line for ``--help``; the loop and the evaluation import torch only
# when one of their names is used.
_EXPORTS = {
    'PROTOCOLS': 'config',
    'TrainConfig': 'config',
    'describe_protocol': 'config',
    'describe_schedule': 'config',
    'evaluate': 'evaluation',
    'resolve_device': 'runtime',
    'seed_everything': 'runtime',
    'set_deterministic': 'runtime',
    'Splits': 'splits',
    'make_splits': 'splits',
    'NonFiniteLossError': 'trainer',
    'Trainer': 'trainer',
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
