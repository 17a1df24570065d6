"""SessionTransformer: hand-written dense computation, batching invariance, causality."""
import math

import pytest
import torch
import torch.nn.functional as F

from tagnn_pyg.nn import SessionTransformer

D, HEADS = 8, 2
LENGTHS = [3, 1, 5, 2]


def positions(seed=0, lengths=LENGTHS):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(lengths), D, generator=g, dtype=torch.double)
    index = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    return x, index


def hand_written(layer, s):
    """One session [L, d], the equations written out with the module's weights."""
    L = s.size(0)
    if layer.pos_emb is not None:
        s = s + layer.pos_emb.weight[:L]
    Wq, Wk, Wv = layer.attn.in_proj_weight.chunk(3)
    bq, bk, bv = layer.attn.in_proj_bias.chunk(3)
    dh = D // HEADS
    heads = []
    for h in range(HEADS):
        sl = slice(h * dh, (h + 1) * dh)
        q = s @ Wq[sl].T + bq[sl]
        k = s @ Wk[sl].T + bk[sl]
        v = s @ Wv[sl].T + bv[sl]
        heads_out = []
        for i in range(L):                 # causal: click i sees clicks 0..i
            e = (k[:i + 1] @ q[i]) / math.sqrt(dh)
            heads_out.append(torch.softmax(e, 0) @ v[:i + 1])
        heads.append(torch.stack(heads_out))
    attn = torch.cat(heads, -1) @ layer.attn.out_proj.weight.T + layer.attn.out_proj.bias
    ln1 = lambda t: F.layer_norm(t, (D,), layer.norm1.weight, layer.norm1.bias)
    if layer.norm == 'released':
        return attn + ln1(s)
    h = ln1(s + attn)
    if layer.feed_forward:
        ff = torch.relu(h @ layer.lin1.weight.T + layer.lin1.bias) @ layer.lin2.weight.T \
            + layer.lin2.bias
        h = F.layer_norm(h + ff, (D,), layer.norm2.weight, layer.norm2.bias)
    return h


CONFIGS = [dict(norm='post'), dict(norm='post', positional=False),
           dict(norm='post', feed_forward=False, ff_channels=None),
           dict(norm='post', ff_channels=12), dict(norm='released'),
           dict(norm='released', positional=False)]


@pytest.mark.parametrize('config', CONFIGS)
def test_equals_hand_written_dense_computation(config):
    torch.manual_seed(0)
    layer = SessionTransformer(D, heads=HEADS, **config).double().eval()
    x, index = positions()
    out = layer(x, index)
    expected = torch.cat([hand_written(layer, s) for s in torch.split(x, LENGTHS)])
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize('config', CONFIGS[:1] + CONFIGS[4:5])
def test_alone_equals_batched_and_order_kept(config):
    torch.manual_seed(1)
    layer = SessionTransformer(D, heads=HEADS, **config).eval()
    x, index = positions(seed=1)
    x = x.float()
    with torch.no_grad():
        out = layer(x, index)
        start = 0
        for L in LENGTHS:
            alone = layer(x[start:start + L], torch.zeros(L, dtype=torch.long))
            torch.testing.assert_close(alone, out[start:start + L], rtol=0, atol=1e-5)
            start += L
        # Interleaved positions (each session still in click order) and ptr.
        perm = torch.tensor([3, 0, 4, 1, 5, 2, 6, 7, 8, 9, 10])
        torch.testing.assert_close(layer(x[perm], index[perm]), out[perm],
                                   rtol=0, atol=1e-5)
        ptr = torch.tensor([0] + LENGTHS).cumsum(0)
        torch.testing.assert_close(layer(x, ptr=ptr), out, rtol=0, atol=1e-6)
        # An empty trailing session changes nothing and gives no NaN.
        out_empty = layer(x, index, dim_size=len(LENGTHS) + 1)
        torch.testing.assert_close(out_empty, out, rtol=0, atol=1e-6)


@pytest.mark.parametrize('norm', ['post', 'released'])
def test_causal(norm):
    torch.manual_seed(2)
    layer = SessionTransformer(D, heads=HEADS, norm=norm).double().eval()
    x, index = positions(seed=2, lengths=[6])
    out = layer(x, index)
    x2 = x.clone()
    x2[4] += 1.0                                   # change the fifth click
    out2 = layer(x2, index)
    torch.testing.assert_close(out2[:4], out[:4], rtol=0, atol=1e-12)
    assert (out2[4:] - out[4:]).abs().max() > 1e-3


