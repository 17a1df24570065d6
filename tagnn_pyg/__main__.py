"""``python -m tagnn_pyg ...`` is the ``tagnn-pyg`` command."""
import sys

from .cli import main

if __name__ == '__main__':
    sys.exit(main())
