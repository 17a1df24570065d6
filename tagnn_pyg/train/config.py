"""The training configuration: :class:`TrainConfig` and how a run describes it."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple


PROTOCOLS = ('honest', 'paper')
VALID_SPLITS = ('temporal', 'random')
OPTIMIZERS = ('adam', 'adamw')
WEIGHTINGS = ('binary', 'count')

#: Training-config fields that may differ between a run and its resumption.
RESUMABLE_CHANGES = frozenset({'epochs', 'device', 'progress', 'tensorboard',
                               'num_threads', 'check_every', 'eval_batch_size',
                               'log_interval_s', 'checkpoint_every'})


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
            (``None``: ``batch_size``).
        optimizer (str): ``'adam'`` (``weight_decay`` as Adam's L2 term, as
            SR-GNN/TAGNN release it) or ``'adamw'`` (AdamW: ``weight_decay``
            decoupled from the gradient, biases, batch/layer norms and PReLU
            slopes exempt, as LESSR releases it; :func:`tagnn_pyg.optim.make_adamw`).
        lr (float): initial learning rate.
        weight_decay (float): L2 penalty (``'adam'``) or decoupled weight decay
            (``'adamw'``).
        lr_decay (float): ``StepLR`` factor :math:`\gamma`.
        lr_decay_step (int): ``StepLR`` step size in epochs.
        scheduler_step_at_epoch_start (bool, optional): call
            ``scheduler.step()`` at the start of every epoch as the released
            loops do (the first decay then comes after ``lr_decay_step - 1``
            epochs); ``False`` steps at the end of each epoch. ``None`` picks the
            protocol's default: ``True`` for ``'paper'``, ``False`` for ``'honest'``.
        patience (int, optional): early stopping patience in epochs. ``None``:
            10 for ``'paper'`` (released), 3 for ``'honest'``.
        protocol (str): ``'honest'`` (epoch chosen on validation data, test
            set evaluated once) or ``'paper'`` (the released code's: test set
            every epoch, best HR@20 and best MRR@20 reported separately).
        valid (str): how validation data is held out under the honest protocol:
            ``'temporal'`` (most recent ``valid_fraction`` of the training
            *sessions*) or ``'random'`` (released ``--validation``: a random
            ``valid_fraction`` of the prefix-expanded sequences).
        valid_fraction (float): share of training data held out.
        select_metric (str): the validation metric that picks the epoch.
        agc (bool): adaptive gradient clipping (:class:`tagnn_pyg.optim.AGC`).
        agc_clipping (float): AGC's clipping threshold :math:`\lambda`.
        agc_eps (float): AGC's :math:`\epsilon` (the smallest weight norm).
        agc_exempt_embedding (bool): exempt the item table (also the output
            layer) from AGC.
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
        checkpoint_every (int, optional): also write ``last.pt`` after every
            this many training batches, so that a run killed mid-epoch resumes
            from that batch rather than from the epoch start (``None``: at the
            end of each epoch only). The resumed run ends exactly where an
            uninterrupted one ends.
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
    checkpoint_every: Optional[int] = None

    def __post_init__(self) -> None:
        bad_ks = [k for k in self.ks if isinstance(k, bool) or not isinstance(k, int) or k < 1]
        if bad_ks or not self.ks:
            raise ValueError(f"ks must be positive integer cut-offs like (5, 10, 20), got "
                             f"{tuple(self.ks)!r}")
        self.ks = tuple(int(k) for k in self.ks)
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.valid not in VALID_SPLITS:
            raise ValueError(f"valid must be one of {VALID_SPLITS}, got {self.valid!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS} ('adam': Adam with L2 "
                             f"weight_decay, 'adamw': AdamW with decoupled weight decay), "
                             f"got {self.optimizer!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        for name in ('epochs', 'batch_size', 'lr_decay_step', 'check_every'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ('eval_batch_size', 'patience', 'num_threads', 'max_train',
                     'max_valid', 'max_test', 'checkpoint_every'):
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
    if cfg.optimizer == 'adamw':
        opt = (f"AdamW lr {cfg.lr:g}, decoupled weight decay {cfg.weight_decay:g} "
               f"(biases, norms, PReLU exempt)")
    else:
        opt = f"Adam lr {cfg.lr:g}, L2 {cfg.weight_decay:g}"
    if cfg.lr_decay == 1.0:
        return f"{opt}, constant learning rate (no decay)"
    return (f"{opt}, x{cfg.lr_decay:g} every "
            f"{cfg.lr_decay_step} epochs ({where}: first decay after epoch {first})")

