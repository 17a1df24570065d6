r"""Exported models: the scoring of a checkpoint's model as an ONNX file
(:func:`torch.onnx.export`, dynamo exporter) or a ``torch.export`` program
(``.pt2``), with the item-id mapping in a JSON file beside it.

**Input contract** (the batch tensors of
:func:`~tagnn_pyg.data.batching.build_session_batch`, in this order;
:data:`INPUTS`):

=================== ======= =============== ==================================
name                dtype   shape           meaning
=================== ======= =============== ==================================
``x``               int64   ``[nodes]``     item id of each graph node
``edge_index``      int64   ``[2, edges]``  session-graph edges (node indices)
``edge_weight_in``  float32 ``[edges]``     in-degree-normalised edge weights
``edge_weight_out`` float32 ``[edges]``     out-degree-normalised edge weights
``seq``             int64   ``[positions]`` node of each click, in click order
``seq_batch``       int64   ``[positions]`` session of each click (sorted)
``last``            int64   ``[sessions]``  node of each session's last click
=================== ======= =============== ==================================

``nodes``, ``edges``, ``positions`` and ``sessions`` are dynamic axes. The
output ``scores`` is float32 ``[sessions, num_items]`` (column ``j`` = internal
item id ``j``, column 0 = :math:`-\infty`), the logits of ``model(batch)``.

The sidecar ``FILE.json`` holds ``format``, ``model``, ``num_items``,
``item_ids`` (raw id of each internal id, or ``null``), ``weighting``,
``max_session_length`` (the longest session the exported graph takes, or
``null`` for any length) and the input contract.

TargetAttention picks its chunk of targets from the number of positions
(a shape guard no dynamic export can keep); the exported copy uses a fixed
chunk of :data:`EXPORT_CHUNK` targets instead. Chunks only split the target
columns, so every score is computed by the same operations.

The layers that pad sessions (TAGNN++'s
:class:`~tagnn_pyg.nn.SessionTransformer`, GC-SAN's
:class:`~tagnn_pyg.nn.SessionSelfAttention`, the GRU of NARM and GRU4Rec) pad
each session to the batch's longest, a data-dependent shape; the exported copy
pads every session to a fixed :math:`L` (their ``static_length``, see
:class:`~tagnn_pyg.utils.static_dense.StaticDenseBatch`; the export's
``max_session_length``, default :data:`DEFAULT_MAX_SESSION_LENGTH` capped by the
positional embeddings' ``max_length``), recorded in the sidecar. Longer
sessions must be refused before scoring (the
:class:`~tagnn_pyg.serve.Recommender` of an exported file does; the exported
graph itself returns NaN scores for them, never truncated ones). LESSR builds
its two graphs inside the model, with data-dependent edge counts; its exported
copy builds them with a fixed number of columns and an edge mask
(:func:`~tagnn_pyg.nn.static_eop_multigraph`,
:func:`~tagnn_pyg.nn.static_shortcut_graph`) and gives each EOPA node
:math:`L` message slots.
"""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

__all__ = ['INPUTS', 'FORMATS', 'EXPORT_CHUNK', 'DEFAULT_MAX_SESSION_LENGTH',
           'ScoringModule', 'export_model', 'batch_inputs', 'OnnxScorer', 'Pt2Scorer',
           'load_sidecar']

#: ``(name, dtype, dynamic axes)`` of the exported graph's inputs, in order.
INPUTS: Tuple[Tuple[str, str, Tuple[str, ...]], ...] = (
    ('x', 'int64', ('nodes', )),
    ('edge_index', 'int64', ('2', 'edges')),
    ('edge_weight_in', 'float32', ('edges', )),
    ('edge_weight_out', 'float32', ('edges', )),
    ('seq', 'int64', ('positions', )),
    ('seq_batch', 'int64', ('positions', )),
    ('last', 'int64', ('sessions', )),
)
FORMATS = ('onnx', 'pt2')
#: Targets per TargetAttention chunk in exported models.
EXPORT_CHUNK = 4096
#: Default fixed session length :math:`L` of an exported TAGNN++ (the
#: :class:`~tagnn_pyg.serve.Recommender`'s default ``max_session_length``).
DEFAULT_MAX_SESSION_LENGTH = 200
SIDECAR_FORMAT = 'tagnn-pyg-export'


