"""Trainer, protocols, checkpoints and exact resumption on tiny synthetic data (CPU)."""
import json
import math
from typing import List

import pytest
import torch

from tagnn_pyg.baselines import POP
from tagnn_pyg.checkpoint import (FORMAT_VERSION, CheckpointError, build_model,
                                  load_checkpoint, save_checkpoint)
from tagnn_pyg.data.sequences import SessionSequences, expand_prefixes
from tagnn_pyg.data.synthetic import make_synthetic_sessions
from tagnn_pyg.models import MODELS
from tagnn_pyg.train import (NonFiniteLossError, TrainConfig, Trainer, evaluate,
                             make_splits)


@pytest.fixture(scope='module')
def sessions():
    train, test = make_synthetic_sessions(num_items=120, num_train_sessions=500,
                                          num_test_sessions=100, seed=3, num_interests=6,
                                          mean_length=5.0)
    num_items = max(max(map(max, train)), max(map(max, test))) + 1
    return train, test, num_items


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=64, lr=1e-2, device='cpu', seed=0, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def _splits(cfg, sessions):
    train, test, _ = sessions
    return make_splits(cfg, train_sessions=train, test=expand_prefixes(test))


def _model(sessions, name='tagnn', seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault('hidden_channels', 16)
    return MODELS[name](num_items=sessions[2], **kw)


class Evil:
    """Not a tensor or a plain container: refused by weights_only loading."""


def assert_same_run(model, result, ref_model, ref_result) -> None:
    """A resumed run ended where the uninterrupted one did: weights, test metrics,
    per-epoch losses and learning rates."""
    for k, v in ref_model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=1e-6)
    assert result['test'] == ref_result['test']
    assert [h['train_loss'] for h in result['history']] == pytest.approx(
        [h['train_loss'] for h in ref_result['history']], abs=1e-9)
    assert [h['lr'] for h in result['history']] == [h['lr'] for h in ref_result['history']]


# ------------------------------------------------------------------- learning


def test_loss_decreases_and_beats_pop(sessions):
    cfg = _cfg(epochs=3)
    sp = _splits(cfg, sessions)
    model = _model(sessions)
    result = Trainer(model, cfg).fit(sp.train, sp.valid, sp.test)
    losses = [h['train_loss'] for h in result['history']]
    assert losses[-1] < losses[0] - 0.5, losses
    pop = POP().fit(sp.train_sessions, sessions[2])
    pop_hr = evaluate(pop, sp.test)['HR@20']
    assert result['test']['HR@20'] > pop_hr + 10, (result['test']['HR@20'], pop_hr)


# ------------------------------------------------------------------ protocols


def test_honest_protocol_selects_on_valid_and_tests_once(sessions, monkeypatch, tmp_path):
    import tagnn_pyg.train.trainer as train_mod
    calls: List[int] = []
    real = train_mod.evaluate

    def spy(model, seqs, **kw):
        calls.append(len(seqs))
        return real(model, seqs, **kw)

    monkeypatch.setattr(train_mod, 'evaluate', spy)
    cfg = _cfg(epochs=3)
    sp = _splits(cfg, sessions)
    result = Trainer(_model(sessions), cfg, out_dir=tmp_path).fit(sp.train, sp.valid,
                                                                    sp.test)
    # validation after every epoch, the test set exactly once at the end
    assert calls == [len(sp.valid)] * 3 + [len(sp.test)]
    assert result['protocol'] == 'honest'
    assert result['protocol_description'].startswith('honest protocol')
    assert result['selection'] == {'split': 'valid', 'metric': 'HR@20'}
    best = max(result['history'], key=lambda h: (h['valid']['HR@20'], -h['epoch']))
    assert result['epoch_chosen'] == best['epoch']
    assert result['valid'] == best['valid']
    assert all('test' not in h for h in result['history'])
    on_disk = json.loads((tmp_path / 'metrics.json').read_text())
    assert on_disk['protocol'] == 'honest' and on_disk['epoch_chosen'] == best['epoch']
    assert 'honest protocol' in (tmp_path / 'train.log').read_text()
    header = (tmp_path / 'log.csv').read_text().splitlines()[0]
    assert 'valid/HR@20' in header and 'train_loss' in header
    assert len((tmp_path / 'log.jsonl').read_text().splitlines()) == 3
    # honest default: scheduler steps at epoch end (lr decays after epoch 3)
    assert [h['lr'] for h in result['history']] == [1e-2] * 3


