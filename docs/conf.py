"""Sphinx configuration: the Markdown pages through MyST, the API reference from
the docstrings (reStructuredText with ``.. math::``, Google-style ``Args:``).

Build: ``make docs`` (warnings are errors) -> ``docs/_build/html``.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tagnn_pyg  # noqa: E402

project = 'tagnn-pyg'
author = 'The tagnn-pyg developers'
copyright = '2026, The tagnn-pyg developers'
release = version = tagnn_pyg.__version__

extensions = [
    'myst_parser',
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'sphinx.ext.mathjax',
    'sphinx.ext.viewcode',
    'sphinx.ext.intersphinx',
]
root_doc = 'index'
source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
# README.md is the index for browsing the folder on a forge; index.md is the site's.
exclude_patterns = ['_build', 'README.md']

myst_enable_extensions = ['dollarmath', 'colon_fence']
myst_heading_anchors = 3

autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
autodoc_default_options = {'members': True, 'show-inheritance': True}
autodoc_mock_imports = ['torch_scatter', 'torch_sparse', 'ogb', 'tensorboard']
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

intersphinx_mapping = {}  # offline builds (CI has no internet beyond the registries)

html_theme = 'furo'
html_title = f'tagnn-pyg {release}'
