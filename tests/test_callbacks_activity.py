"""ActivityStats: A_u against torch.var of the posterior means, units dead by construction, the counts
and figure of a real Trainer run, the pruning check in test."""
from __future__ import annotations

import pytest
import torch

from iwae_pl import ConfigError
from iwae_pl.callbacks import ActivityStats, unit_activity
from iwae_pl.diagnostics.activity import posterior_mean_moments
from iwae_pl.model.noise import indexed_normal

from test_callbacks_common import digits, logged, make_trainer, tiny_module, single_thread  # noqa: F401

LAYERS = ({"latent": 6, "hidden": [16]}, {"latent": 4, "hidden": [8]})
DEAD = {0: [1, 4], 1: [2]}   # layer -> units whose posterior mean ignores the input


def kill_units(net, dead=DEAD, gain=4.0):
    """Zero the rows of the mean half of the head (weight and bias) for the dead units: their mean is
    the constant 0. The other units' mean rows are scaled up so that they are clearly active."""
    with torch.no_grad():
        for layer, units in dead.items():
            head = net.encoder.blocks[layer].head
            d = head.out_features // 2
            head.weight[:d] *= gain
            head.weight[units] = 0.0
            head.bias[units] = 0.0


def data(n=120, seed=0):
    return (torch.rand(n, 64, generator=torch.Generator().manual_seed(seed)) < 0.3).float(), torch.arange(n)


def test_activity_is_the_variance_of_the_posterior_means():
    net = tiny_module(LAYERS).net.double()
    x, index = data()
    x = x.double()
    a_mean = unit_activity(net, x, index, propagate="mean")
    means = net.posterior_means(x, "mean")
    for a, m in zip(a_mean, means):
        torch.testing.assert_close(a, torch.var(m, dim=0, unbiased=False), rtol=1e-10, atol=1e-14)
    # "sample": layer 2 is fed one sample of layer 1, drawn from the per-index noise
    a_sample = unit_activity(net, x, index, propagate="sample", seed=5)
    e1, _ = indexed_normal(5, index, 0, 1, net.latent_sizes, dtype=x.dtype, stream="activity_noise")
    m1, log_std1 = net.encoder.blocks[0](x)
    m2, _ = net.encoder.blocks[1](m1 + log_std1.exp() * e1[0])
    torch.testing.assert_close(a_sample[0], torch.var(m1, 0, unbiased=False), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(a_sample[1], torch.var(m2, 0, unbiased=False), rtol=1e-10, atol=1e-14)
    assert not torch.allclose(a_sample[1], a_mean[1])
    # batching does not matter, and moments of two halves add up to those of the whole
    halves = [posterior_mean_moments(net, x[i::2], index[i::2], "sample", 5, batch_size=7) for i in (0, 1)]
    whole = posterior_mean_moments(net, x, index, "sample", 5)
    for h0, h1, w in zip(*halves, whole):
        torch.testing.assert_close(h0 + h1, w, rtol=1e-12, atol=1e-10)


def test_units_dead_by_construction_are_exactly_the_inactive_ones():
    net = tiny_module(LAYERS).net
    kill_units(net)
    x, index = data()
    for propagate in ("sample", "mean"):
        activity = unit_activity(net, x, index, propagate)
        for layer, a in enumerate(activity):
            inactive = torch.nonzero(a <= 1e-2).flatten().tolist()
            assert inactive == DEAD[layer], (propagate, layer, a)
            assert (a[DEAD[layer]] == 0).all()


def fit_with_dead_units(tmp_path, callback, **trainer_kw):
    module = tiny_module(LAYERS)
    module.hparams.lr = 0.0  # Adam at lr 0, so the dead units stay dead (the constructor takes lr > 0 only)
    kill_units(module.net)
    trainer = make_trainer(tmp_path, [callback], limit_train_batches=2, limit_val_batches=0, **trainer_kw)
    dm = digits()
    trainer.fit(module, datamodule=dm)
    return trainer, module, dm


def test_trainer_run_logs_counts_and_writes_the_figure(tmp_path):
    callback = ActivityStats(every_n_epochs=2, num_examples=150, source="val")
    trainer, module, dm = fit_with_dead_units(tmp_path, callback, max_epochs=3)
    # expected: A_u over the first 150 validation digits, computed directly
    x = dm.val_dataloader().dataset.data[:150]
    expected = unit_activity(module.net, x, torch.arange(150), "sample", seed=0)
    for a, e in zip(callback.activity, expected):
        torch.testing.assert_close(a, e)
    assert logged(trainer, "active/layer1") == [4.0, 4.0]         # epochs 2 and 3 (the last)
    assert logged(trainer, "active/layer2") == [3.0, 3.0]
    assert logged(trainer, "active/total") == [7.0, 7.0]
    figures = sorted(p.name for p in (tmp_path / "run" / "version_0" / "figures").iterdir())
    assert figures == ["activity_epoch0001.png", "activity_epoch0002.png"]


def test_pruning_check_in_test(tmp_path):
    def run(threshold):
        callback = ActivityStats(num_examples=100, threshold=threshold, prune_check_k=16)
        trainer, module, dm = fit_with_dead_units(tmp_path, callback, max_epochs=1)
        trainer.test(module, datamodule=dm, verbose=False)
        return trainer.callback_metrics

    some = run(threshold=1e-12)          # only the dead units (A_u = 0) are pruned
    assert some["active/total"] == 7     # (an untrained decoder still reads them: no claim on the NLL here)
    assert 0 < some["active/nll_all"] < 64 * 0.7
    assert abs(some["active/nll_pruned"] - some["active/nll_all"]) > 1e-3
    prune_all = run(threshold=1e6)       # every unit pruned: x is decoded from h1 = E_q[h1|x] alone
    assert prune_all["active/total"] == 0
    assert prune_all["active/nll_all"] == pytest.approx(some["active/nll_all"])    # same model, same noise
    assert abs(prune_all["active/nll_pruned"] - prune_all["active/nll_all"]) > 1.0


def test_pruning_nothing_changes_nothing(tmp_path):
    module = tiny_module(LAYERS)
    trainer = make_trainer(tmp_path, [ActivityStats(num_examples=100, threshold=1e-30, prune_check_k=16)])
    trainer.test(module, datamodule=digits(), verbose=False)
    m = trainer.callback_metrics
    assert m["active/total"] == 10
    torch.testing.assert_close(m["active/nll_pruned"], m["active/nll_all"], rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(source="training"), "unknown activity source 'training'"),
    (dict(propagate="median"), "unknown propagate 'median'"),
    (dict(threshold=0.0), "activity threshold must be a finite number in (0.0, inf]"),
    (dict(prune_check_stages=["fit"]), "unknown prune check stage 'fit'"),
    (dict(num_examples=1), "num_examples must be an integer >= 2"),
])
def test_bad_settings(kwargs, needle):
    with pytest.raises(ConfigError) as err:
        ActivityStats(**kwargs)
    assert needle in str(err.value)
