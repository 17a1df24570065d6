"""Presets: the papers' / released settings, ablation variants, and that every
preset builds its model."""
import json

import pytest
import torch

from tagnn_pyg.models import MODELS
from tagnn_pyg.presets import PRESETS, VARIANTS, get_preset, preset_names


def test_paper_settings():
    for name in ('srgnn', 'tagnn'):
        p = get_preset(name)
        assert p.model_kwargs['hidden_channels'] == 100
        t = p.training
        assert (t['optimizer'], t['lr'], t['weight_decay'], t['batch_size']) == \
            ('adam', 1e-3, 1e-5, 100)
        assert (t['lr_decay'], t['lr_decay_step']) == (0.1, 3)
        assert t['scheduler_step_at_epoch_start'] is True
        assert t['agc'] is False
    assert get_preset('tagnn').model_kwargs['score'] == 'released'

    dig = get_preset('tagnnpp-paper-diginetica')
    assert dig.model == 'tagnnpp'
    assert (dig.model_kwargs['hidden_channels'], dig.model_kwargs['heads'],
            dig.model_kwargs['dropout'], dig.model_kwargs['layer']) == (120, 8, 0.1, 'paper')
    t = dig.training
    assert (t['batch_size'], t['epochs'], t['lr'], t['weight_decay'], t['agc']) == \
        (50, 15, 1e-4, 1e-6, True)
    assert (t['agc_clipping'], t['agc_eps'], t['agc_exempt_embedding']) == (0.01, 1e-3, True)
    yoo = get_preset('tagnnpp-paper-yoochoose')
    assert (yoo.model_kwargs['hidden_channels'], yoo.model_kwargs['heads']) == (100, 2)

    for ds, d, bs in (('diginetica', 100, 50), ('yoochoose', 120, 75)):
        r = get_preset(f'tagnnpp-released-{ds}')
        assert (r.model_kwargs['hidden_channels'], r.model_kwargs['heads'],
                r.model_kwargs['layer'], r.model_kwargs['hybrid']) == (d, 2, 'released', False)
        assert (r.training['batch_size'], r.training['lr'], r.training['weight_decay'],
                r.training['agc']) == (bs, 1e-3, 1e-5, True)


def test_variants():
    assert get_preset('tagnn-L').model_kwargs['session'] == 'local'
    assert get_preset('tagnn-Avg').model_kwargs['session'] == 'mean'
    assert get_preset('tagnn-Att').model_kwargs['session'] == 'attention'
    assert get_preset('tagnn-L+Att').model_kwargs['session'] == 'local+attention'
    assert get_preset('tagnn-eq10').model_kwargs['score'] == 'paper'
    assert get_preset('srgnn-nonhybrid').model_kwargs['hybrid'] is False
    base = get_preset('tagnnpp-paper-yoochoose')
    for suffix, check in (('AGC', lambda p: p.training['agc'] is False),
                          ('GNN', lambda p: p.model_kwargs['use_gnn'] is False),
                          ('PE', lambda p: p.model_kwargs['positional'] is False),
                          ('Transformer', lambda p: p.model_kwargs['use_transformer'] is False)):
        p = get_preset(f'tagnnpp-paper-yoochoose-{suffix}')
        assert check(p)
        # everything else as the base preset
        assert {k: v for k, v in p.training.items() if k != 'agc'} == \
            {k: v for k, v in base.training.items() if k != 'agc'}
    # the released presets have no positional embeddings: no "-PE" no-op variant
    assert 'tagnnpp-released-diginetica-PE' not in preset_names()
    assert 'tagnnpp-released-diginetica-GNN' in preset_names()
    assert set(VARIANTS) >= {'tagnn-L', 'tagnn-Avg', 'tagnn-Att', 'tagnn-L+Att',
                             'tagnnpp-AGC', 'tagnnpp-GNN', 'tagnnpp-PE',
                             'tagnnpp-Transformer', 'srgnn-nonhybrid'}


def test_unknown_names_and_copies():
    with pytest.raises(KeyError, match="unknown preset 'nope'.*tagnn-L"):
        get_preset('nope')
    with pytest.raises(KeyError, match="tagnnpp-paper-diginetica-AGC"):
        get_preset('tagnnpp-AGC')
    p = get_preset('tagnn')
    p.training['lr'] = 5.0
    p.model_kwargs['hidden_channels'] = 3
    assert get_preset('tagnn').training['lr'] == 1e-3
    assert PRESETS['tagnn'].model_kwargs['hidden_channels'] == 100
    with pytest.raises(KeyError, match='unknown training setting'):
        p.with_overrides(training={'learning_rate': 1.0})


@pytest.mark.parametrize('name', preset_names())
def test_every_preset_builds(name):
    p = get_preset(name)
    assert json.loads(json.dumps(p.to_dict())) == p.to_dict()
    torch.manual_seed(0)
    model = MODELS[p.model](50, **p.model_kwargs)
    assert model.num_items == 50
    for key, value in p.model_kwargs.items():
        assert model.config()[key] == value, key


def test_only_lessr_uses_adamw_and_every_preset_is_a_valid_train_config():
    from tagnn_pyg.train import TrainConfig
    assert {n for n in preset_names() if get_preset(n).training['optimizer'] != 'adam'} \
        == {'lessr'}
    cfg = TrainConfig.from_preset(get_preset('lessr'))
    assert (cfg.optimizer, cfg.weight_decay, cfg.lr) == ('adamw', 1e-4, 1e-3)
    assert cfg.describe()['schedule'].startswith('AdamW lr 0.001, decoupled weight decay')
    for name in preset_names():
        TrainConfig.from_preset(get_preset(name))