def test_paper_protocol_reports_best_hr_and_mrr_separately(sessions, tmp_path):
    cfg = _cfg(protocol='paper', epochs=4)
    sp = _splits(cfg, sessions)
    assert sp.valid is None and len(sp.train) == len(expand_prefixes(sessions[0]))
    result = Trainer(_model(sessions), cfg, out_dir=tmp_path).fit(sp.train, sp.valid,
                                                                    sp.test)
    assert result['protocol'] == 'paper'
    assert "papers' protocol" in result['protocol_description']
    assert 'optimistic' in result['protocol_description']
    hist = result['history']
    assert all('test' in h for h in hist)
    for key in ('HR@20', 'MRR@20'):
        values = [h['test'][key] for h in hist]
        best = max(values)
        last_best_epoch = max(i + 1 for i, v in enumerate(values) if v == best)  # ">="
        assert result['best_per_metric'][key] == {'value': best, 'epoch': last_best_epoch}
        assert result['epoch_chosen'][key] == last_best_epoch
        assert result['test'][key] == best
    # released schedule: scheduler.step() at epoch start -> first decay after epoch 2
    assert [h['lr'] for h in hist] == pytest.approx([1e-2, 1e-2, 1e-3, 1e-3])
    assert 'first decay after epoch 2' in result['schedule']
    assert "papers' protocol" in (tmp_path / 'train.log').read_text()
    assert cfg.effective_patience == 10


def test_early_stopping_with_patience(sessions):
    cfg = _cfg(epochs=10, patience=2, lr=1e-12)  # nothing learnt -> no improvement
    sp = _splits(cfg, sessions)
    result = Trainer(_model(sessions, 'srgnn'), cfg).fit(sp.train, sp.valid, sp.test)
    assert result['stopped'] == 'early_stopping'
    assert result['epochs_run'] == 3 and result['epoch_chosen'] == 1


# ------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip(sessions, tmp_path):
    cfg = _cfg(epochs=2)
    sp = _splits(cfg, sessions)
    model = _model(sessions)
    trainer = Trainer(model, cfg, out_dir=tmp_path, extra={'data': 'tiny'})
    result = trainer.fit(sp.train, sp.valid, sp.test)
    # load with weights_only=True directly: only tensors and plain containers
    raw = torch.load(tmp_path / 'best.pt', weights_only=True)
    assert raw['format_version'] == FORMAT_VERSION
    ckpt = load_checkpoint(tmp_path / 'best.pt')
    for key in ('model', 'num_items', 'item_ids', 'optimizer', 'scheduler', 'rng', 'epoch',
                'step', 'history', 'best', 'protocol', 'train_config'):
        assert key in ckpt
    assert ckpt['epoch'] == result['epoch_chosen'] and ckpt['num_items'] == sessions[2]
    assert ckpt['item_ids'] is None and ckpt['protocol'] == 'honest'
    assert ckpt['model']['name'] == 'tagnn' and ckpt['extra']['data'] == 'tiny'
    assert set(ckpt['rng']) >= {'python', 'numpy', 'torch', 'cuda', 'loader'}
    assert TrainConfig.from_dict(ckpt['train_config']) == cfg
    rebuilt = build_model(ckpt)
    for k, v in model.state_dict().items():  # after fit: the chosen (best) weights
        assert torch.equal(rebuilt.state_dict()[k], v)
    assert evaluate(rebuilt, sp.test) == pytest.approx(result['test'])
    last = load_checkpoint(tmp_path / 'last.pt')
    assert last['epoch'] == 2 and len(last['history']) == 2


