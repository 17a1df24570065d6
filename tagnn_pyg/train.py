r"""Training and evaluation: :class:`TrainConfig`, :class:`Trainer`, :func:`evaluate`.

The trainer knows a model only through the common interface of
:mod:`tagnn_pyg.models`: ``model(batch) -> [B, num_items]`` scores (column ``j``
is item id ``j``; column 0, the padding id, is :math:`-\infty`) and an
``embedding`` table. The loss is the released one,

.. math::
    \mathcal{L} = \mathrm{CE}(z_{1:m}, y - 1),

a softmax over items :math:`1..m` only.

Two evaluation protocols (see ``docs/training.md``):

* ``'honest'`` (default): the epoch is chosen on held-out *validation*
  sequences by ``select_metric`` (HR@20 by default), training stops early after
  ``patience`` epochs without improvement, and the test set is evaluated
  **once**, with the chosen weights, at the end.
* ``'paper'``: the released code's protocol: the *test* set is evaluated after
  every epoch and the best HR@20 and the best MRR@20 are reported separately
  (possibly from different epochs), with the released patience rule. The
  numbers are optimistic (selection on the test set) and labelled as such in
  every output.

Every run directory gets ``best.pt``, ``last.pt`` (atomic, each epoch),
``metrics.json``, ``log.csv``, ``log.jsonl`` and ``train.log``; resuming from
``last.pt`` continues exactly where the run stopped.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import (Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence,
                    Tuple, Union)

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .optim import AGC, make_adam
from .checkpoint import (CheckpointError, load_checkpoint, save_checkpoint,
                         set_rng_state)

PathLike = Union[str, os.PathLike]

logger = logging.getLogger('tagnn_pyg.train')

PROTOCOLS = ('honest', 'paper')
VALID_SPLITS = ('temporal', 'random')
OPTIMIZERS = ('adam', )

#: Training-config fields that may differ between a run and its resumption.
RESUMABLE_CHANGES = frozenset({'epochs', 'device', 'progress', 'tensorboard',
                               'num_threads', 'check_every', 'eval_batch_size',
                               'log_interval_s'})


class NonFiniteLossError(RuntimeError):
    """Training stopped on a NaN or infinite loss; the message names the epoch and
    batch and the last good checkpoint that was kept."""


# ------------------------------------------------------------------ configuration


@dataclass
class TrainConfig:
    r"""Everything that decides how a model is trained and evaluated.

    The defaults are the papers' optimisation settings (Adam, lr
    :math:`10^{-3}`, :math:`\times 0.1` every 3 epochs, L2 :math:`10^{-5}`,
    batch 100) under the honest protocol. The key names of the optimisation
    settings are those of :mod:`tagnn_pyg.presets`, so
    ``TrainConfig.from_preset(get_preset('tagnn'))`` takes a preset as is.

    Args:
        epochs (int): maximum number of epochs.
        batch_size (int): training sequences per batch.
        eval_batch_size (int, optional): sequences per evaluation batch
            (default: ``batch_size``).
        optimizer (str): ``'adam'`` (``weight_decay`` as Adam's L2 term, as released).
        lr (float): initial learning rate.
        weight_decay (float): L2 penalty.
        lr_decay (float): ``StepLR`` factor :math:`\gamma`.
        lr_decay_step (int): ``StepLR`` step size in epochs.
        scheduler_step_at_epoch_start (bool, optional): call
            ``scheduler.step()`` at the start of every epoch as the released
            loops do (the first decay then comes after ``lr_decay_step - 1``
            epochs); ``False`` steps at the end of each epoch. ``None`` picks the
            protocol's default: ``True`` for ``'paper'``, ``False`` for ``'honest'``.
        patience (int, optional): early stopping patience in epochs. ``None``:
            10 for ``'paper'`` (released), 3 for ``'honest'``.
        protocol (str): ``'honest'`` or ``'paper'`` (module docstring).
        valid (str): how validation data is held out under the honest protocol:
            ``'temporal'`` (most recent ``valid_fraction`` of the training
            *sessions*) or ``'random'`` (released ``--validation``: a random
            ``valid_fraction`` of the prefix-expanded sequences).
        valid_fraction (float): share of training data held out.
        select_metric (str): the validation metric that picks the epoch.
        agc (bool): adaptive gradient clipping (:class:`tagnn_pyg.optim.AGC`).
        agc_clipping (float), agc_eps (float), agc_exempt_embedding (bool): its
            :math:`\lambda`, :math:`\epsilon` and whether the item table is exempt.
        amp (bool): bfloat16 autocast for the training forward pass
            (evaluation always ranks float32 scores).
        device (str): ``'auto'`` (CUDA when available), ``'cpu'``, ``'cuda'``, ...
        seed (int): seeds Python, NumPy, torch, and the shuffling of each epoch.
        deterministic (bool): ask torch for deterministic kernels.
        num_threads (int, optional): ``torch.set_num_threads`` for the run.
        ks (tuple of int): cut-offs of HR@K, MRR@K, NDCG@K.
        weighting (str): session-graph edge weights, ``'binary'`` or ``'count'``.
        max_train (int, optional): keep about this many of the most recent
            training sequences (whole sessions when sessions are known).
        max_valid (int, optional): cap on validation sequences.
        max_test (int, optional): keep the first ``max_test`` test sequences.
        progress (bool): tqdm progress bars.
        tensorboard (bool): also log to TensorBoard (when installed).
        check_every (int): on CUDA, batches between host checks of the loss
            (progress bar update and non-finite check); every batch on the CPU.
        log_interval_s (float): when no progress bar is shown (``progress=False``
            or stderr is not a terminal), log a progress line (batch, loss,
            throughput) at most this often during an epoch.
    """
    epochs: int = 30
    batch_size: int = 100
    eval_batch_size: Optional[int] = None
    optimizer: str = 'adam'
    lr: float = 1e-3
    weight_decay: float = 1e-5
    lr_decay: float = 0.1
    lr_decay_step: int = 3
    scheduler_step_at_epoch_start: Optional[bool] = None
    patience: Optional[int] = None
    protocol: str = 'honest'
    valid: str = 'temporal'
    valid_fraction: float = 0.1
    select_metric: str = 'HR@20'
    agc: bool = False
    agc_clipping: float = 0.01
    agc_eps: float = 1e-3
    agc_exempt_embedding: bool = True
    amp: bool = False
    device: str = 'auto'
    seed: int = 0
    deterministic: bool = False
    num_threads: Optional[int] = None
    ks: Tuple[int, ...] = (5, 10, 20)
    weighting: str = 'binary'
    max_train: Optional[int] = None
    max_valid: Optional[int] = None
    max_test: Optional[int] = None
    progress: bool = True
    tensorboard: bool = False
    check_every: int = 50
    log_interval_s: float = 60.0

    def __post_init__(self) -> None:
        self.ks = tuple(int(k) for k in self.ks)
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.valid not in VALID_SPLITS:
            raise ValueError(f"valid must be one of {VALID_SPLITS}, got {self.valid!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.weighting not in ('binary', 'count'):
            raise ValueError(f"weighting must be 'binary' or 'count', got {self.weighting!r}")
        for name in ('epochs', 'batch_size', 'lr_decay_step', 'check_every'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ('eval_batch_size', 'patience', 'num_threads', 'max_train',
                     'max_valid', 'max_test'):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay!r}")
        if not 0 < self.valid_fraction < 1:
            raise ValueError(f"valid_fraction must be strictly between 0 and 1, "
                             f"got {self.valid_fraction!r}")
        needed = {self.select_metric}
        if self.protocol == 'paper':
            needed |= set(self.paper_metrics)
        for key in needed:
            name, _, k = key.partition('@')
            if name not in ('HR', 'MRR', 'NDCG') or not k.isdigit():
                raise ValueError(f"metric {key!r} must look like 'HR@20', 'MRR@20' "
                                 f"or 'NDCG@20'")
            if int(k) not in self.ks:
                raise ValueError(f"metric {key!r} needs K={k} in ks, got ks={self.ks}")

    # -- effective values ---------------------------------------------------

    @property
    def step_at_epoch_start(self) -> bool:
        """The effective scheduler placement (protocol default when unset)."""
        if self.scheduler_step_at_epoch_start is None:
            return self.protocol == 'paper'
        return bool(self.scheduler_step_at_epoch_start)

    @property
    def effective_patience(self) -> int:
        """The effective patience (protocol default when unset)."""
        if self.patience is None:
            return 10 if self.protocol == 'paper' else 3
        return self.patience

    @property
    def paper_metrics(self) -> Tuple[str, str]:
        """The two metrics the released code tracks (``HR@K``, ``MRR@K``, K =
        the cut-off of ``select_metric``)."""
        k = self.select_metric.partition('@')[2] or '20'
        return (f'HR@{k}', f'MRR@{k}')

    # -- conversion ---------------------------------------------------------

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-serialisable dict (``ks`` as a list)."""
        out = dataclasses.asdict(self)
        out['ks'] = list(self.ks)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **overrides: Any) -> 'TrainConfig':
        """Inverse of :meth:`to_dict`; unknown keys are refused by name."""
        merged = {**dict(data), **overrides}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; known: {sorted(known)}")
        return cls(**merged)

    @classmethod
    def from_preset(cls, preset: Any, **overrides: Any) -> 'TrainConfig':
        """Training settings of a :class:`tagnn_pyg.presets.Preset` (or its
        ``training`` dict), with ``overrides`` on top."""
        training = getattr(preset, 'training', preset)
        return cls.from_dict(training, **overrides)

    def describe(self) -> Dict[str, str]:
        """One-line human descriptions of the protocol and the schedule, as they
        appear in every output."""
        return {'protocol': describe_protocol(self), 'schedule': describe_schedule(self)}


