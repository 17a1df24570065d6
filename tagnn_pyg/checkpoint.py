"""Training checkpoints: atomic writes, safe loading, and exact RNG restoration.

A checkpoint is a plain dictionary of tensors and built-in containers, so that it
loads with ``torch.load(..., weights_only=True)`` (no pickled classes, nothing is
executed on load). Its keys:

============================ ==================================================
``format``                   ``'tagnn-pyg-checkpoint'``
``format_version``           :data:`FORMAT_VERSION`
``tagnn_pyg_version``        version of the package that wrote it
``model``                    ``{'name': str, 'config': dict, 'state_dict': dict}``
``num_items``                embedding rows, padding id 0 included
``item_ids``                 ``None`` when item ids are already contiguous, else a
                             list: ``item_ids[i]`` is the original id of internal
                             id ``i`` (``item_ids[0]`` is ``None``, the padding id)
``optimizer``, ``scheduler`` their ``state_dict()`` (or ``None``)
``rng``                      Python, NumPy, torch CPU/CUDA and loader RNG states
``rng_per_rank``             written by a distributed run only: the ``rng`` of
                             every process, in rank order (``rng`` is rank 0's),
                             so that a resumption by as many processes restores
                             each one's generators
``epoch``                    number of completed epochs
``step``                     number of completed optimisation steps
``history``                  list of per-epoch records (dicts of numbers/strings)
``best``                     the best-so-far record (metric, value, epoch, ...)
``protocol``                 ``'honest'`` or ``'paper'``
``train_config``             the :class:`~tagnn_pyg.train.TrainConfig` as a dict
``state``                    trainer bookkeeping (early-stopping counter, whether
                             and why training stopped, ...)
``extra``                    free-form plain data (data set name, ...)
``best_state_dict``          in ``last.pt``: the best weights so far when they are
                             not the current ones (``None`` otherwise), so that
                             ``last.pt`` alone suffices to resume
``data``                     what the model was trained on
                             (:func:`tagnn_pyg.data.fingerprint.data_identity`:
                             item count, SHA-256 of the id mapping, data
                             fingerprint); optional: checkpoints written before
                             it existed load, and :func:`check_trained_on` warns
``item_counts``              clicks per internal item id in the training data
                             (``[num_items]`` float64 tensor, or ``None``): the
                             popularity that serving falls back to for sessions
                             without a known item; optional (older checkpoints)
============================ ==================================================
"""
from __future__ import annotations

import inspect
import os
import pickle
import random
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

PathLike = Union[str, os.PathLike]

FORMAT_NAME = 'tagnn-pyg-checkpoint'
#: Version of the checkpoint layout; bump it when keys change incompatibly.
FORMAT_VERSION = 1

