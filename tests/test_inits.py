"""released_uniform: the released model-wide initialisation through PyG's inits."""
import torch

from tagnn_pyg.models import SRGNN, TAGNN
from tagnn_pyg.nn import GatedSessionConv, SoftAttentionReadout
from tagnn_pyg.nn.inits import released_uniform


class Mixed(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(d))
        self.embedding = torch.nn.Embedding(7, d)
        self.gnn = GatedSessionConv(d)
        self.readout = SoftAttentionReadout(d)
        self.lin = torch.nn.Linear(2 * d, d)
        self.norm = torch.nn.BatchNorm1d(d)


def test_equals_one_uniform_loop_over_parameters():
    d = 9
    module = Mixed(d)
    torch.manual_seed(0)
    released_uniform(d, module)
    ours = [p.detach().clone() for p in module.parameters()]
    torch.manual_seed(0)
    for p in module.parameters():
        torch.nn.init.uniform_(p, -d ** -0.5, d ** -0.5)
    for a, b in zip(ours, module.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(module.norm.running_var, torch.ones(d))  # buffers untouched


def test_models_reset_draws_every_parameter_uniform():
    for model in (SRGNN(20, 16), TAGNN(20, 16, score='paper')):
        torch.manual_seed(1)
        model.reset_parameters()
        expected = []
        torch.manual_seed(1)
        for p in model.parameters():
            expected.append(torch.empty_like(p).uniform_(-0.25, 0.25))
        for e, p in zip(expected, model.parameters()):
            assert torch.equal(e, p)