def test_checkpoint_errors_name_file_and_problem(tmp_path, sessions):
    bad = tmp_path / 'garbage.pt'
    bad.write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='garbage.pt.*not a torch checkpoint'):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match='missing.pt does not exist'):
        load_checkpoint(tmp_path / 'missing.pt')
    torch.save({'state_dict': {}}, tmp_path / 'other.pt')
    with pytest.raises(CheckpointError, match='other.pt is not a tagnn-pyg checkpoint'):
        load_checkpoint(tmp_path / 'other.pt')
    model = _model(sessions)
    path = save_checkpoint(tmp_path / 'ok.pt', model=model, model_name='tagnn',
                           num_items=sessions[2])
    ckpt = torch.load(path, weights_only=True)
    ckpt['format_version'] = FORMAT_VERSION + 1
    torch.save(ckpt, tmp_path / 'future.pt')
    with pytest.raises(CheckpointError, match=f'future.pt has format version '
                                              f'{FORMAT_VERSION + 1}'):
        load_checkpoint(tmp_path / 'future.pt')
    data = path.read_bytes()
    (tmp_path / 'truncated.pt').write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='truncated.pt'):
        load_checkpoint(tmp_path / 'truncated.pt')

    torch.save({'format': 'tagnn-pyg-checkpoint', 'x': Evil()}, tmp_path / 'evil.pt')
    with pytest.raises(CheckpointError, match='evil.pt could not be loaded safely'):
        load_checkpoint(tmp_path / 'evil.pt')


@pytest.mark.parametrize('protocol', ['honest', 'paper'])
def test_resume_ends_exactly_where_an_uninterrupted_run_ends(sessions, tmp_path, protocol):
    # dropout makes the per-epoch RNG matter (TAGNN++ with dropout 0.3)
    def run(out, epochs, resume=False, hook=None):
        cfg = _cfg(epochs=epochs, protocol=protocol, lr_decay_step=1, lr_decay=0.5)
        sp = _splits(cfg, sessions)
        model = _model(sessions, 'tagnnpp', hidden_channels=16, heads=2, dropout=0.3)
        trainer = Trainer(model, cfg, out_dir=out, on_batch_end=hook)
        return model, trainer.fit(sp.train, sp.valid, sp.test, resume=resume)

    straight, r_straight = run(tmp_path / 'a', 3)
    # 1 epoch, then resume to 3
    run(tmp_path / 'b', 1)
    resumed, r_resumed = run(tmp_path / 'b', 3, resume=True)
    # killed in the middle of epoch 3, then resumed

    def kill(epoch, batch):
        if epoch == 3 and batch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / 'c', 3, hook=kill)
    assert load_checkpoint(tmp_path / 'c' / 'last.pt')['epoch'] == 2
    killed, r_killed = run(tmp_path / 'c', 3, resume=True)

    for other, r_other in ((resumed, r_resumed), (killed, r_killed)):
        for k, v in straight.state_dict().items():
            torch.testing.assert_close(other.state_dict()[k], v, rtol=0, atol=1e-6)
        assert r_other['test'] == r_straight['test']
        assert r_other['epoch_chosen'] == r_straight['epoch_chosen']
        assert [h['train_loss'] for h in r_other['history']] == pytest.approx(
            [h['train_loss'] for h in r_straight['history']], abs=1e-9)
    last = [load_checkpoint(tmp_path / d / 'last.pt') for d in 'abc']
    for ck in last[1:]:
        for k, v in last[0]['model']['state_dict'].items():
            torch.testing.assert_close(ck['model']['state_dict'][k], v, rtol=0, atol=1e-6)
        assert ck['step'] == last[0]['step']