class ScoringModule(torch.nn.Module):
    r"""``model(batch)`` as a function of the batch tensors of :data:`INPUTS`
    (what the exporters trace)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight_in: Tensor,
                edge_weight_out: Tensor, seq: Tensor, seq_batch: Tensor,
                last: Tensor) -> Tensor:
        batch = SimpleNamespace(x=x, edge_index=edge_index, edge_weight_in=edge_weight_in,
                                edge_weight_out=edge_weight_out, seq=seq,
                                seq_batch=seq_batch, last=last)
        return self.model(batch)


def batch_inputs(batch: Any) -> Tuple[Tensor, ...]:
    r"""The tensors of :data:`INPUTS` from a session batch."""
    return tuple(getattr(batch, name) for name, _, _ in INPUTS)


def _exportable(model: torch.nn.Module, name: str,
                max_session_length: Optional[int] = None
                ) -> Tuple[torch.nn.Module, Optional[int]]:
    r"""An eval-mode copy of ``model`` that the exporters can trace, and the
    longest session it takes (``None``: any length)."""
    if max_session_length is not None and (
            not isinstance(max_session_length, int) or isinstance(max_session_length, bool)
            or max_session_length < 1):
        raise ValueError(f"max_session_length must be a positive int, got "
                         f"{max_session_length!r}")
    if getattr(model, 'released_padding', False):
        raise ValueError(f"model {name!r} emulates the released padding "
                         f"(released_padding=True), whose scores depend on the data "
                         f"set's longest session: export a model trained with "
                         f"released_padding=False")
    model = copy.deepcopy(model).eval()
    # The contract: a module with a ``static_length`` attribute pads sessions, and
    # pads them to exactly that many slots when it is set (StaticDenseBatch):
    # SessionTransformer, SessionSelfAttention, NARM and GRU4Rec (their GRU), LESSR
    # and its EOPAConv layers (graphs of fixed size, fixed message slots).
    padded = [m for m in model.modules() if hasattr(m, 'static_length')]
    caps = [m.max_length for m in padded if getattr(m, 'pos_emb', None) is not None]
    length = max_session_length
    if length is None and padded:
        length = min([DEFAULT_MAX_SESSION_LENGTH] + caps)
    for cap in caps:
        if length > cap:
            raise ValueError(f"max_session_length={length} is more than the "
                             f"max_length={cap} positions of model {name!r}'s "
                             f"positional embeddings: export with "
                             f"max_session_length <= {cap}")
    for module in padded:
        module.static_length = length
    for module in model.modules():
        if type(module).__name__ == 'TargetAttention':
            module.chunk_size = EXPORT_CHUNK
    return model, length


def _example(num_items: int, weighting: str) -> Tuple[Tensor, ...]:
    from ..data.batching import build_session_batch
    m = num_items - 1
    items = torch.tensor([1, 2 % m + 1, 1, 3 % m + 1, 2 % m + 1, 4 % m + 1, 5 % m + 1],
                         dtype=torch.long)
    ptr = torch.tensor([0, 4, 6, 7], dtype=torch.long)
    return batch_inputs(build_session_batch(items, ptr, weighting=weighting))


def _dynamic_shapes() -> Dict[str, Dict[int, Any]]:
    from torch.export import Dim
    dims = {n: Dim(n) for n in ('nodes', 'edges', 'positions', 'sessions')}
    return {name: {i: dims[a] for i, a in enumerate(axes) if a in dims}
            for name, _, axes in INPUTS}


def export_model(checkpoint: Union[str, Path], fmt: str, out: Union[str, Path],
                 max_session_length: Optional[int] = None) -> Dict[str, Any]:
    r"""Export the scoring of a checkpoint's model.

    Args:
        checkpoint (str or Path): ``best.pt`` / ``last.pt`` of a run.
        fmt (str): ``'onnx'`` (``torch.onnx.export(..., dynamo=True)``) or
            ``'pt2'`` (``torch.export.export`` + ``torch.export.save``).
        out (str or Path): the file to write; the sidecar goes to ``out + '.json'``.
        max_session_length (int, optional): the longest session the export
            takes, recorded in the sidecar and enforced by the
            :class:`~tagnn_pyg.serve.Recommender` of the file. For the models
            that pad sessions (TAGNN++, GC-SAN, NARM, GRU4Rec, LESSR) it is
            the fixed length :math:`L` every session is padded to (attention
            or GRU steps over :math:`L` slots per session, LESSR's
            :math:`L` candidate shortcuts per node); default
            :data:`DEFAULT_MAX_SESSION_LENGTH`, capped by the positional
            embeddings' ``max_length``. For SR-GNN, TAGNN and STAMP, whose
            graphs take any length, default ``None`` (no limit).

    Returns:
        The sidecar's content.

    Raises:
        ValueError: unknown format, or a model that cannot be exported (the
            message says why).
    """
    from ..checkpoint import build_model, load_checkpoint

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    ckpt = load_checkpoint(checkpoint)
    name = ckpt['model']['name']
    model, length = _exportable(build_model(ckpt, checkpoint), name, max_session_length)
    num_items = int(ckpt['num_items'])
    weighting = ckpt.get('train_config', {}).get('weighting', 'binary')
    module = ScoringModule(model).eval()
    args = _example(num_items, weighting)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        if fmt == 'pt2':
            program = torch.export.export(module, args, dynamic_shapes=_dynamic_shapes())
            torch.export.save(program, str(out))
        else:
            onnx_program = torch.onnx.export(
                module, args, dynamo=True, dynamic_shapes=_dynamic_shapes(),
                input_names=[n for n, _, _ in INPUTS], output_names=['scores'],
                verbose=False)
            onnx_program.save(str(out))
    sidecar = {'format': SIDECAR_FORMAT, 'file_format': fmt, 'model': name,
               'checkpoint': str(checkpoint), 'num_items': num_items,
               'item_ids': ckpt.get('item_ids'), 'weighting': weighting,
               'max_session_length': length,
               'inputs': [{'name': n, 'dtype': d, 'shape': list(a)} for n, d, a in INPUTS],
               'output': {'name': 'scores', 'dtype': 'float32',
                          'shape': ['sessions', num_items]}}
    Path(str(out) + '.json').write_text(json.dumps(sidecar, indent=1) + '\n')
    return sidecar


def load_sidecar(path: Union[str, Path]) -> Dict[str, Any]:
    r"""Read ``FILE.json`` written beside an exported ``FILE``."""
    side = Path(str(path) + '.json')
    if not side.is_file():
        raise FileNotFoundError(f"no sidecar {side} beside the exported model {path} "
                                f"(written by tagnn-pyg export)")
    data = json.loads(side.read_text())
    if not isinstance(data, dict) or data.get('format') != SIDECAR_FORMAT:
        raise ValueError(f"{side} is not a tagnn-pyg export sidecar")
    return data


def _open_export(path: Union[str, Path], fmt: str, what: str
                 ) -> Tuple[Path, Dict[str, Any]]:
    r"""The exported file ``path`` of format ``fmt`` and its sidecar; a missing
    file, or a sidecar that names another format, is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist (write it with "
                                f"'tagnn-pyg export --format {fmt}')")
    sidecar = load_sidecar(path)
    if sidecar.get('file_format', fmt) != fmt:
        raise ValueError(f"{path} was exported as {sidecar.get('file_format')!r} "
                         f"(its sidecar says so), not as {fmt!r}")
    return path, sidecar


