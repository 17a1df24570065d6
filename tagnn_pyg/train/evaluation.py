"""Full-ranking evaluation of a model on a set of session sequences."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Union

import torch
from torch import Tensor

from .. import distributed as _dist
from .runtime import _progress, resolve_device


def _model_device(model: Any) -> Optional[torch.device]:
    if isinstance(model, torch.nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return None


@torch.no_grad()
def evaluate(
    model: Callable[..., Tensor],
    sequences: Any,
    *,
    batch_size: int = 100,
    ks: Sequence[int] = (5, 10, 20),
    device: Union[str, torch.device, None] = None,
    weighting: str = 'binary',
    progress: bool = False,
    desc: str = 'evaluate',
    distributed: bool = False,
) -> Dict[str, float]:
    r"""Full-ranking HR@K, MRR@K and NDCG@K (percent) of ``model`` on ``sequences``.

    Every target is ranked against all items :math:`1..m` (ties counted against
    the model) with :class:`tagnn_pyg.metrics.TopKMetrics`; metrics are
    accumulated on the device.

    Args:
        model (callable): ``model(batch) -> [B, num_items]`` scores: a
            :mod:`tagnn_pyg.models` model or a :mod:`tagnn_pyg.baselines` one.
            A :class:`torch.nn.Module` is put in ``eval()`` mode for the call and
            restored afterwards.
        sequences (SessionSequences): prefixes with ``targets``.
        batch_size (int): sequences per batch.
        ks (sequence of int): the cut-offs.
        device: where batches are built (default: the model's device, else CPU).
        weighting (str): session-graph edge weights.
        progress (bool): show a progress bar.
        desc (str): its label.
        distributed (bool): under a process group of several processes (see
            :mod:`tagnn_pyg.distributed`), rank a contiguous shard of
            ``sequences`` here and sum the metric sums over all processes
            before dividing: every process returns the metrics of the whole
            set, exactly those of one process (integer hit counts; the other
            sums up to float64 reassociation). Every process must call it with
            the same ``sequences``. Without a process group it has no effect.

    Returns:
        dict: ``{'HR@5': ..., 'MRR@5': ..., 'NDCG@5': ..., ...}`` and ``'count'``
        (number of test cases).
    """
    from ..data.batching import SessionLoader
    from ..metrics import TopKMetrics
    from ..models.tagnn import padded_like_released

    if getattr(sequences, 'targets', None) is None:
        raise ValueError("evaluation needs sequences with targets (the next item of "
                         "each prefix)")
    if len(sequences) == 0:
        raise ValueError("evaluation needs at least one sequence, got none")
    dev = (resolve_device(device) if device is not None
           else (_model_device(model) or torch.device('cpu')))
    ctx = _dist.current() if distributed else _dist.SINGLE
    part = sequences
    if ctx.active:
        lo, hi = _dist.shard_bounds(len(sequences), ctx.rank, ctx.world_size)
        part = sequences[lo:hi] if hi > lo else None
        progress = progress and ctx.is_main
    loader = (SessionLoader(part, batch_size, shuffle=False, weighting=weighting,
                            device=dev) if part is not None else [])
    metrics = TopKMetrics(ks)
    was_training = isinstance(model, torch.nn.Module) and model.training
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        with padded_like_released(model, sequences), \
                _progress(len(loader), desc, progress) as bar:
            for batch in loader:
                scores = model(batch)
                metrics.update(scores.float(), batch.y)
                bar.update(1)
    finally:
        if was_training:
            model.train()
    if ctx.active:
        _dist.all_reduce_metrics(metrics, device=dev)
    out = metrics.compute()
    out['count'] = metrics.count
    return out

