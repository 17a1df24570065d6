r"""Command-line options generated from :class:`tagnn_pyg.train.TrainConfig`.

One source of truth: each option's name, type and default come from the
dataclass field, its help text from the ``Args:`` entry of the class docstring,
so the command line cannot drift from the configuration. ``--epochs`` is the
field ``epochs``, ``--batch-size`` is ``batch_size``; booleans get
``--X`` / ``--no-X``; tuples of integers are comma lists (``--ks 5,10,20``).
Every option defaults to "not given" (``None``), so that a preset, a saved
configuration or a checkpoint supplies the value unless the flag is given.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .common import int_list, positive_int

#: Extra spellings kept for existing command lines.
ALIASES: Dict[str, Tuple[str, ...]] = {
    'num_threads': ('--threads', ),
    'scheduler_step_at_epoch_start': ('--step-at-epoch-start', ),
}
#: Fields validated as positive integers by TrainConfig.
_POSITIVE = {'epochs', 'batch_size', 'lr_decay_step', 'check_every', 'eval_batch_size',
             'patience', 'num_threads', 'max_train', 'max_valid', 'max_test',
             'checkpoint_every'}
_ROLE = re.compile(r':(?:math|class|func|mod|meth|attr|data):`~?([^`]*)`')


def docstring_args(doc: Optional[str]) -> Dict[str, str]:
    r"""The entries of a Google-style ``Args:`` section: ``{name: text}``.

    An entry ``a (int), b (float): text`` gives ``text`` to both names; Sphinx
    roles (``:math:`x```, ``:class:`~a.B```) and double back-quotes are reduced
    to their text.
    """
    if not doc:
        return {}
    lines = doc.expandtabs().splitlines()
    out: Dict[str, str] = {}
    in_args, indent, names, text = False, None, [], []  # type: ignore[var-annotated]

    def flush() -> None:
        if names:
            clean = ' '.join(' '.join(text).split())
            clean = _ROLE.sub(lambda m: re.sub(r'\\(\w+)', r'\1', m.group(1)), clean)
            clean = clean.replace('``', '')
            for n in names:
                out[n] = clean

    for line in lines:
        stripped = line.strip()
        if stripped == 'Args:':
            in_args = True
            continue
        if not in_args:
            continue
        if stripped and not line.startswith(' ' * 4):
            break
        lead = len(line) - len(line.lstrip())
        if stripped and indent is None:
            indent = lead
        if stripped and lead <= (indent or 0) - 4:  # the next section
            break
        head = re.match(r'^((?:\w+ \([^)]*\)(?:, )?)+):\s*(.*)$', stripped)
        if stripped and lead == indent and head:
            flush()
            names = re.findall(r'(\w+) \(', head.group(1))
            text = [head.group(2)]
        elif stripped:
            text.append(stripped)
        elif indent is not None and not names:
            break
    flush()
    return out


def _base_type(tp: Any) -> Any:
    """``Optional[X]`` -> ``X``."""
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _default_text(value: Any) -> str:
    if value is None:
        return 'not set'
    if isinstance(value, bool):
        return 'on' if value else 'off'
    if isinstance(value, tuple):
        return ','.join(str(v) for v in value)
    return f'{value:g}' if isinstance(value, float) else str(value)


def _option(name: str) -> str:
    return '--' + name.replace('_', '-')


def config_fields(cls: type, include: Optional[Iterable[str]] = None
                  ) -> List[dataclasses.Field]:
    """The dataclass fields of ``cls`` (optionally only those in ``include``)."""
    keep = None if include is None else set(include)
    return [f for f in dataclasses.fields(cls) if keep is None or f.name in keep]


def add_config_arguments(parser: argparse.ArgumentParser, cls: type,
                         include: Optional[Iterable[str]] = None,
                         choices: Optional[Dict[str, Sequence[str]]] = None,
                         title: str = 'training settings') -> List[str]:
    r"""Add one option per field of dataclass ``cls`` to ``parser``.

    Args:
        parser (argparse.ArgumentParser): the command's parser.
        cls (type): a dataclass whose docstring documents its fields in ``Args:``.
        include (iterable of str, optional): only these fields.
        choices (dict, optional): allowed values per field.
        title (str): the help section's title.

    Returns:
        list of str: the field names added (also the ``dest`` of each option).
    """
    helps = docstring_args(cls.__doc__)
    hints = typing.get_type_hints(cls)
    choices = choices or {}
    group = parser.add_argument_group(title)
    added = []
    for f in config_fields(cls, include):
        tp = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = helps.get(f.name, '')
        if help_text.endswith('.') and not help_text.endswith('..'):
            help_text = help_text[:-1]
        if default is not None or 'None' not in help_text:
            help_text = f"{help_text} (default: {_default_text(default)})".lstrip()
        flags = [_option(f.name), *ALIASES.get(f.name, ())]
        kwargs: Dict[str, Any] = dict(dest=f.name, default=None, help=help_text)
        if tp is bool:
            group.add_argument(*flags, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            if typing.get_origin(tp) is tuple:
                kwargs.update(type=int_list, metavar='K,K,...')
            elif tp is int:
                kwargs.update(type=positive_int if f.name in _POSITIVE else int,
                              metavar='N')
            elif tp is float:
                kwargs.update(type=float, metavar='X')
            else:
                kwargs.update(type=str, metavar=f.name.upper())
            if f.name in choices:
                kwargs.update(choices=tuple(choices[f.name]), metavar=None)
            group.add_argument(*flags, **kwargs)
        added.append(f.name)
    return added


def config_overrides(args: argparse.Namespace, names: Iterable[str]) -> Dict[str, Any]:
    """The fields among ``names`` given on the command line (not ``None``)."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
