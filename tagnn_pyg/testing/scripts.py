"""Import a repository script (``benchmarks/speed.py``, ...) as a module, by its path."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Union

__all__ = ['load_script']


def load_script(path: Union[str, Path]) -> ModuleType:
    r"""The module of the script at ``path``, imported once under its file name.

    ``benchmarks/`` is a folder of scripts, not a package: a test that checks one of them,
    or a script that reuses a sibling (``gpu_check.py`` uses ``speed.py``), loads it with
    this instead of putting the folder on ``sys.path``. The module is registered in
    :data:`sys.modules` as ``path``'s stem, so loading it again (or a plain ``import`` of it
    from a script run in that folder) gives the same module object.

    Args:
        path (str or Path): The script's file.

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        ImportError: when a different file is already loaded under the same name.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no script at {path}")
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        where = getattr(loaded, '__file__', None)
        if where is not None and Path(where).resolve() == path:
            return loaded
        raise ImportError(f"cannot load {path} as module {name!r}: {name!r} is already "
                          f"the module of {where}")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None  # a .py file always has one
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
