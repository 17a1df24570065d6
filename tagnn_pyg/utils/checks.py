r"""Argument checks shared by the models and layers."""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ['check_flag', 'require_fields']


def check_flag(name: str, value: Any) -> bool:
    r"""``value`` as a :obj:`bool`: ``True`` / ``False`` (a NumPy bool
    included) or the ints ``1`` / ``0`` (a JSON or YAML config may hold
    those). Anything else is refused: ``bool('no')`` is :obj:`True`, so a
    switch passed as text (``--model-arg attention=no``) would otherwise turn
    itself on.

    Raises:
        TypeError: ``value`` is none of these.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    hint = ''
    if isinstance(value, str) and value.lower() in ('true', 'false', 'yes', 'no', 'on',
                                                    'off'):
        hint = ' (on the command line write JSON: true or false)'
    raise TypeError(f"{name} must be True or False, got {value!r} "
                    f"({type(value).__name__}){hint}")


def require_fields(batch: Any, *keys: str) -> None:
    r"""Raise if ``batch`` lacks one of the
    :class:`~tagnn_pyg.data.SessionData` fields ``keys`` (missing or
    :obj:`None`), naming it and how to build a batch that has it.

    Raises:
        ValueError: a field is missing.
    """
    for key in keys:
        if getattr(batch, key, None) is None:
            raise ValueError(f"batch lacks the SessionData field {key!r}; build it "
                             f"with SessionData.from_sequence / build_session_batch")