@pytest.mark.parametrize('step_at_start', [True, False])
def test_mid_epoch_checkpoint_resumes_exactly(sessions, tmp_path, step_at_start):
    """checkpoint_every=N writes last.pt every N batches; a run killed in the middle of an
    epoch resumes from the last of them (not from the epoch start) and ends exactly where an
    uninterrupted run ends: weights, per-epoch losses, test metrics, steps."""
    every = 2
    calls = []

    def run(out, resume=False, hook=None, checkpoint_every=every):
        cfg = _cfg(epochs=3, protocol='paper', lr_decay_step=1, lr_decay=0.5,
                   scheduler_step_at_epoch_start=step_at_start,
                   checkpoint_every=checkpoint_every)
        sp = _splits(cfg, sessions)
        model = _model(sessions, 'tagnnpp', hidden_channels=16, heads=2, dropout=0.3)
        trainer = Trainer(model, cfg, out_dir=out, on_batch_end=hook)
        return model, trainer.fit(sp.train, sp.valid, sp.test, resume=resume)

    straight, r_straight = run(tmp_path / 'a', checkpoint_every=None)
    n_batches = r_straight['history'][0]['steps']
    assert n_batches > 2 * every + 1

    def kill(epoch, batch):
        calls.append((epoch, batch))
        if epoch == 2 and batch == 2 * every:          # the 5th batch of epoch 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / 'b', hook=kill)
    ckpt = load_checkpoint(tmp_path / 'b' / 'last.pt')
    assert ckpt['epoch'] == 1 and ckpt['state']['partial']['batches'] == 2 * every
    assert ckpt['step'] == n_batches + 2 * every
    calls.clear()
    killed, r_killed = run(tmp_path / 'b', resume=True,
                           hook=lambda e, b: calls.append((e, b)))
    assert calls[0] == (2, 2 * every)          # continued with the batch after the checkpoint
    assert_same_run(killed, r_killed, straight, r_straight)
    assert r_killed['history'][-1]['steps'] == r_straight['history'][-1]['steps']
    # at the end of an epoch the ordinary checkpoint replaces the partial one
    assert load_checkpoint(tmp_path / 'b' / 'last.pt')['state']['partial'] is None


def test_checkpoint_every_must_be_positive():
    with pytest.raises(ValueError, match='checkpoint_every must be a positive integer or '
                                         'None, got 0'):
        TrainConfig(checkpoint_every=0)


def test_resume_refuses_changed_settings(sessions, tmp_path):
    cfg = _cfg(epochs=1)
    sp = _splits(cfg, sessions)
    Trainer(_model(sessions), cfg, out_dir=tmp_path).fit(sp.train, sp.valid, sp.test)
    with pytest.raises(CheckpointError, match=r'training settings differ: lr'):
        Trainer(_model(sessions), _cfg(epochs=2, lr=0.5), out_dir=tmp_path).fit(
            sp.train, sp.valid, sp.test, resume=True)
    with pytest.raises(CheckpointError, match='model config differs'):
        Trainer(_model(sessions, hidden_channels=8), _cfg(epochs=2),
                out_dir=tmp_path).fit(sp.train, sp.valid, sp.test, resume=True)
    with pytest.raises(CheckpointError, match='does not exist'):
        Trainer(_model(sessions), cfg, out_dir=tmp_path / 'new').fit(
            sp.train, sp.valid, sp.test, resume=True)


def test_resume_accepts_a_checkpoint_written_before_an_option_existed(sessions, tmp_path):
    """A TAGNN++ ``last.pt`` whose config predates ``released_padding`` resumes (the missing
    option is its default, as ``build_model`` builds it); a missing option whose default
    differs from the model's value is still a config difference. TAGNN's and SR-GNN's
    configs keep their keys."""
    cfg = _cfg(epochs=1)
    sp = _splits(cfg, sessions)
    kw = dict(hidden_channels=16, heads=2, layer='released')
    Trainer(_model(sessions, 'tagnnpp', **kw), cfg, out_dir=tmp_path).fit(
        sp.train, sp.valid, sp.test)
    ckpt = load_checkpoint(tmp_path / 'last.pt')
    del ckpt['model']['config']['released_padding']          # as written before the option
    torch.save(ckpt, tmp_path / 'last.pt')
    assert build_model(ckpt).config()['released_padding'] is False
    result = Trainer(_model(sessions, 'tagnnpp', **kw), _cfg(epochs=2),
                     out_dir=tmp_path).fit(sp.train, sp.valid, sp.test, resume=True)
    assert len(result['history']) == 2
    with pytest.raises(CheckpointError, match=r"model config differs in \['released_padding'\]"):
        Trainer(_model(sessions, 'tagnnpp', released_padding=True, **kw),
                _cfg(epochs=3), out_dir=tmp_path).fit(sp.train, sp.valid, sp.test,
                                                      resume=True)
    # the TAGNN and SR-GNN runs resume from checkpoints whose configs hold exactly these keys
    assert set(_model(sessions, 'tagnn').config()) == {
        'num_items', 'hidden_channels', 'num_steps', 'score', 'session', 'hybrid',
        'chunk_size', 'released_padding'}
    assert set(_model(sessions, 'srgnn').config()) == {
        'num_items', 'hidden_channels', 'num_steps', 'hybrid'}


