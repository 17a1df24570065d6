"""Run-time helpers shared by the trainer and the evaluation: devices, seeds,
determinism, autocast and progress bars."""
from __future__ import annotations

import os
import random
from typing import Any, Union

import numpy as np
import torch


def resolve_device(device: Union[str, torch.device, None]) -> torch.device:
    """``'auto'``/``None`` -> CUDA when available, else CPU; anything else as
    given. Raises :class:`ValueError` for an unavailable CUDA device."""
    if device is None or str(device) == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}: expected 'auto', 'cpu', 'cuda' "
                         f"or 'cuda:N'") from err
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available "
                         f"on this machine (use --device cpu)")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool = True) -> None:
    """Ask torch for deterministic kernels (warning where none exists) and turn
    off cuDNN autotuning; sets ``CUBLAS_WORKSPACE_CONFIG`` if unset."""
    if enabled:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled and torch.backends.cudnn.benchmark


def _epoch_seed(seed: int, epoch: int) -> int:
    """Seed of the global torch RNG at the start of epoch ``epoch`` (0-based):
    dropout draws depend only on (seed, epoch), so a resumed run repeats them."""
    return (int(seed) * 1_000_003 + 7919 * (int(epoch) + 1)) % (2**63 - 1)


def _autocast(device: torch.device, enabled: bool) -> Any:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _progress(total: int, desc: str, enabled: bool, initial: int = 0) -> Any:
    """A tqdm bar (starting at ``initial``); with ``enabled`` it still hides
    itself when stderr is not a terminal (logs of batch jobs stay clean)."""
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit='batch', leave=False, initial=initial,
                disable=None if enabled else True, dynamic_ncols=True)

