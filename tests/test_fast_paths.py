"""Fast paths give the same values as the straightforward computation, on the same noise.

Correctness only (no timing): the vectorized noise, the softplus-sum Bernoulli log-likelihood, the
evaluation-only (no autograd) network path with in-place activations, row blocks and scratch buffers,
training on the plain modules, the add-chain log-weight sum, the point-grouped L_k and L_k with
points spread over threads, and the fused Adam.
"""
from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
import torch.nn.functional as F

from iwae_pl import ConfigError, IWAENetwork, LayerSpec, log_likelihood, make_objective
from iwae_pl.model.likelihood import CPU_MAX_ROWS, CUDA_MAX_ROWS, auto_chunk, default_max_rows
from iwae_pl.model.log_weights import LogWeights
from iwae_pl.fast.bernoulli import bernoulli_log_prob
from iwae_pl.fast.inplace import mlp_forward
from iwae_pl.model.network import BernoulliBlock
from iwae_pl import rng
from iwae_pl.model.noise import BLOCK, indexed_normal

from conftest import make_data, make_net


# ------------------------------------------------------------------------------------------ noise
def straightforward_indexed_normal(seed, index, start, n, dims, dtype=torch.float32):
    """Each point's whole stream from normal 0 (one key at a time), reshaped to samples and sliced."""
    total = sum(dims)
    out = torch.empty(n, len(index), total)
    for b, i in enumerate(index.tolist()):
        stream = rng.counter_normal(rng.keys(seed, "eval_noise", torch.tensor([i])), 0, (start + n) * total)
        out[:, b] = stream.view(start + n, total)[start:]
    return [e.to(dtype) for e in out.split(list(dims), dim=-1)]


@pytest.mark.parametrize("start,n", [(0, 1), (0, 32), (0, 100), (31, 2), (40, 33), (64, 64), (5, 200)])
def test_indexed_normal_is_bit_identical_to_per_point_loop(start, n):
    index = torch.tensor([0, 7, 3, 123456, 2**40, 7])
    for dtype in (torch.float32, torch.float64):
        fast = indexed_normal(11, index, start, n, [3, 5, 2], dtype=dtype)
        ref = straightforward_indexed_normal(11, index, start, n, [3, 5, 2], dtype=dtype)
        for a, b in zip(fast, ref):
            assert a.dtype == dtype and a.is_contiguous() and a.shape == b.shape
            assert torch.equal(a, b)


def test_indexed_normal_empty_batch():
    out = indexed_normal(0, torch.zeros(0, dtype=torch.long), 0, 10, [2, 3])
    assert [tuple(e.shape) for e in out] == [(10, 0, 2), (10, 0, 3)]


# ------------------------------------------------------------------------------------------ Bernoulli term
def straightforward_bernoulli(x, logits):
    return (x * logits).sum(-1) - F.softplus(logits).sum(-1)


@pytest.mark.parametrize("shape", [(5, 7), (3, 5, 7), (2, 3, 5, 7)])
def test_bernoulli_log_prob_values_and_gradients(shape):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(*shape, generator=g, dtype=torch.float64) * 8).requires_grad_()
    x = (torch.rand(5, 7, generator=g) < 0.4).double().requires_grad_()
    fast = bernoulli_log_prob(x, logits)
    ref = straightforward_bernoulli(x, logits)
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    # F.softplus's backward treats logits > 20 as linear (derivative exactly 1), the fused backward
    # uses sigmoid(l) = 1 - e^-l there: they differ by < e^-20 ~ 2e-9 per unit of upstream gradient.
    for a, b in zip(torch.autograd.grad((fast * w).sum(), (x, logits)), torch.autograd.grad((ref * w).sum(), (x, logits))):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-8)
    assert torch.autograd.gradcheck(bernoulli_log_prob, (x, logits))


def test_bernoulli_log_prob_non_contiguous_and_extreme_logits():
    logits = torch.tensor([[-200.0, -30.0, 0.0, 30.0, 200.0]] * 4).t().contiguous().t()  # non-contiguous [4, 5]
    x = torch.tensor([[0.0, 1.0, 1.0, 0.0, 1.0]] * 4)
    torch.testing.assert_close(bernoulli_log_prob(x, logits), straightforward_bernoulli(x, logits))
    assert torch.isfinite(bernoulli_log_prob(x, logits)).all()


