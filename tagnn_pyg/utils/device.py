r"""Where reading a tensor's value back to Python costs nothing."""
from __future__ import annotations

import torch

__all__ = ['host_reads_are_free']


def host_reads_are_free(device: torch.device) -> bool:
    r"""Whether a value check that reads tensors back to Python (``.item()``,
    ``bool(t.any())``) is free on ``device``: on the CPU it is, so checks run at
    once and fail early; on an accelerator it would wait for every queued
    kernel, so the library either skips such checks (cheap input validation)
    or counts the bad cases on the device and reports them at the next
    synchronisation (the metrics' bad targets, the trainer's non-finite loss).

    While a graph is traced (:func:`torch.compile`, :func:`torch.export`,
    ONNX export by tracing) a value has no Python reading at all, so the answer
    is :obj:`False` there too: the traced graph holds no data-dependent check
    (no graph break either), and a compiled model skips the input checks an
    eager one makes on the CPU (item-id range, candidates, pad counts).

    Args:
        device (torch.device): The device the values live on.
    """
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    return device.type == 'cpu'
