"""PyG building blocks: the gated session convolution, readouts, the session Transformer,
GC-SAN's self-attention and LESSR's EOPA and shortcut-graph attention layers."""

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
from tagnn_pyg.nn.eopa_conv import EOPAConv, eop_multigraph, static_eop_multigraph

__all__ += ['EOPAConv', 'eop_multigraph', 'static_eop_multigraph']
from tagnn_pyg.nn.shortcut_gat_conv import (ShortcutGATConv, shortcut_graph,
                                             static_shortcut_graph)

__all__ += ['ShortcutGATConv', 'shortcut_graph', 'static_shortcut_graph']
