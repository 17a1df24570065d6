"""Sessions as PyG graphs: the data contract, loaders, datasets and preprocessing.

The names are imported lazily (PEP 562), so that the torch-free modules of this
package (``limits``, ``fingerprint``, ``manifest``) can be imported by the
command line for ``--help`` without importing torch and PyG.
"""
from ..utils.lazy import lazy_exports

_EXPORTS = {
    'SessionData': 'session_data',
    'SessionSequences': 'sequences',
    'expand_prefixes': 'sequences',
    'item_counts': 'sequences',
    'UnsafePickleError': 'safe_pickle',
    'safe_pickle_load': 'safe_pickle',
    'SRGNNData': 'srgnn_format',
    'read_srgnn_folder': 'srgnn_format',
    'write_srgnn_folder': 'srgnn_format',
    'build_session_batch': 'batching',
    'SessionLoader': 'batching',
    'temporal_session_split': 'split',
    'random_prefix_split': 'split',
    'make_synthetic_sessions': 'synthetic',
    'SessionDataset': 'datasets',
    'Diginetica': 'datasets',
    'Yoochoose': 'datasets',
    'SyntheticSessions': 'datasets',
    'LoadedData': 'loading',
    'load_session_data': 'loading',
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
