"""Small helpers shared by the package (file I/O, ...)."""
from .io import atomic_write_bytes, atomic_write_text, atomic_writer

__all__ = [
    'atomic_write_bytes',
    'atomic_write_text',
    'atomic_writer',
]
