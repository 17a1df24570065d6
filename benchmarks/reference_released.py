"""A dense re-implementation of the *released* SR-GNN / TAGNN / TAGNN++ computation.

This module is the yardstick of the benchmarks and of ``tests/test_reference_equivalence.py``.
It is written from scratch (not copied) to compute exactly what the public code computes
(``CRIPAC-DIG/SR-GNN`` ``pytorch_code/``, ``CRIPAC-DIG/TAGNN``, and the TAGNN++ code that builds
on TAGNN), including its quirks, and to cost what it costs:

* **Data pipeline** (:class:`ReleasedSessionData`): every sequence is padded with item 0 to
  the longest sequence of the *whole data set* (69 clicks for Diginetica's training set, 40 for
  its test set); each batch is then turned into graphs one session at a time in Python: the node
  list is ``np.unique`` of the *padded* sequence (so a padded session has node 0 first, and the
  padding positions point at it), node lists are padded with 0 to the batch's largest node count,
  and a dense ``[n, 2n]`` numpy adjacency (in-weights ``1/indeg``, out-weights ``1/outdeg``) is
  filled one transition at a time.
* **GNN cell** (:class:`ReleasedGNN`): dense batched matmuls with ``A[:, :, :n]`` and
  ``A[:, :, n:2n]``, the GRU gates written out as the released code does.
* **Scores** (:meth:`ReleasedSessionGraph.compute_scores`):

  - ``srgnn``: soft attention with the *raw* alpha (no softmax), hybrid ``linear_transform``;
  - ``tagnn``: soft attention with a softmax over all padded slots, then the target attention
    with a softmax over the padded slots and the explicit ``[batch, items, d]`` target tensor
    ``beta @ hidden``, scores ``sum((a + target) * b, -1)``;
  - ``tagnnpp``: TAGNN's scores (non-hybrid) after one multi-head attention layer over the
    *node list* (padding node included) with a causal mask, combined as
    ``attn(x) + LayerNorm(x)``.

Where it is cheap to do so without changing a single number, this re-implementation is a little
*faster* than the released code (a dict instead of one ``np.where`` per click to find a click's
node, ``np.stack`` + ``torch.from_numpy`` instead of ``torch.Tensor(list_of_arrays)``, one
gather instead of a Python list of per-row gathers), so speed-ups measured against it are
lower bounds.
"""
from __future__ import annotations

import math
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    'RELEASED_KINDS',
    'ReleasedBatch',
    'ReleasedSessionData',
    'ReleasedGNN',
    'ReleasedSessionGraph',
    'released_batch_to_device',
    'released_train_step',
    'released_scores',
]

RELEASED_KINDS = ('srgnn', 'tagnn', 'tagnnpp')


class ReleasedBatch(NamedTuple):
    """One batch as the released ``Data.get_slice`` returns it (numpy arrays).

    Shapes (``B`` sessions, ``L`` the data set's longest sequence, ``n`` the batch's largest
    node count):

    * ``alias_inputs`` ``[B, L]``: node index of every (padded) click;
    * ``A`` ``[B, n, 2n]`` float64: in-weights (``[:, :, :n]``) and out-weights (``[:, :, n:]``);
    * ``items`` ``[B, n]``: item id of every node (0 for padding);
    * ``mask`` ``[B, L]``: 1 on real clicks, 0 on padding;
    * ``targets`` ``[B]``: the next item of each session.
    """
    alias_inputs: np.ndarray
    A: np.ndarray
    items: np.ndarray
    mask: np.ndarray
    targets: np.ndarray


