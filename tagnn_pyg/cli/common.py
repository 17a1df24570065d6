r"""What every ``tagnn-pyg`` command shares: the parser class with one-line
errors, argument types, the data/runtime options and small helpers.

Nothing here imports torch: ``tagnn-pyg --help`` must answer at once.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Dict, Optional, Tuple

PROG = 'tagnn-pyg'
#: Built-in data set names (kept here, torch-free, for ``--help``; equal to
#: :data:`tagnn_pyg.data.loading.BUILTIN_DATA`, which a test checks).
BUILTIN_DATA = ('synthetic', 'diginetica', 'yoochoose1_64', 'yoochoose1_4')
MODEL_NAMES = ('srgnn', 'tagnn', 'tagnnpp', 'narm', 'stamp', 'gru4rec', 'gcsan', 'lessr')
DEFAULT_ROOT = 'data'


class UserError(Exception):
    """An error caused by the command's input; printed as one line."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the descriptions' line breaks; wider option column."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``tagnn-pyg: error: ...``) and exit 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault('formatter_class', HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        sub = self.prog.split(' ', 1)[1] if ' ' in self.prog else ''
        hint = f" (see '{PROG} {sub + ' ' if sub else ''}--help')"
        sys.stderr.write(f"{PROG}: error: {message}{hint}\n")
        raise SystemExit(2)


# ----------------------------------------------------------------- value types


def int_list(text: str) -> Tuple[int, ...]:
    """``'5,10,20'`` -> ``(5, 10, 20)`` (positive integers)."""
    try:
        values = tuple(int(v) for v in text.split(',') if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers like 5,10,20, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers like 5,10,20, got {text!r}")
    bad = [v for v in values if v < 1]
    if bad:
        raise argparse.ArgumentTypeError(
            f"expected positive cut-offs like 5,10,20, got {bad[0]} in {text!r}")
    return values


def positive_int(text: str) -> int:
    """A positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") \
            from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def model_arg(text: str) -> Tuple[str, Any]:
    """``KEY=VALUE`` with ``VALUE`` read as JSON when it parses, else as text."""
    key, sep, value = text.partition('=')
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return key.strip(), parsed


# ------------------------------------------------------------- shared options


def add_debug(p: argparse.ArgumentParser) -> None:
    p.add_argument('--debug', action='store_true', default=argparse.SUPPRESS,
                   help='show tracebacks instead of one-line errors')


def add_checkpoint_parser(sub: Any, name: str, help: str,
                          description: str) -> argparse.ArgumentParser:
    """A sub-command reading a checkpoint: its parser with ``--checkpoint CKPT``."""
    p = sub.add_parser(name, help=help, description=description)
    p.add_argument('--checkpoint', required=True, metavar='CKPT',
                   help='best.pt or last.pt of a run')
    return p


def add_data(p: argparse.ArgumentParser, required: bool = True,
             default_text: str = 'none') -> None:
    p.add_argument('--data', required=required, metavar='DATA',
                   help="an SR-GNN or prepared folder, or a built-in name: "
                        + ', '.join(BUILTIN_DATA)
                        + ('' if required else f' (default: {default_text})'))
    p.add_argument('--root', default=None, metavar='DIR',
                   help=f"folder of the built-in data sets (default: ./{DEFAULT_ROOT})")
    from ..data.limits import add_limit_arguments  # torch-free
    add_limit_arguments(p)


def add_runtime(p: argparse.ArgumentParser, device: str = 'auto') -> None:
    p.add_argument('--device', default=device,
                   help=f"auto (CUDA when available), cpu, cuda, cuda:N (default: {device})")
    p.add_argument('--threads', type=positive_int, default=None, metavar='N',
                   help="CPU threads for torch (default: torch's choice)")
    p.add_argument('--no-progress', action='store_true', help='no progress bars')


def setup_threads(threads: Optional[int]) -> None:
    if threads:
        import torch
        torch.set_num_threads(threads)


def check_trained_on(data: Any, ckpt: Dict[str, Any], path: str,
                     allow_other_data: bool) -> None:
    r"""Refuse data the checkpoint ``path`` was not trained on (item count, id
    mapping, data fingerprint) unless ``allow_other_data``, and data it cannot
    score at all."""
    from ..checkpoint import check_trained_on as check

    note = check(ckpt, data.identity(), path, allow_other_data)
    if note:
        logging.getLogger('tagnn_pyg.cli').warning('%s: warning: %s', PROG, note)
    num_items = int(ckpt['num_items'])
    if data.num_items > num_items:
        raise UserError(f"data {data.name!r} holds item ids up to {data.num_items - 1}, "
                        f"but checkpoint {path} knows ids 1..{num_items - 1}: "
                        f"it cannot score them, even with --allow-other-data")


def load_data(args: argparse.Namespace, data: Optional[str] = None,
              root: Optional[str] = None) -> Any:
    r""":func:`tagnn_pyg.data.loading.load_session_data` of ``--data`` / ``--root``
    (or the ``data`` / ``root`` given) within the ``--max-*`` limits."""
    from ..data.limits import limits_from_args
    from ..data.loading import load_session_data
    return load_session_data(data or args.data, root or args.root, limits_from_args(args))


def write_json(path: Any, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (parents created)."""
    from pathlib import Path

    from ..utils.io import atomic_write_text
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=2) + '\n')
