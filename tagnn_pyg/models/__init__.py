"""SR-GNN, TAGNN and TAGNN++: thin compositions of :mod:`tagnn_pyg.nn` parts."""

__all__: list = []
