"""Your own session model from the PyG parts: GatedSessionConv + TargetAttention.

A plain ``torch.nn.Module`` (no tagnn-pyg base class) that

1. embeds the session graph's items and runs one :class:`GatedSessionConv` step,
2. gathers node features to click positions (``h[batch.seq]``),
3. scores every item ``t`` as ``s_last . v_t`` plus TAGNN's target-attention term
   ``sum_i softmax_i((W h_i) . v_t) * (h_i . v_t)`` from :class:`TargetAttention`
   (computed in item chunks: the ``[B, items, d]`` tensor is never built).

It is trained for a few steps with an ordinary loop over :class:`SessionLoader`
batches and evaluated with :func:`tagnn_pyg.train.evaluate`; because it follows the
model interface (``model(batch) -> [B, num_items]``, ``.embedding``), the
:class:`~tagnn_pyg.train.Trainer` can train it too.

    python examples/custom_model.py --steps 200
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from tagnn_pyg.data import SessionLoader, expand_prefixes, make_synthetic_sessions
from tagnn_pyg.nn import GatedSessionConv, TargetAttention
from tagnn_pyg.train import evaluate


class LastClickTargetAttention(torch.nn.Module):
    """GGNN step, then last-click score + target-attention score."""

    def __init__(self, num_items: int, hidden_channels: int = 64) -> None:
        super().__init__()
        self.num_items = num_items
        self.hidden_channels = hidden_channels
        self.embedding = torch.nn.Embedding(num_items, hidden_channels)
        self.conv = GatedSessionConv(hidden_channels, num_steps=1)
        self.target_attention = TargetAttention(hidden_channels)
        stdv = hidden_channels ** -0.5  # the released initialisation
        for p in self.parameters():
            torch.nn.init.uniform_(p, -stdv, stdv)

    def config(self) -> dict:
        return {'num_items': self.num_items, 'hidden_channels': self.hidden_channels}

    def forward(self, batch) -> Tensor:
        h = self.conv(self.embedding(batch.x), batch.edge_index,
                      batch.edge_weight_in, batch.edge_weight_out)      # [N, d] nodes
        pos = h[batch.seq]                                                # [L, d] clicks
        last = h[batch.last]                                              # [B, d]
        items = self.embedding.weight[1:]                                 # [m, d]
        scores = last @ items.t() + self.target_attention(
            pos, batch.seq_batch, dim_size=batch.num_graphs, target=items)  # [B, m]
        pad = scores.new_full((scores.size(0), 1), float('-inf'))
        return torch.cat([pad, scores], dim=1)                            # column 0 = pad


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=200)
    parser.add_argument('--sessions', type=int, default=3000)
    parser.add_argument('--hidden', type=int, default=64)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    train_sessions, test_sessions = make_synthetic_sessions(
        num_items=300, num_train_sessions=args.sessions,
        num_test_sessions=max(args.sessions // 5, 20), seed=0, num_interests=10)
    num_items = max(max(map(max, train_sessions)), max(map(max, test_sessions))) + 1
    train, test = expand_prefixes(train_sessions), expand_prefixes(test_sessions)

    model = LastClickTargetAttention(num_items, args.hidden)
    print(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    print('before training:', {k: round(v, 2) for k, v in evaluate(model, test).items()
                                if k in ('HR@20', 'MRR@20')})
    step = 0
    while step < args.steps:
        for batch in SessionLoader(train, batch_size=100, shuffle=True, seed=step):
            loss = F.cross_entropy(model(batch)[:, 1:], batch.y - 1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % 50 == 0 or step == args.steps:
                print(f'step {step}: loss {loss.item():.3f}')
            if step >= args.steps:
                break
    print('after training: ', {k: round(v, 2) for k, v in evaluate(model, test).items()
                               if k in ('HR@20', 'MRR@20')})


if __name__ == '__main__':
    main()
