"""GradientSNR: against R explicit training-step gradients on the same noise, leaves training
untouched, and shows Rainforth et al.'s trend (encoder SNR falls with K, decoder SNR rises)."""
from __future__ import annotations

import pytest
import torch

from iwae_pl import ConfigError, make_objective
from iwae_pl.callbacks import GradientSNR, gradient_snr

from test_callbacks_common import digits, logged, make_trainer, tiny_module, single_thread  # noqa: F401


def explicit_snr(module, x, R, seed):
    """R calls of the module's own training step, ``.backward()`` into ``.grad``, on the global RNG
    seeded like the callback's private generator (same stream), then |mean| / std per scalar."""
    torch.manual_seed(seed)
    grads = {"encoder": [], "decoder": []}
    for _ in range(R):
        module.zero_grad()
        module.training_step((x, torch.arange(len(x))), 0)["loss"].backward()
        for name in grads:
            grads[name].append(torch.cat([p.grad.flatten() for p in getattr(module.net, name).parameters()]))
    out = {}
    for name, g in grads.items():
        g = torch.stack(g).double()
        mean, std = g.mean(0), g.std(0)
        out[name] = (mean[std > 0].abs() / std[std > 0]).mean().item()
    return out


@pytest.mark.parametrize("objective,K,estimator",
                         [("iwae", 4, "reparam"), ("miwae", 3, "dreg"), ("vae", 2, "stl")])
def test_matches_explicit_training_step_gradients(objective, K, estimator):
    M = 2 if objective == "miwae" else 1
    module = tiny_module(({"latent": 3, "hidden": [8]}, {"latent": 2, "hidden": [5]}), objective=objective,
                         M=M, K=K, estimator=estimator).double()
    x = (torch.rand(6, 64, generator=torch.Generator().manual_seed(1)) < 0.4).double()
    got = gradient_snr(module.net, module.objective, x, 12, torch.Generator().manual_seed(3))
    want = explicit_snr(module, x, 12, seed=3)
    assert got == pytest.approx(want, rel=1e-9)
    assert all(p.grad is not None for p in module.parameters())   # explicit_snr wrote .grad
    # a different noise stream gives different values: the comparison above is not vacuous
    assert gradient_snr(module.net, module.objective, x, 12, torch.Generator().manual_seed(4))["encoder"] != \
        pytest.approx(want["encoder"], rel=1e-6)


def test_leaves_training_untouched(tmp_path):
    def fit(callbacks):
        torch.manual_seed(0)
        module = tiny_module(K=3)
        trainer = make_trainer(tmp_path, callbacks, max_epochs=2, limit_train_batches=4, limit_val_batches=0)
        trainer.fit(module, datamodule=digits())
        return module, trainer

    plain, _ = fit([])
    snr = GradientSNR(every_n_epochs=1, num_estimates=5, batch_size=8)
    measured, trainer = fit([snr])
    for (name, a), b in zip(plain.state_dict().items(), measured.state_dict().values()):
        assert torch.equal(a, b), name          # same global RNG stream, same optimizer steps
    assert len(logged(trainer, "snr/encoder")) == 2 and len(logged(trainer, "snr/decoder")) == 2
    # outside a fit: no .grad, the mode and the global RNG state restored, deterministic
    measured.zero_grad(set_to_none=True)
    measured.eval()
    state = torch.get_rng_state()
    first = snr.measure(trainer, measured)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(p.grad is None for p in measured.parameters()) and not measured.net.training
    assert snr.measure(trainer, measured) == first


def test_encoder_snr_falls_and_decoder_snr_rises_with_k():
    """Rainforth et al. 2018: SNR(encoder) = O(1/sqrt(K)), SNR(decoder) = O(sqrt(K)) for IWAE(K)."""
    module = tiny_module(({"latent": 4, "hidden": [32]},), K=8)
    net, objective = module.net, module.objective
    dm = digits()
    dm.setup("fit")
    net.set_visible_bias(dm.train_mean())
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for epoch in range(4):           # 4 epochs (260 steps) of IWAE(8): a partly trained model
        for x, _ in dm.train_dataloader():
            optimizer.zero_grad()
            (-objective(net.log_weights(x, objective.sample_shape)).surrogate.mean()).backward()
            optimizer.step()
    x = dm.val_dataloader().dataset.data[:20]
    snr = {k: gradient_snr(net, make_objective("iwae", 1, k), x, 50, torch.Generator().manual_seed(0))
           for k in (1, 64)}
    assert snr[64]["encoder"] < 0.7 * snr[1]["encoder"], snr
    assert snr[64]["decoder"] > 1.5 * snr[1]["decoder"], snr


def test_bad_settings():
    with pytest.raises(ConfigError, match="num_estimates must be an integer >= 2, got 1"):
        GradientSNR(num_estimates=1)
    with pytest.raises(ConfigError, match="unknown SNR source 'dev'"):
        GradientSNR(source="dev")
