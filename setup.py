"""Packaging for tagnn-pyg (import name ``tagnn_pyg``); the build system is named in
pyproject.toml."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"',
                    (HERE / 'tagnn_pyg' / '__init__.py').read_text()).group(1)
#: The project's home; relative links of the README point there on the package index.
REPOSITORY = 'https://github.com/tagnn-pyg/tagnn-pyg'


def long_description() -> str:
    """README.md with its relative links made absolute (they are dead on the index)."""
    text = (HERE / 'README.md').read_text(encoding='utf-8')
    return re.sub(r'\]\((?!https?://|#)([^)]+)\)',
                  lambda m: f']({REPOSITORY}/blob/v{VERSION}/'
                            f'{m.group(1)})', text)


EXTRAS = {
    # Used when present, never needed:
    'scatter': ['torch-scatter>=2.1'],   # faster scatter inside PyG
    'ogb': ['ogb>=1.3'],                  # OGB itself (our Evaluator has its interface)
    'tensorboard': ['tensorboard>=2.10'],  # TrainConfig(tensorboard=True)
    'yaml': ['pyyaml>=5.4'],              # tagnn-pyg train --config RUN.yaml
    'test': ['pytest>=7', 'pyyaml>=5.4'],
    'docs': ['sphinx>=7', 'myst-parser>=2', 'furo>=2023.9', 'matplotlib>=3.6'],
    # Serving (tagnn_pyg.serve, docs/serving.md): the HTTP service (httpx: its tests
    # and benchmarks/serve_load.py), ONNX export + onnxruntime, MIPS retrieval (faiss).
    'serve': ['fastapi>=0.110', 'uvicorn>=0.29', 'httpx>=0.27'],
    'onnx': ['onnx>=1.16', 'onnxruntime>=1.18', 'onnxscript>=0.1'],
    'mips': ['faiss-cpu>=1.8'],
}
EXTRAS['all'] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name='tagnn-pyg',
    version=VERSION,
    description=('SR-GNN, TAGNN and TAGNN++ for session-based recommendation '
                 'as PyTorch Geometric building blocks'),
    long_description=long_description(),
    long_description_content_type='text/markdown',
    author='The tagnn-pyg developers',
    license='MIT',
    license_files=['LICENSE'],
    url=REPOSITORY,
    project_urls={
        'Documentation': f'{REPOSITORY}/tree/main/docs',
        'Source': REPOSITORY,
        'Issues': f'{REPOSITORY}/issues',
    },
    python_requires='>=3.10',
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
    extras_require=EXTRAS,
    entry_points={'console_scripts': ['tagnn-pyg=tagnn_pyg.cli:main']},
    keywords=['graph neural networks', 'session-based recommendation', 'pytorch geometric',
              'recommender systems', 'TAGNN', 'SR-GNN'],
    classifiers=[
        'Development Status :: 4 - Beta',
        'Intended Audience :: Science/Research',
        'Intended Audience :: Developers',
        'Operating System :: OS Independent',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3 :: Only',
        'Programming Language :: Python :: 3.10',
        'Programming Language :: Python :: 3.11',
        'Programming Language :: Python :: 3.12',
        'Programming Language :: Python :: 3.13',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
        'Typing :: Typed',
    ],
)