REQUIRED_KEYS = ('format', 'format_version', 'model', 'num_items', 'epoch', 'step',
                 'history', 'protocol', 'train_config')


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or incompatible; the message names
    the file and what is wrong."""


class DataMismatchError(CheckpointError):
    """The data given is not what the checkpoint was trained on."""


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """Write ``obj`` with :func:`torch.save` to ``path`` atomically.

    The data goes to a temporary file in the same folder, is flushed to disk, and
    then replaces ``path`` with :func:`os.replace`: a reader (or a run killed at
    any moment) sees either the old file or the new one, never a partial file.

    Args:
        obj: anything :func:`torch.save` accepts.
        path: the destination file; its folder is created if needed.

    Returns:
        The destination as a :class:`~pathlib.Path`.

    Raises:
        OSError: of the original kind (``ENOSPC``, ``EACCES``, ...) naming
            ``path``, also when torch reports the failed write as its own
            ``RuntimeError``; ``path`` is unchanged.
    """
    from .utils.io import atomic_writer, renamed_os_error

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path, 'wb') as f:
        try:
            torch.save(obj, f)
        except RuntimeError as err:  # torch's writer hides the OSError it met
            cause = _os_error_in(err)
            if cause is None:
                raise
            raise renamed_os_error(cause, path) from None
    return path


def _os_error_in(err: BaseException) -> Optional[OSError]:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError):
            return err
        err = err.__cause__ or err.__context__
    return None


# --------------------------------------------------------------------------- RNG


def get_rng_state(generator: Optional[torch.Generator] = None) -> Dict[str, Any]:
    """The state of every random number generator training uses, as tensors and
    plain containers (safe for ``weights_only`` loading).

    Args:
        generator: the data loader's shuffling generator, if any.
    """
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: Dict[str, Any] = {
        'python': [py_version, list(py_state), py_gauss],
        'numpy': {'name': np_name, 'keys': torch.from_numpy(np_keys.astype(np.int64)),
                  'pos': int(np_pos), 'has_gauss': int(np_has_gauss),
                  'cached_gaussian': float(np_gauss)},
        'torch': torch.get_rng_state(),
        'cuda': (torch.cuda.get_rng_state_all()
                 if torch.cuda.is_available() and torch.cuda.is_initialized() else None),
        'loader': generator.get_state() if generator is not None else None,
    }
    return state


def set_rng_state(state: Mapping[str, Any],
                  generator: Optional[torch.Generator] = None) -> None:
    """Restore the generators saved by :func:`get_rng_state`.

    CUDA states are restored only when CUDA is available and the number of devices
    matches; the loader state only when ``generator`` is given.
    """
    py = state.get('python')
    if py is not None:
        random.setstate((int(py[0]), tuple(int(v) for v in py[1]), py[2]))
    npst = state.get('numpy')
    if npst is not None:
        np.random.set_state((npst['name'], npst['keys'].numpy().astype(np.uint32),
                             int(npst['pos']), int(npst['has_gauss']),
                             float(npst['cached_gaussian'])))
    if state.get('torch') is not None:
        torch.set_rng_state(state['torch'])
    cuda = state.get('cuda')
    if cuda is not None and torch.cuda.is_available() \
            and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    if generator is not None and state.get('loader') is not None:
        generator.set_state(state['loader'])


# ------------------------------------------------------------------- save / load


def make_checkpoint(
    *,
    model: torch.nn.Module,
    model_name: str,
    num_items: int,
    item_ids: Optional[Sequence[Any]] = None,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Optional[Any] = None,
    epoch: int = 0,
    step: int = 0,
    history: Optional[List[Dict[str, Any]]] = None,
    best: Optional[Dict[str, Any]] = None,
    protocol: str = 'honest',
    train_config: Optional[Dict[str, Any]] = None,
    state: Optional[Dict[str, Any]] = None,
    generator: Optional[torch.Generator] = None,
    extra: Optional[Dict[str, Any]] = None,
    best_state_dict: Optional[Mapping[str, torch.Tensor]] = None,
    data: Optional[Mapping[str, Any]] = None,
    rng_per_rank: Optional[Sequence[Mapping[str, Any]]] = None,
    item_counts: Optional[torch.Tensor] = None,
) -> Dict[str, Any]:
    """Assemble a checkpoint dictionary (see the module docstring).

    ``rng_per_rank`` (a distributed run's :func:`get_rng_state` of every
    process, in rank order) is stored only when given.

    The model must have a ``config()`` method returning its constructor keyword
    arguments (every model in :mod:`tagnn_pyg.models` has one).
    """
    from . import __version__

    config = model.config() if hasattr(model, 'config') else {}
    ckpt = {
        'format': FORMAT_NAME,
        'format_version': FORMAT_VERSION,
        'tagnn_pyg_version': __version__,
        'model': {'name': model_name, 'config': dict(config),
                  'state_dict': {k: v.detach().cpu() for k, v in model.state_dict().items()}},
        'num_items': int(num_items),
        'item_ids': list(item_ids) if item_ids is not None else None,
        'optimizer': optimizer.state_dict() if optimizer is not None else None,
        'scheduler': scheduler.state_dict() if scheduler is not None else None,
        'rng': get_rng_state(generator),
        'epoch': int(epoch),
        'step': int(step),
        'history': list(history or []),
        'best': dict(best) if best is not None else None,
        'protocol': protocol,
        'train_config': dict(train_config or {}),
        'state': dict(state or {}),
        'extra': dict(extra or {}),
        'best_state_dict': ({k: v.detach().cpu() for k, v in best_state_dict.items()}
                            if best_state_dict is not None else None),
        'data': dict(data) if data is not None else None,
        'item_counts': (item_counts.detach().cpu().to(torch.float64)
                        if item_counts is not None else None),
    }
    if rng_per_rank is not None:
        ckpt['rng_per_rank'] = [dict(state) for state in rng_per_rank]
    return ckpt


def save_checkpoint(path: PathLike, **kwargs: Any) -> Path:
    """Build a checkpoint with :func:`make_checkpoint` and write it atomically
    with :func:`atomic_torch_save`. Returns the path."""
    return atomic_torch_save(make_checkpoint(**kwargs), path)


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = 'cpu'
                    ) -> Dict[str, Any]:
    """Load and validate a checkpoint written by :func:`save_checkpoint`.

    Loading uses ``torch.load(weights_only=True)``: only tensors and plain
    containers are accepted, nothing is executed.

    Raises:
        CheckpointError: when the file is missing, is not a readable checkpoint
            (truncated, not a torch file, holds pickled objects), was written by an
            incompatible format version, or lacks required entries. The message
            names the file and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; expected a .pt file "
                              f"such as {path / 'best.pt'}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"checkpoint {path} is not a torch checkpoint file "
                              f"(corrupt, truncated, or another format)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {path} could not be loaded safely: the safe loader refused "
            f"{_refused_what(err)} (only tensors and plain containers are allowed; "
            f"nothing was run)") from None
    except Exception as err:  # truncated archive, bad records, ...
        raise CheckpointError(
            f"checkpoint {path} could not be read (corrupt or truncated): "
            f"{_load_failure(err)}") from err
    check_checkpoint(ckpt, path)
    return ckpt


