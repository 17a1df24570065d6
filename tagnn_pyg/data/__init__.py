"""Sessions as PyG graphs: the data contract, loaders, datasets and preprocessing."""
from .session_data import SessionData

__all__ = [
    'SessionData',
]
