"""Sessions as PyG graphs: the data contract, loaders, datasets and preprocessing."""
from .session_data import SessionData
from .sequences import SessionSequences, expand_prefixes
from .safe_pickle import UnsafePickleError, safe_pickle_load
from .srgnn_format import SRGNNData, read_srgnn_folder, write_srgnn_folder
from .batching import build_session_batch, SessionLoader
from .split import temporal_session_split, random_prefix_split
from .synthetic import make_synthetic_sessions
from .datasets import SessionDataset, Diginetica, Yoochoose, SyntheticSessions
from .loading import LoadedData, load_session_data

__all__ = [
    'SessionData',
    'SessionSequences',
    'expand_prefixes',
    'UnsafePickleError',
    'safe_pickle_load',
    'SRGNNData',
    'read_srgnn_folder',
    'write_srgnn_folder',
    'build_session_batch',
    'SessionLoader',
    'temporal_session_split',
    'random_prefix_split',
    'make_synthetic_sessions',
    'SessionDataset',
    'Diginetica',
    'Yoochoose',
    'SyntheticSessions',
    'LoadedData',
    'load_session_data',
]