def describe_protocol(cfg: TrainConfig) -> str:
    """The protocol label written into every output."""
    if cfg.protocol == 'paper':
        a, b = cfg.paper_metrics
        return (f"papers' protocol (released code): test set evaluated after every "
                f"epoch, best {a} and best {b} reported separately (possibly from "
                f"different epochs), patience {cfg.effective_patience}; selection on "
                f"the test set, so the numbers are optimistic")
    valid = (f"most recent {cfg.valid_fraction:.0%} of the training sessions"
             if cfg.valid == 'temporal' else
             f"random {cfg.valid_fraction:.0%} of the training sequences (released "
             f"--validation)")
    return (f"honest protocol: epoch chosen by validation {cfg.select_metric} "
            f"(validation = {valid}), early stopping with patience "
            f"{cfg.effective_patience}, test set evaluated once with the chosen weights")


def describe_schedule(cfg: TrainConfig) -> str:
    """The learning-rate schedule, including where the scheduler steps."""
    first = cfg.lr_decay_step - 1 if cfg.step_at_epoch_start else cfg.lr_decay_step
    where = ('stepped at the start of each epoch as in the released code'
             if cfg.step_at_epoch_start else 'stepped at the end of each epoch')
    return (f"Adam lr {cfg.lr:g}, L2 {cfg.weight_decay:g}, x{cfg.lr_decay:g} every "
            f"{cfg.lr_decay_step} epochs ({where}: first decay after epoch {first})")


