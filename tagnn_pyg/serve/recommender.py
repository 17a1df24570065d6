r"""The :class:`Recommender`: raw item ids in, top-k raw ids and scores out.

One object wraps a trained model (any of :mod:`tagnn_pyg.models`, loaded
from a checkpoint with its item-id mapping) and answers many sessions at once:
their graphs are built by :func:`~tagnn_pyg.data.batching.build_session_batch`
(the library's own graph building, whatever the backend) and scored as one
batch.

**Score scale.** A score is the model's logit :math:`z_t` for item :math:`t`
(the inner product the models compute, see :mod:`tagnn_pyg.models.scoring`):
the training loss is the cross-entropy of ``softmax(z)`` over the whole
catalogue, so :math:`\exp(z_t) / \sum_j \exp(z_j)` is the model's probability
that :math:`t` is the next click. Scores are comparable within one session,
not across sessions. The popularity fallback (a session left empty after
dropping unknown ids) returns the items' shares of training clicks instead,
in :math:`[0, 1]`, and says so (``fallback``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..data.sequences import item_counts

__all__ = ['Recommender', 'Recommendation', 'RecommendError', 'Query', 'item_counts',
           'UNKNOWN_POLICIES', 'BACKENDS', 'RETRIEVALS']

UNKNOWN_POLICIES = ('error', 'drop', 'ignore')
BACKENDS = ('torch', 'onnx', 'pt2')
RETRIEVALS = ('exact', 'mips')

RawId = Union[int, str]


class RecommendError(ValueError):
    r"""The input of :meth:`Recommender.recommend` is invalid; the message names
    the bad value (the HTTP service answers it with a 4xx status)."""


@dataclass
class Recommendation:
    r"""The answer for one session.

    Attributes:
        items (list): the top-k raw item ids, best first.
        scores (list of float): their scores (see the module docstring for the
            scale; with ``fallback`` set, shares of training clicks).
        unknown (list): raw ids of the session the model does not know and
            that were dropped (``unknown='drop'``; empty otherwise).
        fallback (str, optional): ``None`` when the model scored the session;
            ``'popularity'`` when the session was empty after dropping unknown
            ids and the most clicked training items were returned, or
            ``'embedding-norm'`` when no click counts were available either
            (items ranked by the norm of their item vector, see
            :class:`Recommender`).
    """
    items: List[Any]
    scores: List[float]
    unknown: List[Any] = field(default_factory=list)
    fallback: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        r"""Plain JSON-serialisable form."""
        return {'items': list(self.items), 'scores': list(self.scores),
                'unknown': list(self.unknown), 'fallback': self.fallback}


@dataclass
class Query:
    r"""One validated call of :meth:`Recommender.recommend`, in internal ids
    (what :meth:`Recommender.prepare` returns and :meth:`Recommender.answer`
    scores; the HTTP service merges several into one model batch).

    Attributes:
        sessions (list of list of int): internal ids per session (possibly
            empty: popularity fallback).
        unknown (list of list): dropped raw ids per session (reported ones).
        k (int): items per session.
        exclude_seen (bool): never recommend a clicked item.
        candidates (list of list of int, optional): internal candidate ids per
            session.
    """
    sessions: List[List[int]]
    unknown: List[List[Any]]
    k: int
    exclude_seen: bool = False
    candidates: Optional[List[List[int]]] = None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class Recommender:
    r"""Top-k next items for sessions of raw item ids, from a trained model.

    Build it with :meth:`from_checkpoint`. :meth:`recommend` validates the
    input (one :class:`RecommendError` naming the first bad value), maps raw
    ids to the model's internal ids, builds the session graphs of all sessions
    as one batch and returns one :class:`Recommendation` per session.

    **Fallback.** A session with no known item left (``unknown='drop'`` or
    ``'ignore'``) cannot be scored by the model; it gets the most popular
    items: by click counts given as ``popularity``, else the checkpoint's
    optional ``item_counts`` entry (clicks per internal id), else, when no
    counts are known, items ranked by the norm of their item vector
    :math:`\lVert\mathbf{v}_t\rVert` (frequently clicked items get long
    vectors under the cross-entropy loss; a proxy, reported as
    ``fallback='embedding-norm'``).

    **Retrieval.** ``retrieval='exact'`` (default) scores the whole catalogue.
    ``retrieval='mips'`` retrieves ``num_candidates`` items per session from
    a maximum-inner-product index (:class:`torch_geometric.nn.pool.MIPSKNNIndex`,
    faiss) over the item table, queried with the session's target-independent
    representation (TAGNN: plus the mean of its position features, the
    target attention's average), then re-ranks them exactly through the
    model's ``candidates=`` path (the target term included): the returned
    scores are exact, the list may miss items the query ranked low.

    Args:
        model (torch.nn.Module): a :class:`~tagnn_pyg.models.SessionRecommender`
            (in eval mode), or ``None`` with ``scorer`` alone.
        num_items (int): embedding rows, padding id 0 included.
        item_ids (list, optional): ``item_ids[i]`` is the raw id of internal
            id ``i`` (``None``: raw ids are the internal ids ``1..num_items-1``).
        weighting (str, optional): the edge weighting the model was trained
            with (``'binary'`` or ``'count'``). (default: ``'binary'``)
        popularity (Tensor or sequence, optional): clicks per internal id
            (``[num_items]``) for the fallback.
        device (str or torch.device, optional): where batches are built and
            scored. (default: ``'cpu'``)
        scorer (callable, optional): ``scorer(batch) -> Tensor[B, num_items]``
            replacing ``model(batch)`` (the ONNX and ``.pt2`` backends; its
            ``backend`` attribute names it, default ``'onnx'``).
        retrieval (str, optional): ``'exact'`` or ``'mips'``.
            (default: ``'exact'``)
        num_candidates (int, optional): items retrieved per session with
            ``retrieval='mips'``. (default: :obj:`200`)
        max_session_length (int, optional): longest session accepted (clicks).
            (default: :obj:`200`)
        max_sessions (int, optional): most sessions per call.
            (default: :obj:`1024`)
        max_k (int, optional): largest ``k``. (default: :obj:`1000`)
        name (str, optional): the model's name, for :meth:`info`.
    """

    def __init__(self, model: Optional[torch.nn.Module], num_items: int,
                 item_ids: Optional[Sequence[Any]] = None, *, weighting: str = 'binary',
                 popularity: Optional[Union[Tensor, Sequence[float]]] = None,
                 device: Union[str, torch.device] = 'cpu',
                 scorer: Optional[Callable[[Any], Tensor]] = None,
                 retrieval: str = 'exact', num_candidates: int = 200,
                 max_session_length: int = 200, max_sessions: int = 1024,
                 max_k: int = 1000, name: Optional[str] = None) -> None:
        if model is None and scorer is None:
            raise ValueError("Recommender needs a model or a scorer")
        if retrieval not in RETRIEVALS:
            raise ValueError(f"retrieval must be one of {RETRIEVALS}, got {retrieval!r}")
        if retrieval == 'mips' and model is None:
            raise ValueError("retrieval='mips' needs the torch model (backend='torch'): "
                             "the index is queried with the session representation and "
                             "the candidates re-ranked through model(batch, candidates=)")
        for what, v in (('num_candidates', num_candidates),
                        ('max_session_length', max_session_length),
                        ('max_sessions', max_sessions), ('max_k', max_k)):
            if not _is_int(v) or v < 1:
                raise ValueError(f"{what} must be a positive int, got {v!r}")
        if not _is_int(num_items) or num_items < 2:
            raise ValueError(f"num_items must be an int >= 2, got {num_items!r}")
        if item_ids is not None and len(item_ids) != num_items:
            raise ValueError(f"item_ids must have num_items = {num_items} entries "
                             f"(element 0 the padding id), got {len(item_ids)}")
        self.model = model
        self.num_items = num_items
        self.item_ids = list(item_ids) if item_ids is not None else None
        self.weighting = weighting
        self.device = torch.device(device)
        self.scorer = scorer
        self.backend = 'torch' if scorer is None else str(getattr(scorer, 'backend', 'onnx'))
        self.retrieval = retrieval
        self.num_candidates = min(num_candidates, num_items - 1)
        self.max_session_length = max_session_length
        self.max_sessions = max_sessions
        self.max_k = min(max_k, num_items - 1)
        self.name = name or (type(model).__name__ if model is not None else 'model')
        self._lookup: Optional[Dict[str, int]] = None
        if self.item_ids is not None:
            self._lookup = {str(v): i for i, v in enumerate(self.item_ids)
                            if i > 0 and v is not None}
        self._set_fallback(popularity)
        self._index: Any = None
        if retrieval == 'mips':
            self._index = self._build_index()

    # ------------------------------------------------------------ building
    @classmethod
    def from_checkpoint(cls, path: Union[str, Path], device: Union[str, torch.device] = 'cpu',
                        backend: str = 'torch', *, onnx_path: Optional[Union[str, Path]] = None,
                        pt2_path: Optional[Union[str, Path]] = None,
                        pad_length: Optional[int] = None, **kwargs: Any) -> 'Recommender':
        r"""Load a checkpoint (any model of :data:`tagnn_pyg.models.MODELS`) with
        its item-id mapping.

        Args:
            path (str or Path): ``best.pt`` or ``last.pt`` of a run.
            device (str or torch.device, optional): ``'cpu'``, ``'cuda'``, ...
            backend (str, optional): ``'torch'`` (default), ``'onnx'`` (score
                with onnxruntime from the file written by
                :func:`~tagnn_pyg.serve.export.export_model`, ``onnx_path``,
                default ``path`` with suffix ``.onnx``) or ``'pt2'`` (the
                ``torch.export`` program, ``pt2_path``, default suffix
                ``.pt2``; run on the CPU). onnxruntime runs with
                :func:`torch.get_num_threads` intra-op threads, as torch
                would. With an exported file the longest
                session accepted is the sidecar's ``max_session_length``
                (TAGNN++, GC-SAN, NARM, GRU4Rec, LESSR: the fixed length it was
                exported with); a larger
                ``max_session_length`` is refused.
            onnx_path (str or Path, optional): the ONNX file.
            pt2_path (str or Path, optional): the ``.pt2`` file.
            pad_length (int, optional): required by models emulating the
                released padding (``released_padding=True``, torch backend).
            **kwargs: the remaining arguments of :class:`Recommender`
                (``popularity`` may also be a data set name or prepared folder:
                its training clicks are counted).
        """
        from ..checkpoint import build_model, load_checkpoint

        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        ckpt = load_checkpoint(path)
        model = build_model(ckpt, path, device=device).eval()
        if getattr(model, 'released_padding', False):
            if pad_length is None:
                raise ValueError(f"{path} holds a model emulating the released padding "
                                 f"(released_padding=True): pass pad_length, the longest "
                                 f"session of the data set the queries belong to")
            model.pad_length = int(pad_length)
        elif pad_length is not None:
            raise ValueError(f"pad_length applies only to models with "
                             f"released_padding=True; {path} holds one without")
        num_items = int(ckpt['num_items'])
        popularity = kwargs.pop('popularity', None)
        if isinstance(popularity, (str, Path)):
            from ..data.loading import load_session_data
            data = load_session_data(popularity, kwargs.pop('root', None))
            if data.num_items != num_items:
                raise ValueError(f"popularity data {popularity} has {data.num_items} item "
                                 f"ids, the checkpoint {num_items}")
            popularity = item_counts(data.train_sessions or data.train, num_items)
        elif popularity is None and ckpt.get('item_counts') is not None:
            popularity = ckpt['item_counts']
        kwargs.pop('root', None)
        scorer: Any = None
        if backend in ('onnx', 'pt2'):
            from .export import OnnxScorer, Pt2Scorer
            # onnxruntime gets torch's thread count (tagnn-pyg serve --threads)
            scorer = (OnnxScorer(onnx_path or Path(path).with_suffix('.onnx'),
                                 num_threads=torch.get_num_threads())
                      if backend == 'onnx'
                      else Pt2Scorer(pt2_path or Path(path).with_suffix('.pt2')))
            if scorer.sidecar.get('num_items') != num_items:
                raise ValueError(f"exported file {scorer.path} was exported from a model "
                                 f"with {scorer.sidecar.get('num_items')} item ids, {path} "
                                 f"has {num_items}")
            exported = scorer.sidecar.get('max_session_length')
            if exported is not None:
                asked = kwargs.get('max_session_length')
                if asked is not None and _is_int(asked) and asked > exported:
                    raise ValueError(f"max_session_length = {asked} is more than the "
                                     f"{exported} clicks {scorer.path} was exported for "
                                     f"(its sidecar's max_session_length): pass at most "
                                     f"{exported}, or export again with "
                                     f"--max-session-length {asked}")
                if asked is None:
                    kwargs['max_session_length'] = int(exported)
        return cls(model, num_items, ckpt.get('item_ids'),
                   weighting=ckpt.get('train_config', {}).get('weighting', 'binary'),
                   popularity=popularity, device=device, scorer=scorer,
                   name=ckpt['model']['name'], **kwargs)

    def _set_fallback(self, popularity: Optional[Union[Tensor, Sequence[float]]]) -> None:
        if popularity is not None:
            counts = torch.as_tensor(popularity, dtype=torch.float64).cpu().clone()
            if counts.shape != (self.num_items, ):
                raise ValueError(f"popularity must hold one count per internal item id "
                                 f"([{self.num_items}]), got shape {list(counts.shape)}")
            if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()):
                raise ValueError("popularity counts must be finite and >= 0")
            counts[0] = 0
            total = float(counts.sum())
            values, kind = (counts / total if total > 0 else counts), 'popularity'
        elif self.model is not None:
            with torch.no_grad():
                values = self.model.embedding.weight.detach().float().norm(dim=-1).cpu()
            values = values.double()
            kind = 'embedding-norm'
        else:
            values, kind = torch.zeros(self.num_items, dtype=torch.float64), 'popularity'
        values[0] = -math.inf
        self._fallback_scores = values
        self._fallback_kind = kind

    def _build_index(self) -> Any:
        from torch_geometric.nn.pool import MIPSKNNIndex
        weight = self.model.embedding.weight.detach().float().cpu()
        return MIPSKNNIndex(weight[1:].contiguous())

    def info(self) -> Dict[str, Any]:
        r"""What :meth:`recommend` serves: model, item count, limits."""
        from .. import __version__
        return {'model': self.name, 'num_items': self.num_items - 1,
                'backend': self.backend,
                'retrieval': self.retrieval, 'max_k': self.max_k,
                'max_sessions': self.max_sessions,
                'max_session_length': self.max_session_length,
                'fallback': self._fallback_kind, 'version': __version__}

    # ---------------------------------------------------------- validation
    def _internal(self, raw: Any, what: str) -> Optional[int]:
        r"""Internal id of a raw id (``None`` when unknown); raises on bad types."""
        if not (_is_int(raw) or isinstance(raw, str)):
            raise RecommendError(f"{what} must be an item id (int or str), got "
                                 f"{type(raw).__name__} {raw!r}")
        if self._lookup is not None:
            return self._lookup.get(str(raw))
        try:
            v = int(raw)
        except ValueError:
            return None
        return v if 1 <= v < self.num_items else None

    def _map(self, raw: Any, what: str, unknown: str) -> Tuple[List[int], List[Any]]:
        if not isinstance(raw, (list, tuple)):
            raise RecommendError(f"{what} must be a list of item ids, got "
                                 f"{type(raw).__name__}")
        known: List[int] = []
        missing: List[Any] = []
        for j, r in enumerate(raw):
            i = self._internal(r, f"{what}[{j}]")
            (known.append(i) if i is not None else missing.append(r))
        if missing and unknown == 'error':
            where = ('not in the checkpoint\'s item-id mapping' if self._lookup is not None
                     else f'the model knows ids 1..{self.num_items - 1}')
            raise RecommendError(f"{what} holds unknown item ids {missing[:10]}"
                                 f"{' ...' if len(missing) > 10 else ''} ({where}); pass "
                                 f"unknown='drop' or 'ignore' to drop them")
        return known, (missing if unknown == 'drop' else [])

    def prepare(self, sessions: Sequence[Sequence[RawId]], k: int = 20,
                exclude_seen: bool = False,
                candidates: Optional[Sequence[Any]] = None,
                unknown: str = 'error') -> Query:
        r"""Validate the arguments of :meth:`recommend` and map raw ids to
        internal ids; raises :class:`RecommendError` naming the first bad value."""
        if unknown not in UNKNOWN_POLICIES:
            raise RecommendError(f"unknown must be one of {UNKNOWN_POLICIES}, got "
                                 f"{unknown!r}")
        if not _is_int(k) or not 1 <= k <= self.max_k:
            raise RecommendError(f"k must be an int in [1, {self.max_k}], got {k!r}")
        if self.retrieval == 'mips' and candidates is None and k > self.num_candidates:
            raise RecommendError(f"k = {k} is more than the num_candidates = "
                                 f"{self.num_candidates} items that retrieval='mips' "
                                 f"re-ranks per session")
        if not isinstance(exclude_seen, bool):
            raise RecommendError(f"exclude_seen must be a bool, got {exclude_seen!r}")
        if not isinstance(sessions, (list, tuple)):
            raise RecommendError(f"sessions must be a list of sessions (lists of item "
                                 f"ids), got {type(sessions).__name__}")
        if not 1 <= len(sessions) <= self.max_sessions:
            raise RecommendError(f"sessions must hold 1..{self.max_sessions} sessions, "
                                 f"got {len(sessions)}")
        internal: List[List[int]] = []
        dropped: List[List[Any]] = []
        for b, s in enumerate(sessions):
            if isinstance(s, (list, tuple)) and len(s) > self.max_session_length:
                raise RecommendError(f"sessions[{b}] has {len(s)} clicks, more than "
                                     f"max_session_length = {self.max_session_length}")
            if isinstance(s, (list, tuple)) and not s:
                raise RecommendError(f"sessions[{b}] is empty: a session needs at least "
                                     f"one click")
            known, missing = self._map(s, f"sessions[{b}]", unknown)
            internal.append(known)
            dropped.append(missing)
        cand: Optional[List[List[int]]] = None
        if candidates is not None:
            if not isinstance(candidates, (list, tuple)) or not candidates:
                raise RecommendError("candidates must be a non-empty list of item ids "
                                     "(shared by all sessions) or one such list per "
                                     "session")
            per_session = all(isinstance(c, (list, tuple)) for c in candidates)
            if per_session and len(candidates) != len(sessions):
                raise RecommendError(f"candidates holds {len(candidates)} lists for "
                                     f"{len(sessions)} sessions (one per session, or one "
                                     f"flat list for all)")
            rows = candidates if per_session else [candidates]
            cand = []
            for b, row in enumerate(rows):
                what = f"candidates[{b}]" if per_session else 'candidates'
                if len(row) > self.num_items:
                    raise RecommendError(f"{what} holds {len(row)} ids, more than the "
                                         f"{self.num_items - 1} items of the catalogue")
                ids, _ = self._map(row, what, 'error' if unknown == 'error' else 'ignore')
                if not ids:
                    raise RecommendError(f"{what} holds no known item id")
                cand.append(list(dict.fromkeys(ids)))      # unique, order kept
            if not per_session:
                cand = cand * len(sessions)
        return Query(internal, dropped, k, exclude_seen, cand)

    # -------------------------------------------------------------- scoring
    def recommend(self, sessions: Sequence[Sequence[RawId]], k: int = 20,
                  exclude_seen: bool = False, candidates: Optional[Sequence[Any]] = None,
                  unknown: str = 'error') -> List[Recommendation]:
        r"""The top-``k`` items of every session.

        Args:
            sessions (list of list): sessions of raw item ids, oldest click
                first (at most ``max_sessions`` sessions of at most
                ``max_session_length`` clicks each).
            k (int, optional): items per session, in ``[1, max_k]``.
                (default: :obj:`20`)
            exclude_seen (bool, optional): never recommend an item the session
                clicked. (default: :obj:`False`)
            candidates (list, optional): raw ids to rank instead of the whole
                catalogue: one list for all sessions, or one list per session.
            unknown (str, optional): what to do with raw ids the model does not
                know: ``'error'`` (default; the error names them), ``'drop'``
                (drop them and list them in ``Recommendation.unknown``) or
                ``'ignore'`` (drop them silently).

        Returns:
            One :class:`Recommendation` per session. Fewer than ``k`` items come
            back only when fewer are eligible (``candidates``,
            ``exclude_seen``).

        Raises:
            RecommendError: invalid input, naming the bad value.
        """
        return self.answer([self.prepare(sessions, k, exclude_seen, candidates, unknown)])[0]

    def _batch(self, sessions: List[List[int]]) -> Any:
        from ..data.batching import build_session_batch
        lengths = torch.tensor([len(s) for s in sessions], dtype=torch.long)
        ptr = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
        items = torch.tensor([i for s in sessions for i in s], dtype=torch.long)
        return build_session_batch(items, ptr, weighting=self.weighting,
                                   device=self.device)

    @torch.no_grad()
    def _scores(self, sessions: List[List[int]], candidates: Optional[Tensor]
                ) -> Tuple[Tensor, Optional[Tensor]]:
        r"""(scores ``[B, M]`` or ``[B, C]``, the candidates scored or ``None``)."""
        batch = self._batch(sessions)
        if candidates is not None:
            if self.model is None or self.scorer is not None:
                full = self.scorer(batch) if self.scorer is not None else self.model(batch)
                return full.float().gather(1, candidates.to(full.device)), candidates
            return self.model(batch, candidates=candidates.to(self.device)).float(), \
                candidates
        if self.retrieval == 'mips':
            cand = self._retrieve(batch)
            return self.model(batch, candidates=cand).float(), cand
        out = self.scorer(batch) if self.scorer is not None else self.model(batch)
        return out.float(), None

    @torch.no_grad()
    def query_vectors(self, batch: Any) -> Tensor:
        r"""``[B, d]`` the vectors the MIPS index is queried with: the model's
        target-independent session vector (SR-GNN's :math:`\mathbf{s}`,
        TAGNN's :math:`\mathbf{q}`), for TAGNN plus the target term's value at
        uniform attention (the mean position feature, through
        :math:`\mathbf{W}_{3a}` with ``score='paper'``)."""
        from torch_geometric.utils import scatter
        model = self.model
        pos = model.positions(batch)
        if hasattr(model, 'session_terms'):
            q, w3a = model.session_terms(pos)
            if getattr(model, 'target_attention', None) is not None:
                mean = scatter(pos.x, pos.index, 0, pos.num_sessions, reduce='mean')
                q = q + (mean if w3a is None else mean @ w3a.t())
            return q
        return model.session_embedding(pos)

    def _retrieve(self, batch: Any) -> Tensor:
        q = self.query_vectors(batch).float().cpu().contiguous()
        _, index = self._index.search(q, self.num_candidates)
        return (index.long() + 1).to(self.device)   # the index holds rows 1..m

    def answer(self, queries: Sequence[Query]) -> List[List[Recommendation]]:
        r"""Score several prepared queries (:meth:`prepare`) as one batch per
        kind (whole catalogue / candidates) and split the answers."""
        flat: List[Tuple[int, int]] = []
        for qi, q in enumerate(queries):
            flat.extend((qi, b) for b in range(len(q.sessions)))
        out: List[List[Optional[Recommendation]]] = [[None] * len(q.sessions)
                                                     for q in queries]
        full = [(qi, b) for qi, b in flat
                if queries[qi].sessions[b] and queries[qi].candidates is None]
        cand = [(qi, b) for qi, b in flat
                if queries[qi].sessions[b] and queries[qi].candidates is not None]
        for group in (full, cand):
            for start in range(0, len(group), self.max_sessions):
                part = group[start:start + self.max_sessions]
                self._answer_part(queries, part, out)
        for qi, b in flat:
            if out[qi][b] is None:
                out[qi][b] = self._fallback(queries[qi], b)
        return out  # type: ignore[return-value]

    def _answer_part(self, queries: Sequence[Query], part: List[Tuple[int, int]],
                     out: List[List[Optional[Recommendation]]]) -> None:
        sessions = [queries[qi].sessions[b] for qi, b in part]
        cand = None
        if queries[part[0][0]].candidates is not None:
            rows = [queries[qi].candidates[b] for qi, b in part]   # type: ignore[index]
            width = max(len(r) for r in rows)
            cand = torch.zeros(len(rows), width, dtype=torch.long)
            for r, row in enumerate(rows):
                cand[r, :len(row)] = torch.tensor(row, dtype=torch.long)
        scores, ids = self._scores(sessions, cand)
        scores = scores.cpu()
        ids = ids.cpu() if ids is not None else None
        for r, (qi, b) in enumerate(part):
            q = queries[qi]
            row = scores[r].clone()
            if q.exclude_seen:
                seen = torch.tensor(q.sessions[b], dtype=torch.long)
                if ids is None:
                    row[seen] = -math.inf
                else:
                    row[torch.isin(ids[r], seen)] = -math.inf
            top = torch.topk(row, min(q.k, row.numel()))
            keep = torch.isfinite(top.values)
            internal = top.indices[keep]
            if ids is not None:
                internal = ids[r][internal]
            out[qi][b] = Recommendation(self._raw(internal.tolist()),
                                        top.values[keep].tolist(), list(q.unknown[b]))

    def _fallback(self, q: Query, b: int) -> Recommendation:
        row = self._fallback_scores.clone()
        if q.candidates is not None:
            keep = torch.full_like(row, -math.inf)
            idx = torch.tensor(q.candidates[b], dtype=torch.long)
            keep[idx] = row[idx]
            row = keep
        top = torch.topk(row, min(q.k, row.numel()))
        ok = torch.isfinite(top.values)
        return Recommendation(self._raw(top.indices[ok].tolist()), top.values[ok].tolist(),
                              list(q.unknown[b]), self._fallback_kind)

    def _raw(self, internal: List[int]) -> List[Any]:
        if self.item_ids is None:
            return internal
        return [self.item_ids[i] for i in internal]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name}, num_items={self.num_items - 1}, "
                f"backend={self.backend!r}, "
                f"retrieval={self.retrieval!r})")