# ---------------------------------------------------------------- robustness


def _poison_batch(model, epoch, batch):
    """Make the model's output NaN in batch ``batch`` (1-based) of epoch ``epoch``.
    Returns ``(state, count)``: pass ``count`` as ``on_batch_end``; ``state``
    then holds the epoch and the number of finished batches."""
    state = {'epoch': 1, 'batch': 0}

    def count(e, k):
        state['epoch'], state['batch'] = e, k + 1

    def poison(module, inputs, output):
        if state['epoch'] == epoch and state['batch'] == batch - 1:
            return output * float('nan')
        return output

    model.register_forward_hook(poison)
    return state, count


def test_non_finite_loss_stops_with_epoch_and_batch(sessions, tmp_path):
    cfg = _cfg(epochs=3)
    sp = _splits(cfg, sessions)
    model = _model(sessions, 'srgnn')
    state, count = _poison_batch(model, epoch=2, batch=4)
    trainer = Trainer(model, cfg, out_dir=tmp_path, on_batch_end=count)
    after_epoch_1 = {}

    def snapshot(epoch, batch):
        count(epoch, batch)
        if epoch == 2 and batch == 0:
            after_epoch_1.update(load_checkpoint(tmp_path / 'last.pt')['model']['state_dict'])

    trainer.on_batch_end = snapshot
    with pytest.raises(NonFiniteLossError, match=r'epoch 2, batch 4 of \d+') as info:
        trainer.fit(sp.train, sp.valid, sp.test)
    assert 'last.pt (epoch 1) was kept' in str(info.value)
    kept = load_checkpoint(tmp_path / 'last.pt')
    assert kept['epoch'] == 1
    for k, v in after_epoch_1.items():
        assert torch.equal(kept['model']['state_dict'][k], v)
        assert torch.isfinite(v).all()
    assert not (tmp_path / 'metrics.json').exists()


@pytest.mark.parametrize('bad_batch,checkpoint_every,batches_done',
                         [(2, None, 4), (3, 4, 3)],
                         ids=['found-at-the-next-check', 'found-before-a-mid-epoch-save'])
def test_non_finite_loss_off_the_cpu_is_found_later_and_named_exactly(
        sessions, tmp_path, monkeypatch, bad_batch, checkpoint_every, batches_done):
    """On an accelerator the loss is checked every check_every batches (no
    synchronisation per batch), and always before a checkpoint is written: the
    error still names the first bad batch, and no checkpoint holds its weights.
    The CPU is treated as an accelerator here (on the CPU path training would
    stop inside the bad batch, after bad_batch - 1 finished ones)."""
    import tagnn_pyg.train.trainer as trainer_module
    monkeypatch.setattr(trainer_module, 'host_reads_are_free', lambda device: False)
    cfg = _cfg(epochs=3, check_every=5, checkpoint_every=checkpoint_every)
    sp = _splits(cfg, sessions)
    model = _model(sessions, 'srgnn')
    state, count = _poison_batch(model, epoch=2, batch=bad_batch)
    trainer = Trainer(model, cfg, out_dir=tmp_path, on_batch_end=count)
    with pytest.raises(NonFiniteLossError, match=rf'epoch 2, batch {bad_batch} of \d+'):
        trainer.fit(sp.train, sp.valid, sp.test)
    # batches after the bad one ran (the check comes later), up to the check at
    # batch 5 or the one before the mid-epoch save at batch 4, not past it
    assert state['epoch'] == 2 and state['batch'] == batches_done
    kept = load_checkpoint(tmp_path / 'last.pt')
    assert kept['epoch'] == 1 and kept['state']['partial'] is None   # no mid-epoch save
    assert all(torch.isfinite(v).all() for v in kept['model']['state_dict'].values())


