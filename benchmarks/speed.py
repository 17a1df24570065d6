"""Training and evaluation speed of tagnn-pyg against the released computation, side by side.

One command, on the CPU or a CUDA GPU::

    python benchmarks/speed.py --data-root ../shared/datasets --device cpu
    python benchmarks/speed.py --data-root ../shared/datasets --device cuda

For every (model, data set) it runs, in this one process and on identical batches,

* ``tagnn_pyg``: :class:`~tagnn_pyg.data.SessionLoader` (vectorised batch construction, no
  padding) + the library's model (:data:`tagnn_pyg.models.MODELS`, configured by
  :mod:`tagnn_pyg.presets`) + the trainer's Adam (``tagnn_pyg.optim.make_adam``, fused where
  supported) (+ AGC where the preset uses it; ``--amp``: bfloat16 autocast as the trainer's);
* ``reference``: :mod:`tagnn_pyg.testing.released`, the dense re-implementation of the released code
  (per-session numpy adjacency, padding to the data set maximum, the ``[batch, items, d]``
  target tensor) + torch's default Adam, as released, in float32,

and measures the median milliseconds per training batch (batch construction + forward +
backward + optimizer step, after warm-up), the epoch time extrapolated from it, the peak memory
of training and of evaluation, the test-set evaluation time (full ranking over all items;
optionally on ``--eval-sequences`` test sequences spread evenly over the test set,
extrapolated) and examples per
second. Results go to ``<out>/speed_<device>.json`` (a list of JSON objects, one per model,
data set and implementation) and ``<out>/speed_<device>.md``.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated()`` after
``reset_peak_memory_stats()`` (absolute: everything allocated on the GPU while the
implementation ran, model, optimizer state and data included); on the CPU the growth of the
process's peak resident set size (``VmHWM`` of ``/proc/self/status``, reset through
``/proc/self/clear_refs`` and after ``malloc_trim``) over the resident size just before the
implementation's loader/model were built; without ``/proc`` a 1 ms ``psutil`` RSS sampler.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import shlex
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

# On a shared machine (more runnable threads than cores) OpenMP's default active waiting makes
# every parallel region wait for a descheduled worker: a step with many small ops became up to
# 20x slower at 2 threads. Passive waiting removes that; set before torch loads OpenMP, for
# both implementations alike, and recorded in every result.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from tagnn_pyg.testing.released import (  # noqa: E402
    ReleasedSessionData, ReleasedSessionGraph, released_scores, released_train_step)
from tagnn_pyg.utils.memory import current_rss_mib, peak_rss_mib  # noqa: E402

DATASETS = ('diginetica', 'yoochoose1_64')
MODELS = ('srgnn', 'tagnn', 'tagnnpp')


def preset_name(model: str, dataset: str) -> str:
    """The :mod:`tagnn_pyg.presets` preset benchmarked for ``model`` on ``dataset``: the
    papers' settings for SR-GNN/TAGNN, the *released* TAGNN++ settings (batch 50 Diginetica,
    75 Yoochoose), which is what the released code's figures in DESIGN.md were taken with."""
    if model == 'tagnnpp':
        return 'tagnnpp-released-' + ('yoochoose' if dataset.startswith('yoochoose')
                                      else 'diginetica')
    return model


# ----------------------------------------------------------------------------------------
# devices, synchronisation, memory
# ----------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """``torch.cuda.get_device_name()`` or ``'cpu'``."""
    return torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'


