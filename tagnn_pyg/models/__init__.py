"""SR-GNN, TAGNN and TAGNN++: thin compositions of :mod:`tagnn_pyg.nn` parts;
the sequence baselines NARM, STAMP, GRU4Rec and the graph baselines GC-SAN and
LESSR (the TAGNN++ paper's table) on the same interface.

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
from tagnn_pyg.models.lessr import LESSR

MODELS: Dict[str, Type[SessionRecommender]] = {
    'srgnn': SRGNN,
    'tagnn': TAGNN,
    'tagnnpp': TAGNNPlusPlus,
    'narm': NARM,
    'stamp': STAMP,
    'gru4rec': GRU4Rec,
    'gcsan': GCSAN,
    'lessr': LESSR,
}

__all__ = ['SessionRecommender', 'SRGNN', 'TAGNN', 'TAGNNPlusPlus', 'NARM', 'STAMP',
           'GRU4Rec', 'GCSAN', 'LESSR', 'MODELS']