# ------------------------------------------------------------------------ helpers


def resolve_device(device: Union[str, torch.device, None]) -> torch.device:
    """``'auto'``/``None`` -> CUDA when available, else CPU; anything else as
    given. Raises :class:`ValueError` for an unavailable CUDA device."""
    if device is None or str(device) == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}: expected 'auto', 'cpu', 'cuda' "
                         f"or 'cuda:N'") from err
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available "
                         f"on this machine (use --device cpu)")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool = True) -> None:
    """Ask torch for deterministic kernels (warning where none exists) and turn
    off cuDNN autotuning; sets ``CUBLAS_WORKSPACE_CONFIG`` if unset."""
    if enabled:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled and torch.backends.cudnn.benchmark


def _epoch_seed(seed: int, epoch: int) -> int:
    """Seed of the global torch RNG at the start of epoch ``epoch`` (0-based):
    dropout draws depend only on (seed, epoch), so a resumed run repeats them."""
    return (int(seed) * 1_000_003 + 7919 * (int(epoch) + 1)) % (2**63 - 1)


def _model_device(model: Any) -> Optional[torch.device]:
    if isinstance(model, torch.nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return None


def _model_name(model: torch.nn.Module) -> str:
    try:
        from .models import MODELS
        for key, cls in MODELS.items():
            if type(model) is cls:
                return key
    except ImportError:  # pragma: no cover - models not importable
        pass
    return type(model).__name__


def _atomic_text(path: Path, text: str) -> None:
    from .utils.io import atomic_write_text
    atomic_write_text(path, text)


def _fmt_metrics(metrics: Mapping[str, float], keys: Iterable[str]) -> str:
    return '  '.join(f'{k} {metrics[k]:.2f}' for k in keys if k in metrics)


def _autocast(device: torch.device, enabled: bool) -> Any:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar; with ``enabled`` it still hides itself when stderr is not a
    terminal (logs of batch jobs stay clean)."""
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit='batch', leave=False,
                disable=None if enabled else True, dynamic_ncols=True)


# ---------------------------------------------------------------------- evaluate


@torch.no_grad()
def evaluate(
    model: Callable[..., Tensor],
    sequences: Any,
    *,
    batch_size: int = 100,
    ks: Sequence[int] = (5, 10, 20),
    device: Union[str, torch.device, None] = None,
    weighting: str = 'binary',
    progress: bool = False,
    desc: str = 'evaluate',
) -> Dict[str, float]:
    r"""Full-ranking HR@K, MRR@K and NDCG@K (percent) of ``model`` on ``sequences``.

    Every target is ranked against all items :math:`1..m` (ties counted against
    the model) with :class:`tagnn_pyg.metrics.TopKMetrics`; metrics are
    accumulated on the device.

    Args:
        model (callable): ``model(batch) -> [B, num_items]`` scores: a
            :mod:`tagnn_pyg.models` model or a :mod:`tagnn_pyg.baselines` one.
            A :class:`torch.nn.Module` is put in ``eval()`` mode for the call and
            restored afterwards.
        sequences (SessionSequences): prefixes with ``targets``.
        batch_size (int): sequences per batch.
        ks (sequence of int): the cut-offs.
        device: where batches are built (default: the model's device, else CPU).
        weighting (str): session-graph edge weights.
        progress (bool): show a progress bar.
        desc (str): its label.

    Returns:
        dict: ``{'HR@5': ..., 'MRR@5': ..., 'NDCG@5': ..., ...}`` and ``'count'``
        (number of test cases).
    """
    from .data.batching import SessionLoader
    from .metrics import TopKMetrics

    if getattr(sequences, 'targets', None) is None:
        raise ValueError("evaluation needs sequences with targets (the next item of "
                         "each prefix)")
    if len(sequences) == 0:
        raise ValueError("evaluation needs at least one sequence, got none")
    dev = (resolve_device(device) if device is not None
           else (_model_device(model) or torch.device('cpu')))
    loader = SessionLoader(sequences, batch_size, shuffle=False, weighting=weighting,
                           device=dev)
    metrics = TopKMetrics(ks)
    was_training = isinstance(model, torch.nn.Module) and model.training
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        with _progress(len(loader), desc, progress) as bar:
            for batch in loader:
                scores = model(batch)
                metrics.update(scores.float(), batch.y)
                bar.update(1)
    finally:
        if was_training:
            model.train()
    out = metrics.compute()
    out['count'] = metrics.count
    return out


# ------------------------------------------------------------------------ splits


@dataclass
class Splits:
    r"""The sequences a run trains, selects and tests on, with a description.

    Attributes:
        train, valid, test (SessionSequences or None): prefix-expanded data.
        notes (list of str): what was done (split kind, caps), for the record.
        train_sessions (list of list of int, optional): the whole sessions that
            ``train`` was expanded from, when known (what the papers' baselines
            are fitted on).
    """
    train: Any
    valid: Any = None
    test: Any = None
    notes: List[str] = field(default_factory=list)
    train_sessions: Optional[List[List[int]]] = None

    def sizes(self) -> Dict[str, Optional[int]]:
        return {k: (len(v) if v is not None else None)
                for k, v in (('train', self.train), ('valid', self.valid),
                             ('test', self.test))}


def _recent_sessions(sessions: List[List[int]], max_sequences: int) -> List[List[int]]:
    """The most recent whole sessions holding at most ``max_sequences`` prefixes
    (at least one session)."""
    total, keep = 0, 0
    for s in reversed(sessions):
        n = max(len(s) - 1, 0)
        if keep and total + n > max_sequences:
            break
        total += n
        keep += 1
    return list(sessions[len(sessions) - keep:])


def make_splits(
    cfg: TrainConfig,
    *,
    train: Any = None,
    test: Any = None,
    train_sessions: Optional[Sequence[Sequence[int]]] = None,
) -> Splits:
    r"""Build the train / validation / test sequences of ``cfg``'s protocol.

    * ``'paper'``: all training sequences; no validation split.
    * ``'honest'`` + ``valid='temporal'``: the most recent ``valid_fraction`` of
      the training *sessions* (whole sessions; needs ``train_sessions``, i.e.
      ``all_train_seq.txt``) become validation, both sides prefix-expanded.
    * ``'honest'`` + ``valid='random'``: a random ``valid_fraction`` of the
      prefix-expanded training sequences (the released ``--validation``).

    The papers' protocol and the random split use ``train`` when given (the
    released code reads ``train.txt``), else the expansion of ``train_sessions``.

    Caps: ``max_train`` keeps the most recent training data (whole sessions for
    the temporal split and the baselines, the last sequences of ``train``
    otherwise), before the split; ``max_valid`` keeps the last validation sequences;
    ``max_test`` keeps the first test sequences.

    Args:
        cfg (TrainConfig): protocol, split and caps.
        train (SessionSequences, optional): prefix-expanded training sequences
            (used when ``train_sessions`` is not given, or for the random split).
        test (SessionSequences, optional): test sequences.
        train_sessions (list of list of int, optional): whole training sessions
            in date order.
    """
    from .data.sequences import expand_prefixes
    from .data.split import random_prefix_split, temporal_session_split

    notes: List[str] = []
    if train_sessions is None and train is None:
        raise ValueError("make_splits needs training data: train or train_sessions")
    sessions = [list(s) for s in train_sessions] if train_sessions is not None else None
    if sessions is not None and cfg.max_train is not None:
        sessions = _recent_sessions(sessions, cfg.max_train)
        notes.append(f"training sessions capped to the {len(sessions)} most recent "
                     f"(max_train={cfg.max_train} sequences)")

    def sequences() -> Any:
        """All training sequences: ``train`` as given (``train.txt``, as the
        released code reads it) or the expansion of the sessions; capped."""
        if train is None:
            return expand_prefixes(sessions)
        if cfg.max_train is not None and len(train) > cfg.max_train:
            notes.append(f"training sequences capped to the last {cfg.max_train}")
            return train[len(train) - cfg.max_train:]
        return train

    valid = None
    used_sessions = sessions
    if cfg.protocol == 'paper':
        train = sequences()
        notes.append("papers' protocol: no validation split, all training sequences used")
    elif cfg.valid == 'temporal':
        if sessions is None:
            raise ValueError(
                "the temporal validation split needs whole training sessions "
                "(all_train_seq.txt), but only prefix-expanded sequences (train.txt) "
                "are available; use the random prefix split (valid='random', "
                "--valid random)")
        tr, va = temporal_session_split(sessions, cfg.valid_fraction)
        train, valid = expand_prefixes(tr), expand_prefixes(va)
        used_sessions = list(tr)
        notes.append(f"validation: the most recent {len(va)} of {len(sessions)} training "
                     f"sessions ({cfg.valid_fraction:.0%}), whole sessions")
    else:
        train, valid = random_prefix_split(sequences(), cfg.valid_fraction, seed=cfg.seed)
        used_sessions = None  # the random split cuts sessions
        notes.append(f"validation: random {cfg.valid_fraction:.0%} of the training "
                     f"sequences (released --validation; prefixes of one session can "
                     f"fall on both sides)")
    if valid is not None and cfg.max_valid is not None and len(valid) > cfg.max_valid:
        valid = valid[len(valid) - cfg.max_valid:]
        notes.append(f"validation capped to its last {cfg.max_valid} sequences")
    if test is not None and cfg.max_test is not None and len(test) > cfg.max_test:
        test = test[:cfg.max_test]
        notes.append(f"test set capped to its first {cfg.max_test} sequences")
    return Splits(train=train, valid=valid, test=test, notes=notes,
                  train_sessions=used_sessions)


# ----------------------------------------------------------------------- trainer


class Trainer:
    r"""Trains a session-recommendation model under the honest or the papers'
    protocol, with checkpoints, logs, early stopping and exact resumption.

    Args:
        model (torch.nn.Module): a model with the common interface
            (``model(batch) -> [B, num_items]``, ``.embedding``, ``.config()``
            for checkpoints).
        config (TrainConfig, optional): training settings.
        out_dir (str or PathLike, optional): run directory for ``best.pt``,
            ``last.pt``, ``metrics.json`` and logs (nothing is written if
            ``None``; resuming then is impossible).
        model_name (str, optional): key of :data:`tagnn_pyg.models.MODELS`
            (default: looked up from the model's class).
        item_ids (list, optional): original id of each internal item id (stored
            in checkpoints; ``None`` when ids are already contiguous).
        extra (dict, optional): plain data stored in checkpoints and
            ``metrics.json`` (data set name, preset, ...).
        on_batch_end (callable, optional): ``fn(epoch, batch_index)`` called after
            every optimisation step (1-based epoch, 0-based batch); for tests
            and custom hooks.

    Example:
        >>> trainer = Trainer(model, TrainConfig(epochs=5), out_dir='runs/x')  # doctest: +SKIP
        >>> result = trainer.fit(splits.train, splits.valid, splits.test)  # doctest: +SKIP
        >>> result['test']['HR@20']  # doctest: +SKIP
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: Optional[TrainConfig] = None,
        *,
        out_dir: Optional[PathLike] = None,
        model_name: Optional[str] = None,
        item_ids: Optional[Sequence[Any]] = None,
        extra: Optional[Dict[str, Any]] = None,
        on_batch_end: Optional[Callable[[int, int], None]] = None,
    ) -> None:
        self.config = config if config is not None else TrainConfig()
        cfg = self.config
        self.device = resolve_device(cfg.device)
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        if cfg.deterministic:
            set_deterministic(True)
        self.model = model.to(self.device)
        self.model_name = model_name or _model_name(model)
        self.num_items = int(getattr(model, 'num_items', model.embedding.num_embeddings))
        self.item_ids = list(item_ids) if item_ids is not None else None
        self.extra = dict(extra or {})
        self.on_batch_end = on_batch_end
        self.out_dir = Path(out_dir) if out_dir is not None else None

        self.optimizer = make_adam(self.model.parameters(), lr=cfg.lr,
                                   weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=cfg.lr_decay_step, gamma=cfg.lr_decay)
        self.agc = None
        if cfg.agc:
            self.agc = AGC.for_model(self.model, clipping=cfg.agc_clipping, eps=cfg.agc_eps,
                                     exempt_embedding=cfg.agc_exempt_embedding)
        # Bookkeeping (restored on resume).
        self.epoch = 0                 # completed epochs
        self.step = 0                  # completed optimisation steps
        self.history: List[Dict[str, Any]] = []
        self.best: Optional[Dict[str, Any]] = None
        self.best_per_metric: Dict[str, Dict[str, Any]] = {}
        self.bad_epochs = 0
        self.stop_reason: Optional[str] = None
        self._best_state: Optional[Dict[str, Tensor]] = None
        self._tb: Any = None
        self._log_handler: Optional[logging.Handler] = None

    # -- paths ---------------------------------------------------------------

    @property
    def last_path(self) -> Optional[Path]:
        return self.out_dir / 'last.pt' if self.out_dir is not None else None

    @property
    def best_path(self) -> Optional[Path]:
        return self.out_dir / 'best.pt' if self.out_dir is not None else None

    # -- public API ----------------------------------------------------------

    def fit(self, train: Any, valid: Any = None, test: Any = None, *,
            resume: bool = False) -> Dict[str, Any]:
        r"""Train, select the epoch, and evaluate (see the module docstring).

        Args:
            train (SessionSequences): training sequences with targets.
            valid (SessionSequences, optional): validation sequences (required by
                the honest protocol, unused by the papers' protocol).
            test (SessionSequences, optional): test sequences (required by the
                papers' protocol; evaluated once at the end by the honest one).
            resume (bool): continue from ``out_dir/last.pt``.

        Returns:
            dict: the content of ``metrics.json`` (protocol label, chosen epoch,
            validation/test metrics, history, sizes, timing). After ``fit``
            the model holds the chosen (best) weights.

        Raises:
            NonFiniteLossError: on a NaN/infinite loss (checkpoints kept).
            CheckpointError: when ``resume`` finds no compatible ``last.pt``.
        """
        from .data.batching import SessionLoader

        cfg = self.config
        if cfg.protocol == 'honest' and valid is None:
            raise ValueError("the honest protocol needs validation sequences (valid=...); "
                             "make them with make_splits(), or use protocol='paper'")
        if cfg.protocol == 'paper' and test is None:
            raise ValueError("the papers' protocol evaluates the test set every epoch: "
                             "pass test=...")
        if getattr(train, 'targets', None) is None or len(train) == 0:
            raise ValueError("training needs at least one sequence with a target")
        if resume and self.out_dir is None:
            raise ValueError("resume=True needs out_dir (where last.pt lives)")
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._open_logs()
        try:
            seed_everything(cfg.seed)
            if resume:
                self._resume()
            labels = cfg.describe()
            logger.info('%s', labels['protocol'])
            logger.info('schedule: %s', labels['schedule'])
            logger.info('model %s (%s parameters) on %s; %d train / %s valid / %s test '
                        'sequences', self.model_name,
                        f'{sum(p.numel() for p in self.model.parameters()):,}',
                        self.device, len(train), len(valid) if valid is not None else '-',
                        len(test) if test is not None else '-')
            loader = SessionLoader(train, cfg.batch_size, shuffle=True,
                                   weighting=cfg.weighting, device=self.device,
                                   seed=cfg.seed)
            t_start = time.perf_counter()
            while self.stop_reason is None and self.epoch < cfg.epochs:
                self._run_epoch(loader, valid if cfg.protocol == 'honest' else test)
            train_time = time.perf_counter() - t_start
            return self._finish(train, valid, test, train_time)
        finally:
            self._close_logs()

    # -- one epoch -----------------------------------------------------------

    def _run_epoch(self, loader: Any, eval_set: Any) -> None:
        cfg = self.config
        e = self.epoch  # 0-based index of the epoch being run
        if cfg.step_at_epoch_start:
            with warnings.catch_warnings():  # deliberate: the released order
                warnings.filterwarnings('ignore', message='Detected call of `lr_scheduler')
                self.scheduler.step()
        lr = self.optimizer.param_groups[0]['lr']
        torch.manual_seed(_epoch_seed(cfg.seed, e))
        loader.set_epoch(e)
        model = self.model
        model.train()
        on_cpu = self.device.type == 'cpu'
        check = 1 if on_cpu else cfg.check_every
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        bad_at = torch.full((), -1, device=self.device, dtype=torch.long)
        seen = 0
        t0 = last_log = time.perf_counter()
        n_batches = len(loader)
        with _progress(n_batches, f'epoch {e + 1}/{cfg.epochs}', cfg.progress) as bar:
            for k, batch in enumerate(loader):
                with _autocast(self.device, cfg.amp):
                    scores = model(batch)
                loss = F.cross_entropy(scores[:, 1:].float(), batch.y - 1)
                if on_cpu:  # free on the CPU: stop before the weights are touched
                    if not math.isfinite(loss.item()):
                        self._non_finite(e, k, n_batches, loss.item())
                else:
                    bad_at = torch.where((bad_at < 0) & ~torch.isfinite(loss.detach()),
                                         torch.full_like(bad_at, k), bad_at)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.agc is not None:
                    self.agc.clip_()
                self.optimizer.step()
                self.step += 1
                b = int(batch.y.numel())
                seen += b
                loss_sum += loss.detach().double() * b
                if (k + 1) % check == 0 or k + 1 == n_batches:
                    if not on_cpu:
                        bad = int(bad_at)
                        if bad >= 0:
                            self._non_finite(e, bad, n_batches, float('nan'))
                    now = time.perf_counter()
                    if not bar.disable:
                        bar.set_postfix(loss=f'{float(loss_sum) / seen:.4f}',
                                        seq_s=f'{seen / max(now - t0, 1e-9):,.0f}',
                                        refresh=False)
                        bar.update((k + 1) - bar.n)
                    elif now - last_log >= cfg.log_interval_s and k + 1 < n_batches:
                        last_log = now
                        logger.info('epoch %d/%d  batch %d/%d  loss %.4f  %s seq/s',
                                    e + 1, cfg.epochs, k + 1, n_batches,
                                    float(loss_sum) / seen,
                                    f'{seen / max(now - t0, 1e-9):,.0f}')
                if self.on_batch_end is not None:
                    self.on_batch_end(e + 1, k)
        train_loss = float(loss_sum) / max(seen, 1)
        train_time = time.perf_counter() - t0
        if not cfg.step_at_epoch_start:
            self.scheduler.step()

        split = 'valid' if cfg.protocol == 'honest' else 'test'
        t1 = time.perf_counter()
        metrics = evaluate(model, eval_set, batch_size=cfg.eval_batch_size or cfg.batch_size,
                           ks=cfg.ks, device=self.device, weighting=cfg.weighting,
                           progress=cfg.progress, desc=f'{split} {e + 1}/{cfg.epochs}')
        eval_time = time.perf_counter() - t1
        self.epoch = e + 1
        improved = self._update_best(metrics)
        record = {'epoch': self.epoch, 'lr': lr, 'train_loss': train_loss,
                  'train_time_s': round(train_time, 3), 'eval_time_s': round(eval_time, 3),
                  'sequences_per_s': round(seen / max(train_time, 1e-9), 1),
                  'steps': self.step, split: metrics, 'improved': improved}
        self.history.append(record)
        if self.stop_reason is None:
            if self.bad_epochs >= cfg.effective_patience:
                self.stop_reason = 'early_stopping'
            elif self.epoch >= cfg.epochs:
                self.stop_reason = 'max_epochs'
        sel = cfg.paper_metrics if cfg.protocol == 'paper' else (cfg.select_metric, )
        logger.info('epoch %d/%d  lr %.3g  loss %.4f  %s %s  (%.1fs train, %.1fs eval, '
                    '%s seq/s)%s', self.epoch, cfg.epochs, lr, train_loss, split,
                    _fmt_metrics(metrics, sel), train_time, eval_time,
                    f"{record['sequences_per_s']:,.0f}", '  *' if improved else '')
        if self.stop_reason == 'early_stopping':
            logger.info('early stopping: %d epochs without improvement (patience %d)',
                        self.bad_epochs, cfg.effective_patience)
        self._save_epoch(improved)
        self._write_logs()

    def _update_best(self, metrics: Dict[str, float]) -> bool:
        """Update the best record and the patience counter; return whether the
        checkpoint-defining metric improved."""
        cfg = self.config
        if cfg.protocol == 'honest':
            value = metrics[cfg.select_metric]
            improved = self.best is None or value > self.best['value']
            if improved:
                self.best = {'epoch': self.epoch, 'split': 'valid',
                             'metric': cfg.select_metric, 'value': value,
                             'metrics': dict(metrics)}
                self.bad_epochs = 0
            else:
                self.bad_epochs += 1
            return improved
        # papers' protocol, released rule: ">=" and a flag over HR and MRR
        flag = False
        for key, value in metrics.items():
            if key == 'count':
                continue
            prev = self.best_per_metric.get(key)
            if prev is None or value >= prev['value']:
                self.best_per_metric[key] = {'value': value, 'epoch': self.epoch}
                if key in cfg.paper_metrics:
                    flag = True
        hr = cfg.paper_metrics[0]
        improved = self.best_per_metric[hr]['epoch'] == self.epoch
        if improved:
            self.best = {'epoch': self.epoch, 'split': 'test', 'metric': hr,
                         'value': metrics[hr], 'metrics': dict(metrics)}
        self.bad_epochs = 0 if flag else self.bad_epochs + 1
        return improved

    def _non_finite(self, e: int, k: int, n_batches: int, value: float) -> None:
        if self.last_path is not None and self.last_path.exists():
            kept = f"the last good checkpoint {self.last_path} (epoch {self.epoch}) was kept"
        elif self.out_dir is not None:
            kept = "no checkpoint had been written yet"
        else:
            kept = "no checkpoints are written (out_dir=None)"
        msg = (f"non-finite training loss ({value}) in epoch {e + 1}, batch {k + 1} of "
               f"{n_batches}: training stopped; {kept}. Try a lower learning rate, "
               f"AGC (--agc) or disabling AMP.")
        logger.error('%s', msg)
        raise NonFiniteLossError(msg)

    # -- checkpoints ---------------------------------------------------------

    def _state(self) -> Dict[str, Any]:
        return {'bad_epochs': self.bad_epochs, 'stop_reason': self.stop_reason,
                'best_per_metric': self.best_per_metric}

    def _ckpt_kwargs(self) -> Dict[str, Any]:
        return dict(model=self.model, model_name=self.model_name, num_items=self.num_items,
                    item_ids=self.item_ids, optimizer=self.optimizer,
                    scheduler=self.scheduler, epoch=self.epoch, step=self.step,
                    history=self.history, best=self.best, protocol=self.config.protocol,
                    train_config=self.config.to_dict(), state=self._state(),
                    extra=self.extra)

    def _save_epoch(self, improved: bool) -> None:
        """Snapshot the best weights on improvement; write ``best.pt`` (on
        improvement) and then ``last.pt``, each atomically. ``last.pt`` also
        holds the best weights when they are not the current ones, so that it
        alone suffices to resume."""
        if improved:
            self._best_state = {k: v.detach().cpu().clone()
                                for k, v in self.model.state_dict().items()}
        if self.out_dir is None:
            return
        if improved:
            save_checkpoint(self.best_path, **self._ckpt_kwargs())
        current_is_best = self.best is not None and self.best['epoch'] == self.epoch
        save_checkpoint(self.last_path, **self._ckpt_kwargs(),
                        best_state_dict=None if current_is_best else self._best_state)

    def _resume(self) -> None:
        path = self.last_path
        assert path is not None
        if not path.exists():
            raise CheckpointError(f"cannot resume: {path} does not exist (no epoch of this "
                                  f"run finished yet?); start without --resume")
        ckpt = load_checkpoint(path)
        if ckpt['model']['name'] != self.model_name:
            raise CheckpointError(f"cannot resume from {path}: it holds model "
                                  f"{ckpt['model']['name']!r}, this run trains "
                                  f"{self.model_name!r}")
        config = self.model.config() if hasattr(self.model, 'config') else {}
        if dict(ckpt['model']['config']) != dict(config):
            diff = sorted(k for k in set(config) | set(ckpt['model']['config'])
                          if config.get(k) != ckpt['model']['config'].get(k))
            raise CheckpointError(f"cannot resume from {path}: model config differs in "
                                  f"{diff}")
        if int(ckpt['num_items']) != self.num_items:
            raise CheckpointError(f"cannot resume from {path}: it has {ckpt['num_items']} "
                                  f"items, this data set {self.num_items}")
        saved = dict(ckpt['train_config'])
        now = self.config.to_dict()
        diff = [f"{k} (checkpoint {saved.get(k)!r}, now {now.get(k)!r})"
                for k in sorted(set(saved) | set(now))
                if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k)]
        if diff:
            raise CheckpointError(f"cannot resume from {path}: training settings differ: "
                                  f"{'; '.join(diff)}; only {sorted(RESUMABLE_CHANGES)} "
                                  f"may change")
        self.model.load_state_dict(ckpt['model']['state_dict'])
        if ckpt.get('optimizer') is not None:
            self.optimizer.load_state_dict(ckpt['optimizer'])
        if ckpt.get('scheduler') is not None:
            self.scheduler.load_state_dict(ckpt['scheduler'])
        set_rng_state(ckpt['rng'])
        self.epoch = int(ckpt['epoch'])
        self.step = int(ckpt['step'])
        self.history = list(ckpt['history'])
        self.best = ckpt.get('best')
        state = ckpt.get('state') or {}
        self.bad_epochs = int(state.get('bad_epochs', 0))
        self.best_per_metric = dict(state.get('best_per_metric') or {})
        reason = state.get('stop_reason')
        # a run that ended at its epoch limit continues when the limit was raised
        self.stop_reason = None if reason == 'max_epochs' else reason
        if self.stop_reason is None and self.epoch >= self.config.epochs:
            self.stop_reason = 'max_epochs'
        best_state = ckpt.get('best_state_dict')
        if best_state is None and self.best is not None and self.best['epoch'] == self.epoch:
            best_state = ckpt['model']['state_dict']
        self._best_state = ({k: v.clone() for k, v in best_state.items()}
                            if best_state is not None else None)
        logger.info('resumed from %s after epoch %d (step %d)%s', path, self.epoch,
                    self.step, f'; already stopped ({self.stop_reason})'
                    if self.stop_reason else '')

    # -- end of training -----------------------------------------------------

    def _load_best_weights(self) -> None:
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)

    def _finish(self, train: Any, valid: Any, test: Any, train_time: float) -> Dict[str, Any]:
        cfg = self.config
        if self.best is None:
            raise RuntimeError("no epoch was completed: nothing to report "
                               f"(epochs={cfg.epochs})")
        self._load_best_weights()
        result: Dict[str, Any] = {
            'protocol': cfg.protocol,
            'protocol_description': describe_protocol(cfg),
            'schedule': describe_schedule(cfg),
            'model': self.model_name,
            'model_config': self.model.config() if hasattr(self.model, 'config') else {},
            'num_items': self.num_items,
            'epochs_run': self.epoch,
            'stopped': self.stop_reason,
            'sizes': {'train': len(train), 'valid': len(valid) if valid is not None else None,
                      'test': len(test) if test is not None else None},
            'train_time_s': round(train_time, 3),
        }
        if cfg.protocol == 'honest':
            result['selection'] = {'split': 'valid', 'metric': cfg.select_metric}
            result['epoch_chosen'] = self.best['epoch']
            result['valid'] = self.best['metrics']
            if test is not None:
                t0 = time.perf_counter()
                result['test'] = evaluate(
                    self.model, test, batch_size=cfg.eval_batch_size or cfg.batch_size,
                    ks=cfg.ks, device=self.device, weighting=cfg.weighting,
                    progress=cfg.progress, desc='test')
                result['test_time_s'] = round(time.perf_counter() - t0, 3)
                logger.info('test (once, weights of epoch %d chosen on validation %s): %s',
                            self.best['epoch'], cfg.select_metric,
                            _fmt_metrics(result['test'], [f'{m}@{k}' for k in cfg.ks
                                                          for m in ('HR', 'MRR')]))
            else:
                result['test'] = None
        else:
            hr, mrr = cfg.paper_metrics
            result['selection'] = {'split': 'test', 'metric': [hr, mrr]}
            result['epoch_chosen'] = {hr: self.best_per_metric[hr]['epoch'],
                                      mrr: self.best_per_metric[mrr]['epoch']}
            result['best_per_metric'] = self.best_per_metric
            result['test'] = {k: v['value'] for k, v in self.best_per_metric.items()}
            result['test']['count'] = self.best['metrics'].get('count')
            result['test_at_best_epoch'] = self.best['metrics']
            logger.info("papers' protocol (test set every epoch, best of each metric "
                        "separately): %s %.2f (epoch %d)  %s %.2f (epoch %d)", hr,
                        self.best_per_metric[hr]['value'], self.best_per_metric[hr]['epoch'],
                        mrr, self.best_per_metric[mrr]['value'],
                        self.best_per_metric[mrr]['epoch'])
        result['train_config'] = cfg.to_dict()
        if self.extra:
            result['extra'] = {k: v for k, v in self.extra.items() if _jsonable(v)}
        result['history'] = self.history
        if self.out_dir is not None:
            result['checkpoints'] = {'best': str(self.best_path), 'last': str(self.last_path)}
            _atomic_text(self.out_dir / 'metrics.json', json.dumps(result, indent=2) + '\n')
        return result

    # -- logs ----------------------------------------------------------------

    def _open_logs(self) -> None:
        assert self.out_dir is not None
        handler = logging.FileHandler(self.out_dir / 'train.log', encoding='utf-8')
        handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(message)s'))
        logger.addHandler(handler)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        self._log_handler = handler
        if self.config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(self.out_dir / 'tensorboard'))
            except ImportError:
                logger.warning('tensorboard requested but not installed '
                               '(pip install tensorboard); logging to CSV/JSON only')

    def _close_logs(self) -> None:
        if self._log_handler is not None:
            logger.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def _write_logs(self) -> None:
        if self.out_dir is None:
            return
        rows = [_flatten(r) for r in self.history]
        _atomic_text(self.out_dir / 'log.jsonl',
                     ''.join(json.dumps(r) + '\n' for r in self.history))
        columns: List[str] = []
        for r in rows:
            columns += [c for c in r if c not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        _atomic_text(self.out_dir / 'log.csv', buf.getvalue())
        if self._tb is not None and rows:
            last = rows[-1]
            for key, value in last.items():
                if key != 'epoch' and isinstance(value, (int, float)) \
                        and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, int(last['epoch']))
            self._tb.flush()


def _flatten(record: Mapping[str, Any], prefix: str = '') -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f'{prefix}{key}/'))
        else:
            out[f'{prefix}{key}'] = value
    return out


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


__all__ = [
    'TrainConfig',
    'Trainer',
    'Splits',
    'make_splits',
    'evaluate',
    'NonFiniteLossError',
    'describe_protocol',
    'describe_schedule',
    'resolve_device',
    'seed_everything',
    'set_deterministic',
]