def _malloc_trim() -> None:
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory of a code region, in MiB (see the module docstring for the method)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base_mib = 0.0
        self._sampler: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._sampled_peak_mib = 0.0
        self.method = self._method()

    def _method(self) -> str:
        if self.device.type == 'cuda':
            return 'torch.cuda.max_memory_allocated (absolute)'
        if peak_rss_mib() is not None and os.access('/proc/self/clear_refs', os.W_OK):
            return 'CPU peak RSS delta: VmHWM (reset via /proc/self/clear_refs) - VmRSS at start'
        return 'CPU peak RSS delta: psutil RSS sampled every 1 ms - RSS at start'

    def start(self) -> None:
        """Reset the peak and take the baseline."""
        gc.collect()
        if self.device.type == 'cuda':
            synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        _malloc_trim()
        if self.method.startswith('CPU peak RSS delta: VmHWM'):
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')
            self.base_mib = current_rss_mib() or 0.0
            return
        import psutil
        proc = psutil.Process()
        self.base_mib = proc.memory_info().rss / 2 ** 20
        self._sampled_peak_mib = self.base_mib
        self._stop.clear()

        def sample() -> None:
            while not self._stop.is_set():
                self._sampled_peak_mib = max(self._sampled_peak_mib,
                                             proc.memory_info().rss / 2 ** 20)
                time.sleep(0.001)

        self._sampler = threading.Thread(target=sample, daemon=True)
        self._sampler.start()

    def peak_mib(self) -> float:
        """Peak since :meth:`start`, in MiB."""
        if self.device.type == 'cuda':
            synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            self._sampler = None
            return max(0.0, self._sampled_peak_mib - self.base_mib)
        return max(0.0, (peak_rss_mib() or 0.0) - self.base_mib)


# ----------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------
@dataclass
class DatasetBundle:
    """One data set in both representations (library and released)."""
    name: str
    num_items: int
    train: Any          # tagnn_pyg SessionSequences
    test: Any           # tagnn_pyg SessionSequences
    released_train: ReleasedSessionData
    released_test: ReleasedSessionData


def load_dataset(root: Path, name: str) -> DatasetBundle:
    """Read an SR-GNN folder with the library's safe reader and build the released padded
    arrays (each padded to its own data set maximum, as released)."""
    from tagnn_pyg.data.srgnn_format import read_srgnn_folder
    data = read_srgnn_folder(root / name)
    train_lists, test_lists = data.train.to_lists(), data.test.to_lists()
    return DatasetBundle(
        name=name, num_items=data.num_items, train=data.train, test=data.test,
        released_train=ReleasedSessionData(train_lists, data.train.targets.tolist()),
        released_test=ReleasedSessionData(test_lists, data.test.targets.tolist()))


# ----------------------------------------------------------------------------------------
# the two implementations, behind one small interface
# ----------------------------------------------------------------------------------------
def eval_index(num_test: int, eval_count: int) -> np.ndarray:
    """The test rows evaluated: all of them in order, or ``eval_count`` rows evenly spread
    over the test set (in order) when the evaluation is capped."""
    if eval_count >= num_test:
        return np.arange(num_test)
    return np.linspace(0, num_test - 1, eval_count).round().astype(np.int64)


def library_model_class(key: str) -> type:
    """``tagnn_pyg.models.MODELS[key]`` (importing only that model's module if another
    model's module is broken or missing, so one model can be benchmarked on its own)."""
    try:
        from tagnn_pyg.models import MODELS as LIB_MODELS
        return LIB_MODELS[key]
    except ImportError:
        import importlib
        module, name = {'srgnn': ('srgnn', 'SRGNN'), 'tagnn': ('tagnn', 'TAGNN'),
                        'tagnnpp': ('tagnn_plus_plus', 'TAGNNPlusPlus')}[key]
        return getattr(importlib.import_module('tagnn_pyg.models.' + module), name)