def test_softplus_sum_and_log_prod():
    from iwae_pl.fast.bernoulli import log_prod_, softplus_sum_
    g = torch.Generator().manual_seed(4)
    for D in (784, 16, 12, 7):  # even to 16 groups, partly, and odd
        logits = torch.randn(5, D, dtype=torch.float64, generator=g) * 30
        exact = torch.logaddexp(logits, torch.zeros(())).sum(-1)  # log(1 + e^l) (F.softplus is linear past 20)
        torch.testing.assert_close(softplus_sum_(logits.clone()), exact, rtol=1e-13, atol=1e-10)
        v = torch.rand(5, D, dtype=torch.float64, generator=g) * 1.5 + 0.5
        torch.testing.assert_close(log_prod_(v.clone()), v.log().sum(-1), rtol=1e-13, atol=1e-12)


# ------------------------------------------------------------------------------------------ evaluation path
@pytest.mark.parametrize("activation", ["tanh", "relu", "elu", "softplus", "gelu"])
def test_mlp_forward_in_place_activations(activation):
    net = IWAENetwork(9, [LayerSpec(3, (6, 5), activation)])
    mlp = net.encoder.blocks[0].mlp
    t = torch.randn(4, 9)
    keep = t.clone()
    with torch.no_grad():
        fast = mlp_forward(mlp, t)
        # tanh as 2 sigmoid(2t) - 1: equal to float rounding in absolute terms; the others bit for bit
        torch.testing.assert_close(fast, mlp(t), rtol=0, atol=2.5e-7 if activation == "tanh" else 0)
    assert torch.equal(t, keep)  # the input is never written


def test_evaluation_tanh_equals_tanh_to_rounding():
    from iwae_pl.fast.inplace import tanh_
    for dtype, tol in ((torch.float64, 1e-15), (torch.float32, 2.5e-7)):
        t = torch.linspace(-12, 12, 20001, dtype=dtype)
        y = tanh_(t.clone())
        assert (y.double() - torch.tanh(t.double())).abs().max() <= tol
        assert y.abs().max() <= 1


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
@pytest.mark.parametrize("estimator", ["reparam", "dreg"])
def test_training_runs_the_plain_modules(activation, estimator):
    """With autograd the fast flag changes nothing: the same loss and gradients, bit for bit."""
    def grads(fast):
        torch.manual_seed(0)
        net = IWAENetwork(6, [LayerSpec(4, (8, 7), activation), LayerSpec(2, (5,), activation)], fast=fast).double()
        x = make_data()
        objective = make_objective("iwae", 1, 5, estimator)
        lw = objective.log_weights(net, x, eps=net.draw_noise(x, objective.sample_shape))
        loss = -objective(lw).surrogate.mean()
        loss.backward()
        return [loss.detach(), *(p.grad for p in net.parameters())]
    fast = grads(True)
    for a, b in zip(fast, grads(False)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("B,S", [(7, (13,)), (3, (2, 5)), (600, (3,)), (1, (1100,)), (70, (9,))])
def test_visible_block_log_prob_without_autograd_matches(B, S):
    torch.manual_seed(0)
    block = BernoulliBlock(4, (6, 5), 11, "tanh").double()
    t = torch.randn(*S, B, 4, dtype=torch.float64)
    x = (torch.rand(B, 11) < 0.5).double()
    ref = straightforward_bernoulli(x, block(t))
    size_before = len(pickle.dumps(block))
    with torch.no_grad():
        fast = block.log_prob(x, t)
    assert fast.shape == ref.shape
    torch.testing.assert_close(fast, ref.detach(), rtol=1e-12, atol=1e-10)
    # the scratch buffers live in the thread's workspace: neither pickled nor deep-copied with the block
    assert len(pickle.dumps(block)) == size_before
    assert len(pickle.dumps(copy.deepcopy(block))) == size_before


def test_visible_block_steps_aside_under_autocast():
    """Under mixed precision the reference's float32 ops (softplus) must stay as autocast makes them."""
    block = BernoulliBlock(4, (6,), 11, "tanh")
    t = torch.randn(2, 3, 4)
    x = (torch.rand(3, 11) < 0.5).float()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast, ref = block.log_prob(x, t), straightforward_bernoulli(x, block(t))
    assert torch.equal(fast, ref)


def test_plain_network_runs_no_evaluation_fast_path(monkeypatch):
    """IWAENetwork(fast=False) evaluates through its plain modules: the fast paths are never called,
    and the values equal the fast network's to rounding."""
    import iwae_pl.model.network as network_module

    fast = make_net(((4, (8, 7)), (2, (5,))))
    plain = IWAENetwork(6, fast.specs, fast=False).double()
    plain.load_state_dict(fast.state_dict())
    x, index = make_data(3), torch.arange(3)
    expected = log_likelihood(fast, x, index, 64)

    def refuse(*args, **kwargs):
        raise AssertionError("a fast path ran")
    for name in ("visible_log_prob", "mlp_forward"):  # the network's only doors to iwae_pl.fast
        monkeypatch.setattr(network_module, name, refuse)
    torch.testing.assert_close(log_likelihood(plain, x, index, 64), expected, rtol=0, atol=1e-9)
    with pytest.raises(AssertionError, match="a fast path ran"):
        log_likelihood(fast, x, index, 64)


def test_visible_block_with_hooks_takes_the_plain_path():
    block = BernoulliBlock(4, (6,), 11, "tanh")
    seen = []
    block.mlp[1].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        block.log_prob(torch.ones(3, 11), torch.randn(2, 3, 4))
    assert seen == [torch.Size([2, 3, 6])]


@pytest.mark.parametrize("layers", [((3, (8,)),), ((4, (8, 7)), (2, (5,))), ((4, (6,)), (3, (5,)), (2, ()))])
def test_log_weights_without_autograd_equal_with_autograd(layers):
    net, x = make_net(layers), make_data()
    eps = net.draw_noise(x, (3, 4))
    for keep in (None, [torch.tensor([True, False, True, True][:d]) for d in net.latent_sizes]):
        ref = net.log_weights(x, (3, 4), eps=eps, keep=keep)
        with torch.no_grad():
            fast = net.log_weights(x, (3, 4), eps=eps, keep=keep)
        torch.testing.assert_close(fast.value, ref.value.detach(), rtol=1e-12, atol=1e-10)
        for a, b in zip(fast.log_p + fast.log_q + fast.means, ref.log_p + ref.log_q + ref.means):
            torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-10)


