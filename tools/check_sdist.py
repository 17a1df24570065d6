"""Check the source distribution in DIST_DIR: it carries the license, the README and
a complete test suite, and that suite passes when run from the unpacked sdist.

Usage: ``python tools/check_sdist.py DIST_DIR`` (``make dist`` runs it). The tests
read the real data from ``TAGNN_SHARED_DATASETS`` (default: ``../shared/datasets``
beside this checkout).
"""
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REQUIRED = ['LICENSE', 'README.md', 'setup.py', 'pyproject.toml', 'tests/conftest.py',
            'tagnn_pyg/testing/released.py', 'tagnn_pyg/py.typed']


def main(dist_dir: str) -> int:
    sdists = sorted(Path(dist_dir).glob('*.tar.gz'))
    if len(sdists) != 1:
        print(f"check_sdist: expected one .tar.gz in {dist_dir}, found {sdists}")
        return 1
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(sdists[0]) as tar:
        tar.extractall(tmp, filter='data')
        (root, ) = Path(tmp).iterdir()
        missing = [name for name in REQUIRED if not (root / name).exists()]
        tests = {p.name for p in (REPO / 'tests').glob('*.py')}
        shipped = {p.name for p in (root / 'tests').glob('*.py')}
        missing += [f'tests/{name}' for name in sorted(tests - shipped)]
        if missing:
            print(f"check_sdist: {sdists[0].name} lacks {missing}")
            return 1
        env = dict(os.environ, PYTHONPATH=str(root),
                   TAGNN_SHARED_DATASETS=os.environ.get(
                       'TAGNN_SHARED_DATASETS', str(REPO.parent / 'shared' / 'datasets')))
        print(f"check_sdist: running the test suite of {sdists[0].name}", flush=True)
        return subprocess.call([sys.executable, '-m', 'pytest', '-q', '-p',
                                'no:cacheprovider'], cwd=root, env=env)


if __name__ == '__main__':
    sys.exit(main(*sys.argv[1:]))
