r"""SR-GNN (Wu et al., AAAI 2019) as a composition of :mod:`tagnn_pyg.nn` parts."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import Tensor

from tagnn_pyg.models.scoring import SessionPositions, SessionRecommender, dot_scores
from tagnn_pyg.nn import GatedSessionConv
from tagnn_pyg.nn.readouts import LastItemReadout, SoftAttentionReadout
from tagnn_pyg.utils.checks import check_flag

__all__ = ['SRGNN']


class SRGNN(SessionRecommender):
    r"""SR-GNN: session graph -> gated GNN -> soft-attention session embedding.

    .. math::
        \mathbf{h} &= \mathrm{GatedSessionConv}^{K}(\mathbf{E}[\mathbf{x}])
            \quad\text{(node states; positions } \mathbf{v}_i = \mathbf{h}_{seq_i})

        \mathbf{s}_{local} &= \mathbf{v}_{s_n}, \qquad
        \alpha_i = \mathbf{q}^{\top}\sigma(\mathbf{W}_1 \mathbf{v}_{s_n}
            + \mathbf{W}_2 \mathbf{v}_i + \mathbf{c}), \qquad
        \mathbf{s}_{global} = \sum_i \alpha_i \mathbf{v}_i

        \mathbf{s} &= \mathbf{W}_3 [\mathbf{s}_{global}; \mathbf{s}_{local}]
            + \mathbf{b}_3 \quad\text{(hybrid; non-hybrid: }
            \mathbf{s} = \mathbf{s}_{global})

        z_t &= \mathbf{v}_t^{\top} \mathbf{s}, \qquad t = 1, \dots, m

    with the raw item embedding :math:`\mathbf{v}_t` (``embedding.weight[t]``).
    :math:`\alpha_i` is used raw (no softmax), as in SR-GNN's code; the
    concatenation order :math:`[\mathbf{s}_{global}; \mathbf{s}_{local}]` and
    the bias :math:`\mathbf{b}_3` are the released ``linear_transform``'s.

    Args:
        num_items (int): Number of item ids *including* the padding id 0
            (the released ``n_node``, e.g. 43,098 for Diginetica).
        hidden_channels (int, optional): :math:`d`. (default: :obj:`100`)
        num_steps (int, optional): GNN propagation steps :math:`K`.
            (default: :obj:`1`)
        hybrid (bool, optional): Combine global and local embeddings with
            :math:`\mathbf{W}_3` (``False``: the global embedding alone).
            (default: :obj:`True`)

    Shapes:
        - **input:** a batch of :class:`~tagnn_pyg.data.SessionData` with
          :math:`B` sessions, optional ``candidates`` :math:`(B, C)` item ids
        - **output:** :math:`(B, \text{num\_items})` (column 0 =
          :math:`-\infty`) or :math:`(B, C)`
    """

    def __init__(self, num_items: int, hidden_channels: int = 100, num_steps: int = 1,
                 hybrid: bool = True) -> None:
        super().__init__(num_items, hidden_channels)
        self.num_steps = int(num_steps)
        self.hybrid = check_flag('hybrid', hybrid)
        d = hidden_channels
        self.gnn = GatedSessionConv(d, num_steps=self.num_steps)
        self.local_readout = LastItemReadout()
        self.global_readout = SoftAttentionReadout(d, softmax=False)
        self.lin_transform = torch.nn.Linear(2 * d, d) if self.hybrid else None
        self.reset_parameters()

    def config(self) -> Dict[str, Any]:
        return dict(num_items=self.num_items, hidden_channels=self.hidden_channels,
                    num_steps=self.num_steps, hybrid=self.hybrid)

    def node_features(self, batch: Any) -> Tensor:
        return self.gnn(self.embedding(batch.x), batch.edge_index,
                        getattr(batch, 'edge_weight_in', None),
                        getattr(batch, 'edge_weight_out', None))

    def session_embedding(self, pos: SessionPositions) -> Tensor:
        r"""``[B, d]`` the session vector :math:`\mathbf{s}`."""
        B = pos.num_sessions
        s_local = self.local_readout(pos.x, pos.index, dim_size=B)
        s_global = self.global_readout(pos.x, pos.index, dim_size=B, last=s_local)
        if self.lin_transform is None:
            return s_global
        return self.lin_transform(torch.cat([s_global, s_local], dim=-1))

    def score(self, pos: SessionPositions, candidates: Optional[Tensor]) -> Tensor:
        return dot_scores(self.session_embedding(pos), self.embedding.weight, candidates)
