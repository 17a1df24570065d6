"""Resident memory of this process, from Linux's ``/proc/self/status``."""
from __future__ import annotations

from typing import Optional

__all__ = ['current_rss_mib', 'peak_rss_mib']


def _status_kib(key: str) -> Optional[int]:
    """The ``key:`` field of ``/proc/self/status`` in KiB, or ``None`` without ``/proc`` (or
    without that field)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_mib() -> Optional[float]:
    """The resident set size of this process now (``VmRSS``), in MiB; ``None`` where
    ``/proc/self/status`` is unavailable (not Linux)."""
    kib = _status_kib('VmRSS')
    return None if kib is None else kib / 1024


def peak_rss_mib() -> Optional[float]:
    """The peak resident set size of this process (``VmHWM``: since the start, or since the
    last write of ``5`` to ``/proc/self/clear_refs``), in MiB; ``None`` where
    ``/proc/self/status`` is unavailable (not Linux)."""
    kib = _status_kib('VmHWM')
    return None if kib is None else kib / 1024