def test_log_joint_ratio_add_chain_equals_stacked_sums(net, x):
    lw = net.log_weights(x, (2, 3))
    ref = torch.stack(lw.log_p).sum(0) - torch.stack(lw.log_q).sum(0)
    torch.testing.assert_close(lw.log_joint_ratio, ref, rtol=1e-12, atol=1e-12)
    one = LogWeights(lw.log_px, lw.log_p[:1], lw.log_q[:1], lw.means[:1])
    torch.testing.assert_close(one.log_joint_ratio, lw.log_p[0] - lw.log_q[0])


# ------------------------------------------------------------------------------------------ no gradient flush
def test_log_weight_gradients_are_the_plain_normalized_weights_subnormals_included():
    """The subnormal-gradient hook is gone (it bought 0-4 % on the machines measured; torch.set_flush_denormal
    is the one-line alternative): the gradient reaching the log-weights is softmax itself, tiny entries kept."""
    log_w = torch.tensor([[[0.0], [-10.0], [-40.0], [-95.0], [-200.0]]]).requires_grad_()  # [1, 5, 1]
    objective = make_objective("iwae", 1, 5)
    (grad,) = torch.autograd.grad(objective(log_w).surrogate.sum(), log_w)
    torch.testing.assert_close(grad, torch.softmax(log_w.detach(), 1), rtol=1e-6, atol=0)
    assert 0 < grad[0, 3, 0] < torch.finfo(torch.float32).tiny  # exp(-95) ~ 5e-42: a subnormal, kept


# ------------------------------------------------------------------------------------------ L_k
def straightforward_lk(net, x, index, k, seed):
    """All k samples of every point in one pass, log-mean-exp."""
    with torch.no_grad():
        eps = indexed_normal(seed, index, 0, k, net.latent_sizes, dtype=x.dtype)
        return torch.logsumexp(net.log_weights(x, (k,), eps=eps).value, 0) - math.log(k)