class ReleasedSessionData:
    """The released data pipeline (``utils.Data``): pad to the data set maximum, build batches
    one session at a time.

    Args:
        sequences: the session prefixes (lists of item ids >= 1).
        targets: the next item of each prefix.
        len_max: pad to this length (default: the longest of ``sequences``, as released).
    """

    def __init__(self, sequences: Sequence[Sequence[int]], targets: Sequence[int],
                 len_max: Optional[int] = None) -> None:
        if len(sequences) != len(targets):
            raise ValueError(f"got {len(sequences)} sequences but {len(targets)} targets")
        if len(sequences) == 0:
            raise ValueError("ReleasedSessionData needs at least one sequence")
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64,
                              count=len(sequences))
        longest = int(lengths.max())
        self.len_max = longest if len_max is None else int(len_max)
        if self.len_max < longest:
            raise ValueError(f"len_max={self.len_max} is shorter than the longest "
                             f"sequence ({longest} clicks)")
        inputs = np.zeros((len(sequences), self.len_max), dtype=np.int64)
        for row, seq in enumerate(sequences):
            inputs[row, :len(seq)] = seq
        self.inputs = inputs
        self.mask = (np.arange(self.len_max)[None, :] < lengths[:, None]).astype(np.int64)
        self.targets = np.asarray(targets, dtype=np.int64)

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def batch_indices(self, batch_size: int, shuffle: bool = False,
                      rng: Optional[np.random.Generator] = None) -> List[np.ndarray]:
        """The released ``generate_batch``: consecutive slices (after an optional shuffle),
        the last one shorter."""
        order = np.arange(len(self))
        if shuffle:
            (rng or np.random.default_rng()).shuffle(order)
        return [order[start:start + batch_size] for start in range(0, len(self), batch_size)]

    def get_slice(self, index: np.ndarray) -> ReleasedBatch:
        """Build one batch the released way: ``np.unique`` of each padded sequence, dense
        adjacency filled click by click, node lists padded to the batch's largest."""
        inputs, mask, targets = self.inputs[index], self.mask[index], self.targets[index]
        nodes_per_session = [np.unique(row) for row in inputs]
        n = max(len(nodes) for nodes in nodes_per_session)
        items = np.zeros((len(inputs), n), dtype=np.int64)
        alias = np.zeros(inputs.shape, dtype=np.int64)
        adjacency = []
        for b, (row, nodes) in enumerate(zip(inputs, nodes_per_session)):
            items[b, :len(nodes)] = nodes
            where: Dict[int, int] = {int(item): k for k, item in enumerate(nodes)}
            dense = np.zeros((n, n))
            clicks = row.tolist()
            for k in range(len(clicks) - 1):
                if clicks[k + 1] == 0:  # the rest is padding
                    break
                dense[where[clicks[k]], where[clicks[k + 1]]] = 1.0
            in_degree = dense.sum(0)
            in_degree[in_degree == 0] = 1.0
            out_degree = dense.sum(1)
            out_degree[out_degree == 0] = 1.0
            # Row v of the in-block holds A[u, v] / indeg(v) over u; row u of the out-block
            # holds A[u, v] / outdeg(u) over v (what the released transposes produce).
            weight_in = (dense / in_degree[None, :]).T
            weight_out = dense / out_degree[:, None]
            adjacency.append(np.concatenate([weight_in, weight_out], axis=1))
            alias[b] = [where[int(item)] for item in clicks]
        return ReleasedBatch(alias, np.stack(adjacency), items, mask, targets)


