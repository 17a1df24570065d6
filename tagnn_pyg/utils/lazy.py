"""Lazy package attributes (PEP 562), so that importing a package's light modules
(the command line's ``--help``) does not import torch and PyG."""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Tuple


def lazy_exports(package: str, exports: Dict[str, str]
                 ) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    r"""``__getattr__`` and ``__dir__`` for package ``package`` whose public
    name ``n`` lives in submodule ``exports[n]``; each name is imported on first
    use and then cached in the package.

    Args:
        package (str): the package's ``__name__``.
        exports (dict): public name -> submodule name (relative, no dot).

    Returns:
        (__getattr__, __dir__) to assign at the package's top level.
    """
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(f'.{exports[name]}', package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> List[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
