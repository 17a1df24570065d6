"""TargetAttention outside session recommendation: graph classification.

Each class has a learned *prototype* vector that plays the role of a target item:
a graph's score for class c is the target-attentive readout of TAGNN (eq. 6-7),
``sum_i softmax_i((W h_i) . p_c) * (h_i . p_c)``, so every class looks at the nodes
that matter to it. The graphs are synthetic (no download): random trees whose
nodes are mostly distractors, with a few "signal" nodes whose type is the class,
so a class must find a handful of nodes among many (what target attention is for).

    python examples/target_attention_graphs.py --epochs 20
"""
from __future__ import annotations

import argparse
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import GraphConv

from tagnn_pyg.nn import TargetAttention


def make_graphs(num_graphs: int, num_classes: int = 3, num_distractor_types: int = 4,
                min_nodes: int = 8, max_nodes: int = 20, seed: int = 0) -> List[Data]:
    """Random trees: 1-3 nodes of type ``y`` among distractor-type nodes; one-hot
    type features plus noise."""
    g = torch.Generator().manual_seed(seed)
    num_types = num_classes + num_distractor_types
    graphs = []
    for _ in range(num_graphs):
        y = int(torch.randint(num_classes, (1, ), generator=g))
        n = int(torch.randint(min_nodes, max_nodes + 1, (1, ), generator=g))
        types = num_classes + torch.randint(num_distractor_types, (n, ), generator=g)
        signal = torch.randperm(n, generator=g)[:int(torch.randint(1, 4, (1, ), generator=g))]
        types[signal] = y
        x = F.one_hot(types, num_types).float() + 0.3 * torch.randn(n, num_types, generator=g)
        parent = (torch.rand(n - 1, generator=g) * torch.arange(1, n)).long()
        child = torch.arange(1, n)
        edge_index = torch.cat([torch.stack([parent, child]), torch.stack([child, parent])], 1)
        graphs.append(Data(x=x, edge_index=edge_index, y=torch.tensor([y])))
    return graphs


class PrototypeClassifier(torch.nn.Module):
    """Two graph convolutions, then class scores by target attention against
    learned class prototypes."""

    def __init__(self, in_channels: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = GraphConv(in_channels, hidden)
        self.conv2 = GraphConv(hidden, hidden)
        self.prototypes = torch.nn.Parameter(torch.randn(num_classes, hidden) / hidden ** 0.5)
        self.class_bias = torch.nn.Parameter(torch.zeros(num_classes))
        self.readout = TargetAttention(hidden)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        h = F.relu(self.conv1(x, edge_index))
        h = self.conv2(h, edge_index)
        return self.readout(h, batch, dim_size=num_graphs,
                            target=self.prototypes) + self.class_bias


def evaluate(model: torch.nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for data in loader:
            pred = model(data.x, data.edge_index, data.batch, data.num_graphs).argmax(-1)
            correct += int((pred == data.y).sum())
            total += data.num_graphs
    return correct / max(total, 1)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--epochs', type=int, default=20)
    parser.add_argument('--num-graphs', type=int, default=600)
    parser.add_argument('--hidden', type=int, default=32)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--lr', type=float, default=0.01)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    graphs = make_graphs(args.num_graphs, seed=args.seed)
    split = int(0.8 * len(graphs))
    train_loader = DataLoader(graphs[:split], batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(graphs[split:], batch_size=args.batch_size)
    num_classes = int(max(int(d.y) for d in graphs)) + 1
    model = PrototypeClassifier(graphs[0].num_features, args.hidden, num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    for epoch in range(1, args.epochs + 1):
        model.train()
        total = 0.0
        for data in train_loader:
            optimizer.zero_grad()
            out = model(data.x, data.edge_index, data.batch, data.num_graphs)
            loss = F.cross_entropy(out, data.y)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * data.num_graphs
        if epoch == args.epochs or epoch % 5 == 0:
            print(f'epoch {epoch:3d}  loss {total / split:.4f}  '
                  f'test accuracy {evaluate(model, test_loader):.3f}')
    result = {'train_accuracy': evaluate(model, train_loader),
              'test_accuracy': evaluate(model, test_loader)}
    print(f"final test accuracy: {result['test_accuracy']:.3f} "
          f"(chance {1 / num_classes:.3f})")
    return result


if __name__ == '__main__':
    main()