class Runner:
    """Builds one implementation's model and optimizer, then runs training steps and
    evaluation batches (each call fetches/builds its own batch, as the implementation does).

    Args:
        bundle: the data set.
        model_key: ``'srgnn'``, ``'tagnn'`` or ``'tagnnpp'`` (its preset:
            :func:`preset_name`).
        device: where to run.
        eval_batch_size: evaluation batch size (default: the preset's training batch size).
        amp: bfloat16 autocast of the training forward pass, where the implementation
            supports it (:attr:`supports_amp`; otherwise float32).
    """

    implementation = ''
    supports_amp = False

    def __init__(self, bundle: DatasetBundle, model_key: str, device: torch.device,
                 eval_batch_size: Optional[int] = None, amp: bool = False) -> None:
        from tagnn_pyg.presets import get_preset
        self.amp = amp and self.supports_amp
        self.bundle, self.model_key, self.device = bundle, model_key, device
        self.preset = get_preset(preset_name(model_key, bundle.name))
        self.batch_size = int(self.preset.training['batch_size'])
        self.eval_batch_size = eval_batch_size or self.batch_size

    def setup(self, train_index: np.ndarray, eval_count: int) -> None:
        raise NotImplementedError

    def train_step(self) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self) -> Dict[str, float]:
        raise NotImplementedError

    def teardown(self) -> None:
        for key in list(vars(self)):
            if key not in ('device', 'bundle', 'preset', 'model_key', 'batch_size',
                           'eval_batch_size', 'implementation', 'amp', 'optimizer_name'):
                setattr(self, key, None)


def library_adam(parameters: Any, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """The optimizer the library's trainer uses (``tagnn_pyg.optim.make_adam``: torch's fused
    Adam where supported), or plain Adam if that helper is absent."""
    try:
        from tagnn_pyg.optim import make_adam
    except ImportError:
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    return make_adam(parameters, lr=lr, weight_decay=weight_decay)


class LibraryRunner(Runner):
    """tagnn_pyg: SessionLoader + MODELS[...] + the trainer's Adam (+ AGC), optionally with
    bfloat16 autocast of the training forward pass (``amp``, the trainer's ``--amp``)."""

    implementation = 'tagnn_pyg'
    supports_amp = True

    def setup(self, train_index: np.ndarray, eval_count: int) -> None:
        from tagnn_pyg.data.batching import SessionLoader
        train = self.bundle.train[torch.as_tensor(train_index)]
        # the timed batches, in the same order as the reference's (no reshuffle)
        self.loader = SessionLoader(train, self.batch_size, shuffle=False,
                                    device=self.device)
        self.eval_loader = SessionLoader(self.bundle.test[torch.as_tensor(eval_index(
                                             len(self.bundle.test), eval_count))],
                                         self.eval_batch_size, shuffle=False,
                                         device=self.device)
        self._train_iter = iter(self.loader)
        cls = library_model_class(self.preset.model)
        self.model = cls(self.bundle.num_items, **self.preset.model_kwargs).to(self.device)
        tr = self.preset.training
        self.optimizer = library_adam(self.model.parameters(), lr=tr['lr'],
                                      weight_decay=tr['weight_decay'])
        self.agc = None
        if tr.get('agc'):
            from tagnn_pyg.optim import AGC
            self.agc = AGC.for_model(self.model, clipping=tr['agc_clipping'],
                                     eps=tr['agc_eps'],
                                     exempt_embedding=tr['agc_exempt_embedding'])

    def train_step(self) -> torch.Tensor:
        self.model.train()
        batch = next(self._train_iter)
        self.optimizer.zero_grad()
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                            enabled=self.amp):
            scores = self.model(batch)
        loss = F.cross_entropy(scores[:, 1:].float(), batch.y - 1)
        loss.backward()
        if self.agc is not None:
            self.agc.clip_()
        self.optimizer.step()
        return loss.detach()

    def evaluate(self) -> Dict[str, float]:
        from tagnn_pyg.metrics import TopKMetrics
        self.model.eval()
        metrics = TopKMetrics(ks=(20,))
        with torch.inference_mode():
            for batch in self.eval_loader:
                metrics.update(self.model(batch), batch.y)
        return metrics.compute()