class OnnxScorer:
    r"""``scorer(batch) -> Tensor[B, num_items]`` running an exported ONNX file
    with onnxruntime (CPU); the batch comes from the library's own
    :func:`~tagnn_pyg.data.batching.build_session_batch`.

    Args:
        path (str or Path): the ``.onnx`` file.
        num_threads (int, optional): onnxruntime intra-op threads.
    """

    backend = 'onnx'

    def __init__(self, path: Union[str, Path], num_threads: Optional[int] = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:  # pragma: no cover - depends on the extra
            raise ImportError("backend='onnx' needs onnxruntime: pip install "
                              "'tagnn-pyg[onnx]'") from err
        self.path, self.sidecar = _open_export(path, 'onnx', 'ONNX file')
        opts = ort.SessionOptions()
        if num_threads is not None:
            opts.intra_op_num_threads = int(num_threads)
        self.session = ort.InferenceSession(str(path), opts,
                                            providers=['CPUExecutionProvider'])
        self.input_names: List[str] = [i.name for i in self.session.get_inputs()]

    def __call__(self, batch: Any) -> Tensor:
        feed = {name: t.detach().cpu().numpy()
                for name, t in zip([n for n, _, _ in INPUTS], batch_inputs(batch))
                if name in self.input_names}
        return torch.from_numpy(self.session.run(['scores'], feed)[0])


class Pt2Scorer:
    r"""``scorer(batch) -> Tensor[B, num_items]`` running an exported
    ``torch.export`` program (``.pt2``) on the CPU; the batch comes from the
    library's own :func:`~tagnn_pyg.data.batching.build_session_batch`.

    Args:
        path (str or Path): the ``.pt2`` file.
    """

    backend = 'pt2'

    def __init__(self, path: Union[str, Path]) -> None:
        self.path, self.sidecar = _open_export(path, 'pt2', 'torch.export file')
        self.program = torch.export.load(str(self.path)).module()

    @torch.no_grad()
    def __call__(self, batch: Any) -> Tensor:
        return self.program(*(t.detach().cpu() for t in batch_inputs(batch)))