@pytest.mark.parametrize("chunk,max_rows", [(None, None), (None, 64), (32, 40), (7, 3), (300, 100), (64, 10**6)])
def test_grouped_lk_equals_one_pass(chunk, max_rows):
    net = make_net(((4, (8, 7)), (2, (5,))))
    x, index = make_data(9), torch.arange(50, 59)
    ref = straightforward_lk(net, x, index, 300, seed=2)
    fast = log_likelihood(net, x, index, 300, seed=2, chunk=chunk, max_rows=max_rows)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-9)


def test_default_pass_size_follows_the_widest_layer():
    """About 2^20 activations of the widest layer per CPU pass (1,337 rows for MNIST's 784 pixels), at
    most CPU_MAX_ROWS for small models, at least one noise BLOCK; large passes on a GPU."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    mnist = IWAENetwork(784, [LayerSpec(100, (200, 200)), LayerSpec(50, (100, 100))])
    assert default_max_rows(mnist, cpu) == (1 << 20) // 784
    assert default_max_rows(IWAENetwork(64, [LayerSpec(8, (64, 64))]), cpu) == CPU_MAX_ROWS
    assert default_max_rows(IWAENetwork(16, [LayerSpec(2, (1 << 16,))]), cpu) == BLOCK
    assert default_max_rows(mnist, cuda) == CUDA_MAX_ROWS


def test_lk_edge_cases():
    net = make_net()
    assert log_likelihood(net, make_data(0), torch.zeros(0, dtype=torch.long), 10).shape == (0,)
    with pytest.raises(ConfigError, match="max_rows"):
        log_likelihood(net, make_data(2), torch.arange(2), 10, max_rows=0)
    for batch, k in [(1, 5000), (20, 5000), (500, 5000), (10**5, 5000), (3, 10)]:
        c = auto_chunk(batch, k)
        assert c == k or (c % BLOCK == 0 and c >= BLOCK)


# ------------------------------------------------------------------------------------------ L_k on threads
EVAL_NETS = {  # name: (layers as (latent, hidden, activation), std)
    "one_layer": (((3, (8,), "tanh"),), "exp"),
    "two_layers_softplus_std": (((4, (8, 7), "tanh"), (2, (5,), "tanh")), "softplus"),
    "three_layers_relu_no_hidden": (((4, (8, 7), "relu"), (3, (5,), "tanh"), (2, (), "tanh")), "exp"),
}


def eval_net(name, input_dim=13, dtype=torch.float64, scale=1.0):
    layers, std = EVAL_NETS[name]
    torch.manual_seed(3)
    net = IWAENetwork(input_dim, [LayerSpec(d, tuple(h), a) for d, h, a in layers], std=std).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale) if p.dim() == 2 else p.normal_(0, 0.3)
    return net


@pytest.mark.parametrize("name", list(EVAL_NETS))
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_lk_threads_over_points_equals_one_pass_and_restores_threads(name, threads, monkeypatch):
    """Points split over threads (a share per thread, torch single-threaded in each) give the values
    of the intra-op path and of one pass over all samples, also with pruned units; torch's thread
    count is restored afterwards."""
    import iwae_pl.model.likelihood as likelihood_module

    calls = []
    real = likelihood_module._log_sum_weights
    monkeypatch.setattr(likelihood_module, "_log_sum_weights",
                        lambda net, x, index, *a, **kw: calls.append(index.tolist()) or real(net, x, index, *a, **kw))
    net = eval_net(name)
    x, index = make_data(5, 13), torch.arange(10, 15)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fast = log_likelihood(net, x, index, 200, seed=2, chunk=64)
        assert torch.get_num_threads() == threads
        intra = log_likelihood(net, x, index, 200, seed=2, chunk=64, threads_over_points=False)
        keep = [torch.arange(d) % 2 == 0 for d in net.latent_sizes]
        pruned = log_likelihood(net, x, index, 200, seed=2, keep=keep)
    finally:
        torch.set_num_threads(before)
    if threads > 1:  # one contiguous share of the points per thread, each point once
        shares = [index[t * 5 // threads:(t + 1) * 5 // threads].tolist() for t in range(threads)]
        assert sorted(calls[:threads]) == sorted(shares)
    else:
        assert calls[0] == index.tolist()  # one thread: all points together
    torch.testing.assert_close(fast, intra, rtol=0, atol=1e-9)
    torch.testing.assert_close(fast, straightforward_lk(net, x, index, 200, seed=2), rtol=0, atol=1e-9)
    torch.testing.assert_close(pruned, log_likelihood(net, x, index, 200, seed=2, keep=keep, threads_over_points=False),
                               rtol=0, atol=1e-9)


def test_lk_threads_under_inference_mode():
    """Lightning evaluates under torch.inference_mode(), which is thread-local: the workers must run
    in it too (writing into the caller's inference tensors from outside it is an error)."""
    net = eval_net("one_layer")
    x, index = make_data(4, 13), torch.arange(4)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            got = log_likelihood(net, x, index, 100)
        # The calling thread's buffers persist between calls: made under inference mode, reused outside it.
        torch.testing.assert_close(log_likelihood(net, x, index, 100), got, rtol=0, atol=1e-9)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(got, straightforward_lk(net, x, index, 100, seed=0), rtol=0, atol=1e-9)


def test_lk_errors_surface_from_worker_threads(monkeypatch):
    """An exception inside a worker thread reaches the caller, and torch's thread count is restored."""
    import iwae_pl.model.likelihood as likelihood_module

    net = eval_net("one_layer")
    with pytest.raises(ConfigError, match="chunk"):
        log_likelihood(net, make_data(3, 13), torch.arange(3), 10, chunk=0)

    def broken(net, x, index, *args, **kwargs):
        raise RuntimeError(f"point {index.tolist()} failed")

    monkeypatch.setattr(likelihood_module, "_log_sum_weights", broken)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError, match=r"point \[[0-9, ]+\] failed"):
            log_likelihood(net, make_data(3, 13), torch.arange(3), 100)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------ logging
