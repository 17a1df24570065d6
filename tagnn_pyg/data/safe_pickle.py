r"""A restricted pickle loader for the SR-GNN data files.

The SR-GNN format (``all_train_seq.txt``, ``train.txt``, ``test.txt``) is a
Python pickle of lists, tuples and ints. A pickle can run arbitrary code when
loaded (its ``GLOBAL``/``STACK_GLOBAL`` + ``REDUCE`` opcodes call any importable
function), so these files are loaded only through :func:`safe_pickle_load`,
which accepts lists, tuples and ints and refuses everything else, in three
independent layers:

1. **Opcode scan** (before anything is unpickled): every opcode must be one of
   :data:`ALLOWED_OPCODES` (framing, marks, the memo, ints, lists, tuples).
   Any other opcode (``GLOBAL``, ``STACK_GLOBAL``, ``REDUCE``, ``BUILD``,
   ``INST``, ``OBJ``, ``NEWOBJ``, ``EXT*``, ``PERSID``, ``NONE``, ``NEWTRUE``,
   floats, strings, bytes, dicts, sets, ...) raises :class:`UnsafePickleError`
   naming the opcode and its byte offset. Nothing has been executed or built.
2. **Restricted unpickler**: ``find_class`` and ``persistent_load`` refuse
   everything, so even an opcode missed by the scan could not reach a callable.
3. **Type and size check** of the result: only ``list``, ``tuple`` and ``int``
   (not ``bool``), nested at most :data:`MAX_DEPTH` deep (which also refuses
   self-referencing lists), and at most :data:`ELEMENTS_PER_BYTE` elements per
   byte of the file, counting every reference to a shared list as a copy.

The memo opcodes let a few bytes refer to one list many times: an 83 KB file can
name one 20,000-click list 20,000 times, which unpickles cheaply (references)
but is 400 million clicks to whatever reads it next. The check walks each
distinct list once (shared lists are memoised by identity), so it costs time
proportional to the file, and it refuses such a file before anything expands
it. A pickle without shared references holds fewer elements than bytes (every
element costs at least one opcode byte), so real files are never refused.
"""
from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
from pathlib import Path
from typing import Any, Optional, Union

PathLike = Union[str, os.PathLike]

#: The pickle opcodes needed to build lists, tuples and ints (all protocols).
ALLOWED_OPCODES = frozenset({
    'PROTO', 'FRAME', 'STOP', 'MARK', 'POP', 'POP_MARK', 'DUP',
    # memo (shared sub-lists); GET of an unknown key fails in the unpickler
    'PUT', 'BINPUT', 'LONG_BINPUT', 'MEMOIZE', 'GET', 'BINGET', 'LONG_BINGET',
    # ints (INT with argument 00/01 means False/True: refused separately)
    'INT', 'BININT', 'BININT1', 'BININT2', 'LONG', 'LONG1', 'LONG4',
    # lists and tuples
    'EMPTY_LIST', 'LIST', 'APPEND', 'APPENDS',
    'EMPTY_TUPLE', 'TUPLE', 'TUPLE1', 'TUPLE2', 'TUPLE3',
})

_INT = frozenset({int})
_SEQ = frozenset({list, tuple})

#: Fast path: a stream made only of the common fixed-width allowed opcodes,
#: ending with STOP (each opcode byte starts exactly one alternative, so the match
#: is a deterministic parse). Anything else goes through the exact scan.
_FAST_STREAM = re.compile(
    rb'(?:\x80.|\x95.{8}|[(012\x94\]aelt)\x85\x86\x87]|[qhK].|[rjJ].{4}|M..)*\.', re.S)

#: Deepest nesting of lists/tuples accepted (the SR-GNN files need 3).
MAX_DEPTH = 8

#: Most elements (ints and lists, every reference counted) per byte of pickle
#: (but at least :data:`MIN_ELEMENTS`, for tiny files).
ELEMENTS_PER_BYTE = 1
MIN_ELEMENTS = 4096

#: Largest pickle file read by default (bytes).
MAX_FILE_BYTES = 4 * 2**30


