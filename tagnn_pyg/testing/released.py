"""The released SR-GNN / TAGNN / TAGNN++ computation, ported once: the slow, straightforward
reference that the tests and the benchmarks compare the fast path with. **Not for production**
(it pads, builds dense per-session matrices in Python and the ``[batch, items, d]`` target
tensor, as released).

It is written from scratch (not copied) to compute exactly what the public code computes
(``CRIPAC-DIG/SR-GNN`` ``pytorch_code/``, ``CRIPAC-DIG/TAGNN``, and the TAGNN++ code that builds
on TAGNN), including its quirks, and to cost what it costs:

* **Prefix expansion** (:func:`process_seqs`): the released ``process_seqs``.
* **Data pipeline** (:class:`ReleasedSessionData`): every sequence is padded with item 0 to
  the longest sequence of the *whole data set* (69 clicks for Diginetica's training set, 40 for
  its test set); each batch is then turned into graphs one session at a time in Python: the node
  list is ``np.unique`` of the *padded* sequence (so a padded session has node 0 first, and the
  padding positions point at it), node lists are padded with 0 to the batch's largest node count,
  and a dense ``[n, 2n]`` numpy adjacency (in-weights ``1/indeg``, out-weights ``1/outdeg``) is
  filled one transition at a time.
  :func:`dense_adjacency` is the same adjacency for one unpadded session (optionally with the
  SR-GNN paper's occurrence counts).
* **GNN cell** (:func:`released_gnn_step`, used by :class:`ReleasedGNN` and, with the weights
  of a :class:`~tagnn_pyg.nn.GatedSessionConv`, by :func:`released_gnn_cell`): dense batched
  matmuls with ``A[:, :, :n]`` and ``A[:, :, n:2n]``, the GRU gates written out as the
  released code does.
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

:data:`TAGNN_PARAMETER_MAP` / :data:`TAGNNPP_PARAMETER_MAP` name the released counterpart of
every library parameter, and :func:`released_copy` builds the port holding a library model's
weights, so that scores and gradients can be compared one to one.
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
    'TAGNN_PARAMETER_MAP',
    'TAGNNPP_PARAMETER_MAP',
    'ReleasedBatch',
    'ReleasedSessionData',
    'ReleasedGNN',
    'ReleasedSessionGraph',
    'dense_adjacency',
    'process_seqs',
    'released_batch_to_device',
    'released_copy',
    'released_gnn_cell',
    'released_gnn_step',
    'released_train_step',
    'released_scores',
]

RELEASED_KINDS = ('srgnn', 'tagnn', 'tagnnpp')
WEIGHTINGS = ('binary', 'count')

#: Library parameter name (SR-GNN / TAGNN) -> the released ``SessionGraph``'s.
TAGNN_PARAMETER_MAP: Dict[str, str] = {
    'embedding.weight': 'embedding.weight',
    'gnn.lin_in.weight': 'gnn.linear_edge_in.weight',
    'gnn.lin_in.bias': 'gnn.linear_edge_in.bias',
    'gnn.lin_out.weight': 'gnn.linear_edge_out.weight',
    'gnn.lin_out.bias': 'gnn.linear_edge_out.bias',
    'gnn.bias_in': 'gnn.b_iah',
    'gnn.bias_out': 'gnn.b_oah',
    'gnn.gru.weight_ih': 'gnn.w_ih',
    'gnn.gru.weight_hh': 'gnn.w_hh',
    'gnn.gru.bias_ih': 'gnn.b_ih',
    'gnn.gru.bias_hh': 'gnn.b_hh',
    'global_readout.lin_last.weight': 'linear_one.weight',
    'global_readout.lin_last.bias': 'linear_one.bias',
    'global_readout.lin_pos.weight': 'linear_two.weight',
    'global_readout.lin_pos.bias': 'linear_two.bias',
    'global_readout.lin_q.weight': 'linear_three.weight',
    'lin_transform.weight': 'linear_transform.weight',
    'lin_transform.bias': 'linear_transform.bias',
    'target_attention.lin.weight': 'linear_t.weight',
}

#: Library parameter name (TAGNN++, ``layer='released'``, non-hybrid) -> the released
#: ``Attention_SessionGraph``'s: TAGNN's, plus the attention layer's.
TAGNNPP_PARAMETER_MAP: Dict[str, str] = {
    **{k: v for k, v in TAGNN_PARAMETER_MAP.items() if not k.startswith('lin_transform')},
    'transformer.attn.in_proj_weight': 'attn.in_proj_weight',
    'transformer.attn.in_proj_bias': 'attn.in_proj_bias',
    'transformer.attn.out_proj.weight': 'attn.out_proj.weight',
    'transformer.attn.out_proj.bias': 'attn.out_proj.bias',
    'transformer.norm1.weight': 'layer_norm1.weight',
    'transformer.norm1.bias': 'layer_norm1.bias',
}


def process_seqs(sessions: Sequence[Sequence[int]]) -> Tuple[List[Sequence[int]], List[int]]:
    """The released prefix expansion: for each session, for ``i`` in ``1..len-1``, the prefix
    ``seq[:-i]`` with target ``seq[-i]`` (longest prefix first)."""
    out_seqs: List[Sequence[int]] = []
    labs: List[int] = []
    for seq in sessions:
        for i in range(1, len(seq)):
            labs += [seq[-i]]
            out_seqs += [seq[:-i]]
    return out_seqs, labs


def _transitions(clicks: Sequence[int], where: Dict[int, int], n: int,
                 weighting: str = 'binary') -> np.ndarray:
    """``[n, n]`` matrix of the transitions ``u -> v`` between consecutive clicks (``where``:
    item id -> node index), 1 per distinct transition (``'binary'``, released) or the number
    of its occurrences (``'count'``); stops at the first padding click (item 0)."""
    dense = np.zeros((n, n))
    for k in range(len(clicks) - 1):
        if clicks[k + 1] == 0:  # the rest is padding
            break
        u, v = where[clicks[k]], where[clicks[k + 1]]
        if weighting == 'binary':
            dense[u, v] = 1.0
        else:
            dense[u, v] += 1.0
    return dense


def _normalised(dense: np.ndarray) -> np.ndarray:
    """``[n, 2n]`` = ``[A_in | A_out]`` of a transition matrix: row v of the in-block holds
    ``A[u, v] / indeg(v)`` over u, row u of the out-block ``A[u, v] / outdeg(u)`` over v (what
    the released transposes produce; a degree of 0 counts as 1)."""
    in_degree = dense.sum(0)
    in_degree[in_degree == 0] = 1.0
    out_degree = dense.sum(1)
    out_degree[out_degree == 0] = 1.0
    weight_in = (dense / in_degree[None, :]).T
    weight_out = dense / out_degree[:, None]
    return np.concatenate([weight_in, weight_out], axis=1)


def dense_adjacency(seq: Sequence[int], weighting: str = 'binary'
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """``get_slice`` for one unpadded session: its sorted unique items and the ``[n, 2n]``
    matrix ``A = [A_in | A_out]``, ``A_in[v, u]`` the weight of ``u -> v`` in v's in-message
    and ``A_out[u, v]`` that of ``u -> v`` in u's out-message.

    Args:
        seq: the session's item ids (>= 1).
        weighting: ``'binary'`` (released) or ``'count'`` (repeated transitions counted, as
            the SR-GNN paper weights them).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    node = np.unique(seq)
    where = {int(item): k for k, item in enumerate(node)}
    clicks = [int(item) for item in seq]
    return node, _normalised(_transitions(clicks, where, len(node), weighting))


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
            clicks = row.tolist()
            adjacency.append(_normalised(_transitions(clicks, where, n)))
            alias[b] = [where[int(item)] for item in clicks]
        return ReleasedBatch(alias, np.stack(adjacency), items, mask, targets)


