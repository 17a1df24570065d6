"""SR-GNN, TAGNN and TAGNN++: thin compositions of :mod:`tagnn_pyg.nn` parts;
the sequence baselines NARM, STAMP, GRU4Rec on the same interface; GC-SAN.

Every model is called as ``model(batch) -> [B, num_items]`` (column ``j`` = item
id ``j``, column 0 = ``-inf``) or ``model(batch, candidates=[B, C]) -> [B, C]``,
has ``.embedding``, ``.num_items`` and ``.config()`` (so that
``type(model)(**model.config())`` rebuilds it).
"""
from typing import Dict, Type

from tagnn_pyg.models.scoring import SessionRecommender
from tagnn_pyg.models.srgnn import SRGNN
from tagnn_pyg.models.gru4rec import GRU4Rec
from tagnn_pyg.models.gcsan import GCSAN
from tagnn_pyg.models.narm import NARM
from tagnn_pyg.models.stamp import STAMP
from tagnn_pyg.models.tagnn import TAGNN
from tagnn_pyg.models.tagnn_plus_plus import TAGNNPlusPlus

MODELS: Dict[str, Type[SessionRecommender]] = {
    'srgnn': SRGNN,
    'tagnn': TAGNN,
    'tagnnpp': TAGNNPlusPlus,
    'narm': NARM,
    'stamp': STAMP,
    'gru4rec': GRU4Rec,
    'gcsan': GCSAN,
}

__all__ = ['SessionRecommender', 'SRGNN', 'TAGNN', 'TAGNNPlusPlus', 'NARM', 'STAMP',
           'GRU4Rec', 'GCSAN', 'MODELS']