class UnsafePickleError(ValueError):
    """A pickle holds something other than lists, tuples and ints (a global, a
    call, another type): refused, and nothing was run."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        raise UnsafePickleError(f"refused global {module}.{name}: only lists, tuples "
                                f"and ints are allowed")

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102
        raise UnsafePickleError(f"refused persistent id {pid!r:.60}: only lists, "
                                f"tuples and ints are allowed")


def _describe_refusal(ops: Any, name: str, arg: Any, pos: int) -> str:
    # Protocol 4+ pushes a global's module and name as strings, then STACK_GLOBAL:
    # look a few opcodes ahead so that the message names the global.
    strings = [arg] if isinstance(arg, str) else []
    for _ in range(8):
        nxt = next(ops, None)
        if nxt is None:
            break
        op2, arg2, pos2 = nxt
        if isinstance(arg2, str) and 'UNICODE' in op2.name:
            strings.append(arg2)
        elif op2.name == 'STACK_GLOBAL' and len(strings) >= 2:
            return (f"refused pickle opcode STACK_GLOBAL (global "
                    f"{strings[-2]}.{strings[-1]}) at byte {pos2}")
    detail = f" {arg!r:.60}" if arg is not None else ''
    return f"refused pickle opcode {name}{detail} at byte {pos}"


def _scan_opcodes(data: bytes, where: str) -> None:
    if _FAST_STREAM.fullmatch(data):
        return
    try:
        ops = pickletools.genops(data)
        for opcode, arg, pos in ops:
            name = opcode.name
            if name not in ALLOWED_OPCODES:
                raise UnsafePickleError(
                    f"{where}: {_describe_refusal(ops, name, arg, pos)}: only lists, "
                    f"tuples and ints are allowed")
            if name == 'INT' and isinstance(arg, bool):
                raise UnsafePickleError(f"{where}: refused boolean {arg} (opcode INT) at "
                                        f"byte {pos}: only ints are allowed")
    except UnsafePickleError:
        raise
    except Exception as e:  # truncated or corrupt stream
        raise ValueError(f"{where}: not a valid pickle ({e})") from None


def _format_path(link: Any) -> str:
    parts = []
    while link is not None:
        link, i = link
        parts.append(f'[{i}]')
    return 'root' + ''.join(reversed(parts))


class _Walk:
    """One walk over an unpickled object: types, depth, and the element count
    with every shared reference counted as a copy. The walk stops as soon as
    the count passes ``max_elements``, so its time is bounded by that limit
    (proportional to the file), whatever the sharing."""

    def __init__(self, where: str, max_elements: float) -> None:
        self.where = where
        self.max_elements = max_elements
        self.total = 0

    def visit(self, node: Any, depth: int = 0, link: Any = None) -> None:
        t = type(node)
        if t is not list and t is not tuple:
            if t is not int:
                raise self._bad_type(t, link)
            self.total += 1
            return
        if depth >= MAX_DEPTH:
            raise UnsafePickleError(f"{self.where}: lists nested deeper than {MAX_DEPTH} at "
                                    f"{_format_path(link)} (self-referencing?)")
        self._count(1 + len(node), link)
        if set(map(type, node)) <= _INT:
            return
        for i, child in enumerate(node):
            tc = type(child)
            if tc is int:
                continue
            if (tc is list or tc is tuple) and set(map(type, child)) <= _INT:
                self._count(1 + len(child), (link, i))  # a leaf: no call needed
                continue
            self.total -= 1  # counted in len(node) already
            self.visit(child, depth + 1, (link, i))

    def _count(self, n: int, link: Any) -> None:
        self.total += n
        if self.total > self.max_elements:
            raise UnsafePickleError(
                f"{self.where}: refused: the pickle expands to more than "
                f"{self.max_elements:,} elements (limit {ELEMENTS_PER_BYTE} per byte of "
                f"the file) at {_format_path(link)}: it repeats references to shared "
                f"lists (pickle memo), which would multiply memory")

    def _bad_type(self, t: type, link: Any) -> UnsafePickleError:
        return UnsafePickleError(f"{self.where}: refused value of type {t.__name__} at "
                                 f"{_format_path(link)}: only lists, tuples and ints "
                                 f"are allowed")


def _check_types(obj: Any, where: str, max_elements: Optional[int] = None) -> int:
    """Check types, depth and expanded size; return the element count."""
    walk = _Walk(where, max_elements if max_elements is not None else float('inf'))
    walk.visit(obj)
    return walk.total


def safe_pickle_loads(data: bytes, where: str = '<bytes>') -> Any:
    """Unpickle ``data`` if it holds only lists, tuples and ints, and at most
    :data:`ELEMENTS_PER_BYTE` elements per byte (shared references counted).

    Args:
        data (bytes): the pickle stream.
        where (str, optional): name used in error messages (a file name).

    Returns:
        The unpickled object (nested lists/tuples of ints).

    Raises:
        UnsafePickleError: naming the refused opcode, global or type, or the
            place where shared references exceed the element limit; nothing
            was executed.
        ValueError: the stream is not a valid pickle.
    """
    _scan_opcodes(data, where)
    try:
        obj = _RestrictedUnpickler(io.BufferedReader(io.BytesIO(data))).load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{where}: {e}") from None
    except Exception as e:
        raise ValueError(f"{where}: not a valid pickle ({type(e).__name__}: {e})") from None
    _check_types(obj, where, max(ELEMENTS_PER_BYTE * len(data), MIN_ELEMENTS))
    return obj


def read_limited(path: PathLike, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Read a whole file after checking its size.

    Args:
        path (str or PathLike): the file.
        max_bytes (int, optional): largest size accepted.

    Returns:
        bytes: the content.

    Raises:
        ValueError: the file is larger than ``max_bytes``.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"{path}: {size:,} bytes, more than the limit of {max_bytes:,} "
                         f"bytes for one data file")
    return path.read_bytes()


def safe_pickle_load(path: PathLike, max_bytes: int = MAX_FILE_BYTES) -> Any:
    """Load a pickle file that may hold only lists, tuples and ints.

    Use it for every SR-GNN data file (``all_train_seq.txt``, ``train.txt``,
    ``test.txt``): a file that tries anything else (importing a function,
    calling it, building another type) is refused before anything runs.

    Args:
        path (str or PathLike): the pickle file.
        max_bytes (int, optional): largest file accepted (:data:`MAX_FILE_BYTES`).

    Returns:
        The unpickled object (nested lists/tuples of ints).

    Raises:
        UnsafePickleError: naming the file and the refused opcode, global or
            type, or the shared references that exceed the element limit.
        ValueError: the file is not a valid pickle, or is too large.
        FileNotFoundError: ``path`` does not exist.
    """
    return safe_pickle_loads(read_limited(path, max_bytes), where=str(path))


__all__ = ['UnsafePickleError', 'safe_pickle_load', 'safe_pickle_loads', 'read_limited',
           'ALLOWED_OPCODES', 'ELEMENTS_PER_BYTE', 'MAX_FILE_BYTES']