def released_gnn_step(A: Tensor, hidden: Tensor, w_edge_in: Tensor, b_edge_in: Tensor,
                      w_edge_out: Tensor, b_edge_out: Tensor, b_iah: Tensor, b_oah: Tensor,
                      w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    r"""One step of the released ``GNN.GNNCell`` on dense adjacency matrices:

    .. math::
        a_{in} = A_{in} (W_{in} h + c_{in}) + b_{iah}, \quad
        a_{out} = A_{out} (W_{out} h + c_{out}) + b_{oah},

    then the GRU gates on :math:`[a_{in}; a_{out}]` with the hidden state :math:`h`, written
    out as released (``w_ih, w_hh, b_ih, b_hh`` in ``torch.nn.GRUCell``'s layout).

    Shapes:
        ``A`` ``[B, n, 2n]``, ``hidden`` ``[B, n, d]`` -> ``[B, n, d]``.
    """
    n = A.shape[1]
    message_in = A[:, :, :n] @ F.linear(hidden, w_edge_in, b_edge_in) + b_iah
    message_out = A[:, :, n:2 * n] @ F.linear(hidden, w_edge_out, b_edge_out) + b_oah
    gates_x = F.linear(torch.cat([message_in, message_out], 2), w_ih, b_ih)
    gates_h = F.linear(hidden, w_hh, b_hh)
    x_r, x_z, x_n = gates_x.chunk(3, 2)
    h_r, h_z, h_n = gates_h.chunk(3, 2)
    reset = torch.sigmoid(x_r + h_r)
    update = torch.sigmoid(x_z + h_z)
    candidate = torch.tanh(x_n + reset * h_n)
    return candidate + update * (hidden - candidate)


def released_gnn_cell(A: Tensor, hidden: Tensor, conv: nn.Module) -> Tensor:
    """:func:`released_gnn_step` with the weights of a :class:`~tagnn_pyg.nn.GatedSessionConv`
    (``lin_in`` = ``linear_edge_in``, ``bias_in`` = ``b_iah``, ``gru`` = ``w_ih, w_hh, b_ih,
    b_hh``, and likewise out).

    Shapes:
        ``A`` ``[B, n, 2n]``, ``hidden`` ``[B, n, d]`` -> ``[B, n, d]``.
    """
    return released_gnn_step(A, hidden, conv.lin_in.weight, conv.lin_in.bias,
                             conv.lin_out.weight, conv.lin_out.bias, conv.bias_in,
                             conv.bias_out, conv.gru.weight_ih, conv.gru.weight_hh,
                             conv.gru.bias_ih, conv.gru.bias_hh)


def released_batch_to_device(batch: ReleasedBatch, device: torch.device | str
                             ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Tensors of a :class:`ReleasedBatch` on ``device`` (``A`` as float32)."""
    return (torch.from_numpy(batch.alias_inputs).to(device),
            torch.from_numpy(batch.A).float().to(device),
            torch.from_numpy(batch.items).to(device),
            torch.from_numpy(batch.mask).to(device),
            torch.from_numpy(batch.targets).to(device))


class ReleasedGNN(nn.Module):
    r"""The released gated GNN (``GNN``) on dense adjacency matrices, in the released
    parameter names: ``step`` times :func:`released_gnn_step`.

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
        return released_gnn_step(A, hidden, self.linear_edge_in.weight,
                                 self.linear_edge_in.bias, self.linear_edge_out.weight,
                                 self.linear_edge_out.bias, self.b_iah, self.b_oah,
                                 self.w_ih, self.w_hh, self.b_ih, self.b_hh)

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


def released_copy(model: nn.Module, kind: str, hybrid: bool,
                  parameter_map: Optional[Dict[str, str]] = None,
                  heads: int = 2) -> ReleasedSessionGraph:
    """The released port of ``model`` (an SR-GNN, TAGNN or TAGNN++ of the library) holding
    ``model``'s weights.

    Args:
        model: the library model (``num_items``, ``hidden_channels`` and its parameters are
            read).
        kind: ``'srgnn'``, ``'tagnn'`` or ``'tagnnpp'``.
        hybrid: the model's ``hybrid`` (``nonhybrid=not hybrid`` in the port).
        parameter_map: library parameter name -> released name (default:
            :data:`TAGNN_PARAMETER_MAP`, or :data:`TAGNNPP_PARAMETER_MAP` for
            ``kind='tagnnpp'``).
        heads: attention heads of TAGNN++.

    Raises:
        KeyError: when a parameter of ``model`` has no released counterpart.
        ValueError: when a parameter the released forward uses was left unset
            (``linear_edge_f``, and ``linear_transform`` of a non-hybrid model, are unused, as
            released).
    """
    if parameter_map is None:
        parameter_map = TAGNNPP_PARAMETER_MAP if kind == 'tagnnpp' else TAGNN_PARAMETER_MAP
    ref = ReleasedSessionGraph(model.num_items, model.hidden_channels, kind=kind,
                               nonhybrid=not hybrid, heads=heads)
    ref_params = dict(ref.named_parameters())
    copied = set()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name not in parameter_map:
                raise KeyError(f"no released counterpart for {name}")
            ref_params[parameter_map[name]].copy_(param)
            copied.add(parameter_map[name])
    unused = {'gnn.linear_edge_f.weight', 'gnn.linear_edge_f.bias'}
    if not hybrid:
        unused |= {'linear_transform.weight', 'linear_transform.bias'}
    if set(ref_params) - copied != unused:
        raise ValueError(f"the released parameters {sorted(set(ref_params) - copied - unused)} "
                         f"were not set, or the unused {sorted(unused & copied)} were")
    return ref


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
