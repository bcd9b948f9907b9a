"""Multi-process training and evaluation give the same science as one process (2 CPU processes,
gloo, launched with torchrun in a subprocess; the same script runs in-process for 1 process).

On 101 points (not divisible by 2, eval batch 10 so the processes even run different numbers of
batches) test/nll, test/bound, val/*, the activity counts and the pruning check equal the one-process
values; predict writes each index once with the one-process values; ranks draw different training
noise that a rerun reproduces; one DDP step on 2 x 4 points gives the one-process gradient on all 8."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

import ddp_script
from iwae_pl.data.datamodule import BinarizedDataModule
from iwae_pl.lightning.module import IWAEModule

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def ddp_env() -> dict[str, str]:
    """The environment of a multi-process test run: this tree and tests/ first on the path, one intra-op
    thread per process."""
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}


def torchrun(*args: str, nproc: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node N args...`` in ``ddp_env``; fails the
    test with the output on a non-zero exit."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=ddp_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(one-process results, two-process results) of ddp_script on the same checkpoint."""
    tmp = tmp_path_factory.mktemp("ddp")
    pl.seed_everything(0, verbose=False)
    module = IWAEModule(input_dim=64, layers=ddp_script.LAYERS, K=5, val_k=64, test_k=600, lr=3e-3)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=30, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         limit_val_batches=0, default_root_dir=tmp)
    trainer.fit(module, datamodule=BinarizedDataModule("digits", batch_size=20))
    ckpt = tmp / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    threads = torch.get_num_threads()
    try:
        ddp_script.main(tmp / "one", ckpt)
    finally:
        torch.set_num_threads(threads)
    torchrun(str(ROOT / "tests" / "ddp_script.py"), str(tmp / "two"), str(ckpt))
    return torch.load(tmp / "one" / "results.pt"), torch.load(tmp / "two" / "results.pt"), tmp


def read_predictions(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [int(r["index"]) for r in rows], [float(r["log_likelihood"]) for r in rows]


def test_test_and_validate_metrics_equal_one_process(runs):
    one, two, _ = runs
    assert (one["world"], two["world"]) == (1, 2)
    checks = {"test": ("test/nll", "test/bound", "active/total"), "validate": ("val/nll", "val/bound")}
    for stage, names in checks.items():  # activity counts are logged at the end of test (and of fit epochs)
        for name in (*names, "active/nll_pruned", "active/nll_all"):
            assert name in one[stage] and name in two[stage], (stage, name)
            assert two[stage][name] == pytest.approx(one[stage][name], rel=1e-5, abs=1e-6), (stage, name)
        for a1, a2 in zip(one[f"{stage}_activity"], two[f"{stage}_activity"]):
            torch.testing.assert_close(a2, a1, rtol=1e-5, atol=1e-9)


def test_the_mean_is_over_exactly_the_101_points(runs):
    """Not vacuous: the 1-process test/nll is the mean of the 101 per-point values, and the padded
    sampler's mean (point 0 counted twice, as Lightning's DistributedSampler does) differs from it."""
    one, _, _ = runs
    _, values = read_predictions(one["predictions"])
    assert len(values) == 101
    mean_nll = -sum(values) / 101
    assert one["test"]["test/nll"] == pytest.approx(mean_nll, rel=1e-6)
    padded = -(sum(values) + values[0]) / 102
    assert abs(padded - mean_nll) > 1e-5 * abs(mean_nll)


def test_predict_writes_each_index_once_with_one_process_values(runs):
    one, two, _ = runs
    i1, v1 = read_predictions(one["predictions"])
    i2, v2 = read_predictions(two["predictions"])
    assert i1 == i2 == list(range(101))
    torch.testing.assert_close(torch.tensor(v2), torch.tensor(v1), rtol=1e-5, atol=1e-5)


def test_ranks_draw_different_training_noise_and_a_rerun_the_same(runs):
    _, _, tmp = runs
    rank0, rank1 = (torch.load(tmp / "two" / f"noise_rank{r}.pt")["noise"] for r in (0, 1))
    rerun = torch.load(tmp / "one" / "noise_rank0.pt")["noise"]  # another process, same seed, rank 0, epoch 0, batch 0
    assert all(a.shape == b.shape for a, b in zip(rank0, rank1))
    assert all(not torch.allclose(a, b) for a, b in zip(rank0, rank1))
    assert all(torch.equal(a, b) for a, b in zip(rank0, rerun))


def test_logged_train_bound_is_the_mean_over_processes(runs):
    _, _, tmp = runs
    rank0, rank1 = (torch.load(tmp / "two" / f"noise_rank{r}.pt") for r in (0, 1))
    assert len(rank0["logged_bounds"]) == len(rank0["local_bounds"]) == 2
    for step in range(2):
        local = (rank0["local_bounds"][step], rank1["local_bounds"][step])
        assert abs(local[0] - local[1]) > 1e-3  # different batches: a rank-0-only value would show
        for logged in (rank0["logged_bounds"][step], rank1["logged_bounds"][step]):
            assert logged == pytest.approx(sum(local) / 2, rel=1e-6)


@pytest.mark.parametrize("objective", ["iwae", "piwae_dreg"])
def test_one_ddp_step_gives_the_whole_batch_gradient(runs, objective):
    one, two, _ = runs
    g1, g2 = one["grads"][objective], two["grads"][objective]
    assert g1.keys() == g2.keys()
    for name in g1:
        torch.testing.assert_close(g2[name], g1[name], rtol=1e-5, atol=1e-7)
    assert any(g1[n].abs().max() > 1e-4 for n in g1)  # a real gradient, not zeros
