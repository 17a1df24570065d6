"""PyG building blocks: the gated session convolution, readouts and the session Transformer."""

__all__: list = []
