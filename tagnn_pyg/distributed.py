r"""``torch.distributed`` glue: the process group, sharding, and the all-reduces
that make :math:`N` processes compute what one process computes.

Training and evaluation run on several processes when launched by ``torchrun``
(one machine or many)::

    torchrun --standalone --nproc_per_node 2 -m tagnn_pyg train --data ... --out RUN

:func:`init_from_env` reads torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and starts the process group:
Gloo for CPU tensors and, where CUDA is available, NCCL for CUDA tensors
(``'cpu:gloo,cuda:nccl'``); each process then uses the GPU ``LOCAL_RANK``.
Without that environment (or with ``WORLD_SIZE=1``) nothing happens: one
process, no process group, every code path as before.

What is shared and how:

* **Training** (:class:`~tagnn_pyg.train.Trainer`): ``batch_size`` is the
  *global* batch. Every process draws the same epoch permutation (same seed) and
  takes its contiguous part of each global batch (:func:`shard_bounds`); its loss
  is the *sum* of its examples' cross-entropies divided by the *global* batch
  size, and :func:`all_reduce_gradients` sums the gradients, so every process
  holds the gradient one process would compute on the whole batch (an uneven or
  partly empty last batch included) and takes the same optimiser step.
* **Evaluation** (:func:`tagnn_pyg.train.evaluate` with ``distributed=True``):
  every process ranks a contiguous shard of the cases; :func:`all_reduce_metrics`
  sums the hit, reciprocal-rank and NDCG sums and the counts before they are
  divided, so all processes get exactly the single-process metrics and make the
  same model-selection and early-stopping decisions.
* **Files**: only rank 0 writes (:func:`run_on_main` runs a write there and
  reports its failure on every rank).

A process that dies ends the run: ``torchrun`` stops the others at once, and a
collective that waits for a vanished peer fails after :func:`timeout_s` seconds
(default 300, environment variable ``TAGNN_PYG_DIST_TIMEOUT``) with a
:class:`DistributedError` instead of hanging for PyTorch's default 30 minutes;
``tagnn-pyg train ... --resume`` continues from the last checkpoint.
"""
from __future__ import annotations

import datetime
import os
import signal
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, TypeVar

import torch
from torch import Tensor

__all__ = ['DistContext', 'DistributedError', 'env_context', 'current', 'init_from_env',
           'destroy', 'session', 'resolve_device', 'shard_bounds', 'all_reduce', 'broadcast_',
           'all_gather_object', 'broadcast_object', 'run_on_main',
           'broadcast_parameters', 'all_reduce_gradients', 'all_reduce_metrics',
           'max_rss_mib', 'timeout_s']

#: Environment variable: seconds a collective may wait for the other processes.
TIMEOUT_ENV = 'TAGNN_PYG_DIST_TIMEOUT'
#: Default of :data:`TIMEOUT_ENV` (PyTorch's own default is 30 minutes).
DEFAULT_TIMEOUT_S = 300.0

T = TypeVar('T')


class DistributedError(RuntimeError):
    """A collective failed (another process died, hung or is unreachable), or
    rank 0 failed in a step every process waits for; the message names the rank
    and what it was doing."""


