"""The training loop: :class:`Trainer` (protocols, early stopping, checkpoints,
resuming, logs)."""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import (Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence,
                    Union)

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import distributed as _dist
from ..checkpoint import (CheckpointError, config_with_defaults, get_rng_state,
                          load_checkpoint, save_checkpoint, set_rng_state)
from ..optim import AGC, make_adam, make_adamw
from ..utils.device import host_reads_are_free
from ..utils.io import atomic_write_text
from .config import RESUMABLE_CHANGES, TrainConfig, describe_protocol, describe_schedule
from .evaluation import evaluate
from .runtime import (_autocast, _epoch_seed, _progress, resolve_device, seed_everything,
                      set_deterministic)

PathLike = Union[str, os.PathLike]

logger = logging.getLogger('tagnn_pyg.train')


#: Warn when an epoch's mean training loss exceeds this multiple of the loss of
#: uniform scores, ``ln(num_items - 1)``, where training starts.
LOSS_GROWTH_WARNING = 3.0


class NonFiniteLossError(RuntimeError):
    """Training stopped on a NaN or infinite loss; the message names the epoch and
    batch and the last good checkpoint that was kept."""


def _model_name(model: torch.nn.Module) -> str:
    try:
        from ..models import MODELS
        for key, cls in MODELS.items():
            if type(model) is cls:
                return key
    except ImportError:  # pragma: no cover - models not importable
        pass
    return type(model).__name__


def _fmt_metrics(metrics: Mapping[str, float], keys: Iterable[str]) -> str:
    return '  '.join(f'{k} {metrics[k]:.2f}' for k in keys if k in metrics)