def released_batch_to_device(batch: ReleasedBatch, device: torch.device | str
                             ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Tensors of a :class:`ReleasedBatch` on ``device`` (``A`` as float32)."""
    return (torch.from_numpy(batch.alias_inputs).to(device),
            torch.from_numpy(batch.A).float().to(device),
            torch.from_numpy(batch.items).to(device),
            torch.from_numpy(batch.mask).to(device),
            torch.from_numpy(batch.targets).to(device))


class ReleasedGNN(nn.Module):
    r"""The released gated GNN cell on dense adjacency matrices.

    .. math::
        a_{in} = A_{in} (W_{in} h + c_{in}) + b_{iah}, \quad
        a_{out} = A_{out} (W_{out} h + c_{out}) + b_{oah},

    then the GRU gates on :math:`[a_{in}; a_{out}]` with the hidden state :math:`h`.

    Args:
        hidden_size: d.
        step: number of propagation steps.

    Shapes:
        ``A`` ``[B, n, 2n]``, ``hidden`` ``[B, n, d]`` -> ``[B, n, d]``.
    """

    def __init__(self, hidden_size: int, step: int = 1) -> None:
        super().__init__()
        self.step = step
        self.hidden_size = hidden_size
        d = hidden_size
        self.w_ih = nn.Parameter(torch.empty(3 * d, 2 * d))
        self.w_hh = nn.Parameter(torch.empty(3 * d, d))
        self.b_ih = nn.Parameter(torch.empty(3 * d))
        self.b_hh = nn.Parameter(torch.empty(3 * d))
        self.b_iah = nn.Parameter(torch.empty(d))
        self.b_oah = nn.Parameter(torch.empty(d))
        self.linear_edge_in = nn.Linear(d, d, bias=True)
        self.linear_edge_out = nn.Linear(d, d, bias=True)
        self.linear_edge_f = nn.Linear(d, d, bias=True)  # defined (and unused) as released

    def cell(self, A: Tensor, hidden: Tensor) -> Tensor:
        """One propagation step."""
        n = A.shape[1]
        message_in = A[:, :, :n] @ self.linear_edge_in(hidden) + self.b_iah
        message_out = A[:, :, n:2 * n] @ self.linear_edge_out(hidden) + self.b_oah
        gates_x = F.linear(torch.cat([message_in, message_out], 2), self.w_ih, self.b_ih)
        gates_h = F.linear(hidden, self.w_hh, self.b_hh)
        x_r, x_z, x_n = gates_x.chunk(3, 2)
        h_r, h_z, h_n = gates_h.chunk(3, 2)
        reset = torch.sigmoid(x_r + h_r)
        update = torch.sigmoid(x_z + h_z)
        candidate = torch.tanh(x_n + reset * h_n)
        return candidate + update * (hidden - candidate)

    def forward(self, A: Tensor, hidden: Tensor) -> Tensor:
        for _ in range(self.step):
            hidden = self.cell(A, hidden)
        return hidden


class ReleasedSessionGraph(nn.Module):
    """The released ``SessionGraph`` (SR-GNN, TAGNN) and ``Attention_SessionGraph`` (TAGNN++).

    Args:
        num_items: embedding rows (item ids including padding 0).
        hidden_size: d.
        kind: ``'srgnn'``, ``'tagnn'`` or ``'tagnnpp'``.
        step: GNN steps.
        nonhybrid: use the soft-attention vector alone (``True`` is TAGNN++'s released setting).
        heads: attention heads of TAGNN++.
        dropout: attention dropout of TAGNN++.
    """

    def __init__(self, num_items: int, hidden_size: int = 100, kind: str = 'tagnn',
                 step: int = 1, nonhybrid: bool = False, heads: int = 2,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if kind not in RELEASED_KINDS:
            raise ValueError(f"kind must be one of {RELEASED_KINDS}, got {kind!r}")
        self.kind = kind
        self.num_items = num_items
        self.hidden_size = hidden_size
        self.nonhybrid = nonhybrid
        d = hidden_size
        self.embedding = nn.Embedding(num_items, d)
        self.gnn = ReleasedGNN(d, step=step)
        if kind == 'tagnnpp':
            self.layer_norm1 = nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(embed_dim=d, num_heads=heads, dropout=dropout)
        self.linear_one = nn.Linear(d, d, bias=True)
        self.linear_two = nn.Linear(d, d, bias=True)
        self.linear_three = nn.Linear(d, 1, bias=False)
        self.linear_transform = nn.Linear(2 * d, d, bias=True)
        if kind != 'srgnn':
            self.linear_t = nn.Linear(d, d, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every parameter uniform in ``[-1/sqrt(d), 1/sqrt(d)]``, as released."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def forward(self, items: Tensor, A: Tensor) -> Tensor:
        """Node states ``[B, n, d]`` of the (padded) node lists."""
        hidden = self.gnn(A, self.embedding(items))
        if self.kind == 'tagnnpp':
            hidden = hidden.transpose(0, 1)  # [n, B, d], sequence first
            n = hidden.shape[0]
            causal = torch.ones(n, n, dtype=torch.bool, device=hidden.device).triu(1)
            attended, _ = self.attn(hidden, hidden, hidden, attn_mask=causal)
            hidden = (attended + self.layer_norm1(hidden)).transpose(0, 1)
        return hidden

    def compute_scores(self, seq_hidden: Tensor, mask: Tensor) -> Tensor:
        """Scores ``[B, num_items - 1]`` of items ``1..m`` from the position states
        ``[B, L, d]`` (L the padded length) and the mask ``[B, L]``."""
        B = mask.shape[0]
        maskf = mask.unsqueeze(-1).to(seq_hidden.dtype)
        last = seq_hidden[torch.arange(B, device=mask.device), mask.sum(1) - 1]
        q1 = self.linear_one(last).unsqueeze(1)
        q2 = self.linear_two(seq_hidden)
        alpha = self.linear_three(torch.sigmoid(q1 + q2))  # [B, L, 1]
        if self.kind != 'srgnn':
            alpha = torch.softmax(alpha, 1)  # over all padded slots, as released
        session = (alpha * seq_hidden * maskf).sum(1)
        if not self.nonhybrid:
            session = self.linear_transform(torch.cat([session, last], 1))
        candidates = self.embedding.weight[1:]  # [m, d]
        if self.kind == 'srgnn':
            return session @ candidates.t()
        masked = seq_hidden * maskf
        qt = self.linear_t(masked)  # [B, L, d]
        beta = torch.softmax(candidates @ qt.transpose(1, 2), -1)  # [B, m, L]
        target = beta @ masked  # [B, m, d]: the tensor the factorisation avoids
        return ((session.unsqueeze(1) + target) * candidates).sum(-1)

    def scores(self, alias_inputs: Tensor, A: Tensor, items: Tensor, mask: Tensor) -> Tensor:
        """The released ``forward(model, i, data)``: node states, gathered to the padded
        positions, then :meth:`compute_scores`."""
        hidden = self(items, A)
        seq_hidden = hidden.gather(
            1, alias_inputs.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        return self.compute_scores(seq_hidden, mask)


def released_scores(model: ReleasedSessionGraph, batch: ReleasedBatch,
                    device: torch.device | str) -> Tuple[Tensor, Tensor]:
    """(scores ``[B, m]`` of items 1..m, targets ``[B]``) for one released batch."""
    alias, A, items, mask, targets = released_batch_to_device(batch, device)
    return model.scores(alias, A, items, mask), targets


def released_train_step(model: ReleasedSessionGraph, optimizer: torch.optim.Optimizer,
                        batch: ReleasedBatch, device: torch.device | str) -> Tensor:
    """One released training step: cross-entropy of ``scores`` against ``targets - 1``,
    backward, optimizer step. Returns the (detached) loss without a host sync."""
    optimizer.zero_grad()
    scores, targets = released_scores(model, batch, device)
    loss = F.cross_entropy(scores, targets - 1)
    loss.backward()
    optimizer.step()
    return loss.detach()