@dataclass(frozen=True)
class DistContext:
    r"""Where this process stands in a run of ``world_size`` processes.

    Args:
        rank (int): global rank (0 writes the files).
        world_size (int): number of processes (1: not distributed).
        local_rank (int): rank on this machine (the GPU index on CUDA).
        backend (str, optional): the process group's backend, ``None`` when no
            process group runs.
    """
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def active(self) -> bool:
        """More than one process and a process group to talk over."""
        return self.world_size > 1 and self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes logs, checkpoints and results."""
        return self.rank == 0

    def describe(self) -> Dict[str, Any]:
        """Plain data for ``metrics.json``."""
        return {'world_size': self.world_size, 'backend': self.backend}


SINGLE = DistContext()


def _env_int(name: str, default: Optional[int] = None) -> Optional[int]:
    text = os.environ.get(name)
    if text is None or text == '':
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} is not an integer "
                         f"(torchrun sets it)") from None


def env_context() -> DistContext:
    r"""Rank, world size and local rank from torchrun's environment (no process
    group is started; ``backend`` is ``None``). Without ``WORLD_SIZE`` this is one
    process of rank 0.

    Raises:
        ValueError: inconsistent values (e.g. ``RANK`` not below ``WORLD_SIZE``).
    """
    world = _env_int('WORLD_SIZE', 1)
    assert world is not None
    if world < 1:
        raise ValueError(f"environment variable WORLD_SIZE={world} must be >= 1")
    rank = _env_int('RANK', 0)
    local = _env_int('LOCAL_RANK', rank)
    assert rank is not None and local is not None
    if not 0 <= rank < world:
        raise ValueError(f"environment variable RANK={rank} must lie in "
                         f"[0, WORLD_SIZE={world})")
    if local < 0:
        raise ValueError(f"environment variable LOCAL_RANK={local} must be >= 0")
    return DistContext(rank=rank, world_size=world, local_rank=local)


def current() -> DistContext:
    r"""This process's place in the default process group (one process of rank 0
    when none is initialised)."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    env = env_context()
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                       local_rank=env.local_rank if env.world_size > 1 else 0,
                       backend=str(dist.get_backend()))


def timeout_s() -> float:
    r"""Seconds a collective waits for the other processes before it fails:
    ``TAGNN_PYG_DIST_TIMEOUT`` or :data:`DEFAULT_TIMEOUT_S`.

    Raises:
        ValueError: the variable is not a positive number.
    """
    text = os.environ.get(TIMEOUT_ENV)
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"environment variable {TIMEOUT_ENV}={text!r} must be a "
                         f"positive number of seconds")
    return value


def init_from_env(timeout: Optional[float] = None) -> DistContext:
    r"""Start the default process group from torchrun's environment.

    With ``WORLD_SIZE`` unset or 1 nothing is started and a single-process
    context is returned. An already initialised process group is used as it is.
    On a machine with CUDA the backend is ``'cpu:gloo,cuda:nccl'`` and the current
    CUDA device becomes ``LOCAL_RANK``; otherwise it is ``'gloo'``.

    Args:
        timeout (float, optional): seconds before a collective (and the start
            itself) gives up (default: :func:`timeout_s`).

    Raises:
        DistributedError: the other processes did not join in time.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return current()
    env = env_context()
    if env.world_size == 1:
        return SINGLE
    if not dist.is_available():
        raise DistributedError("WORLD_SIZE > 1 but this PyTorch build has no "
                               "torch.distributed support")
    cuda = torch.cuda.is_available()
    if cuda:
        if env.local_rank >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK={env.local_rank} but this machine has "
                                   f"{torch.cuda.device_count()} CUDA devices: start at "
                                   f"most one process per GPU (--nproc_per_node)")
        torch.cuda.set_device(env.local_rank)
    backend = 'cpu:gloo,cuda:nccl' if cuda else 'gloo'
    seconds = timeout_s() if timeout is None else float(timeout)
    try:
        dist.init_process_group(backend=backend,
                                timeout=datetime.timedelta(seconds=seconds))
    except Exception as err:  # rendezvous timeout, refused connection, ...
        raise DistributedError(f"rank {env.rank}: could not join the process group of "
                               f"{env.world_size} processes "
                               f"({os.environ.get('MASTER_ADDR')}:"
                               f"{os.environ.get('MASTER_PORT')}): "
                               f"{_first_line(err)}") from err
    return current()


def destroy() -> None:
    r"""Destroy the default process group, if one is initialised."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _on_sigterm(signum: int, frame: Any) -> None:
    raise DistributedError("stopped by the launcher (SIGTERM): another process of the "
                           "run failed or the run was cancelled")


