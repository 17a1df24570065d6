"""One session prefix as a PyG graph: :class:`SessionData`."""
from __future__ import annotations

from typing import Any, Literal, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

EdgeWeighting = Literal['binary', 'count']
EDGE_WEIGHTINGS = ('binary', 'count')


def check_edge_weighting(weighting: str) -> None:
    """Raise a :class:`ValueError` naming ``weighting`` if it is unknown."""
    if weighting not in EDGE_WEIGHTINGS:
        raise ValueError(f"edge weighting must be one of {EDGE_WEIGHTINGS}, "
                         f"got {weighting!r}")


def check_session_items(items: Sequence[int], what: str = 'session') -> np.ndarray:
    """Return ``items`` as an ``int64`` array after checking that it is a non-empty
    1-D sequence of positive item ids (id 0 is padding and never a click)."""
    arr = np.asarray(items)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-D sequence of item ids, "
                         f"got an array of shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise ValueError(f"{what} is empty: a session needs at least one click")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must hold integer item ids, got dtype {arr.dtype} "
                         f"({list(arr[:5])}...)")
    if arr.min() < 1:
        bad = int(arr[arr < 1][0])
        raise ValueError(f"{what} holds item id {bad}: item ids start at 1 "
                         f"(0 is the padding id)")
    return arr.astype(np.int64, copy=False)


class SessionData(Data):
    r"""A session prefix (its clicks so far) and its next item, as a graph.

    The nodes are the session's distinct items in increasing id order (as in the
    released SR-GNN/TAGNN code); there is one directed edge :math:`u \to v` for each
    distinct transition between consecutive clicks (a click repeating the click just
    before it gives a self-loop).

    Fields (the data contract the models rely on):

    * ``x`` ``[n]`` long: the item id of each node.
    * ``edge_index`` ``[2, E]``: distinct transitions, sorted by (source, target).
    * ``edge_weight_in`` ``[E]``: weight of edge :math:`u \to v` in the
      in-message of :math:`v`.
    * ``edge_weight_out`` ``[E]``: weight of edge :math:`u \to v` in the
      out-message of :math:`u`.
    * ``seq`` ``[L]`` long: the node index of each click in click order.
    * ``seq_batch`` ``[L]`` long: the session index of each click (zeros here;
      batching turns it into the position-to-session vector).
    * ``last`` ``[1]`` long: the node index of the last click.
    * ``y`` ``[1]`` long: the target item id (absent at inference).

    With ``weighting='binary'`` (the released code, default), the adjacency is
    binary and :math:`w^{in}_{u\to v} = 1/\deg^{in}(v)`,
    :math:`w^{out}_{u\to v} = 1/\deg^{out}(u)` (degrees over distinct
    neighbours). With ``weighting='count'`` (the SR-GNN paper), an edge weighs
    its number of occurrences :math:`c_{u\to v}`:
    :math:`w^{in}_{u\to v} = c_{u\to v} / \sum_{u'} c_{u'\to v}` and
    :math:`w^{out}_{u\to v} = c_{u\to v} / \sum_{v'} c_{u\to v'}`.
    """

    def __inc__(self, key: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        if key in ('seq', 'last'):
            return self.num_nodes
        if key == 'seq_batch':
            return 1
        return super().__inc__(key, value, *args, **kwargs)

    @classmethod
    def from_sequence(
        cls,
        items: Union[Sequence[int], np.ndarray, Tensor],
        target: Optional[int] = None,
        weighting: EdgeWeighting = 'binary',
    ) -> 'SessionData':
        r"""Build the graph of one session prefix.

        Args:
            items (sequence of int): the clicked item ids in click order (ids >= 1).
            target (int, optional): the next item id, stored as ``y``.
            weighting (str, optional): ``'binary'`` (released code, default) or
                ``'count'`` (SR-GNN paper), see the class docstring.

        Example:
            >>> d = SessionData.from_sequence([1, 2, 1, 3], target=4)
            >>> d.x, d.edge_index, d.seq
            (tensor([1, 2, 3]), tensor([[0, 0, 1], [1, 2, 0]]), tensor([0, 1, 0, 2]))
        """
        check_edge_weighting(weighting)
        if isinstance(items, Tensor):
            items = items.detach().cpu().numpy()
        arr = check_session_items(items)
        nodes, seq = np.unique(arr, return_inverse=True)
        seq = seq.reshape(-1)
        n = nodes.shape[0]
        src, dst = seq[:-1], seq[1:]
        pair = src * n + dst
        uniq, counts = np.unique(pair, return_counts=True)
        row, col = uniq // n, uniq % n
        if weighting == 'binary':
            counts = np.ones_like(counts)
        counts = counts.astype(np.float64)
        into = np.bincount(col, weights=counts, minlength=n)
        out_of = np.bincount(row, weights=counts, minlength=n)
        w_in = counts / into[col] if counts.size else counts
        w_out = counts / out_of[row] if counts.size else counts

        data = cls(
            x=torch.from_numpy(nodes.astype(np.int64)),
            edge_index=torch.from_numpy(np.stack([row, col]).astype(np.int64)),
            edge_weight_in=torch.from_numpy(w_in.astype(np.float32)),
            edge_weight_out=torch.from_numpy(w_out.astype(np.float32)),
            seq=torch.from_numpy(seq.astype(np.int64)),
            seq_batch=torch.zeros(arr.shape[0], dtype=torch.long),
            last=torch.tensor([int(seq[-1])], dtype=torch.long),
        )
        if target is not None:
            target = int(target)
            if target < 1:
                raise ValueError(f"target item id must be >= 1 (0 is padding), "
                                 f"got {target}")
            data.y = torch.tensor([target], dtype=torch.long)
        return data

    @property
    def items(self) -> Tensor:
        r"""The clicked item ids in click order, ``x[seq]``."""
        return self.x[self.seq]