def _refused_what(err: BaseException) -> str:
    """What torch's weights-only unpickler refused, without its advice to load
    unsafely."""
    text = str(err)
    match = re.search(r'GLOBAL ([\w.]+)', text)
    if match:
        return f"the global {match.group(1)}"
    match = re.search(r'(Unsupported operand \S+|Unsupported class \S+)', text)
    if match:
        return f"something it cannot load safely ({match.group(1)})"
    return "something it cannot load safely"


def _load_failure(err: BaseException) -> str:
    why = _first_line(err)
    return _refused_what(err) if 'weights_only' in why else why


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def check_checkpoint(ckpt: Any, path: PathLike = '<checkpoint>') -> None:
    """Raise :class:`CheckpointError` if ``ckpt`` is not a compatible checkpoint."""
    if not isinstance(ckpt, dict) or ckpt.get('format') != FORMAT_NAME:
        raise CheckpointError(
            f"checkpoint {path} is not a tagnn-pyg checkpoint (no "
            f"'format': {FORMAT_NAME!r} entry; got a {type(ckpt).__name__})")
    version = ckpt.get('format_version')
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}, this tagnn-pyg "
            f"reads version {FORMAT_VERSION} (written by tagnn-pyg "
            f"{ckpt.get('tagnn_pyg_version', '?')})")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks required entries {missing}")
    model = ckpt['model']
    if not isinstance(model, dict) or not {'name', 'config', 'state_dict'} <= set(model):
        raise CheckpointError(f"checkpoint {path}: 'model' entry must hold name, "
                              f"config and state_dict")


def config_with_defaults(model_cls: type, config: Mapping[str, Any],
                         keys: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """``config`` completed with the constructor defaults of ``model_cls`` for the
    ``keys`` it lacks (default: every constructor argument with a default).

    A checkpoint written before a model option existed has no entry for it, and
    the model it describes is the one built with that option's default (which is
    also what :func:`build_model` builds from it).
    """
    out = dict(config)
    for name, param in inspect.signature(model_cls.__init__).parameters.items():
        if name in out or param.default is inspect.Parameter.empty:
            continue
        if keys is None or name in keys:
            out[name] = param.default
    return out


def check_trained_on(ckpt: Mapping[str, Any], given: Mapping[str, Any],
                     path: PathLike = '<checkpoint>', allow_other_data: bool = False
                     ) -> Optional[str]:
    """Refuse data the checkpoint was not trained on.

    Args:
        ckpt (dict): from :func:`load_checkpoint`.
        given (dict): :func:`~tagnn_pyg.data.fingerprint.data_identity` of the
            data at hand.
        path (str or PathLike, optional): the checkpoint file, for messages.
        allow_other_data (bool, optional): report a difference as a warning
            instead of refusing.

    Returns:
        str or None: a warning (a checkpoint written before data fingerprints,
        or an allowed difference), or ``None``.

    Raises:
        DataMismatchError: naming every difference, unless ``allow_other_data``.
    """
    from .data.fingerprint import data_identity, identity_differences

    trained = ckpt.get('data')
    note = None
    if trained is None:  # written before checkpoints recorded their data
        trained = data_identity(int(ckpt['num_items']), ckpt.get('item_ids'))
        note = (f"checkpoint {path} does not record the data it was trained on "
                f"(written by tagnn-pyg {ckpt.get('tagnn_pyg_version', '?')}): only its "
                f"item count and id mapping can be checked")
    diff = identity_differences(trained, given)
    if not diff:
        return note
    what = '; '.join(diff)
    if not allow_other_data:
        raise DataMismatchError(f"checkpoint {path} was trained on other data: {what} "
                                f"(use --allow-other-data to use it anyway)")
    return f"checkpoint {path} was trained on other data ({what}); used anyway"


def build_model(ckpt: Mapping[str, Any], path: PathLike = '<checkpoint>',
                device: Union[str, torch.device, None] = None) -> torch.nn.Module:
    """Rebuild the model stored in a checkpoint and load its weights.

    Args:
        ckpt: a dictionary returned by :func:`load_checkpoint`.
        path: the file it came from (for error messages).
        device: where to put the model.

    Raises:
        CheckpointError: unknown model name, or weights that do not fit the model
            its config describes.
    """
    from .models import MODELS

    name = ckpt['model']['name']
    if name not in MODELS:
        raise CheckpointError(f"checkpoint {path} holds model {name!r}, which this "
                              f"tagnn-pyg does not know (known: {sorted(MODELS)})")
    try:
        model = MODELS[name](**ckpt['model']['config'])
    except TypeError as err:
        raise CheckpointError(f"checkpoint {path}: model {name!r} cannot be built "
                              f"from the stored config ({err})") from err
    try:
        model.load_state_dict(ckpt['model']['state_dict'])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {path}: stored weights do not fit model "
                              f"{name!r} ({first})") from err
    if device is not None:
        model = model.to(device)
    return model


__all__ = [
    'FORMAT_VERSION',
    'CheckpointError',
    'DataMismatchError',
    'atomic_torch_save',
    'check_trained_on',
    'get_rng_state',
    'set_rng_state',
    'make_checkpoint',
    'save_checkpoint',
    'load_checkpoint',
    'check_checkpoint',
    'build_model',
    'config_with_defaults',
]