class ReferenceRunner(Runner):
    """The released computation (:mod:`tagnn_pyg.testing.released`) + Adam (torch's default
    implementation, as released), in float32."""

    implementation = 'reference'

    def setup(self, train_index: np.ndarray, eval_count: int) -> None:
        kw = self.preset.model_kwargs
        self.model = ReleasedSessionGraph(
            self.bundle.num_items, hidden_size=int(kw.get('hidden_channels', 100)),
            kind=self.model_key, step=int(kw.get('num_steps', 1)),
            nonhybrid=not kw.get('hybrid', True), heads=int(kw.get('heads', 2)),
            dropout=float(kw.get('dropout', 0.1))).to(self.device)
        tr = self.preset.training
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=tr['lr'],
                                          weight_decay=tr['weight_decay'])
        self._slices = iter([train_index[k:k + self.batch_size]
                             for k in range(0, len(train_index), self.batch_size)])
        rows = eval_index(len(self.bundle.test), eval_count)
        self._eval_slices = [rows[k:k + self.eval_batch_size]
                             for k in range(0, eval_count, self.eval_batch_size)]

    def train_step(self) -> torch.Tensor:
        self.model.train()
        batch = self.bundle.released_train.get_slice(next(self._slices))
        return released_train_step(self.model, self.optimizer, batch, self.device)

    def evaluate(self) -> Dict[str, float]:
        self.model.eval()
        hits = torch.zeros((), device=self.device)
        rr = torch.zeros((), device=self.device)
        count = 0
        with torch.inference_mode():
            for index in self._eval_slices:
                batch = self.bundle.released_test.get_slice(index)
                scores, targets = released_scores(self.model, batch, self.device)
                top = scores.topk(20, dim=1).indices                       # [B, 20]
                found = top == (targets - 1).unsqueeze(1)
                hits += found.any(1).sum()
                rank = torch.arange(1, 21, device=self.device, dtype=scores.dtype)
                rr += (found.to(scores.dtype) / rank).sum()
                count += len(index)
        return {'HR@20': float(hits) / count * 100, 'MRR@20': float(rr) / count * 100}


# ----------------------------------------------------------------------------------------
# measurement
# ----------------------------------------------------------------------------------------
def measure(runner: Runner, train_index: np.ndarray, warmup: int, batches: int,
            eval_count: int, device: torch.device) -> Dict[str, Any]:
    """Time ``warmup + batches`` training steps and one evaluation pass of ``runner``."""
    load_before = os.getloadavg()[0] if hasattr(os, 'getloadavg') else None
    torch.manual_seed(0)
    meter = PeakMemory(device)
    meter.start()
    runner.setup(train_index, eval_count)
    times_ms: List[float] = []
    losses: List[torch.Tensor] = []
    for k in range(warmup + batches):
        synchronize(device)
        t0 = time.perf_counter()
        loss = runner.train_step()
        synchronize(device)
        if k >= warmup:
            times_ms.append((time.perf_counter() - t0) * 1e3)
            losses.append(loss)
    train_peak = meter.peak_mib()
    opt = getattr(runner, 'optimizer', None)
    runner.optimizer_name = (type(opt).__name__ + (
        ' (fused)' if opt is not None and opt.defaults.get('fused') else '')) if opt else None

    meter.start()
    synchronize(device)
    t0 = time.perf_counter()
    metrics = runner.evaluate()
    synchronize(device)
    eval_time = time.perf_counter() - t0
    eval_peak = meter.peak_mib()
    runner.teardown()
    gc.collect()
    return dict(times_ms=times_ms, loss=float(torch.stack(losses).mean()),
                train_peak_mib=train_peak, eval_time_s=eval_time, eval_peak_mib=eval_peak,
                eval_metrics=metrics, memory_method=meter.method,
                load_avg_1min_before=load_before,
                load_avg_1min_after=os.getloadavg()[0] if hasattr(os, 'getloadavg') else None)


