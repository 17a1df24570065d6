"""Packaging for tagnn-pyg (import name ``tagnn_pyg``)."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"',
                    (HERE / 'tagnn_pyg' / '__init__.py').read_text()).group(1)

setup(
    name='tagnn-pyg',
    version=VERSION,
    description=('SR-GNN, TAGNN and TAGNN++ for session-based recommendation '
                 'as PyTorch Geometric building blocks'),
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='MIT',
    python_requires='>=3.9',
    packages=find_packages(include=['tagnn_pyg', 'tagnn_pyg.*']),
    package_data={'tagnn_pyg': ['py.typed']},
    install_requires=[
        'torch>=2.4,<3',
        'torch-geometric>=2.6,<3',
        'numpy>=1.23',
        'scipy>=1.9',
        'scikit-learn>=1.2',
        'tqdm>=4.60',
    ],
    extras_require={
        # Used when present, never needed:
        'scatter': ['torch-scatter>=2.1'],
        'ogb': ['ogb>=1.3'],
        'test': ['pytest>=7'],
        'docs': ['matplotlib>=3.6'],
    },
    entry_points={'console_scripts': ['tagnn-pyg=tagnn_pyg.cli:main']},
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