def test_training_logs_only_on_logger_steps_with_identical_metrics(tmp_path, monkeypatch):
    """train/bound is logged only on the steps the loggers write: metrics.csv is the same as when
    logging every step (same seed, same batches)."""
    import csv

    import pytorch_lightning as pl
    from pytorch_lightning.loggers import CSVLogger

    from iwae_pl.lightning import module as module_module
    from iwae_pl.data import BinarizedDataModule
    from iwae_pl.lightning.module import IWAEModule

    def fit(name):
        pl.seed_everything(0, verbose=False)
        model = IWAEModule(input_dim=64, layers=[LayerSpec(4, (16,))], K=3, val_k=0)
        trainer = pl.Trainer(max_steps=23, logger=CSVLogger(tmp_path, name=name), log_every_n_steps=5,
                             enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                             limit_val_batches=0, num_sanity_val_steps=0)
        trainer.fit(model, datamodule=BinarizedDataModule(dataset="digits", batch_size=20))
        with open(tmp_path / name / "version_0" / "metrics.csv") as f:
            return [(r["step"], r["train/bound"]) for r in csv.DictReader(f) if r.get("train/bound")]

    gated = fit("gated")
    monkeypatch.setattr(module_module, "logger_writes_this_step", lambda trainer: trainer is not None)
    every_step = fit("every_step")
    assert len(gated) == 4 and gated == every_step  # steps 4, 9, 14, 19 (0-based), same values


# ------------------------------------------------------------------------------------------ optimizer
def test_fused_adam_matches_plain_adam():
    """module.adam (fused where torch has it) takes the same steps as torch's plain Adam."""
    from iwae_pl.lightning.module import adam

    nets = [make_net(((4, (8, 7)), (2, (5,))), dtype=torch.float32) for _ in range(2)]
    settings = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-4)
    fast = adam([{"params": nets[0].encoder.parameters()}, {"params": nets[0].decoder.parameters()}], **settings)
    plain = torch.optim.Adam([{"params": nets[1].encoder.parameters()}, {"params": nets[1].decoder.parameters()}],
                             foreach=False, **settings)
    if torch.__version__ >= "2.4":
        assert fast.defaults["fused"]
    x = make_data(6, dtype=torch.float32)
    objective = make_objective("iwae", 1, 4)
    start = [p.detach().clone() for p in nets[0].parameters()]
    for step in range(5):
        eps = nets[0].draw_noise(x, (1, 4), torch.Generator().manual_seed(step))
        for net, opt in zip(nets, (fast, plain)):
            opt.zero_grad()
            (-objective(net.log_weights(x, (1, 4), eps=eps)).surrogate.mean()).backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all((a - a0).abs().max() > 1e-3 for a, a0 in zip(nets[0].parameters(), start))  # they moved