def profile_library(runner: LibraryRunner, train_index: np.ndarray, steps: int,
                    path: Path, device: torch.device) -> None:
    """Write a ``torch.profiler`` table (top ops by self time) of ``steps`` training steps."""
    from torch.profiler import ProfilerActivity, profile
    runner.setup(train_index, 1)
    runner.train_step()  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                           if device.type == 'cuda' else [])
    with profile(activities=activities, record_shapes=False) as prof:
        for _ in range(steps):
            runner.train_step()
            synchronize(device)
    key = 'self_cuda_time_total' if device.type == 'cuda' else 'self_cpu_time_total'
    path.write_text(prof.key_averages().table(sort_by=key, row_limit=30))
    runner.teardown()


def record(model: str, dataset: str, runner: Runner, result: Dict[str, Any],
           bundle: DatasetBundle, device: torch.device, args: argparse.Namespace,
           command: str, eval_count: int) -> Dict[str, Any]:
    """One JSON object of results."""
    ms = statistics.median(result['times_ms'])
    batches_per_epoch = math.ceil(len(bundle.train) / runner.batch_size)
    eval_s = result['eval_time_s'] * len(bundle.test) / eval_count
    return {
        'model': model,
        'dataset': dataset,
        'device': device_name(device),
        'implementation': runner.implementation,
        'preset': runner.preset.name,
        'hidden_channels': runner.preset.model_kwargs.get('hidden_channels'),
        'batch_size': runner.batch_size,
        'optimizer': runner.optimizer_name,
        'amp_bf16': runner.amp,
        'ms_per_train_batch': round(ms, 3),
        'ms_per_train_batch_all': [round(t, 3) for t in result['times_ms']],
        'timed_batches': len(result['times_ms']),
        'warmup_batches': args.warmup,
        'train_examples_per_s': round(runner.batch_size / (ms / 1e3), 1),
        'batches_per_epoch': batches_per_epoch,
        'epoch_s': round(ms * batches_per_epoch / 1e3, 2),
        'extrapolated': len(result['times_ms']) < batches_per_epoch,
        'epoch_note': (f"extrapolated: median of {len(result['times_ms'])} batches x "
                       f"{batches_per_epoch} batches" if len(result['times_ms'])
                       < batches_per_epoch else 'measured'),
        'peak_mem_mib': round(result['train_peak_mib'], 1),
        'eval_peak_mem_mib': round(result['eval_peak_mib'], 1),
        'peak_mem_method': result['memory_method'],
        'eval_s': round(eval_s, 3),
        'eval_sequences': eval_count,
        'eval_batch_size': runner.eval_batch_size,
        'test_sequences': len(bundle.test),
        'eval_extrapolated': eval_count < len(bundle.test),
        'eval_examples_per_s': round(eval_count / result['eval_time_s'], 1),
        'eval_metrics_on_subset': {k: round(v, 3) for k, v in result['eval_metrics'].items()},
        'mean_train_loss': round(result['loss'], 4),
        'num_items': bundle.num_items,
        'train_sequences': len(bundle.train),
        'command': command,
        'torch': torch.__version__,
        'threads': torch.get_num_threads(),
        'omp_wait_policy': os.environ.get('OMP_WAIT_POLICY'),
        'load_avg_1min_before': result['load_avg_1min_before'],
        'load_avg_1min_after': result['load_avg_1min_after'],
        'python': platform.python_version(),
        'host_cpu': platform.processor() or platform.machine(),
        'date': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
    }


def add_ratios(records: List[Dict[str, Any]]) -> None:
    """Speed-up of tagnn_pyg over the reference, stored on both rows of a pair."""
    by_key = {(r['model'], r['dataset'], r['implementation']): r for r in records}
    for r in records:
        ours = by_key.get((r['model'], r['dataset'], 'tagnn_pyg'))
        ref = by_key.get((r['model'], r['dataset'], 'reference'))
        if ours is None or ref is None:
            continue
        r['train_speedup_vs_reference'] = round(
            ref['ms_per_train_batch'] / ours['ms_per_train_batch'], 2)
        r['eval_speedup_vs_reference'] = round(ref['eval_s'] / ours['eval_s'], 2)
        r['memory_ratio_reference_over_ours'] = (
            round(ref['peak_mem_mib'] / ours['peak_mem_mib'], 2)
            if ours['peak_mem_mib'] > 0 else None)


