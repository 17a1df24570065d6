r"""Serving trained models: the :class:`Recommender` (raw item ids in, top-k raw
ids and scores out), exported models (:mod:`tagnn_pyg.serve.export`: ONNX and
``torch.export``) and the HTTP service (:mod:`tagnn_pyg.serve.http`, needs the
``serve`` extra: ``pip install 'tagnn-pyg[serve]'``). See ``docs/serving.md``.

Importing this package needs torch and PyG only; fastapi/uvicorn, onnx /
onnxruntime and faiss are imported by the parts that use them.
"""
from .recommender import (BACKENDS, RETRIEVALS, UNKNOWN_POLICIES, Query, Recommendation,
                          RecommendError, Recommender, item_counts)

__all__ = ['Recommender', 'Recommendation', 'RecommendError', 'Query', 'item_counts',
           'UNKNOWN_POLICIES', 'BACKENDS', 'RETRIEVALS']
