"""Support for the test suite and the benchmarks; **not for production**.

* :mod:`tagnn_pyg.testing.released`: the slow, straightforward ports of the released
  SR-GNN / TAGNN / TAGNN++ computation that tests and benchmarks compare the fast path with;
* :func:`load_script`: import one of the repository's scripts (``benchmarks/*.py``) by its
  path, for the tests that check them and for the scripts that reuse a sibling.

Import the submodules explicitly (``from tagnn_pyg.testing.released import ...``); nothing
here is imported by the rest of the package.
"""
from .scripts import load_script

__all__ = ['load_script']
