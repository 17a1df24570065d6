r"""Argument checks shared by the models and layers."""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ['check_flag']


def check_flag(name: str, value: Any) -> bool:
    r"""``value`` as a :obj:`bool`, refusing anything but ``True`` / ``False``
    (a NumPy bool included): ``bool('no')`` is :obj:`True`, so a switch passed
    as text (``--model-arg attention=no``) would otherwise turn itself on.

    Raises:
        TypeError: ``value`` is not a bool.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r} "
                    f"({type(value).__name__})")
