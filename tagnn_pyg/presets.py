r"""Named experiment presets: which model, with which arguments, trained how.

A plain data module (no torch, no model imports). Every :class:`Preset` holds

* ``model``: a key of :data:`tagnn_pyg.models.MODELS` (``'srgnn'``,
  ``'tagnn'``, ``'tagnnpp'``, ``'narm'``, ``'stamp'``, ``'gru4rec'``,
  ``'gcsan'``, ``'lessr'``);
* ``model_kwargs``: constructor arguments besides ``num_items`` (which comes
  from the data set);
* ``training``: the optimisation settings, with these keys:

  ========================================  ================================================
  ``optimizer``                             ``'adam'`` (``betas=(0.9, 0.999)``), or
                                            ``'adamw'`` (``lessr``: decoupled decay,
                                            biases/norms/PReLU exempt)
  ``lr``                                    initial learning rate
  ``weight_decay``                          the papers' "L2 penalty", as Adam's
                                            ``weight_decay`` (as released); with
                                            ``'adamw'`` the decoupled decay
  ``batch_size``                            sessions (prefixes) per batch
  ``epochs``                                maximum number of epochs
  ``patience``                              early stopping patience in epochs; ``None``:
                                            the protocol's default (released/paper: 10)
  ``lr_decay``, ``lr_decay_step``           ``StepLR(gamma=lr_decay, step_size=lr_decay_step)``
  ``scheduler_step_at_epoch_start``         ``True``: call ``scheduler.step()`` at the
                                            *start* of every epoch, as the released loops
                                            do (the first decay then comes after
                                            ``lr_decay_step - 1`` epochs); ``False``: at
                                            the end (the papers' wording)
  ``agc``                                   clip gradients with :class:`tagnn_pyg.optim.AGC`
  ``agc_clipping``, ``agc_eps``             AGC's :math:`\lambda`, :math:`\epsilon`
  ``agc_exempt_embedding``                  leave the item table (also the output layer)
                                            unclipped
  ========================================  ================================================

Base presets: ``srgnn``, ``tagnn`` (the papers' settings: d 100, Adam 1e-3,
x0.1 every 3 epochs, L2 1e-5, batch 100), ``tagnnpp-paper-diginetica``,
``tagnnpp-paper-yoochoose`` (TAGNN++ paper, section IV) and
``tagnnpp-released-diginetica``, ``tagnnpp-released-yoochoose`` (the defaults
of the released ``train.py``, with the layer over the clicks in click order) and
``tagnnpp-released-padded-diginetica``, ``tagnnpp-released-padded-yoochoose``
(the same settings with the released computation emulated exactly:
``released_padding=True``); the sequence baselines ``narm``, ``stamp``, ``gru4rec``; ``gcsan``;
``lessr`` (AdamW, as released).

Ablations (:data:`VARIANTS`) are overrides of a base preset of the same family;
their full names are ``<variant>`` when the base preset is named after the
family (``tagnn-L``, ``srgnn-nonhybrid``) and ``<base>-<suffix>`` otherwise
(``tagnnpp-paper-diginetica-AGC``). :func:`preset_names` lists every valid
name, :func:`get_preset` resolves one.

LESSR: ``lessr`` (the defaults of the released ``main.py``, see its description).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

__all__ = ['Preset', 'Variant', 'PRESETS', 'VARIANTS', 'get_preset', 'preset_names']


@dataclass(frozen=True)
class Preset:
    r"""One named configuration.

    Args:
        name (str): the preset's name.
        model (str): key of :data:`tagnn_pyg.models.MODELS`.
        model_kwargs (dict): constructor arguments besides ``num_items``.
        training (dict): optimisation settings (see the module docstring).
        description (str): one line naming the source of the settings.
    """
    name: str
    model: str
    model_kwargs: Dict[str, Any]
    training: Dict[str, Any]
    description: str = ''

    def to_dict(self) -> Dict[str, Any]:
        r"""A JSON-serialisable copy (for run records)."""
        return {'name': self.name, 'model': self.model,
                'model_kwargs': copy.deepcopy(self.model_kwargs),
                'training': copy.deepcopy(self.training),
                'description': self.description}

    def with_overrides(self, name: Optional[str] = None,
                       model_kwargs: Optional[Mapping[str, Any]] = None,
                       training: Optional[Mapping[str, Any]] = None) -> 'Preset':
        r"""A copy with some model arguments / training settings replaced;
        unknown training keys are refused (they would silently do nothing)."""
        train = copy.deepcopy(self.training)
        for key, value in (training or {}).items():
            if key not in train:
                raise KeyError(f"unknown training setting {key!r} for preset "
                               f"{self.name!r}; known: {sorted(train)}")
            train[key] = value
        kwargs = copy.deepcopy(self.model_kwargs)
        kwargs.update(model_kwargs or {})
        return Preset(name or self.name, self.model, kwargs, train, self.description)


@dataclass(frozen=True)
class Variant:
    r"""An ablation: overrides applied to a base preset of model ``family``."""
    family: str
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    training: Dict[str, Any] = field(default_factory=dict)
    description: str = ''


def _training(**kw: Any) -> Dict[str, Any]:
    base = dict(optimizer='adam', lr=1e-3, weight_decay=1e-5, batch_size=100,
                epochs=30, patience=None, lr_decay=0.1, lr_decay_step=3,
                scheduler_step_at_epoch_start=True, agc=False,
                agc_clipping=0.01, agc_eps=1e-3, agc_exempt_embedding=True)
    unknown = set(kw) - set(base)
    if unknown:  # pragma: no cover - guards this file's own tables
        raise KeyError(f"unknown training settings {sorted(unknown)}")
    base.update(kw)
    return base


PRESETS: Dict[str, Preset] = {p.name: p for p in [
    Preset('srgnn', 'srgnn',
           dict(hidden_channels=100, num_steps=1, hybrid=True),
           _training(),
           'SR-GNN (AAAI 2019), released defaults: d 100, Adam 1e-3, x0.1 every 3 '
           'epochs (scheduler stepped at epoch start), L2 1e-5, batch 100'),
    Preset('tagnn', 'tagnn',
           dict(hidden_channels=100, num_steps=1, score='released', session='full',
                hybrid=True),
           _training(),
           'TAGNN (SIGIR 2020) paper settings = released defaults: d 100, Adam 1e-3, '
           'x0.1 every 3 epochs (scheduler stepped at epoch start), L2 1e-5, batch 100'),
    Preset('tagnnpp-paper-diginetica', 'tagnnpp',
           dict(hidden_channels=120, heads=8, dropout=0.1, num_steps=1,
                layer='paper'),
           _training(lr=1e-4, weight_decay=1e-6, batch_size=50, epochs=15, agc=True),
           'TAGNN++ paper section IV, Diginetica: d 120, 8 heads, dropout 0.1, '
           'batch 50, 15 epochs, Adam 1e-4, x0.1 every 3 epochs, L2 1e-6, AGC'),
    Preset('tagnnpp-paper-yoochoose', 'tagnnpp',
           dict(hidden_channels=100, heads=2, dropout=0.1, num_steps=1,
                layer='paper'),
           _training(lr=1e-4, weight_decay=1e-6, batch_size=50, epochs=15, agc=True),
           'TAGNN++ paper section IV, Yoochoose 1/64: d 100, 2 heads, dropout 0.1, '
           'batch 50, 15 epochs, Adam 1e-4, x0.1 every 3 epochs, L2 1e-6, AGC'),
    Preset('tagnnpp-released-diginetica', 'tagnnpp',
           dict(hidden_channels=100, heads=2, dropout=0.1, num_steps=1,
                layer='released', hybrid=False, positional=False),
           _training(lr=1e-3, weight_decay=1e-5, batch_size=50, epochs=30, agc=True),
           'TAGNN++ released train.py (Diginetica_arg): d 100, 2 heads, batch 50, '
           'Adam 1e-3, L2 1e-5, non-hybrid, released layer form; AGC on'),
    Preset('tagnnpp-released-yoochoose', 'tagnnpp',
           dict(hidden_channels=120, heads=2, dropout=0.1, num_steps=1,
                layer='released', hybrid=False, positional=False),
           _training(lr=1e-3, weight_decay=1e-5, batch_size=75, epochs=30, agc=True),
           'TAGNN++ released train.py (Yoochoose_arg): d 120, 2 heads, batch 75, '
           'Adam 1e-3, L2 1e-5, non-hybrid, released layer form; AGC on'),
    # The sequence baselines of the TAGNN paper's Table 1, full cross-entropy over
    # all items (tagnn_pyg.models.narm / stamp / gru4rec).
    Preset('narm', 'narm',
           dict(hidden_channels=100, embedding_channels=50, embedding_dropout=0.25,
                dropout=0.5),
           _training(lr=1e-3, weight_decay=0.0, batch_size=512, lr_decay=1.0),
           'NARM (CIKM 2017), its experimental setup: 50-d item embeddings, 100 GRU '
           'units, dropout 0.25 (embeddings -> GRU) and 0.5 (GRU -> bilinear decoder), '
           'Adam 1e-3, batch 512; L2 0 and no learning-rate decay (our choice)'),
    Preset('stamp', 'stamp',
           dict(hidden_channels=100, attention=True, sigmoid=False),
           _training(lr=1e-3, weight_decay=0.0, batch_size=512, lr_decay=1.0),
           'STAMP (KDD 2018): 100-d item embeddings, batch 512, Adam; lr 1e-3, L2 0, '
           'no decay, raw trilinear logits (our choices, as for NARM)'),
    Preset('gru4rec', 'gru4rec',
           dict(hidden_channels=100, embedding_channels=100, num_layers=1, dropout=0.0,
                embedding_dropout=0.0),
           _training(lr=1e-3, weight_decay=0.0, batch_size=512, lr_decay=1.0),
           'GRU4Rec (ICLR 2016): one GRU layer of 100 units (the paper\'s); 100-d item '
           'embeddings tied to the output, full cross-entropy, Adam 1e-3, batch 512, '
           'no dropout, L2 0, no decay (our choices, as for NARM)'),
    # GC-SAN (tagnn_pyg.models.gcsan): SR-GNN's protocol, which the paper follows.
    Preset('gcsan', 'gcsan',
           dict(hidden_channels=100, num_steps=1, num_layers=1, weight=0.6, heads=1,
                ff_channels=100, dropout=0.2, causal=False),
           _training(),
           'GC-SAN (IJCAI 2019): SR-GNN\'s setup (d 100, Adam 1e-3, x0.1 every 3 epochs, '
           'L2 1e-5, batch 100), one GNN step, single-head unmasked self-attention with '
           'feed-forward width d (the paper\'s eq. 6-7); k = 1 block and omega = 0.6 '
           '(RecBole\'s defaults, taken as the paper\'s best: not checked against the '
           'paper\'s text); dropout 0.2 (RecBole\'s default, our choice); one preset '
           'for both data sets'),
    # LESSR (KDD 2020), tagnn_pyg.models.lessr: the defaults of the released main.py.
    Preset('lessr', 'lessr',
           dict(hidden_channels=32, num_layers=3, dropout=0.2, batch_norm=True,
                max_norm=1.0),
           _training(optimizer='adamw', lr=1e-3, weight_decay=1e-4, batch_size=512,
                     epochs=30, patience=2, lr_decay=1.0),
           'LESSR (KDD 2020), released main.py / utils/train.py defaults: d 32, 3 layers '
           '(EOPA, SGAT, EOPA), feat_drop 0.2, AdamW lr 1e-3 with decoupled weight decay '
           '1e-4 (biases, batch norms and PReLU slopes exempt, as released), batch 512, '
           '30 epochs, patience 2, no lr decay, item vectors renormalised to norm 1'),
]}

for _data in ('diginetica', 'yoochoose'):   # the released code exactly, same settings
    _base = PRESETS[f'tagnnpp-released-{_data}']
    PRESETS[f'tagnnpp-released-padded-{_data}'] = Preset(
        f'tagnnpp-released-padded-{_data}', _base.model,
        {**_base.model_kwargs, 'released_padding': True}, dict(_base.training),
        _base.description.replace('released layer form', 'released computation emulated '
                                  'exactly (attention over the padded id-sorted node list, '
                                  'softmaxes over padded slots)'))

VARIANTS: Dict[str, Variant] = {
    'srgnn-nonhybrid': Variant('srgnn', {'hybrid': False},
                               description='SR-GNN-NGE-like: global embedding only'),
    'tagnn-L': Variant('tagnn', {'session': 'local'},
                       description='TAGNN-L: last click only, no target attention'),
    'tagnn-Avg': Variant('tagnn', {'session': 'mean'},
                         description='TAGNN-Avg: mean pooling only, no target attention'),
    'tagnn-Att': Variant('tagnn', {'session': 'attention'},
                         description='TAGNN-Att: soft-attention global embedding only, '
                                     'no target attention'),
    'tagnn-L+Att': Variant('tagnn', {'session': 'local+attention'},
                           description='TAGNN-L+Att: local + attentive global, '
                                       'no target attention'),
    'tagnn-eq10': Variant('tagnn', {'score': 'paper'},
                          description="TAGNN with the paper's eq. (10) score "
                                      "(W3 over [s_target; s_local; s_global])"),
    'tagnn-nonhybrid': Variant('tagnn', {'hybrid': False},
                               description='TAGNN, released score without W3 '
                                           '(s_global + s_target)'),
    'tagnn-padded': Variant('tagnn', {'released_padding': True},
                            description="TAGNN with the released code's softmaxes over "
                                        "padded slots (reproduction study)"),
    'tagnnpp-AGC': Variant('tagnnpp', training={'agc': False},
                           description='TAGNN++ without adaptive gradient clipping'),
    'tagnnpp-GNN': Variant('tagnnpp', {'use_gnn': False},
                           description='TAGNN++ without the GNN (embeddings straight '
                                       'into the Transformer)'),
    'tagnnpp-PE': Variant('tagnnpp', {'positional': False},
                          description='TAGNN++ without positional embeddings'),
    'tagnnpp-Transformer': Variant('tagnnpp', {'use_transformer': False},
                                   description='TAGNN++ without the Transformer layer'),
}


def _family(preset: Preset) -> str:
    return preset.model


def _variant_name(base: Preset, variant_key: str, variant: Variant) -> str:
    if base.name == variant.family:
        return variant_key
    suffix = variant_key[len(variant.family) + 1:]
    return f'{base.name}-{suffix}'


def _is_noop(base: Preset, variant: Variant) -> bool:
    return (all(base.model_kwargs.get(k, object()) == v
                for k, v in variant.model_kwargs.items())
            and all(base.training.get(k) == v for k, v in variant.training.items()))


def _all_presets() -> Dict[str, Preset]:
    out = dict(PRESETS)
    for base in PRESETS.values():
        for key, var in VARIANTS.items():
            if var.family != _family(base) or _is_noop(base, var):
                continue
            name = _variant_name(base, key, var)
            p = base.with_overrides(name=name, model_kwargs=var.model_kwargs,
                                    training=var.training)
            out[name] = Preset(p.name, p.model, p.model_kwargs, p.training,
                               f'{base.description}; ablation: {var.description}')
    return out


def preset_names() -> List[str]:
    r"""Every valid preset name: the base presets and their ablations."""
    return sorted(_all_presets())


def get_preset(name: str) -> Preset:
    r"""The preset called ``name`` (a fresh copy, safe to modify).

    Raises:
        KeyError: naming ``name`` and listing the valid names.
    """
    presets = _all_presets()
    if name not in presets:
        hint = ''
        if name in VARIANTS:
            fam = VARIANTS[name].family
            bases = [p for p in PRESETS.values() if p.model == fam]
            hint = (f" ({name!r} is an ablation of the {fam!r} family; "
                    f"prefix a base preset, e.g. "
                    f"{_variant_name(bases[0], name, VARIANTS[name])!r})") if bases else ''
        raise KeyError(f"unknown preset {name!r}{hint}; valid presets: "
                       f"{', '.join(sorted(presets))}")
    p = presets[name]
    return Preset(p.name, p.model, copy.deepcopy(p.model_kwargs),
                  copy.deepcopy(p.training), p.description)
