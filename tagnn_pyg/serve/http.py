r"""The HTTP service (FastAPI + uvicorn; ``pip install 'tagnn-pyg[serve]'``).

* ``POST /recommend`` with ``{"sessions": [[raw ids...], ...], "k": 20}``
  (optional ``exclude_seen``, ``candidates``, ``unknown``) answers
  ``{"recommendations": [{"items": [...], "scores": [...], "unknown": [...],
  "fallback": null}, ...], "model": ...}``;
* ``GET /health``: model, item count, limits, version, batching counters;
* the OpenAPI schema at FastAPI's default ``/openapi.json`` (docs at ``/docs``).

Concurrent requests are merged by a :class:`DynamicBatcher` into one model
batch of at most ``max_batch`` sessions, waiting at most ``max_wait_ms`` for
more after the first; the model runs in one worker thread, so the event loop
keeps accepting requests meanwhile. Each session's answer does not depend on
the other sessions of the batch (the models never mix sessions).

Every input error is a 4xx JSON ``{"error": "..."}``: malformed JSON or wrong
types (422), unknown ids, bad ``k``, too many / too long sessions (422), a
body over ``max_body_bytes`` (413). Validation runs before a request joins a
batch, so a bad request never affects another one.
"""


import asyncio
import json
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Dict, List, Literal, Optional, Tuple, Union

from .recommender import Query, Recommendation, RecommendError, Recommender

__all__ = ['DynamicBatcher', 'create_app', 'app_from_env', 'ENV_CONFIG',
           'DEFAULT_MAX_BODY_BYTES']

#: Environment variable through which ``tagnn-pyg serve --workers N`` hands the
#: service configuration (JSON) to each worker process.
ENV_CONFIG = 'TAGNN_PYG_SERVE_CONFIG'
DEFAULT_MAX_BODY_BYTES = 1 << 20


class DynamicBatcher:
    r"""Merges concurrent :class:`~tagnn_pyg.serve.Query` objects into one call
    of :meth:`Recommender.answer <tagnn_pyg.serve.Recommender.answer>`.

    The first waiting query opens a batch; more join while the batch holds at
    most ``max_batch`` sessions and ``max_wait_ms`` has not passed since it
    opened (a query larger than ``max_batch`` is answered alone).
    ``max_batch=1`` disables merging. Scoring runs in one background thread.

    Args:
        recommender (Recommender): what answers.
        max_batch (int, optional): sessions per model batch. (default: :obj:`256`)
        max_wait_ms (float, optional): longest wait for more queries.
            (default: :obj:`5.0`)
    """

    def __init__(self, recommender: Recommender, max_batch: int = 256,
                 max_wait_ms: float = 5.0) -> None:
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive int, got {max_batch!r}")
        if not max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms!r}")
        self.recommender = recommender
        self.max_batch = max_batch
        self.max_wait = float(max_wait_ms) / 1000.0
        self._queue: Optional[asyncio.Queue] = None
        self._task: Optional[asyncio.Task] = None
        self._held: Optional[Tuple[Query, asyncio.Future]] = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix='tagnn-score')
        #: counters: batches scored, queries and sessions in them
        self.stats = {'batches': 0, 'queries': 0, 'sessions': 0, 'max_queries': 0}

    def _ensure_started(self) -> asyncio.Queue:
        if self._queue is None or self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self._queue

    async def submit(self, query: Query) -> List[Recommendation]:
        r"""Queue ``query`` and wait for its answer."""
        fut = asyncio.get_running_loop().create_future()
        await self._ensure_started().put((query, fut))
        return await fut

    async def _next(self, timeout: Optional[float]) -> Tuple[Query, asyncio.Future]:
        if self._held is not None:
            item, self._held = self._held, None
            return item
        assert self._queue is not None
        if timeout is None:
            return await self._queue.get()
        if timeout <= 0:
            return self._queue.get_nowait()     # raises QueueEmpty
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next(None)
            batch = [first]
            size = len(first[0].sessions)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                try:
                    item = await self._next(deadline - loop.time())
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                if size + len(item[0].sessions) > self.max_batch:
                    self._held = item                  # opens the next batch
                    break
                batch.append(item)
                size += len(item[0].sessions)
            live = [(q, f) for q, f in batch if not f.cancelled()]
            if not live:
                continue
            try:
                answers = await loop.run_in_executor(
                    self._executor, self.recommender.answer, [q for q, _ in live])
            except Exception as err:  # noqa: BLE001 - handed to the waiting requests
                for _, f in live:
                    if not f.done():
                        f.set_exception(err)
                continue
            self.stats['batches'] += 1
            self.stats['queries'] += len(live)
            self.stats['sessions'] += sum(len(q.sessions) for q, _ in live)
            self.stats['max_queries'] = max(self.stats['max_queries'], len(live))
            for (_, f), answer in zip(live, answers):
                if not f.done():
                    f.set_result(answer)

    async def close(self) -> None:
        r"""Stop the batching task (after the server finished its requests)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        self._executor.shutdown(wait=True)


class _BodyLimit:
    r"""ASGI middleware: 413 for request bodies over ``limit`` bytes (by
    ``Content-Length`` when sent, else counted while streaming)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope['type'] != 'http':
            await self.app(scope, receive, send)
            return
        for key, value in scope.get('headers', []):
            if key == b'content-length':
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    await _send_error(send, 413, f"request body of {int(value)} bytes is "
                                      f"over the limit of {self.limit} bytes")
                    return
        seen = 0

        async def limited() -> Dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message['type'] == 'http.request':
                seen += len(message.get('body', b''))
                if seen > self.limit:
                    raise _TooLarge(seen)
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge as err:
            await _send_error(send, 413, f"request body over the limit of {self.limit} "
                              f"bytes (read {err.args[0]})")


