"""Ports of the released SR-GNN/TAGNN computations that several tests
compare against (CRIPAC-DIG/SR-GNN ``process_seqs``, ``utils.Data.get_slice``
and ``GNN.GNNCell``), written once, as plain numpy loops and the gate equations
spelled out, independent of the library's sparse/PyG implementation."""
import numpy as np
import torch
import torch.nn.functional as F



def process_seqs(sessions):
    """The released prefix expansion: for each session, for ``i`` in
    ``1..len-1``, the prefix ``seq[:-i]`` with target ``seq[-i]``."""
    out_seqs, labs = [], []
    for seq in sessions:
        for i in range(1, len(seq)):
            labs += [seq[-i]]
            out_seqs += [seq[:-i]]
    return out_seqs, labs


def dense_adjacency(seq, weighting='binary'):
    """``get_slice`` for one unpadded session: its sorted unique items and the
    ``[n, 2n]`` matrix ``A = [A_in | A_out]`` with ``A_in[v, u]`` the weight of
    ``u -> v`` in v's in-message and ``A_out[u, v]`` that of ``u -> v`` in u's
    out-message. ``weighting='count'`` counts repeated transitions (SR-GNN paper)
    instead of the released binary adjacency."""
    node = np.unique(seq)
    n = len(node)
    a = np.zeros((n, n))
    for i in range(len(seq) - 1):
        u = np.where(node == seq[i])[0][0]
        v = np.where(node == seq[i + 1])[0][0]
        if weighting == 'binary':
            a[u][v] = 1
        else:
            a[u][v] += 1
    s_in = a.sum(0)
    s_in[s_in == 0] = 1
    s_out = a.sum(1)
    s_out[s_out == 0] = 1
    return node, np.concatenate([a / s_in, a.T / s_out]).T


def released_gnn_cell(A, hidden, conv):
    """``GNN.GNNCell`` on dense ``A`` ``[B, n, 2n]`` and ``hidden`` ``[B, n, d]``,
    with the weights of a :class:`~tagnn_pyg.nn.GatedSessionConv` (``lin_in`` =
    ``linear_edge_in``, ``bias_in`` = ``b_iah``, ``gru`` = ``w_ih, w_hh, b_ih, b_hh``)."""
    n = A.shape[1]
    lin_in = F.linear(hidden, conv.lin_in.weight, conv.lin_in.bias)
    lin_out = F.linear(hidden, conv.lin_out.weight, conv.lin_out.bias)
    input_in = torch.matmul(A[:, :, :n], lin_in) + conv.bias_in
    input_out = torch.matmul(A[:, :, n:2 * n], lin_out) + conv.bias_out
    inputs = torch.cat([input_in, input_out], 2)
    gi = F.linear(inputs, conv.gru.weight_ih, conv.gru.bias_ih)
    gh = F.linear(hidden, conv.gru.weight_hh, conv.gru.bias_hh)
    i_r, i_i, i_n = gi.chunk(3, 2)
    h_r, h_i, h_n = gh.chunk(3, 2)
    resetgate = torch.sigmoid(i_r + h_r)
    inputgate = torch.sigmoid(i_i + h_i)
    newgate = torch.tanh(i_n + resetgate * h_n)
    return newgate + inputgate * (hidden - newgate)
