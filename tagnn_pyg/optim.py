r"""The trainer's optimizers (:func:`make_adam`, :func:`make_adamw` with
:func:`no_decay_groups`) and adaptive gradient clipping (AGC, Brock et al.
2021), as TAGNN++ uses it.

**AGC.**

For every *unit* :math:`i` of a parameter :math:`W` (one output unit: a row of a
weight matrix, i.e. the norm is taken over all dimensions but the first; for a
bias or any other vector, and for a scalar, every element is its own unit), with
gradient :math:`G`:

.. math::
    G_i \leftarrow
    \begin{cases}
        \lambda \dfrac{\max(\|W_i\|, \epsilon)}{\|G_i\|} \, G_i
            & \text{if } \|G_i\| > \lambda \max(\|W_i\|, \epsilon), \\
        G_i & \text{otherwise,}
    \end{cases}

with the released defaults :math:`\lambda = 0.01` (``clipping``) and
:math:`\epsilon = 10^{-3}` (``eps``).  Brock et al. do not clip the final
classifier; in SR-GNN/TAGNN/TAGNN++ the item embedding table is both the input
and the output layer, so :meth:`AGC.for_model` exempts ``model.embedding.weight``
by default.

The released TAGNN++ code (``agc.py``) takes the norm over the first dimension
instead of the others, applies the scaling where :math:`\|G_i\|` is *below* the
threshold, and its final training loop never calls it; this module implements
the paper's (Brock et al.'s) rule.

Usage with any optimizer::

    agc = AGC.for_model(model)          # lambda 0.01, eps 1e-3, embedding exempt
    loss.backward()
    agc.clip_()                         # after backward, before step
    optimizer.step()

or ``agc.attach(optimizer)`` once, which clips in a pre-step hook. With mixed
precision, unscale the gradients (``GradScaler.unscale_``) before clipping.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Tuple, Union

import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

import torch_geometric.nn.norm as pyg_norm

ParamsT = Union[Iterable[Tensor], Iterable[Dict[str, Any]]]

__all__ = ['AGC', 'adaptive_clip_grad_', 'unitwise_norm', 'make_adam', 'make_adamw',
           'no_decay_groups', 'NO_DECAY_MODULES']


def unitwise_norm(x: Tensor) -> Tensor:
    r"""Euclidean norm of each unit of ``x``, broadcastable against ``x``.

    A tensor with two or more dimensions has one unit per index of its first
    dimension (norm over all the other dimensions, result of shape
    ``[x.size(0), 1, ..., 1]``); a vector or a scalar has one unit per element
    (the absolute value).
    """
    if x.dim() <= 1:
        return x.abs()
    return torch.linalg.vector_norm(x, ord=2, dim=tuple(range(1, x.dim())),
                                    keepdim=True)


def _check_hyper(clipping: float, eps: float) -> None:
    if not clipping >= 0.0:
        raise ValueError(f"AGC clipping (lambda) must be >= 0, got {clipping!r}")
    if not eps >= 0.0:
        raise ValueError(f"AGC eps must be >= 0, got {eps!r}")


def _flatten_params(parameters: Union[ParamsT, Tensor]) -> List[Tensor]:
    if isinstance(parameters, Tensor):
        return [parameters]
    out: List[Tensor] = []
    for p in parameters:
        if isinstance(p, dict):  # an optimizer parameter group
            if 'params' not in p:
                raise ValueError(f"parameter group without 'params' key: keys {list(p)}")
            out.extend(_flatten_params(p['params']))
        elif isinstance(p, Tensor):
            out.append(p)
        else:
            raise TypeError(f"expected tensors or parameter groups (dicts), "
                            f"got {type(p).__name__}")
    return out


@torch.no_grad()
def adaptive_clip_grad_(
    parameters: Union[ParamsT, Tensor],
    clipping: float = 0.01,
    eps: float = 1e-3,
) -> None:
    r"""Clip the gradients of ``parameters`` in place, unit-wise (see module doc).

    Only units whose gradient norm exceeds ``clipping * max(||w||, eps)`` are
    rescaled (to exactly that norm); all other units, parameters without a
    gradient and all-zero gradients are left untouched. No host
    synchronisation.

    Args:
        parameters (Tensor or iterable): parameters (or optimizer parameter
            groups) whose ``.grad`` is clipped.
        clipping (float, optional): :math:`\lambda`. (default: ``0.01``)
        eps (float, optional): lower bound of the parameter norm
            :math:`\epsilon`. (default: ``1e-3``)
    """
    _check_hyper(clipping, eps)
    for p in _flatten_params(parameters):
        g = p.grad
        if g is None:
            continue
        if g.is_sparse:
            raise ValueError(
                f"AGC cannot clip a sparse gradient (parameter of shape "
                f"{tuple(p.shape)}); exempt it or use dense gradients")
        max_norm = unitwise_norm(p.detach()).clamp_min(eps).mul_(clipping)
        grad_norm = unitwise_norm(g)
        # max_norm / grad_norm is only used where grad_norm > max_norm >= 0,
        # so the clamp merely keeps the unused branch finite.
        scale = max_norm / grad_norm.clamp_min(torch.finfo(g.dtype).tiny)
        scale = torch.where(grad_norm > max_norm, scale, torch.ones_like(scale))
        g.mul_(scale.to(g.dtype))


class AGC:
    r"""Adaptive gradient clipping for a fixed set of parameters, usable with
    any :class:`torch.optim.Optimizer` (see the module docstring for the rule).

    Call :meth:`clip_` after ``loss.backward()`` and before
    ``optimizer.step()``, or :meth:`attach` it to an optimizer once.

    Args:
        parameters (iterable): tensors or optimizer parameter groups to clip.
        clipping (float, optional): :math:`\lambda`. (default: ``0.01``)
        eps (float, optional): :math:`\epsilon`. (default: ``1e-3``)
    """

    def __init__(self, parameters: Union[ParamsT, Tensor], clipping: float = 0.01,
                 eps: float = 1e-3) -> None:
        _check_hyper(clipping, eps)
        self.parameters: List[Tensor] = _flatten_params(parameters)
        self.clipping = float(clipping)
        self.eps = float(eps)

    @classmethod
    def for_model(cls, model: torch.nn.Module, clipping: float = 0.01,
                  eps: float = 1e-3, exempt_embedding: bool = True,
                  exempt: Iterable[str] = ()) -> 'AGC':
        r"""AGC over all trainable parameters of ``model``.

        Args:
            model (torch.nn.Module): the model.
            clipping (float, optional): :math:`\lambda`. (default: ``0.01``)
            eps (float, optional): :math:`\epsilon`. (default: ``1e-3``)
            exempt_embedding (bool, optional): leave ``model.embedding.weight``
                (the item table, which is also the output layer) unclipped.
                (default: ``True``)
            exempt (iterable of str, optional): further parameter names (as in
                ``model.named_parameters()``) to leave unclipped.
        """
        skip = set()
        if exempt_embedding:
            emb = getattr(model, 'embedding', None)
            weight = getattr(emb, 'weight', None)
            if not isinstance(weight, Tensor):
                raise ValueError(
                    f"exempt_embedding=True but {type(model).__name__} has no "
                    f"`embedding.weight`; pass exempt_embedding=False")
            skip.add(id(weight))
        named = dict(model.named_parameters())
        for name in exempt:
            if name not in named:
                raise ValueError(f"exempt parameter {name!r} not in the model; "
                                 f"parameters are {sorted(named)}")
            skip.add(id(named[name]))
        params = [p for p in model.parameters()
                  if p.requires_grad and id(p) not in skip]
        return cls(params, clipping=clipping, eps=eps)

    def clip_(self) -> None:
        r"""Clip the current gradients in place."""
        adaptive_clip_grad_(self.parameters, self.clipping, self.eps)

    def attach(self, optimizer: torch.optim.Optimizer) -> RemovableHandle:
        r"""Clip before every ``optimizer.step()`` (a step pre-hook).
        Returns the hook handle (``.remove()`` detaches it)."""
        return optimizer.register_step_pre_hook(lambda *_: self.clip_())

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.parameters)
        return (f'{self.__class__.__name__}(clipping={self.clipping}, eps={self.eps}, '
                f'tensors={len(self.parameters)}, numel={n})')


def make_adam(parameters: ParamsT, lr: float, weight_decay: float = 0.0
              ) -> torch.optim.Adam:
    r"""The papers' Adam (L2 penalty as ``weight_decay``), with torch's fused
    single-kernel update where the parameters' device supports it (CPU and
    CUDA), else the default implementation. Same update rule either way.

    The fused update matters here: the item table is also the output layer, so
    every step updates all :math:`m \times d` embedding rows, and on a CPU the
    multi-pass default update of Diginetica's 4.3M parameters costs about as
    much as the forward pass (measured in ``docs/performance.md``).
    """
    params = list(parameters)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


#: Module types all of whose own parameters are exempt from weight decay in
#: :func:`no_decay_groups`: batch/instance norms (``torch.nn.BatchNorm1d`` and
#: the others; PyG's :class:`~torch_geometric.nn.norm.BatchNorm` and
#: ``InstanceNorm`` hold or are one), torch's and PyG's layer norms, group and
#: graph norms, and PReLU (its slopes).
NO_DECAY_MODULES: Tuple[type, ...] = (
    torch.nn.modules.batchnorm._NormBase,  # BatchNorm*d, SyncBatchNorm, InstanceNorm*d
    torch.nn.LayerNorm,
    torch.nn.GroupNorm,
    torch.nn.PReLU,
    pyg_norm.LayerNorm,
    pyg_norm.HeteroLayerNorm,
    pyg_norm.GraphNorm,
)


def _is_bias(name: str) -> bool:
    # `bias` (Linear, norms, ...), `bias_ih_l0` / `bias_hh_l0` (GRU, LSTM, RNN),
    # `in_proj_bias`, `bias_k`, `bias_v` (MultiheadAttention)
    return name == 'bias' or name.startswith('bias_') or name.endswith('_bias')


def no_decay_groups(model: torch.nn.Module, weight_decay: float
                    ) -> List[Dict[str, Any]]:
    r"""Split the parameters of ``model`` into a decayed and an exempt
    optimizer parameter group, by what each parameter is.

    Exempt (``weight_decay`` 0):

    * biases: a parameter whose own name (the part after the last dot) is
      ``bias``, starts with ``bias_`` or ends with ``_bias`` (``Linear.bias``,
      a GRU's ``bias_ih_l0`` / ``bias_hh_l0``, ``in_proj_bias``);
    * every parameter of a module in :data:`NO_DECAY_MODULES`: batch norm
      weights :math:`\gamma` and biases :math:`\beta` (also inside PyG's
      ``BatchNorm``), instance, layer and group norms, and PReLU slopes.

    Everything else (weight matrices, GRU weights, the item embedding table)
    gets ``weight_decay``. On :class:`~tagnn_pyg.models.LESSR` this is the
    released rule (``utils/train.py``, ``fix_weight_decay``: a name containing
    ``bias``, ``batch_norm`` or ``activation``), stated by module type so that
    it does not depend on attribute names (ours are ``norm`` and ``act``).
    Unlike the released code, parameters with ``requires_grad=False`` are kept
    (in their group): the optimizer leaves a parameter without a gradient
    alone either way. A parameter shared by several modules appears once.

    Args:
        model (torch.nn.Module): the model.
        weight_decay (float): the decay of the decayed group (:math:`\ge 0`).

    Returns:
        ``[{'params': decayed, 'weight_decay': weight_decay},
        {'params': exempt, 'weight_decay': 0.0}]``, in ``model.parameters()``
        order within each group (empty groups are left out). Every parameter
        of ``model`` is in exactly one group.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"no_decay_groups expects a torch.nn.Module (the grouping "
                        f"needs the module types), got {type(model).__name__}")
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    exempt = set()
    for module in model.modules():
        whole = isinstance(module, NO_DECAY_MODULES)
        for name, param in module.named_parameters(recurse=False):
            if whole or _is_bias(name):
                exempt.add(id(param))
    decay, no_decay = [], []
    for param in model.parameters():
        (no_decay if id(param) in exempt else decay).append(param)
    groups = [{'params': decay, 'weight_decay': float(weight_decay)},
              {'params': no_decay, 'weight_decay': 0.0}]
    return [g for g in groups if g['params']]