class _TooLarge(Exception):
    pass


async def _send_error(send: Any, status: int, message: str) -> None:
    body = json.dumps({'error': message}).encode()
    await send({'type': 'http.response.start', 'status': status,
                'headers': [(b'content-type', b'application/json'),
                            (b'content-length', str(len(body)).encode())]})
    await send({'type': 'http.response.body', 'body': body})


def create_app(recommender: Recommender, max_batch: int = 256, max_wait_ms: float = 5.0,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Any:
    r"""The FastAPI application serving ``recommender``.

    Args:
        recommender (Recommender): answers the requests (its ``max_k``,
            ``max_sessions`` and ``max_session_length`` are the limits).
        max_batch (int, optional): sessions per merged model batch
            (``1``: no merging). (default: :obj:`256`)
        max_wait_ms (float, optional): longest wait for more requests once a
            batch is open. (default: :obj:`5.0`)
        max_body_bytes (int, optional): largest request body.
            (default: 1 MiB)
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
    from starlette.exceptions import HTTPException

    from .. import __version__

    RawId = Union[StrictInt, StrictStr]

    class RecommendRequest(BaseModel):
        model_config = ConfigDict(extra='forbid')
        sessions: List[List[RawId]] = Field(
            description='sessions of raw item ids, oldest click first')
        k: StrictInt = Field(20, description=f'items per session, 1..{recommender.max_k}')
        exclude_seen: StrictBool = Field(False, description='never recommend a clicked item')
        candidates: Optional[Union[List[List[RawId]], List[RawId]]] = Field(
            None, description='raw ids to rank instead of the catalogue: one list for all '
            'sessions or one per session')
        unknown: Literal['error', 'drop', 'ignore'] = Field(
            'error', description='unknown ids: fail, drop and report, or drop silently')

    class Item(BaseModel):
        items: List[RawId]
        scores: List[float]
        unknown: List[RawId]
        fallback: Optional[str]

    class RecommendResponse(BaseModel):
        recommendations: List[Item]
        model: str

    batcher = DynamicBatcher(recommender, max_batch=max_batch, max_wait_ms=max_wait_ms)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        yield
        await batcher.close()

    app = FastAPI(title='tagnn-pyg', version=__version__, lifespan=lifespan,
                  description=f'Session-based recommendation ({recommender.name}): raw '
                  'item ids in, top-k raw item ids and scores (logits) out.')
    app.state.batcher = batcher
    app.state.recommender = recommender

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        errors = err.errors()
        first = errors[0] if errors else {}
        where = '.'.join(str(p) for p in first.get('loc', ()) if p != 'body')
        msg = f"{where}: {first.get('msg', 'invalid request')}" if where else \
            first.get('msg', 'invalid request')
        if first.get('type') == 'model_attributes_type' and \
                isinstance(first.get('input'), (bytes, str)):
            msg = ("the body must be a JSON object sent with Content-Type: "
                   "application/json")
        elif first.get('type') == 'json_invalid':
            msg = (f"malformed JSON at character {first.get('loc', ('', '?'))[-1]}: "
                   f"{first.get('ctx', {}).get('error', 'decode error')}")
        return JSONResponse({'error': msg,
                             'detail': json.loads(json.dumps(errors, default=str))},
                            status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({'error': str(err.detail)}, status_code=err.status_code)

    @app.exception_handler(RecommendError)
    async def bad_input(request: Request, err: RecommendError) -> JSONResponse:
        return JSONResponse({'error': str(err)}, status_code=422)

    @app.post('/recommend', response_model=RecommendResponse,
              responses={413: {'description': 'body too large'},
                         422: {'description': 'invalid input (the error names it)'}})
    async def recommend(body: RecommendRequest) -> Dict[str, Any]:
        """Top-k items of every session (scores: the model's logits)."""
        query = recommender.prepare(body.sessions, body.k, body.exclude_seen,
                                    body.candidates, body.unknown)
        answers = await batcher.submit(query)
        return {'recommendations': [a.to_dict() for a in answers],
                'model': recommender.name}

    @app.get('/health')
    async def health() -> Dict[str, Any]:
        """Model, item count, limits, version and batching counters."""
        return {'status': 'ok', **recommender.info(), 'max_batch': max_batch,
                'max_wait_ms': max_wait_ms, 'max_body_bytes': max_body_bytes,
                'batching': dict(batcher.stats), 'pid': os.getpid()}

    app.add_middleware(_BodyLimit, limit=max_body_bytes)
    return app


def build_from_config(config: Dict[str, Any]) -> Any:
    r"""The app described by ``tagnn-pyg serve``'s options (a JSON-able dict:
    ``checkpoint``, ``device``, ``backend``, ``onnx_path``, ``pt2_path``, ``recommender``
    keyword arguments, ``max_batch``, ``max_wait_ms``, ``max_body_bytes``,
    ``threads``)."""
    import torch
    if config.get('threads'):
        torch.set_num_threads(int(config['threads']))
    rec = Recommender.from_checkpoint(config['checkpoint'], device=config.get('device', 'cpu'),
                                      backend=config.get('backend', 'torch'),
                                      onnx_path=config.get('onnx_path'),
                                      pt2_path=config.get('pt2_path'),
                                      pad_length=config.get('pad_length'),
                                      **config.get('recommender', {}))
    return create_app(rec, max_batch=int(config.get('max_batch', 256)),
                      max_wait_ms=float(config.get('max_wait_ms', 5.0)),
                      max_body_bytes=int(config.get('max_body_bytes',
                                                    DEFAULT_MAX_BODY_BYTES)))


def app_from_env() -> Any:
    r"""App factory for uvicorn worker processes (``--workers N``): the
    configuration comes as JSON in :data:`ENV_CONFIG`."""
    text = os.environ.get(ENV_CONFIG)
    if not text:
        raise RuntimeError(f"{ENV_CONFIG} is not set (it is set by tagnn-pyg serve)")
    return build_from_config(json.loads(text))