def test_agc_used_when_configured(sessions, monkeypatch):
    from tagnn_pyg.optim import AGC
    calls = []
    real = AGC.clip_
    monkeypatch.setattr(AGC, 'clip_', lambda self: (calls.append(1), real(self))[1])
    sp = _splits(_cfg(epochs=1), sessions)
    steps = math.ceil(len(sp.train) / 64)
    Trainer(_model(sessions), _cfg(epochs=1)).fit(sp.train, sp.valid)
    assert calls == []
    trainer = Trainer(_model(sessions), _cfg(epochs=1, agc=True))
    emb = trainer.model.embedding.weight
    assert all(p is not emb for p in trainer.agc.parameters)  # table exempt
    trainer.fit(sp.train, sp.valid)
    assert len(calls) == steps


def test_amp_bf16_trains(sessions):
    cfg = _cfg(epochs=1, amp=True)
    sp = _splits(cfg, sessions)
    result = Trainer(_model(sessions, 'srgnn'), cfg).fit(sp.train, sp.valid, sp.test)
    assert math.isfinite(result['history'][0]['train_loss'])


# ---------------------------------------------------------- splits, evaluate


def test_make_splits_temporal_random_and_caps(sessions):
    train, test, _ = sessions
    cfg = _cfg()
    sp = make_splits(cfg, train_sessions=train, test=expand_prefixes(test))
    n_valid = len(train) - round(len(train) * 0.9)
    assert sp.valid.equals(expand_prefixes(train[-n_valid:]))
    assert sp.train.equals(expand_prefixes(train[:-n_valid]))
    assert sp.train_sessions == [list(s) for s in train[:-n_valid]]
    with pytest.raises(ValueError, match='temporal validation split needs whole'):
        make_splits(cfg, train=expand_prefixes(train))
    rnd = make_splits(_cfg(valid='random'), train=expand_prefixes(train))
    assert len(rnd.train) + len(rnd.valid) == len(expand_prefixes(train))
    assert rnd.train_sessions is None
    capped = make_splits(_cfg(max_train=200, max_test=50), train_sessions=train,
                         test=expand_prefixes(test))
    kept = sum(len(s) - 1 for s in train[-40:])
    assert len(capped.train) + len(capped.valid) <= 200 and len(capped.test) == 50
    assert len(capped.train) + len(capped.valid) > 150 or kept < 150


def test_evaluate_matches_hand_computed_ranks():
    # 4 items; fixed scores per session; targets with ranks 1, 3, 5 (ties count against)
    table = torch.tensor([[float('-inf'), 4., 3., 2., 1.],
                          [float('-inf'), 4., 3., 2., 1.],
                          [float('-inf'), 1., 1., 1., 1.]])

    class Fixed(torch.nn.Module):
        def forward(self, batch):
            return table[batch.x[batch.last] - 1]

    seqs = SessionSequences.from_lists([[1], [2], [3]], [1, 3, 2])
    m = evaluate(Fixed(), seqs, ks=(1, 3), batch_size=2)
    # ranks: 1, 3, 4 (all four tie in row 3)
    assert m['HR@1'] == pytest.approx(100 / 3) and m['HR@3'] == pytest.approx(200 / 3)
    assert m['MRR@3'] == pytest.approx(100 * (1 + 1 / 3) / 3)
    assert m['NDCG@3'] == pytest.approx(100 * (1 + 1 / math.log2(4)) / 3)
    assert m['count'] == 3


