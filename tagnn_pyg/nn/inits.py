r"""The released code's initialisation, built on :mod:`torch_geometric.nn.inits`."""

from torch.nn import Module

from torch_geometric.nn.aggr import Aggregation
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.inits import uniform

__all__ = ['released_uniform']


def released_uniform(size: int, module: Module) -> None:
    r"""Initialise ``module`` as the released SR-GNN / TAGNN / TAGNN++ code
    does (``SessionGraph.reset_parameters``): every parameter uniform in
    :math:`[-1/\sqrt{\text{size}}, 1/\sqrt{\text{size}}]`.

    The module's own parameters and every child that is not a PyG layer are
    drawn with :func:`torch_geometric.nn.inits.uniform` (parameters only,
    buffers are left alone); a PyG layer among the children
    (:class:`~torch_geometric.nn.conv.MessagePassing` or
    :class:`~torch_geometric.nn.aggr.Aggregation`, e.g.
    :class:`~tagnn_pyg.nn.GatedSessionConv`,
    :class:`~tagnn_pyg.nn.SoftAttentionReadout`,
    :class:`~tagnn_pyg.nn.TargetAttention`) runs its own
    ``reset_parameters()``, which for the :mod:`tagnn_pyg.nn` layers draws
    the same. The draws follow the order of ``module.parameters()``, so the
    result equals one ``uniform_`` loop over them.

    Args:
        size (int): :math:`d`, the bound is :math:`1/\sqrt{d}`.
        module (torch.nn.Module): The module to initialise.
    """
    for param in module.parameters(recurse=False):
        uniform(size, param)
    for child in module.children():
        if isinstance(child, (MessagePassing, Aggregation)):
            child.reset_parameters()
        else:
            for param in child.parameters():
                uniform(size, param)