def make_adamw(model: torch.nn.Module, lr: float, weight_decay: float
               ) -> torch.optim.AdamW:
    r"""AdamW (Loshchilov & Hutter, decoupled weight decay) over the groups of
    :func:`no_decay_groups`, as the released LESSR code trains: biases, norms
    and PReLU slopes are not decayed. With fused single-kernel updates where
    the parameters' device supports them, else the default implementation;
    the same update rule either way.

    For a parameter :math:`\theta` of a group with decay :math:`\lambda`, step
    :math:`t`, gradient :math:`g_t`, :math:`\beta_1 = 0.9, \beta_2 = 0.999,
    \epsilon = 10^{-8}`:

    .. math::
        \theta &\leftarrow \theta - \eta \lambda \theta, \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \\
        \theta &\leftarrow \theta - \eta \,
            \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}.

    The decay does not pass through the moments, unlike Adam's L2
    ``weight_decay`` (:func:`make_adam`), which adds :math:`\lambda \theta` to
    :math:`g_t` and is then rescaled by :math:`1/\sqrt{v_t}`.

    Args:
        model (torch.nn.Module): the model whose parameters are optimized.
        lr (float): the learning rate :math:`\eta`.
        weight_decay (float): the decoupled decay :math:`\lambda` of the
            decayed group (the exempt group has 0).
    """
    groups = no_decay_groups(model, weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(no_decay_groups(model, weight_decay), lr=lr,
                                 weight_decay=weight_decay)
