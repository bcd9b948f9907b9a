"""IWAEModule: the training step's gradients, evaluation at beta = 1, the Burda schedule."""
from __future__ import annotations

import pytest
import torch

from iwae_pl import ConfigError, LayerSpec
from iwae_pl.lightning.module import IWAEModule
from iwae_pl.model.schedules import burda_lr_factor, burda_stage, burda_total_epochs

LAYERS = [LayerSpec(4, (16,)), LayerSpec(3, (8,))]


def module(dtype=torch.float32, **kw):
    torch.manual_seed(0)
    return IWAEModule(input_dim=12, layers=LAYERS, **kw).to(dtype)


def step_grads(m, x, seed=1):
    torch.manual_seed(seed)
    m.zero_grad()
    m.training_step((x, torch.arange(len(x))), 0)["loss"].backward()
    return ({n: p.grad.clone() for n, p in m.net.encoder.named_parameters()},
            {n: p.grad.clone() for n, p in m.net.decoder.named_parameters()})


def test_piwae_training_step_gradients():
    """Encoder: exactly MIWAE(M,K)'s gradient; decoder: exactly IWAE(M*K)'s, on the same noise."""
    x = (torch.rand(7, 12, generator=torch.Generator().manual_seed(0)) < 0.5).double()
    f64 = torch.float64  # float64 so that "exactly" can be checked to 1e-10
    enc, dec = step_grads(module(f64, objective="piwae", M=4, K=3), x)
    miwae_enc, miwae_dec = step_grads(module(f64, objective="miwae", M=4, K=3), x)
    iwae_enc, iwae_dec = step_grads(module(f64, objective="iwae", K=12), x)  # same draws, laid out [1, 12, B]
    for name in enc:
        torch.testing.assert_close(enc[name], miwae_enc[name], rtol=1e-10, atol=1e-12)
    for name in dec:
        torch.testing.assert_close(dec[name], iwae_dec[name], rtol=1e-10, atol=1e-12)
    assert any((dec[n] - miwae_dec[n]).abs().max() > 1e-4 for n in dec)  # the groups really differ
    assert any((enc[n] - iwae_enc[n]).abs().max() > 1e-4 for n in enc)


def test_warmup_beta_reaches_training_but_not_reported_bound():
    x = (torch.rand(5, 12, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    m = module(objective="iwae", K=4)
    torch.manual_seed(3)
    out1 = m.training_step((x, torch.arange(5)), 0)
    m.warmup_beta = 0.0
    torch.manual_seed(3)
    out0 = m.training_step((x, torch.arange(5)), 0)
    assert abs(out0["loss"].item() - out1["loss"].item()) > 1e-3     # beta changes the training loss
    torch.testing.assert_close(out0["log_w"], out1["log_w"])          # the reported log-weights are at beta = 1
    index = torch.arange(5)
    torch.testing.assert_close(m.eval_log_weights(x, index).value, module(objective="iwae", K=4).eval_log_weights(x, index).value)


def test_bad_objective_combination_is_a_config_error():
    with pytest.raises(ConfigError, match="takes M=1, got M=8"):
        module(objective="iwae", M=8, K=8)
    with pytest.raises(ConfigError, match="beta=0.5 applies only to objective 'ciwae'"):
        module(objective="miwae", beta=0.5)


def test_burda_schedule():
    assert burda_total_epochs() == 3280
    assert [burda_stage(e) for e in (0, 1, 3, 4, 12, 13, 3279, 5000)] == [0, 1, 1, 2, 2, 3, 7, 7]
    assert burda_lr_factor(0) == 1.0
    assert burda_lr_factor(13) == pytest.approx(10 ** (-3 / 7))
    m = module(lr_schedule="burda")
    sched = m.configure_optimizers()["lr_scheduler"]["scheduler"]
    opt = sched.optimizer
    lrs = []
    for _ in range(14):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] == pytest.approx(1e-3 * 10 ** (-1 / 7))
    assert lrs[4] == pytest.approx(1e-3 * 10 ** (-2 / 7)) and lrs[13] == pytest.approx(1e-3 * 10 ** (-3 / 7))
    assert [g["name"] for g in opt.param_groups] == ["encoder", "decoder"] and opt.defaults["eps"] == 1e-4


def test_checkpoint_of_python_built_module_loads_with_weights_only(tmp_path):
    """Layer specs are stored as plain dicts, so the safe (weights_only) checkpoint loader accepts them."""
    import pytorch_lightning as pl

    m = module(objective="miwae", M=2, K=3)
    trainer = pl.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(m)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    ckpt = torch.load(tmp_path / "m.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["layers"][1] == {"latent": 3, "hidden": (8,), "activation": "tanh"}
    loaded = IWAEModule.load_from_checkpoint(tmp_path / "m.ckpt")
    assert loaded.net.latent_sizes == [4, 3] and loaded.objective.sample_shape == (2, 3)
    for a, b in zip(loaded.parameters(), m.parameters()):
        torch.testing.assert_close(a, b)
