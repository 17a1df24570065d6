"""PyG building blocks: the gated session convolution, readouts and the session Transformer."""

__all__: list = []
from tagnn_pyg.nn.gated_session_conv import GatedSessionConv

__all__ += ['GatedSessionConv']
