"""Helpers of the serving tests: tiny checkpoints and optional extras."""
import importlib
import os
from pathlib import Path
from typing import Any, Optional

import pytest
import torch

from tagnn_pyg.checkpoint import save_checkpoint
from tagnn_pyg.models import MODELS

NUM_ITEMS = 60
#: Raw ids of the tiny catalogue: internal id i is 'i<i>'.
ITEM_IDS = [None] + [f"i{j}" for j in range(1, NUM_ITEMS)]


def require_module(name: str) -> Any:
    """Import an optional extra's module; skip when absent (fail under CI, which
    installs the serving extras)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        if os.environ.get('CI'):
            pytest.fail(f"{name} missing under CI (the serve/onnx/mips extras must be "
                        f"installed)")
        pytest.skip(f"{name} not installed (an optional extra)")


def tiny_checkpoint(path: Path, model: str = 'tagnn', seed: int = 0,
                    item_ids: Optional[list] = ITEM_IDS, **extra: Any) -> Path:
    """A random tiny model saved as a checkpoint (raw ids 'i1'..'i59')."""
    torch.manual_seed(seed)
    kwargs = {'num_items': NUM_ITEMS, 'hidden_channels': 16}
    if model == 'tagnnpp':
        kwargs['heads'] = 2
    m = MODELS[model](**kwargs)
    save_checkpoint(path, model=m, model_name=model, num_items=NUM_ITEMS, item_ids=item_ids,
                    train_config={'weighting': 'binary'})
    if extra:
        ckpt = torch.load(path, weights_only=True)
        ckpt.update(extra)
        torch.save(ckpt, path)
    return path


def assert_same_top_k(got: torch.Tensor, ref: torch.Tensor, k: int, atol: float) -> None:
    """``got``'s top-``k`` per row is ``ref``'s up to near-ties, for scores that
    agree elementwise to ``atol``: every item ``got`` ranks in its top ``k`` has a
    reference score at most ``2 * atol`` below ``ref``'s ``k``-th best, and no
    item ``got`` ranks lower has a reference score more than ``2 * atol`` above
    any item it ranks higher. (``|got - ref| <= atol`` lets exactly such swaps
    happen, between items whose reference scores are within ``2 * atol``.)"""
    tol = 2 * atol
    idx = got.topk(k).indices
    ref_at = ref.gather(1, idx)                      # reference scores of got's picks
    kth = ref.topk(k).values[:, -1:]
    assert (ref_at >= kth - tol).all(), (
        f"an item outside the reference top-{k} by more than {tol}: "
        f"{(kth - ref_at).max().item():.3g} below its {k}-th score")
    worst_above = ref_at.cummin(dim=1).values[:, :-1]  # lowest pick ranked higher
    swapped = ref_at[:, 1:] - worst_above              # > 0 where the order is swapped
    assert (swapped <= tol).all(), (
        f"order differs where the reference scores are {swapped.max().item():.3g} "
        f"apart (more than 2 * {atol})")
