"""tagnn_pyg.utils.device.host_reads_are_free and tagnn_pyg.utils.checks.check_flag."""
import numpy as np
import pytest
import torch

from tagnn_pyg.data import SessionData
from tagnn_pyg.models import SRGNN
from tagnn_pyg.utils.checks import check_flag
from tagnn_pyg.utils.device import host_reads_are_free


def test_host_reads_are_free_on_cpu_only_and_never_while_tracing(monkeypatch):
    assert host_reads_are_free(torch.device('cpu'))
    assert not host_reads_are_free(torch.device('cuda'))
    assert not host_reads_are_free(torch.device('meta'))
    # a traced graph (torch.compile / torch.export / ONNX) holds no
    # data-dependent check, so the checks that read values back step aside
    model = SRGNN(10, 8)
    bad = SessionData.from_sequence([3, 12])
    with pytest.raises(ValueError, match='num_items=10'):
        model(bad)
    monkeypatch.setattr(torch.compiler, 'is_compiling', lambda: True)
    assert not host_reads_are_free(torch.device('cpu'))
    with pytest.raises(IndexError):   # the embedding itself, unchecked
        model(bad)
    monkeypatch.undo()
    monkeypatch.setattr(torch.jit, 'is_tracing', lambda: True)
    assert not host_reads_are_free(torch.device('cpu'))


def test_check_flag():
    assert check_flag('x', True) is True and check_flag('x', np.bool_(False)) is False
    assert check_flag('x', 1) is True and check_flag('x', np.int64(0)) is False
    for value in ('yes', 2, -1, 1.0, None, [True]):
        with pytest.raises(TypeError, match=r'x must be True or False, got'):
            check_flag('x', value)
    with pytest.raises(TypeError, match=r"got 'true' \(str\) \(on the command line "
                                        r"write JSON: true or false\)"):
        check_flag('x', 'true')