@dataclass
class _EpochState:
    """The running sums of an epoch's training loop (restored when resuming inside
    the epoch)."""
    loss_sum: Tensor       # float64 sum of loss x batch size, on the device
    bad_at: Tensor         # first non-finite batch (CUDA: checked lazily), or -1
    seen: int              # training sequences so far
    t0: float              # perf_counter of the epoch start (minus time before a resume)
    last_log: float        # perf_counter of the last progress log line
    reads_free: bool       # host reads cost nothing (the CPU): check every batch
    check: int             # batches between host checks

    @classmethod
    def start(cls, device: torch.device, partial: Optional[Dict[str, Any]],
              check_every: int) -> '_EpochState':
        reads_free = host_reads_are_free(device)
        t0 = time.perf_counter() - (float(partial['train_s']) if partial else 0.0)
        return cls(
            loss_sum=torch.full((), float(partial['loss_sum']) if partial else 0.0,
                                device=device, dtype=torch.float64),
            bad_at=torch.full((), -1, device=device, dtype=torch.long),
            seen=int(partial['seen']) if partial else 0, t0=t0, last_log=t0,
            reads_free=reads_free, check=1 if reads_free else check_every)

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
        data_identity (dict, optional): what the model is trained on, from
            :func:`tagnn_pyg.data.fingerprint.data_identity` (stored in
            checkpoints so that ``evaluate``/``recommend`` can refuse other data;
            default: the item count and id mapping only).
        item_counts (Tensor, optional): clicks per internal item id
            (``[num_items]``, :func:`tagnn_pyg.data.item_counts` of the whole
            training sessions), stored in checkpoints as the popularity that
            serving falls back to (default: counted from the training
            sequences given to :meth:`fit`, every prefix's clicks and target).
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
        data_identity: Optional[Dict[str, Any]] = None,
        item_counts: Optional[Tensor] = None,
    ) -> None:
        from ..data.fingerprint import data_identity as _identity

        self.config = config if config is not None else TrainConfig()
        cfg = self.config
        self.dist = _dist.current()
        self.device = (_dist.resolve_device(cfg.device, self.dist) if self.dist.active
                       else resolve_device(cfg.device))
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
        self.data_identity = (dict(data_identity) if data_identity is not None
                              else _identity(self.num_items, self.item_ids))
        if item_counts is not None and tuple(item_counts.shape) != (self.num_items,):
            raise ValueError(f"item_counts must have shape ({self.num_items},) (one count "
                             f"per item id), got {tuple(item_counts.shape)}")
        self.item_counts = item_counts
        self.warnings: List[str] = []
        self._lock: Any = None

        if cfg.optimizer == 'adamw':
            self.optimizer: torch.optim.Optimizer = make_adamw(
                self.model, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
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
        # progress inside the current epoch, set by a mid-epoch checkpoint
        # (resumed from) or by _run_epoch (written to one)
        self._partial: Optional[Dict[str, Any]] = None
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
            resume: bool = False, overwrite: bool = False) -> Dict[str, Any]:
        r"""Train, select the epoch, and evaluate (see the module docstring).

        Args:
            train (SessionSequences): training sequences with targets.
            valid (SessionSequences, optional): validation sequences (required by
                the honest protocol, unused by the papers' protocol).
            test (SessionSequences, optional): test sequences (required by the
                papers' protocol; evaluated once at the end by the honest one).
            resume (bool): continue from ``out_dir/last.pt``.
            overwrite (bool): start a new run even if ``out_dir`` holds one (its
                files are removed first); without it such a folder is refused.

        Returns:
            dict: the content of ``metrics.json`` (protocol label, chosen epoch,
            validation/test metrics, history, sizes, timing). After ``fit``
            the model holds the chosen (best) weights.

        Raises:
            NonFiniteLossError: on a NaN/infinite loss (checkpoints kept).
            CheckpointError: when ``resume`` finds no compatible ``last.pt``.
            FolderLockedError: another process is writing ``out_dir``.
            RunExistsError: ``out_dir`` holds a run and neither ``resume`` nor
                ``overwrite`` is set.
        """
        from ..data.batching import SessionLoader
        from ..models.tagnn import padded_like_released

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
        if self.item_counts is None:
            from ..data.sequences import item_counts
            self.item_counts = item_counts(train, self.num_items)
        try:
            if self.out_dir is not None:
                # rank 0 alone owns and writes the run directory
                notes = _dist.run_on_main(lambda: self._own_run_dir(resume, overwrite),
                                          'taking the run directory')
                if self.dist.is_main:
                    self._open_logs()  # after a new run cleared the old train.log
                for note in notes or []:
                    logger.warning('%s', note)
            seed_everything(cfg.seed)
            if resume:
                self._resume()
            _dist.broadcast_parameters(self.model)  # every rank starts from rank 0's
            labels = cfg.describe()
            logger.info('%s', labels['protocol'])
            logger.info('schedule: %s', labels['schedule'])
            logger.info('model %s (%s parameters) on %s; %d train / %s valid / %s test '
                        'sequences', self.model_name,
                        f'{sum(p.numel() for p in self.model.parameters()):,}',
                        self.device, len(train), len(valid) if valid is not None else '-',
                        len(test) if test is not None else '-')
            if self.dist.active:
                logger.info('distributed: %d processes (%s), global batch %d split '
                            'over them', self.dist.world_size, self.dist.backend,
                            cfg.batch_size)
            loader = SessionLoader(train, cfg.batch_size, shuffle=True,
                                   weighting=cfg.weighting, device=self.device,
                                   seed=cfg.seed,
                                   shard=((self.dist.rank, self.dist.world_size)
                                          if self.dist.active else None))
            t_start = time.perf_counter()
            with padded_like_released(self.model, train):
                while self.stop_reason is None and self.epoch < cfg.epochs:
                    self._run_epoch(loader, valid if cfg.protocol == 'honest' else test)
            train_time = time.perf_counter() - t_start
            return self._finish(train, valid, test, train_time)
        finally:
            self._close_logs()
            self._release_run_dir()

    def _own_run_dir(self, resume: bool, overwrite: bool) -> List[str]:
        """Lock ``out_dir`` for this run, remove temporaries a killed run left,
        and (for a new run) refuse or clear an existing run; returns what to log."""
        from ..utils.io import remove_stale_temporaries
        from ..utils.lock import FolderLock
        from ..utils.rundir import start_new_run

        assert self.out_dir is not None
        self._lock = FolderLock(self.out_dir, 'train').acquire()
        notes = []
        owner = self._lock.took_over
        if owner:
            notes.append(f"took over the lock of {self.out_dir} from pid {owner.get('pid')} "
                         f"on host {owner.get('host')}, which died holding it")
        notes += [f"removed {stale}, left by an interrupted write"
                  for stale in remove_stale_temporaries(self.out_dir)]
        replaced = start_new_run(self.out_dir, overwrite) if not resume else []
        if replaced:
            notes.append(f"replaced the run in {self.out_dir} (removed "
                         f"{', '.join(p.name for p in replaced)})")
        return notes

    def _release_run_dir(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- one epoch -----------------------------------------------------------

    def _run_epoch(self, loader: Any, eval_set: Any) -> None:
        e = self.epoch  # 0-based index of the epoch being run
        partial = self._begin_epoch(e)
        lr = self.optimizer.param_groups[0]['lr']
        state = self._train_batches(loader, e, partial)
        train_loss = float(state.loss_sum) / max(state.seen, 1)
        self._check_loss_growth(train_loss)
        train_time = time.perf_counter() - state.t0
        if not self.config.step_at_epoch_start:
            self.scheduler.step()
        self._end_epoch(eval_set, lr, train_loss, train_time, state.seen)

    def _begin_epoch(self, e: int) -> Optional[Dict[str, Any]]:
        """Step the scheduler (released order) and seed the epoch, unless resuming
        inside it (then both were restored); returns the partial-epoch record."""
        partial, self._partial = self._partial, None
        if partial is not None and int(partial['epoch']) != e:
            partial = None
        if partial is None:
            if self.config.step_at_epoch_start:
                with warnings.catch_warnings():  # deliberate: the released order
                    warnings.filterwarnings('ignore',
                                            message='Detected call of `lr_scheduler')
                    self.scheduler.step()
            # rank r > 0 draws its own dropout masks; rank 0 those of one process
            torch.manual_seed(_epoch_seed(self.config.seed, e) + self.dist.rank)
        return partial

    def _train_batches(self, loader: Any, e: int, partial: Optional[Dict[str, Any]]
                       ) -> '_EpochState':
        """The optimisation steps of epoch ``e`` (from batch ``partial['batches']``
        when resuming inside it), with progress, non-finite checks and mid-epoch
        checkpoints."""
        cfg = self.config
        start = int(partial['batches']) if partial is not None else 0
        loader.set_epoch(e, start=start)
        self.model.train()
        state = _EpochState.start(self.device, partial, cfg.check_every)
        n_batches = len(loader)
        every = cfg.checkpoint_every
        with _progress(n_batches, f'epoch {e + 1}/{cfg.epochs}',
                       cfg.progress and self.dist.is_main, initial=start) as bar:
            for k, batch in enumerate(loader, start=start):
                if self.dist.active:
                    self._train_step_distributed(batch, loader.global_batch_size(k),
                                                 state, e, k, n_batches)
                else:
                    self._train_step(batch, state, e, k, n_batches)
                if (k + 1) % state.check == 0 or k + 1 == n_batches:
                    self._check_non_finite(state, e, n_batches)
                    self._report(bar, state, e, k, n_batches)
                if every is not None and (k + 1) % every == 0 and k + 1 < n_batches:
                    self._check_non_finite(state, e, n_batches)
                    self._save_partial(e, k + 1, float(state.loss_sum), state.seen,
                                       time.perf_counter() - state.t0)
                if self.on_batch_end is not None:
                    self.on_batch_end(e + 1, k)
        return state

    def _train_step(self, batch: Any, state: '_EpochState', e: int, k: int,
                    n_batches: int) -> None:
        """Forward, loss, backward, (AGC), optimiser step for batch ``k``."""
        with _autocast(self.device, self.config.amp):
            scores = self.model(batch)
        loss = F.cross_entropy(scores[:, 1:].float(), batch.y - 1)
        if state.reads_free:  # free on the CPU: stop before the weights are touched
            if not math.isfinite(loss.item()):
                self._non_finite(e, k, n_batches, loss.item())
        else:  # remember the first bad batch; checked every check_every batches
            state.bad_at = torch.where((state.bad_at < 0) & ~torch.isfinite(loss.detach()),
                                       torch.full_like(state.bad_at, k), state.bad_at)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.agc is not None:
            self.agc.clip_()
        self.optimizer.step()
        self.step += 1
        b = int(batch.y.numel())
        state.seen += b
        state.loss_sum += loss.detach().double() * b

    def _train_step_distributed(self, batch: Any, global_size: int, state: '_EpochState',
                                e: int, k: int, n_batches: int) -> None:
        """:meth:`_train_step` for this process's part of global batch ``k``
        (``None``: an empty part) under several processes.

        The gradients are all-reduced explicitly (:func:`tagnn_pyg.distributed.
        all_reduce_gradients`) rather than by wrapping the model in
        ``DistributedDataParallel``: the model's forward is the same code and
        object (``self.model(batch)``); a process with an empty part (last batch
        smaller than the number of processes) skips the forward and still
        takes part, which DDP cannot do; a parameter that receives no gradient
        in a batch on any process keeps ``grad=None`` exactly as in one process
        (Adam leaves it alone), with no ``find_unused_parameters`` graph
        traversal; and the loss is normalised by the *global* batch size, not
        averaged over processes. The price is no overlap of the all-reduce with
        the backward pass (one flat all-reduce per step after it).
        """
        if batch is not None:
            with _autocast(self.device, self.config.amp):
                scores = self.model(batch)
            # this part's share of the global mean: sum over its examples / B
            loss = F.cross_entropy(scores[:, 1:].float(), batch.y - 1,
                                   reduction='sum') / global_size
            total = loss.detach().double().clone()
        else:
            loss = None
            total = torch.zeros((), dtype=torch.float64, device=self.device)
        _dist.all_reduce(total, what='the loss all-reduce')  # the global mean loss
        if state.reads_free:  # the same value on every rank: all stop together
            if not math.isfinite(total.item()):
                self._non_finite(e, k, n_batches, total.item())
        else:
            state.bad_at = torch.where((state.bad_at < 0) & ~torch.isfinite(total),
                                       torch.full_like(state.bad_at, k), state.bad_at)
        self.optimizer.zero_grad(set_to_none=True)
        if loss is not None:
            loss.backward()
        _dist.all_reduce_gradients(self.model.parameters())
        if self.agc is not None:
            self.agc.clip_()  # on the summed gradients: the same on every rank
        self.optimizer.step()
        self.step += 1
        state.seen += global_size
        state.loss_sum += total * global_size

    def _check_non_finite(self, state: '_EpochState', e: int, n_batches: int) -> None:
        if not state.reads_free:
            bad = int(state.bad_at)
            if bad >= 0:
                self._non_finite(e, bad, n_batches, float('nan'))

    def _report(self, bar: Any, state: '_EpochState', e: int, k: int,
                n_batches: int) -> None:
        """Progress bar update, or a log line at most every ``log_interval_s``."""
        if not self.dist.is_main:  # rank 0 alone reports progress
            return
        now = time.perf_counter()
        rate = f'{state.seen / max(now - state.t0, 1e-9):,.0f}'
        if not bar.disable:
            bar.set_postfix(loss=f'{float(state.loss_sum) / state.seen:.4f}', seq_s=rate,
                            refresh=False)
            bar.update((k + 1) - bar.n)
        elif now - state.last_log >= self.config.log_interval_s and k + 1 < n_batches:
            state.last_log = now
            logger.info('epoch %d/%d  batch %d/%d  loss %.4f  %s seq/s', e + 1,
                        self.config.epochs, k + 1, n_batches,
                        float(state.loss_sum) / state.seen, rate)

    def _end_epoch(self, eval_set: Any, lr: float, train_loss: float, train_time: float,
                   seen: int) -> None:
        """Evaluate, record the epoch, decide on stopping, log, save."""
        cfg = self.config
        e = self.epoch
        split = 'valid' if cfg.protocol == 'honest' else 'test'
        t1 = time.perf_counter()
        metrics = evaluate(self.model, eval_set,
                           batch_size=cfg.eval_batch_size or cfg.batch_size, ks=cfg.ks,
                           device=self.device, weighting=cfg.weighting,
                           progress=cfg.progress, desc=f'{split} {e + 1}/{cfg.epochs}',
                           **self._eval_kwargs())
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

    def _eval_kwargs(self) -> Dict[str, Any]:
        """``distributed=True`` under several processes (the evaluation is
        sharded and its sums all-reduced); nothing in one process."""
        return {'distributed': True} if self.dist.active else {}

    def _check_loss_growth(self, train_loss: float) -> None:
        """Warn when the epoch's mean loss is far above where training starts
        (the loss of uniform scores): the run diverged, its metrics mean little."""
        start = math.log(max(self.num_items - 1, 2))
        if train_loss > LOSS_GROWTH_WARNING * start:
            msg = (f"epoch {self.epoch + 1}: mean training loss {train_loss:.4g} is "
                   f"{train_loss / start:.1f} times the starting loss {start:.3g} (uniform "
                   f"scores over {self.num_items - 1} items): training diverged; try a "
                   f"lower learning rate (now {self.config.lr:g}) or --agc")
            logger.warning('%s', msg)
            self.warnings.append(msg)

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
                'best_per_metric': self.best_per_metric, 'partial': self._partial}

    def _ckpt_kwargs(self) -> Dict[str, Any]:
        kwargs = dict(model=self.model, model_name=self.model_name,
                      num_items=self.num_items, item_ids=self.item_ids,
                      optimizer=self.optimizer, scheduler=self.scheduler,
                      epoch=self.epoch, step=self.step, history=self.history,
                      best=self.best, protocol=self.config.protocol,
                      train_config=self.config.to_dict(), state=self._state(),
                      extra=self.extra, data=self.data_identity,
                      item_counts=self.item_counts)
        if self.dist.active:  # collective: every rank calls _ckpt_kwargs
            kwargs['rng_per_rank'] = _dist.all_gather_object(
                get_rng_state(), what='gathering the RNG states for a checkpoint')
        return kwargs

    def _write(self, what: str, fn: Callable[[], Any]) -> None:
        """Run a write on rank 0 only (every rank waits for it and stops if it
        fails); in one process just run it."""
        _dist.run_on_main(fn, f'writing {what}')

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
        kwargs = self._ckpt_kwargs()
        current_is_best = self.best is not None and self.best['epoch'] == self.epoch

        def write() -> None:
            if improved:
                save_checkpoint(self.best_path, **kwargs)
            save_checkpoint(self.last_path, **kwargs,
                            best_state_dict=None if current_is_best else self._best_state)
        self._write('the checkpoints', write)

    def _save_partial(self, e: int, batches: int, loss_sum: float, seen: int,
                      train_s: float) -> None:
        """Write ``last.pt`` in the middle of epoch ``e`` (0-based) after
        ``batches`` batches: weights, optimizer, RNGs and the epoch's running
        loss, so that :meth:`_resume` continues with batch ``batches``."""
        if self.out_dir is None:
            return
        self._partial = {'epoch': e, 'batches': batches, 'loss_sum': loss_sum,
                         'seen': seen, 'train_s': train_s}
        try:
            kwargs = self._ckpt_kwargs()
            self._write(str(self.last_path), lambda: save_checkpoint(
                self.last_path, **kwargs, best_state_dict=self._best_state))
        finally:
            self._partial = None

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
        # an option added after the checkpoint was written counts as its default
        stored = config_with_defaults(type(self.model), ckpt['model']['config'],
                                      keys=list(config))
        if stored != dict(config):
            diff = sorted(k for k in set(config) | set(stored)
                          if config.get(k) != stored.get(k))
            raise CheckpointError(f"cannot resume from {path}: model config differs in "
                                  f"{diff}")
        if int(ckpt['num_items']) != self.num_items:
            raise CheckpointError(f"cannot resume from {path}: it has {ckpt['num_items']} "
                                  f"items, this data set {self.num_items}")
        self._check_same_data(ckpt, path)
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
        self._restore_rng(ckpt)
        self.epoch = int(ckpt['epoch'])
        self.step = int(ckpt['step'])
        self.history = list(ckpt['history'])
        self.best = ckpt.get('best')
        state = ckpt.get('state') or {}
        self.bad_epochs = int(state.get('bad_epochs', 0))
        self.best_per_metric = dict(state.get('best_per_metric') or {})
        self._partial = state.get('partial')
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
        where = (f"in epoch {self.epoch + 1} after batch {self._partial['batches']}"
                 if self._partial is not None else f"after epoch {self.epoch}")
        logger.info('resumed from %s %s (step %d)%s', path, where, self.step,
                    f'; already stopped ({self.stop_reason})' if self.stop_reason else '')

    def _restore_rng(self, ckpt: Mapping[str, Any]) -> None:
        """Each rank restores its own RNG states when the checkpoint was written
        by as many processes as now run (exact resumption); otherwise every rank
        takes rank 0's (the data order and the weights are unaffected; dropout
        draws of the rest of the epoch differ from an uninterrupted run)."""
        per_rank = ckpt.get('rng_per_rank')
        world = self.dist.world_size
        if per_rank is not None and len(per_rank) == world:
            set_rng_state(per_rank[self.dist.rank])
            return
        set_rng_state(ckpt['rng'])
        written_by = len(per_rank) if per_rank is not None else 1
        if written_by != world:
            logger.warning('the checkpoint was written by %d process(es) and is resumed '
                           'by %d: every rank takes the RNG states of rank 0 (same data '
                           'order and weights; dropout draws differ from an '
                           'uninterrupted run until the next epoch)', written_by, world)

    def _check_same_data(self, ckpt: Mapping[str, Any], path: Path) -> None:
        """Refuse to resume on other data (checkpoints that predate the data
        record are not checked beyond the item count)."""
        from ..data.fingerprint import identity_differences

        trained = ckpt.get('data')
        diff = identity_differences(trained, self.data_identity) if trained else []
        if diff:
            raise CheckpointError(f"cannot resume from {path}: it was trained on other "
                                  f"data: {'; '.join(diff)}")

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
                    progress=cfg.progress, desc='test', **self._eval_kwargs())
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
        if self.warnings:
            result['warnings'] = list(self.warnings)
        if self.extra:
            result['extra'] = {k: v for k, v in self.extra.items() if _jsonable(v)}
        result['history'] = self.history
        if self.dist.active:
            memory = _dist.all_gather_object(_dist.max_rss_mib(),
                                             what='gathering the memory figures')
            result['distributed'] = {**self.dist.describe(), 'max_rss_mib': memory}
            logger.info('distributed: %d processes, peak memory per process (MiB): %s',
                        self.dist.world_size, ', '.join(f'{m}' for m in memory))
        if self.out_dir is not None:
            result['checkpoints'] = {'best': str(self.best_path), 'last': str(self.last_path)}
            out = self.out_dir / 'metrics.json'
            self._write('metrics.json', lambda: atomic_write_text(
                out, json.dumps(result, indent=2) + '\n'))
        return result

    # -- logs ----------------------------------------------------------------

    def _open_logs(self) -> None:
        assert self.out_dir is not None
        from ..utils.io import SafeFileHandler
        handler = SafeFileHandler(self.out_dir / 'train.log', encoding='utf-8')
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
        if self.out_dir is None or not self.dist.is_main:
            return
        rows = [_flatten(r) for r in self.history]
        atomic_write_text(self.out_dir / 'log.jsonl',
                     ''.join(json.dumps(r) + '\n' for r in self.history))
        columns: List[str] = []
        for r in rows:
            columns += [c for c in r if c not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.out_dir / 'log.csv', buf.getvalue())
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