def markdown(records: List[Dict[str, Any]], command: str) -> str:
    """The results as a markdown table."""
    if not records:
        return '(no results)\n'
    r0 = records[0]
    lines = [
        f"# Speed: tagnn_pyg vs the released computation ({r0['device']})",
        '',
        f"Command: `{command}`  ",
        f"torch {r0['torch']}, {r0['threads']} threads (OMP_WAIT_POLICY="
        f"{r0['omp_wait_policy']}), {r0['date']}. "
        f"Timed batches per row: see `timed_batches` in the JSON (after "
        f"{r0['warmup_batches']} warm-up). Epoch = median ms per batch x batches per epoch "
        f"(extrapolated unless a full epoch was timed). Eval = full ranking over all items"
        + (f", timed on {r0['eval_sequences']} test sequences evenly spread over the test set and extrapolated to "
           f"the whole test set" if r0['eval_extrapolated'] else '') + '.  ',
        f"Peak memory: {r0['peak_mem_method']}.",
        '',
        '| model | data set | implementation | batch | ms / train batch | train ex/s '
        '| epoch (s) | peak train MiB | eval (s) | speed-up train | speed-up eval '
        '| load avg |',
        '|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ]
    for r in records:
        ext = '*' if r['extrapolated'] else ''
        eext = '*' if r['eval_extrapolated'] else ''
        sp = r.get('train_speedup_vs_reference')
        esp = r.get('eval_speedup_vs_reference')
        show = r['implementation'] == 'tagnn_pyg'
        lines.append(
            f"| {r['model']} | {r['dataset']} | {r['implementation']} | {r['batch_size']} "
            f"| {r['ms_per_train_batch']:.1f} | {r['train_examples_per_s']:.0f} "
            f"| {r['epoch_s']:.0f}{ext} | {r['peak_mem_mib']:.0f} | {r['eval_s']:.1f}{eext} "
            f"| {f'{sp:.1f}x' if show and sp else ''} | {f'{esp:.1f}x' if show and esp else ''} "
            f"| {r['load_avg_1min_before']:.2f} |")
    lines += ['', '`*` extrapolated (see above).', '']
    return '\n'.join(lines)


def write_results(records: List[Dict[str, Any]], out: Path, tag: str, command: str) -> None:
    """Write ``speed_<tag>.json`` / ``.md`` (speed-ups filled in where both rows exist)."""
    add_ratios(records)
    (out / f'speed_{tag}.json').write_text(json.dumps(records, indent=1) + '\n')
    (out / f'speed_{tag}.md').write_text(markdown(records, command))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--data-root', type=Path, default=Path('../shared/datasets'))
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--datasets', nargs='+', default=list(DATASETS), choices=DATASETS)
    p.add_argument('--models', nargs='+', default=list(MODELS), choices=MODELS)
    p.add_argument('--implementations', nargs='+', default=['tagnn_pyg', 'reference'],
                   choices=['tagnn_pyg', 'reference'])
    p.add_argument('--batches', type=int, default=None,
                   help='timed training batches per row (default: 5 on CPU, 200 on CUDA)')
    p.add_argument('--reference-batches', type=int, default=None,
                   help='timed batches for the reference (default: --batches, at most 3 '
                        'on CPU where one reference TAGNN batch takes seconds)')
    p.add_argument('--warmup', type=int, default=None,
                   help='untimed warm-up batches (default: 1 on CPU, 20 on CUDA)')
    p.add_argument('--eval-sequences', type=int, default=None,
                   help='evaluate on N test sequences evenly spread over the test set and '
                        'extrapolate '
                        '(default: 300 on CPU, the whole test set on CUDA)')
    p.add_argument('--eval-batch-size', type=int, default=None,
                   help='evaluation batch size (default: the training batch size, '
                        'as released)')
    p.add_argument('--amp', action='store_true',
                   help='bfloat16 autocast of the tagnn_pyg training forward pass (the '
                        "trainer's --amp); the reference always runs in float32")
    p.add_argument('--threads', type=int, default=2, help='torch.set_num_threads on CPU')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--profile', action='store_true',
                   help='also write a torch.profiler table of tagnn_pyg training steps')
    p.add_argument('--tag', default=None,
                   help="output file names speed_<tag>.json/.md (default: 'cpu' or 'cuda')")
    p.add_argument('--out', type=Path, default=Path(__file__).resolve().parent / 'results')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    args = parse_args(argv)
    command = 'python ' + ' '.join(shlex.quote(a) for a in
                                   ([sys.argv[0]] + (list(argv) if argv is not None
                                                     else sys.argv[1:])))
    device = torch.device(args.device)
    cuda = device.type == 'cuda'
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device} asked for but CUDA is not available")
    if not cuda:
        torch.set_num_threads(args.threads)
    args.batches = args.batches or (200 if cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (20 if cuda else 1)
    if args.eval_sequences is None and not cuda:
        args.eval_sequences = 300
    ref_batches = args.reference_batches or (args.batches if cuda else min(args.batches, 3))
    tag = args.tag or ('cuda' if cuda else 'cpu')
    args.out.mkdir(parents=True, exist_ok=True)
    records: List[Dict[str, Any]] = []
    t_start = time.perf_counter()
    for dataset in args.datasets:
        t0 = time.perf_counter()
        bundle = load_dataset(args.data_root, dataset)
        print(f"[{dataset}] loaded in {time.perf_counter() - t0:.1f} s: "
              f"{len(bundle.train)} train / {len(bundle.test)} test sequences, "
              f"{bundle.num_items} items; released padding: train {bundle.released_train.len_max}"
              f", test {bundle.released_test.len_max}", flush=True)
        eval_count = min(args.eval_sequences or len(bundle.test), len(bundle.test))
        for model in args.models:
            for impl in args.implementations:
                cls = LibraryRunner if impl == 'tagnn_pyg' else ReferenceRunner
                runner = cls(bundle, model, device, args.eval_batch_size, amp=args.amp)
                n = args.batches if impl == 'tagnn_pyg' else ref_batches
                rng = np.random.default_rng(args.seed)
                # identical (shuffled, as in training) batches for both implementations
                index = rng.permutation(len(bundle.train))[
                    :(args.warmup + max(args.batches, ref_batches)) * runner.batch_size]
                if args.profile and impl == 'tagnn_pyg':
                    prof_path = args.out / f'profile_{model}_{dataset}_{tag}.txt'
                    profile_library(runner, index, 3, prof_path, device)
                    print(f"  profile written to {prof_path}", flush=True)
                t0 = time.perf_counter()
                result = measure(runner, index, args.warmup, n, eval_count, device)
                rec = record(model, dataset, runner, result, bundle, device, args, command,
                             eval_count)
                records.append(rec)
                write_results(records, args.out, tag, command)   # kept if cut off later
                print(f"  {model:8s} {impl:10s} {rec['ms_per_train_batch']:10.1f} ms/batch "
                      f"epoch {rec['epoch_s']:9.1f} s  peak {rec['peak_mem_mib']:8.1f} MiB  "
                      f"eval {rec['eval_s']:8.2f} s  loss {rec['mean_train_loss']:.3f}  "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
        del bundle
        gc.collect()
    write_results(records, args.out, tag, command)
    print(markdown(records, command))
    print(f"total {time.perf_counter() - t_start:.0f} s; wrote {args.out}/speed_{tag}.json/.md")
    return records


if __name__ == '__main__':
    main()