def test_config_validation_and_presets():
    from tagnn_pyg.presets import get_preset
    with pytest.raises(ValueError, match="protocol must be one of"):
        TrainConfig(protocol='best')
    with pytest.raises(ValueError, match=r"needs K=20 in ks"):
        TrainConfig(ks=(5, 10))
    with pytest.raises(ValueError, match="unknown training settings"):
        TrainConfig.from_dict({'learning_rate': 1})
    cfg = TrainConfig.from_preset(get_preset('tagnnpp-paper-diginetica'), epochs=2)
    assert (cfg.lr, cfg.batch_size, cfg.agc, cfg.epochs) == (1e-4, 50, True, 2)
    assert cfg.step_at_epoch_start is True
    assert TrainConfig().step_at_epoch_start is False
    assert TrainConfig(protocol='paper').step_at_epoch_start is True
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


# ----------------------------------------------------------------------- AdamW


def test_optimizer_setting_is_checked_and_described():
    with pytest.raises(ValueError, match=r"optimizer must be one of \('adam', 'adamw'\).*"
                                         r"got 'sgd'"):
        TrainConfig(optimizer='sgd')
    with pytest.raises(ValueError, match=r"got 'AdamW'"):   # names are case-sensitive
        TrainConfig(optimizer='AdamW')
    assert TrainConfig().optimizer == 'adam'
    adam = TrainConfig(weight_decay=1e-5).describe()['schedule']
    adamw = TrainConfig(optimizer='adamw', weight_decay=1e-4).describe()['schedule']
    assert adam.startswith('Adam lr 0.001, L2 1e-05,') and 'AdamW' not in adam
    assert adamw.startswith('AdamW lr 0.001, decoupled weight decay 0.0001 (biases, norms, '
                            'PReLU exempt),') and 'L2' not in adamw
    assert TrainConfig(lr_decay=1.0).describe()['schedule'] == \
        'Adam lr 0.001, L2 1e-05, constant learning rate (no decay)'


def test_trainer_builds_the_configured_optimizer(sessions):
    model = _model(sessions, 'lessr', hidden_channels=8)
    opt = Trainer(model, _cfg(optimizer='adamw', weight_decay=1e-4)).optimizer
    assert isinstance(opt, torch.optim.AdamW)
    assert [g['weight_decay'] for g in opt.param_groups] == [1e-4, 0.0]
    n_exempt = sum(1 for n, _ in model.named_parameters()
                   if 'bias' in n or 'norm' in n or '.act.' in n)
    assert len(opt.param_groups[1]['params']) == n_exempt
    opt = Trainer(_model(sessions, 'lessr', hidden_channels=8), _cfg()).optimizer
    assert type(opt) is torch.optim.Adam and len(opt.param_groups) == 1


def test_adamw_resume_ends_exactly_where_an_uninterrupted_run_ends(sessions, tmp_path):
    """LESSR with AdamW (two parameter groups) killed in the middle of epoch 2 and resumed
    from last.pt ends where the uninterrupted run ends (weights, losses, test metrics);
    the resumed optimizer still has both groups with their decays."""
    def run(out, resume=False, hook=None):
        cfg = _cfg(epochs=2, protocol='paper', optimizer='adamw', weight_decay=1e-2,
                   lr_decay_step=1, lr_decay=0.5)
        sp = _splits(cfg, sessions)
        model = _model(sessions, 'lessr', hidden_channels=8, dropout=0.2)
        trainer = Trainer(model, cfg, out_dir=out, on_batch_end=hook)
        return model, trainer, trainer.fit(sp.train, sp.valid, sp.test, resume=resume)

    straight, _, r_straight = run(tmp_path / 'a')

    def kill(epoch, batch):
        if epoch == 2 and batch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / 'b', hook=kill)
    ckpt = load_checkpoint(tmp_path / 'b' / 'last.pt')
    assert ckpt['epoch'] == 1
    assert [g['weight_decay'] for g in ckpt['optimizer']['param_groups']] == [1e-2, 0.0]
    killed, trainer, r_killed = run(tmp_path / 'b', resume=True)
    assert [g['weight_decay'] for g in trainer.optimizer.param_groups] == [1e-2, 0.0]
    assert_same_run(killed, r_killed, straight, r_straight)
    assert 'decoupled weight decay' in r_killed['schedule']
