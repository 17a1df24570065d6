r"""The ``tagnn-pyg`` command (also ``python -m tagnn_pyg``): ``train``,
``evaluate``, ``recommend``, ``serve``, ``export``, ``baseline``, ``prepare``
and ``demo``, one module each.

Every error a user can cause (missing file, bad id, wrong format, incompatible
checkpoint, bad option) ends the command with exit status 1 (2 for a bad
command line) and one line ``tagnn-pyg: error: ...`` on stderr; ``--debug``
shows the traceback instead. See ``docs/cli.md``.

Building the parser imports neither torch nor PyG: ``--help`` and
``--version`` answer at once; each command imports what it needs when it runs.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Optional, Sequence

from . import baseline, demo, evaluate, export, prepare, recommend, serve, train
from .common import PROG, Parser, UserError

__all__ = ['main', 'build_parser', 'UserError']

#: The command modules, in ``--help`` order; each has ``add_parser`` and ``run``.
COMMANDS = (train, evaluate, recommend, serve, export, baseline, prepare, demo)


def build_parser() -> argparse.ArgumentParser:
    r"""The ``tagnn-pyg`` argument parser."""
    from .. import __version__

    parser = Parser(prog=PROG, description='Session-based recommendation with SR-GNN, '
                    'TAGNN and TAGNN++ on PyTorch Geometric.')
    parser.add_argument('--version', action='version', version=f'{PROG} {__version__}')
    parser.add_argument('--debug', action='store_true',
                        help='show tracebacks instead of one-line errors')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', parser_class=Parser)
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _user_errors() -> tuple:
    """Exception types that a user's input or environment causes (printed as one
    line); the library's own error types are taken from the modules that raised
    them, when they were imported."""
    errors: tuple = (UserError, OSError, EOFError, ValueError, KeyError)
    for module, name in (('tagnn_pyg.checkpoint', 'CheckpointError'),
                         ('tagnn_pyg.train.trainer', 'NonFiniteLossError'),
                         ('tagnn_pyg.utils.lock', 'FolderLockedError'),
                         ('tagnn_pyg.distributed', 'DistributedError'),
                         ('tagnn_pyg.utils.rundir', 'RunExistsError')):
        if module in sys.modules:
            errors += (getattr(sys.modules[module], name), )
    return errors


def _message(err: BaseException) -> str:
    if isinstance(err, KeyError) and err.args:
        text = str(err.args[0])
    elif isinstance(err, OSError) and err.filename and err.strerror:
        from ..utils.io import describe_os_error
        text = describe_os_error(err)
    else:
        text = str(err) or type(err).__name__
    return ' '.join(text.split())  # one line


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (not the
    stream at creation), so that redirecting stderr later is honoured."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _configure_logging() -> None:
    log = logging.getLogger('tagnn_pyg')
    if not any(getattr(h, '_tagnn_cli', False) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter('%(message)s'))
        handler._tagnn_cli = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(logging.INFO)


def main(argv: Optional[Sequence[str]] = None) -> int:
    r"""Entry point of the ``tagnn-pyg`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, 'debug', False))
    _configure_logging()
    try:
        return args.run(args)
    except BrokenPipeError:  # e.g. `tagnn-pyg evaluate ... | head`
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 141
    except KeyboardInterrupt:
        hint = (f"; continue with '{PROG} train ... --out {args.out} --resume'"
                if args.command == 'train' else '')
        print(f"{PROG}: interrupted{hint}", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - one line for users, traceback with --debug
        if debug:
            raise
        if isinstance(err, _user_errors()):
            print(f"{PROG}: error: {_message(err)}", file=sys.stderr)
        else:
            print(f"{PROG}: error: internal error {type(err).__name__}: {_message(err)} "
                  f"(rerun with --debug for the traceback)", file=sys.stderr)
        return 1
