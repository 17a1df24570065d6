"""tagnn-pyg: session-based recommendation (SR-GNN, TAGNN, TAGNN++) on PyTorch Geometric."""
__version__ = "0.1.0"
