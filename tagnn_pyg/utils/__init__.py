"""Small helpers shared by the package (file I/O, ...)."""
from .io import atomic_write_bytes, atomic_write_text, atomic_writer
from .memory import current_rss_mib, peak_rss_mib, proc_status_kib

__all__ = [
    'atomic_write_bytes',
    'atomic_write_text',
    'atomic_writer',
    'proc_status_kib',
    'current_rss_mib',
    'peak_rss_mib',
]