@contextmanager
def session(quiet_others: bool = True) -> Iterator[DistContext]:
    r"""Context manager of a command run: :func:`init_from_env` on entry,
    :func:`destroy` on exit (only if it started the group). While a group runs,
    SIGTERM (what ``torchrun`` sends the survivors when a process dies) raises
    :class:`DistributedError`, so that a command ends with a clear message, and
    with ``quiet_others`` the ``tagnn_pyg`` loggers of ranks other than 0 show
    warnings and errors only (rank 0 alone reports progress).
    """
    import logging
    import torch.distributed as dist

    started = not (dist.is_available() and dist.is_initialized())
    ctx = init_from_env()
    if not ctx.active:
        yield ctx
        return
    log = logging.getLogger('tagnn_pyg')
    level = log.level
    if quiet_others and not ctx.is_main:
        log.setLevel(logging.WARNING)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    ok = False
    try:
        yield ctx
        ok = True
    finally:
        signal.signal(signal.SIGTERM, previous)
        log.setLevel(level)
        if started:
            if ok:
                # every rank done before any tears its Gloo connections down: a
                # rank destroying the group while its peer still uses it made the
                # peer abort at exit ("terminate called without an active
                # exception", SIGABRT) after a successful run
                dist.barrier()
            destroy()


def resolve_device(device: Any, ctx: Optional[DistContext] = None) -> torch.device:
    r"""The device of this process: as :func:`tagnn_pyg.train.resolve_device`,
    except that under several processes ``'auto'`` and ``'cuda'`` mean
    ``cuda:LOCAL_RANK`` (one GPU per process).

    Raises:
        ValueError: as :func:`tagnn_pyg.train.resolve_device`.
    """
    from .train.runtime import resolve_device as _resolve

    ctx = current() if ctx is None else ctx
    dev = _resolve(device)
    if ctx.world_size > 1 and dev.type == 'cuda' and dev.index is None:
        dev = torch.device('cuda', ctx.local_rank)
    return dev


def shard_bounds(n: int, rank: int, world_size: int) -> Tuple[int, int]:
    r"""The part ``[lo, hi)`` of ``range(n)`` that rank ``rank`` of
    ``world_size`` takes: contiguous parts in rank order whose sizes differ by at
    most one (the first ``n % world_size`` ranks take one more); a part is empty
    when ``n < world_size``.

    Example:
        >>> [shard_bounds(7, r, 3) for r in range(3)]
        [(0, 3), (3, 5), (5, 7)]
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size), got rank {rank!r} of "
                         f"world_size {world_size!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n!r}")
    base, extra = divmod(int(n), int(world_size))
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


# ----------------------------------------------------------------- collectives


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _failed(what: str, err: BaseException) -> DistributedError:
    ctx = current()
    return DistributedError(
        f"rank {ctx.rank} of {ctx.world_size}: {what} failed ({_first_line(err)}): "
        f"another process of the run stopped, hung (timeout {timeout_s():g} s, "
        f"{TIMEOUT_ENV}) or is unreachable; fix the cause and continue with "
        f"'tagnn-pyg train ... --resume'")


def _collective(what: str, fn: Callable[[], Any]) -> None:
    """Run a ``torch.distributed`` call; its failure becomes a
    :class:`DistributedError` naming ``what``."""
    try:
        fn()
    except RuntimeError as err:  # DistBackendError included
        raise _failed(what, err) from err


def all_reduce(tensor: Tensor, what: str = 'all-reduce') -> Tensor:
    r"""Sum ``tensor`` over all processes, in place (nothing to do in one
    process); a failure becomes a :class:`DistributedError` naming ``what``."""
    import torch.distributed as dist
    if not current().active:
        return tensor
    _collective(what, lambda: dist.all_reduce(tensor, op=dist.ReduceOp.SUM))
    return tensor


def broadcast_(tensor: Tensor, src: int = 0, what: str = 'broadcast') -> Tensor:
    r"""Overwrite ``tensor`` with rank ``src``'s, in place."""
    import torch.distributed as dist
    if not current().active:
        return tensor
    _collective(what, lambda: dist.broadcast(tensor, src=src))
    return tensor


def all_gather_object(obj: T, what: str = 'gathering') -> List[T]:
    r"""Every process's ``obj`` (picklable), in rank order, on every process."""
    import torch.distributed as dist
    ctx = current()
    if not ctx.active:
        return [obj]
    out: List[Any] = [None] * ctx.world_size
    _collective(what, lambda: dist.all_gather_object(out, obj))
    return out


def broadcast_object(obj: T, src: int = 0, what: str = 'broadcast') -> T:
    r"""Rank ``src``'s ``obj`` (picklable) on every process."""
    import torch.distributed as dist
    if not current().active:
        return obj
    box = [obj]
    _collective(what, lambda: dist.broadcast_object_list(box, src=src))
    return box[0]


