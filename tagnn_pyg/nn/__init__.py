"""PyG building blocks: the gated session convolution, readouts and the session Transformer."""

__all__: list = []
from tagnn_pyg.nn.gated_session_conv import GatedSessionConv

__all__ += ['GatedSessionConv']
from tagnn_pyg.nn.readouts import LastItemReadout, SoftAttentionReadout

__all__ += ['LastItemReadout', 'SoftAttentionReadout']
from tagnn_pyg.nn.target_attention import TargetAttention

__all__ += ['TargetAttention']
from tagnn_pyg.nn.session_transformer import SessionTransformer

__all__ += ['SessionTransformer']
from tagnn_pyg.nn.session_self_attention import SessionSelfAttention

__all__ += ['SessionSelfAttention']