def test_train_mode_gradients():
    torch.manual_seed(3)
    layer = SessionTransformer(D, heads=HEADS).train()
    x, index = positions(seed=3)
    x = x.float().requires_grad_()
    layer(x, index).square().sum().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_init_repr_errors():
    post = SessionTransformer(D)
    assert post.feed_forward and post.ff_channels == 4 * D
    assert repr(post) == ("SessionTransformer(8, heads=2, norm='post', "
                          "positional=True, feed_forward=True)")
    released = SessionTransformer(D, norm='released', positional=False)
    assert not released.feed_forward and released.pos_emb is None
    bound = 1 / math.sqrt(D)
    assert all(p.abs().max() <= bound for p in released.parameters())
    with pytest.raises(ValueError, match='no feed-forward'):
        SessionTransformer(D, norm='released', feed_forward=True)
    with pytest.raises(ValueError, match="got 'pre'"):
        SessionTransformer(D, norm='pre')
    with pytest.raises(ValueError, match='heads must be a positive divisor'):
        SessionTransformer(D, heads=3)
    short = SessionTransformer(D, max_length=4)
    x, index = positions()
    with pytest.raises(ValueError, match='a session has 5 clicks, more than max_length=4'):
        short(x.float(), index)


# ---------------------------------------------------------------- static length (export)
STATIC_L = 5
STATIC_LENGTHS = [3, 1, STATIC_L, 1, 2]      # length-1 sessions and one of exactly L


def interleaved(seed, lengths=STATIC_LENGTHS, dtype=torch.double):
    """Positions of ``lengths`` sessions in a random interleaving (each session in
    click order), the clicks of each session, and where each session's clicks went."""
    g = torch.Generator().manual_seed(seed)
    clicks = [torch.randn(n, D, generator=g, dtype=dtype) for n in lengths]
    labels = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    index = labels[torch.randperm(labels.numel(), generator=g)]
    slots = [(index == b).nonzero().view(-1) for b in range(len(lengths))]
    x = torch.empty(index.numel(), D, dtype=dtype)
    for b, s in enumerate(slots):
        x[s] = clicks[b]
    return x, index, clicks, slots


STATIC_CONFIGS = [dict(norm='post'), dict(norm='post', positional=False),
                  dict(norm='released'), dict(norm='released', positional=False)]


@pytest.mark.parametrize('config', STATIC_CONFIGS)
def test_static_length_equals_default_and_hand_written(config):
    torch.manual_seed(4)
    layer = SessionTransformer(D, heads=HEADS, max_length=8, **config).double().eval()
    x, index, clicks, slots = interleaved(seed=4)
    B = len(STATIC_LENGTHS)
    assert not (torch.diff(index) >= 0).all()           # really interleaved
    default = layer(x, index, dim_size=B)
    layer.static_length = STATIC_L
    static = layer(x, index, dim_size=B)
    torch.testing.assert_close(static, default, rtol=0, atol=1e-6)
    # the equations written out, session by session (independent of both paths)
    for b, s in enumerate(slots):
        torch.testing.assert_close(static[s], hand_written(layer, clicks[b]),
                                   rtol=0, atol=1e-6)
    # a longer fixed length and empty trailing sessions change nothing, give no NaN
    layer.static_length = 8
    torch.testing.assert_close(layer(x, index, dim_size=B + 2), default, rtol=0, atol=1e-6)
    # float32, sorted sessions as the models pass them
    layer.float()
    xs, idx = x.float()[torch.sort(index, stable=True)[1]], torch.sort(index)[0]
    layer.static_length = None
    ref = layer(xs, idx, dim_size=B)
    layer.static_length = STATIC_L
    torch.testing.assert_close(layer(xs, idx, dim_size=B), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize('norm', ['post', 'released'])
def test_static_length_gradients_equal_default(norm):
    torch.manual_seed(5)
    layer = SessionTransformer(D, heads=HEADS, dropout=0.0, norm=norm).double().train()
    x, index, _, _ = interleaved(seed=5)
    B = len(STATIC_LENGTHS)
    w = torch.randn(x.shape, dtype=torch.double)

    def grads(static_length):
        layer.static_length = static_length
        layer.zero_grad()
        xg = x.clone().requires_grad_()
        (layer(xg, index, dim_size=B) * w).sum().backward()
        return [xg.grad] + [p.grad.clone() for p in layer.parameters()]

    for a, b in zip(grads(None), grads(STATIC_L)):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)


def test_static_length_errors():
    layer = SessionTransformer(D, heads=HEADS, max_length=6).eval()
    x, index, _, _ = interleaved(seed=6, dtype=torch.float)
    layer.static_length = STATIC_L - 1
    with pytest.raises(ValueError, match=r"a session has 5 clicks, more than "
                                         r"static_length=4.*never truncated"):
        layer(x, index, dim_size=len(STATIC_LENGTHS))
    layer.static_length = STATIC_L
    with pytest.raises(ValueError, match='static_length needs dim_size'):
        layer(x, index)
    layer.static_length = 7
    with pytest.raises(ValueError, match=r'static_length must be in \[1, 6\].*got 7'):
        layer(x, index, dim_size=len(STATIC_LENGTHS))