def run_on_main(fn: Callable[[], T], what: str) -> Optional[T]:
    r"""Run ``fn`` on rank 0 only (a file write, taking a lock) while the others
    wait; returns its result on rank 0 and ``None`` elsewhere. One process: just
    ``fn()``.

    An exception on rank 0 is raised there as it is, and on every other rank as
    a :class:`DistributedError` quoting it, so that all processes stop together
    instead of waiting for rank 0 at the next collective.
    """
    ctx = current()
    if not ctx.active:
        return fn()
    result: Optional[T] = None
    error: Optional[BaseException] = None
    if ctx.is_main:
        try:
            result = fn()
        except Exception as err:  # reported to the others, then raised here
            error = err
    message = broadcast_object(None if error is None else
                               f'{type(error).__name__}: {" ".join(str(error).split())}',
                               what=f'waiting for rank 0 ({what})')
    if error is not None:
        raise error
    if message is not None:
        raise DistributedError(f"rank 0 failed {what}: {message}")
    return result


def broadcast_parameters(module: torch.nn.Module) -> None:
    r"""Make every process hold rank 0's parameters and buffers (what
    ``DistributedDataParallel`` does at construction)."""
    if not current().active:
        return
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            broadcast_(t.data, what=f'broadcasting {name}')


def all_reduce_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    r"""Sum the gradients of ``parameters`` over all processes, in place, in one
    collective per (device, dtype).

    A parameter that has no gradient (``grad is None``) on any process keeps
    none, exactly as in one process (Adam then leaves it and its moments
    alone); if some process has one, every process ends with the sum (a
    missing gradient counts as zero). The "has a gradient" flags travel in the
    same buffer as the gradients. Each process must scale its loss so that the
    sum is the wanted gradient (the trainer divides by the global batch size).
    """
    if not current().active:
        return
    params = [p for p in parameters if p.requires_grad]
    groups: Dict[Tuple[torch.device, torch.dtype], List[torch.nn.Parameter]] = {}
    for p in params:
        if p.grad is not None and p.grad.is_sparse:
            raise ValueError("all_reduce_gradients handles dense gradients only; got a "
                             "sparse gradient (nn.Embedding(sparse=True)?)")
        groups.setdefault((p.device, p.dtype), []).append(p)
    for (device, dtype), group in groups.items():
        pieces = [p.grad.reshape(-1) if p.grad is not None
                  else torch.zeros(p.numel(), device=device, dtype=dtype) for p in group]
        flags = torch.tensor([float(p.grad is not None) for p in group], device=device,
                             dtype=dtype)
        flat = torch.cat(pieces + [flags])
        all_reduce(flat, what='the gradient all-reduce')
        has = flat[-len(group):].tolist()
        offset = 0
        for p, flag in zip(group, has):
            n = p.numel()
            if flag > 0:
                reduced = flat[offset:offset + n].view_as(p)
                if p.grad is None:
                    p.grad = reduced.clone()
                else:
                    p.grad.copy_(reduced)
            offset += n


def all_reduce_metrics(metrics: Any, device: Optional[torch.device] = None) -> None:
    r"""Sum a :class:`~tagnn_pyg.metrics.TopKMetrics`'s hit, reciprocal-rank and
    NDCG sums, its check counters and its case count over all processes, in
    place, so that :meth:`~tagnn_pyg.metrics.TopKMetrics.compute` gives the
    metrics of all the processes' cases together (hit counts exactly; the other
    sums up to float64 reassociation). The result is then broadcast from rank
    0, so every process holds bit-identical metrics and decides alike.

    A process that saw no case (more processes than cases) takes part with zeros.

    Args:
        metrics (TopKMetrics): this process's metrics.
        device (torch.device, optional): where to reduce when this process saw
            no case (default: CPU; give the CUDA device under NCCL).
    """
    if not current().active:
        return
    packed = metrics.packed_sums(device)
    all_reduce(packed, what='the metric all-reduce')
    broadcast_(packed, what='broadcasting the metrics')
    metrics.load_packed_sums(packed)


def max_rss_mib() -> Optional[float]:
    r"""This process's peak resident memory in MiB (``None`` where the OS does
    not say)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == 'darwin' else 1024), 1)
