"""Process memory figures from ``/proc/self/status`` (Linux), for the benchmarks."""
from __future__ import annotations

from typing import Optional

__all__ = ['proc_status_kib', 'current_rss_mib', 'peak_rss_mib']


def proc_status_kib(key: str) -> Optional[int]:
    """The value of field ``key`` of ``/proc/self/status`` in KiB (e.g.
    ``'VmRSS'``, the resident set size, or ``'VmHWM'``, its peak), or ``None``
    where the file or the field does not exist (not Linux).

    Example:
        >>> proc_status_kib('VmRSS') > 0  # doctest: +SKIP
        True
    """
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
    kib = proc_status_kib('VmRSS')
    return None if kib is None else kib / 1024


def peak_rss_mib() -> Optional[float]:
    """The peak resident set size of this process (``VmHWM``: since the start, or since the
    last write of ``5`` to ``/proc/self/clear_refs``), in MiB; ``None`` where
    ``/proc/self/status`` is unavailable (not Linux)."""
    kib = proc_status_kib('VmHWM')
    return None if kib is None else kib / 1024
