#!/usr/bin/env python
"""Performance benchmark of iwae_pl: one command, a table on stdout and a JSON file.

    python benchmarks/bench.py            # full run (~14 min on 2 CPU cores)
    python benchmarks/bench.py --quick    # smaller subsets and fewer repeats (~2.5 min)

Sections (Burda et al.'s 2-layer MNIST model ``BURDA_2_LAYER``, batch 20, binarized MNIST):

train    training throughput (data points/s, samples/s) for K in {1, 5, 50} and M x K = 64 splits
         (1,64), (8,8), (64,1), of
           (a)  the real fit loop: Lightning Trainer + IWAEModule + BinarizedDataModule with CSVLogger and
                ModelCheckpoint(save_last=True), progress bar off, Lightning's default log_every_n_steps=50;
           (b)  the project's network and objective in a minimal hand-written loop (same DataLoader, same Adam);
           (c)  ``naive.NaiveIWAE``: x repeated M*K times through the whole encoder, textbook densities,
                autograd through logsumexp; (c+flush) the same with the project's subnormal-gradient flush,
                so that (b)/(c+flush) isolates the network's structure;
           (a0), (b0)  (a) and (b) with the package as it was at ``--baseline`` (default: the commit before the
                performance work), imported from ``git archive`` under the name ``iwae_pl_base``.
eval     L_5000 throughput (test points/s) and peak memory for several pass sizes, project vs baseline vs
         naive, each run in a fresh subprocess. Measured on a subset of the test set and extrapolated to
         all 10,000 points.
data     the DataLoader's share of step time: batch fetch of fixed binarized MNIST and of dynamically
         binarized gray MNIST (t10k images), against the measured (a) step times.
scaling  (b) and (c) step time as K grows (1 ... 5000); (b) step time and L_k cost as stochastic layers grow
         (1 ... 7, the reproduction report's 50-100-100-... stack with 100-100 MLPs).

Method: every configuration is run in R rounds; within a round the variants run one after another in a
rotated order (interleaved), each for a fixed number of steps after a few warm-up steps; a round's
throughput is steps / wall time of the timed window (so periodic costs such as logging every 50 steps
count); the table reports the median over rounds and ratios of those medians. All variants start from
the same briefly pre-trained parameters (``--warm-steps`` of IWAE K=5), not from initialization, where
the spread of log-weights is atypically wide. Peak memory: in the worker process, the kernel's peak-RSS
mark (VmHWM) is reset just before the measurement (``echo 5 > /proc/self/clear_refs``) and read after it;
the table shows that peak minus the RSS at the reset (the model, the test subset, torch itself).
"""
from __future__ import annotations

import argparse
import copy
import gzip
import io
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
DEFAULT_BASELINE = "c5c05e8"  # iwae_pl before the performance work
B = 20
WORKER_FLAG = "--_eval-worker"


# ---------------------------------------------------------------------------------------------- helpers
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def load_baseline(rev: str, dest: Path):
    """Import iwae_pl as it was at git revision `rev`, as the package ``iwae_pl_base``."""
    raw = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "iwae_pl"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        tar.extractall(dest, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(dest)
    (dest / "iwae_pl").rename(dest / "iwae_pl_base")
    sys.path.insert(0, str(dest))
    import iwae_pl_base
    return iwae_pl_base


def adam(net):
    """The optimizer IWAEModule.configure_optimizers builds (defaults lr 1e-3, betas (0.9, 0.999), eps 1e-4)."""
    groups = ([{"params": net.encoder.parameters(), "name": "encoder"},
               {"params": net.decoder.parameters(), "name": "decoder"}]
              if hasattr(net, "encoder") else [{"params": net.parameters()}])  # the naive net: one group
    from iwae_pl.lightning.module import adam as project_adam  # fused where torch has it, for every variant alike
    return project_adam(groups, lr=1e-3, betas=(0.9, 0.999), eps=1e-4)


def objective_name(M: int) -> str:
    return "iwae" if M == 1 else "miwae"


def read_gray_t10k(data_dir: Path) -> torch.Tensor:
    with gzip.open(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz", "rb") as f:
        raw = f.read()
    return torch.from_numpy(np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255.0)


def load_test_subset(data_dir: Path, n: int) -> torch.Tensor:
    with np.load(data_dir / "binarized_mnist" / "binarized_mnist_uint8.npz") as z:
        test = z["test"]
    # The test split is ordered by label: take evenly spaced points so that every digit is represented.
    idx = np.linspace(0, len(test) - 1, n).round().astype(np.int64)
    return torch.from_numpy(test[idx].astype(np.float32)), torch.from_numpy(idx)


# ---------------------------------------------------------------------------------------------- training loops
class Ctx:
    """What every variant needs: packages, data, the warm parameters."""

    def __init__(self, args, iwae_pl, base):
        from iwae_pl.data import BinarizedDataModule
        self.args, self.pkg, self.base = args, iwae_pl, base
        self.dm = BinarizedDataModule(dataset="binarized_mnist", data_dir=str(args.data_dir), batch_size=B,
                                      seed=0, download=False)
        self.dm.setup("fit")
        self.tmp = Path(tempfile.mkdtemp(prefix="iwae_bench_"))
        self.state = None

    def loader(self):
        return self.dm.train_dataloader()

    def net(self, pkg=None, layers=None):
        pkg = pkg or self.pkg
        net = pkg.IWAENetwork(784, layers or pkg.BURDA_2_LAYER)
        if layers is None and self.state is not None:
            net.load_state_dict(self.state)
        elif layers is not None:
            net.set_visible_bias(self.dm.train_mean())
        return net


def batches(loader):
    while True:
        for batch in loader:
            yield batch


def timed_loop(ctx, net, loss_fn, steps, skip):
    """Adam steps of loss_fn(x) over the benchmark's data; seconds for the last `steps` of skip + steps."""
    opt = adam(net)
    it = batches(ctx.loader())
    t0 = None
    for i in range(skip + steps):
        if i == skip:
            t0 = time.perf_counter()
        x, _ = next(it)
        loss = loss_fn(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def run_minimal(ctx, M, K, steps, skip, pkg=None, layers=None):
    """(b): the project's network and objective, hand-written loop. Returns seconds for `steps` steps."""
    pkg = pkg or ctx.pkg
    net = ctx.net(pkg, layers)
    objective = pkg.make_objective(objective_name(M), M, K)

    def loss(x):
        lw = objective.log_weights(net, x)
        return -objective(lw).surrogate.mean()

    return timed_loop(ctx, net, loss, steps, skip)


def run_naive(ctx, M, K, steps, skip, flush=False, layers=None):
    """(c): naive.NaiveIWAE with the same parameters and data. flush: the project's gradient flush hook."""
    from naive import NaiveIWAE
    hook = None
    if flush:
        from iwae_pl.model.objectives import _flush_tiny_grad as hook
    net = NaiveIWAE(ctx.net(layers=layers))
    return timed_loop(ctx, net, lambda x: net.loss(x, M, K, grad_hook=hook), steps, skip)


def run_lightning(ctx, M, K, steps, skip, pkg=None):
    """(a): Trainer.fit of IWAEModule on BinarizedDataModule; timed between on_train_batch_end calls."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger
    pkg = pkg or ctx.pkg
    module_mod = __import__(pkg.__name__ + ".module", fromlist=["IWAEModule"])

    class StepClock(pl.Callback):
        def __init__(self):
            self.t = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.t.append(time.perf_counter())

    module = module_mod.IWAEModule(input_dim=784, layers=pkg.BURDA_2_LAYER, objective=objective_name(M), M=M, K=K,
                                   init_visible_bias=False, val_k=0)
    module.net.load_state_dict(ctx.state)
    clock = StepClock()
    run_dir = Path(tempfile.mkdtemp(dir=ctx.tmp))
    trainer = pl.Trainer(max_steps=skip + steps + 1, accelerator="cpu", devices=1,
                         logger=CSVLogger(str(run_dir), name="bench"),
                         callbacks=[ModelCheckpoint(dirpath=str(run_dir / "ckpt"), save_last=True), clock],
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0)
    trainer.fit(module, datamodule=ctx.dm)
    shutil.rmtree(run_dir, ignore_errors=True)
    t = clock.t
    return t[skip + steps] - t[skip]  # steps full loop iterations: fetch, step, hooks, logging


def warm_state(ctx, steps):
    """Parameters after `steps` of IWAE K=5 from Glorot init (all variants start from these)."""
    torch.manual_seed(0)
    net = ctx.pkg.IWAENetwork(784, ctx.pkg.BURDA_2_LAYER)
    net.set_visible_bias(ctx.dm.train_mean())
    objective = ctx.pkg.make_objective("iwae", 1, 5)
    timed_loop(ctx, net, lambda x: -objective(net.log_weights(x, (1, 5))).surrogate.mean(), steps, 0)
    return copy.deepcopy(net.state_dict())


def check_naive_matches(ctx) -> float:
    """Max |log w(naive) - log w(project)| on the same noise (the reference computes the same thing)."""
    from naive import NaiveIWAE
    net = ctx.net()
    x, _ = next(iter(ctx.loader()))
    eps = net.draw_noise(x, (7,))
    with torch.no_grad():
        a = net.log_weights(x, (7,), eps=eps).value
        b = NaiveIWAE(net).log_weights(x, 7, eps=eps)
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------------------------- sections
TRAIN_CONFIGS = [(1, 1), (1, 5), (1, 50), (1, 64), (8, 8), (64, 1)]
QUICK_TRAIN_CONFIGS = [(1, 1), (1, 50), (8, 8)]


def section_train(ctx, res):
    args = ctx.args
    configs = QUICK_TRAIN_CONFIGS if args.quick else TRAIN_CONFIGS
    runners = {
        "a": lambda M, K, n, s: run_lightning(ctx, M, K, n, s),
        "b": lambda M, K, n, s: run_minimal(ctx, M, K, n, s),
        "c": lambda M, K, n, s: run_naive(ctx, M, K, n, s),
        "c+flush": lambda M, K, n, s: run_naive(ctx, M, K, n, s, flush=True),
    }
    if ctx.base is not None:
        runners["a0"] = lambda M, K, n, s: run_lightning(ctx, M, K, n, s, pkg=ctx.base)
        runners["b0"] = lambda M, K, n, s: run_minimal(ctx, M, K, n, s, pkg=ctx.base)
    out = {}
    for M, K in configs:
        # steps per round: a multiple of Lightning's logging period (50), at least ~budget seconds of (b)
        probe = run_minimal(ctx, M, K, 5, 2) / 5
        steps = 50 * max(1, min(args.max_rounds_steps // 50, round(args.budget / probe / 50)))
        names = list(runners)
        per = {n: [] for n in names}
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                secs = runners[name](M, K, steps, 5)
                per[name].append(steps / secs)  # steps/s
            log(f"  train M={M} K={K} round {r + 1}: " + ", ".join(f"{n} {B * per[n][-1]:.0f} pt/s" for n in names))
        out[f"{M}x{K}"] = {"M": M, "K": K, "steps_per_round": steps,
                           "steps_per_s": {n: per[n] for n in names},
                           "median_points_per_s": {n: B * median(per[n]) for n in names},
                           "median_samples_per_s": {n: B * M * K * median(per[n]) for n in names},
                           "median_step_ms": {n: 1e3 / median(per[n]) for n in names}}
    res["train"] = out


def section_data(ctx, res):
    """Batch fetch time of the real DataLoaders (fixed binarized MNIST; dynamic binarization of gray MNIST)."""
    from torch.utils.data import DataLoader

    from iwae_pl import rng
    from iwae_pl.data.datamodule import BinaryDataset, identity_collate
    args = ctx.args
    gray = read_gray_t10k(args.data_dir)
    dynamic = DataLoader(BinaryDataset(gray, seed=rng.stream_seed(0, "binarize_train", 0)), batch_size=B, shuffle=True,
                         collate_fn=identity_collate, num_workers=0,
                         generator=torch.Generator().manual_seed(0))
    loaders = {"fixed (binarized_mnist)": ctx.loader, "dynamic (gray t10k, Bernoulli per batch)": lambda: dynamic}
    n = 300 if args.quick else 1000
    out = {}
    for name, make in loaders.items():
        per = []
        for _ in range(args.rounds):
            it = batches(make())
            for _ in range(5):
                next(it)
            t0 = time.perf_counter()
            for _ in range(n):
                next(it)
            per.append((time.perf_counter() - t0) / n)
        out[name] = {"fetch_us": 1e6 * median(per), "rounds_us": [1e6 * p for p in per]}
    shares = {}
    for cfg, r in res.get("train", {}).items():
        step_s = 1.0 / median(r["steps_per_s"]["a"])
        shares[cfg] = {name: v["fetch_us"] * 1e-6 / step_s for name, v in out.items()}
    res["data"] = {"fetch": out, "share_of_a_step": shares}


def eval_worker(spec: dict) -> dict:
    """Runs in a fresh process: one L_k measurement, its peak memory and (project) its noise time."""
    torch.set_num_threads(spec["threads"])
    if spec["impl"] == "baseline":
        sys.path.insert(0, spec["base_dir"])
        import iwae_pl_base as pkg
    else:
        import iwae_pl as pkg
    x, index = load_test_subset(Path(spec["data_dir"]), spec["points"])
    net = pkg.IWAENetwork(784, pkg.BURDA_2_LAYER)
    net.load_state_dict(torch.load(spec["state"], weights_only=True))
    net.eval()
    k, batch = spec["k"], spec["batch"]
    if spec["impl"] == "naive":
        from naive import NaiveIWAE
        naive = NaiveIWAE(net)
        torch.manual_seed(0)

        def run(xb, ib):
            return naive.log_likelihood(xb, k, chunk=spec["chunk"])
    else:
        kw = {} if spec.get("chunk") is None else {"chunk": spec["chunk"]}
        if spec.get("max_rows") is not None:
            kw["max_rows"] = spec["max_rows"]
        if spec.get("eval_pass") is False:
            kw["eval_pass"] = False

        def run(xb, ib):
            return pkg.log_likelihood(net, xb, ib, k, seed=0, **kw)
    run(x[:2], index[:2])  # warm up: the measured workload on two points, every implementation alike
    rss0 = reset_peak_rss()
    t0 = time.perf_counter()
    ll = torch.cat([run(x[i:i + batch], index[i:i + batch]) for i in range(0, len(x), batch)])
    secs = time.perf_counter() - t0
    peak = peak_rss()
    out = {"seconds": secs, "points_per_s": len(x) / secs, "rss_before_mb": rss0 / 2**20,
           "peak_mb": (peak - rss0) / 2**20, "peak_rss_mb": peak / 2**20, "mean_ll": ll.mean().item(),
           "ll": ll.tolist()}
    if spec["impl"] in ("project", "baseline"):  # the same noise, drawn alone: its share of the evaluation
        t0 = time.perf_counter()
        if spec["impl"] == "project" and spec.get("eval_pass", True):
            draw_like_the_pass(pkg, index, k, spec.get("chunk") or pkg.likelihood.EVAL_ROWS, net.latent_sizes)
        else:
            for i in range(0, len(x), batch):
                for s in range(0, k, 256):
                    pkg.noise.indexed_normal(0, index[i:i + batch], s, min(256, k - s), net.latent_sizes)
        out["noise_seconds"] = time.perf_counter() - t0
    return out


def draw_like_the_pass(pkg, index, k: int, rows: int, dims) -> None:
    """The evaluation pass's noise alone, drawn as the pass draws it: per point, blocks of the pass's
    size into a reused buffer, the points spread over the same threads (torch single-threaded each)."""
    from concurrent.futures import ThreadPoolExecutor
    block, rows, total = pkg.noise.BLOCK, pkg.eval_pass.block_rows(rows, k), sum(dims)
    intra_op = torch.get_num_threads()
    threads = min(intra_op, len(index))

    def draw(first: int) -> None:
        torch.set_num_threads(1)
        buf = torch.empty((rows + block) * total)
        for b in range(first, len(index), threads):
            for start in range(0, k, rows):
                n = min(rows, k - start)
                pkg.noise.draw_blocks(0, [int(index[b])], start // block, -(-n // block), total, out=buf)

    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(draw, range(threads)))
    finally:
        torch.set_num_threads(intra_op)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; return the current RSS in bytes.

    Writing 5 to /proc/self/clear_refs resets VmHWM (Linux >= 4.0). Where that is not possible, the
    lifetime ru_maxrss is the fallback (then small evaluations can read as 0 above the baseline).
    """
    import gc
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return 1024 * _status_kb("VmRSS")
    except OSError:
        return 1024 * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_rss() -> int:
    try:
        return 1024 * _status_kb("VmHWM")
    except OSError:
        return 1024 * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def spawn_eval(ctx, spec: dict) -> dict:
    spec = {**spec, "threads": torch.get_num_threads(), "data_dir": str(ctx.args.data_dir),
            "state": str(ctx.tmp / "warm.pt"), "base_dir": str(ctx.tmp / "base")}
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), WORKER_FLAG, json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"eval worker failed: {spec}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def section_eval(ctx, res):
    args = ctx.args
    points = 10 if args.quick else args.eval_points
    k = 5000
    from iwae_pl.model.likelihood import EVAL_ROWS
    default = f"project default (eval pass, {EVAL_ROWS} rows)"
    configs = {default: {"impl": "project"}}  # name -> worker spec
    for rows in (256, 512, 2048, 4096):
        configs[f"project eval pass, {rows} rows"] = {"impl": "project", "chunk": rows}
    for rows in (512, 2048, 8192, 32768):
        configs[f"project network path max_rows {rows}"] = {"impl": "project", "max_rows": rows, "eval_pass": False}
    configs["project network path chunk 5000 (1 pass/point)"] = {"impl": "project", "chunk": 5000, "eval_pass": False}
    for chunk in (8, 16, 64, 256):
        configs[f"naive chunk {chunk}"] = {"impl": "naive", "chunk": chunk}
    if args.quick:
        for name in ("project eval pass, 256 rows", "project eval pass, 4096 rows", "project network path max_rows 512",
                     "project network path max_rows 32768", "naive chunk 8", "naive chunk 256"):
            configs.pop(name, None)
    if ctx.base is not None:
        configs["baseline auto"] = {"impl": "baseline"}
    out = {name: [] for name in configs}
    names = list(configs)
    rounds = 1 if args.quick else args.eval_rounds
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            spec = {**configs[name], "k": k, "points": points, "batch": points}
            out[name].append(spawn_eval(ctx, spec))
            o = out[name][-1]
            log(f"  eval {name}: {o['points_per_s']:.2f} pt/s, peak {o['peak_mb']:.0f} MB, mean L_k {o['mean_ll']:.3f}")
    summary = {}
    for name, runs in out.items():
        pps = median([o["points_per_s"] for o in runs])
        summary[name] = {"points_per_s": pps, "rows_per_pass": rows_per_pass(configs[name], points),
                         "full_test_set_minutes": 10000 / pps / 60,
                         "peak_mb": max(o["peak_mb"] for o in runs), "mean_ll": runs[0]["mean_ll"],
                         "peak_rss_mb": max(o["peak_rss_mb"] for o in runs),
                         "runs": [{k2: v for k2, v in o.items() if k2 != "ll"} for o in runs]}
        if "noise_seconds" in runs[0]:
            summary[name]["noise_share"] = median([o["noise_seconds"] / o["seconds"] for o in runs])
    # the project and the baseline use identical per-point noise: the values must agree to float rounding
    if "baseline auto" in out:
        diff = max(abs(a - b) for a, b in zip(out["baseline auto"][0]["ll"], out[default][0]["ll"]))
        res["eval_check_max_abs_diff_project_vs_baseline"] = diff
    network = "project network path max_rows 8192"
    if network in out:  # the evaluation pass and the network path: the same noise, the same values
        res["eval_check_max_abs_diff_eval_pass_vs_network"] = max(
            abs(a - b) for a, b in zip(out[network][0]["ll"], out[default][0]["ll"]))
    res["eval"] = {"k": k, "points": points, "batch": points, "default": default, "configs": summary}


def rows_per_pass(spec: dict, batch: int, k: int = 5000) -> int:
    """Sample rows per forward pass of a configuration, from the implementations' own rules."""
    if spec["impl"] == "naive":
        return spec["chunk"] * batch
    if spec["impl"] == "baseline":  # one pass holds all points: auto_chunk(batch, k) samples of each
        return sys.modules["iwae_pl_base"].likelihood.auto_chunk(batch, k) * batch
    from iwae_pl.fast.eval_pass import block_rows
    from iwae_pl.model.likelihood import DEFAULT_MAX_ROWS, EVAL_ROWS, auto_chunk
    if spec.get("eval_pass", True):  # one point at a time
        return block_rows(spec.get("chunk") or EVAL_ROWS, k)
    max_rows = spec.get("max_rows") or DEFAULT_MAX_ROWS
    chunk = spec.get("chunk") or auto_chunk(batch, k, max_rows)
    return chunk * min(batch, max(1, max_rows // chunk))


def section_scaling(ctx, res):
    args = ctx.args
    pkg = ctx.pkg
    ks = [1, 5, 50, 500] if args.quick else [1, 5, 50, 500, 5000]
    out_k = {}
    for K in ks:
        steps = max(2, min(60, int(20 * 5 / K) + 2)) if K >= 500 else 20
        per_b, per_c = [], []
        for _ in range(1 if K >= 500 else args.rounds):
            per_b.append(run_minimal(ctx, 1, K, steps, 1) / steps)
            if K <= (500 if args.quick else 5000):
                per_c.append(run_naive(ctx, 1, K, steps, 1, flush=True) / steps)
        out_k[K] = {"b_step_ms": 1e3 * median(per_b), "c_flush_step_ms": 1e3 * median(per_c) if per_c else None}
        log(f"  scaling K={K}: b {out_k[K]['b_step_ms']:.1f} ms/step, c+flush {out_k[K]['c_flush_step_ms']} ms/step")
    # L_k cost per point as k grows (project, in process)
    x, index = load_test_subset(args.data_dir, 10)
    net = ctx.net()
    lk = {}
    for k in (1, 5000):  # warm up both L_k paths (first-call costs outside the timings)
        pkg.log_likelihood(net, x[:2], index[:2], k)
    for k in ([1, 5, 50, 500, 5000] if not args.quick else [1, 50, 500]):
        t0 = time.perf_counter()
        pkg.log_likelihood(net, x, index, k)
        lk[k] = 1e3 * (time.perf_counter() - t0) / len(x)
    # stochastic layers 1..7: the reproduction report's stack (h1 = 50, higher layers 100, MLPs 100-100)
    layers_out = {}
    for L in ([1, 2, 4, 7] if args.quick else range(1, 8)):
        specs = [pkg.LayerSpec(50, (100, 100))] + [pkg.LayerSpec(100, (100, 100))] * (L - 1)
        secs = median([run_minimal(ctx, 1, 50, 20, 2, layers=specs) / 20 for _ in range(args.rounds)])
        torch.manual_seed(0)
        net_l = pkg.IWAENetwork(784, specs)
        t0 = time.perf_counter()
        pkg.log_likelihood(net_l, x, index, 500)
        ev = (time.perf_counter() - t0) / len(x)
        layers_out[L] = {"b_step_ms_K50": 1e3 * secs, "L500_ms_per_point": 1e3 * ev}
        log(f"  scaling layers={L}: b {1e3 * secs:.1f} ms/step (K=50), L_500 {1e3 * ev:.1f} ms/point")
    res["scaling"] = {"K": out_k, "Lk_ms_per_point": lk, "layers": layers_out}


# ---------------------------------------------------------------------------------------------- report
def fmt(v, nd=0):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.{nd}f}"


def report(res) -> str:
    lines = []
    meta = res["meta"]
    lines.append(f"iwae_pl benchmark: {meta['cpu']}, {meta['threads']} threads, torch {meta['torch']}, "
                 f"load avg {meta['load_before'][0]:.2f} -> {meta['load_after'][0]:.2f}")
    if "train" in res:
        t = res["train"]
        have0 = any("a0" in r["median_points_per_s"] for r in t.values())
        lines += ["", "Training throughput, BURDA_2_LAYER, batch 20 (data points/s; samples/s = points/s x M x K)", ""]
        head = "| M x K | (a) Lightning | (b) minimal | (c) naive | (c+flush) | samples/s (a) | a/b | b/c | b/(c+flush) |"
        if have0:
            head += " (a0) before | (b0) before | a/a0 | b/b0 |"
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        for cfg, r in t.items():
            p = r["median_points_per_s"]
            row = (f"| {r['M']} x {r['K']} | {fmt(p['a'])} | {fmt(p['b'])} | {fmt(p['c'])} | {fmt(p['c+flush'])} | "
                   f"{fmt(r['median_samples_per_s']['a'])} | {p['a'] / p['b']:.2f} | {p['b'] / p['c']:.2f} | "
                   f"{p['b'] / p['c+flush']:.2f} |")
            if have0:
                row += f" {fmt(p['a0'])} | {fmt(p['b0'])} | {p['a'] / p['a0']:.2f} | {p['b'] / p['b0']:.2f} |"
            lines.append(row)
    if "eval" in res:
        e = res["eval"]
        lines += ["", f"L_5000 on {e['points']} binarized-MNIST test points (one batch of {e['batch']}), "
                      "extrapolated to 10,000", ""]
        lines += ["| configuration | rows/pass | test points/s | 10k points (min) | peak RSS MB | (above idle) "
                  "| noise share | mean L_5000 |", "|---|---|---|---|---|---|---|---|"]
        for name, s in e["configs"].items():
            lines.append(f"| {name} | {s['rows_per_pass']:,} | {s['points_per_s']:.2f} | {s['full_test_set_minutes']:.1f} | "
                         f"{s['peak_rss_mb']:.0f} | {s['peak_mb']:.0f} | "
                         f"{fmt(100 * s['noise_share'], 1) + '%' if 'noise_share' in s else '-'} | "
                         f"{s['mean_ll']:.3f} |")
        naive_best = max(s["points_per_s"] for n, s in e["configs"].items() if n.startswith("naive"))
        auto = e["configs"][e["default"]]["points_per_s"]
        lines.append("")
        lines.append(f"project default / best naive: {auto / naive_best:.2f}x")
        network = e["configs"].get(f"project network path max_rows {8192}")
        if network:
            lines.append(f"project default / project network path (max_rows 8192, the default before the "
                         f"evaluation pass): {auto / network['points_per_s']:.2f}x")
        if "baseline auto" in e["configs"]:
            lines.append(f"project default / baseline auto: {auto / e['configs']['baseline auto']['points_per_s']:.2f}x "
                         f"(same noise: max |L_k difference| {res['eval_check_max_abs_diff_project_vs_baseline']:.2e})")
    if "data" in res:
        d = res["data"]
        lines += ["", "Data pipeline (real DataLoader, batch 20)", ""]
        for name, v in d["fetch"].items():
            lines.append(f"- {name}: {v['fetch_us']:.0f} us per batch")
        if d["share_of_a_step"]:
            lines += ["", "| M x K | (a) step ms | fetch share, fixed | fetch share, dynamic |", "|---|---|---|---|"]
            names = list(d["fetch"])
            for cfg, s in d["share_of_a_step"].items():
                step = res["train"][cfg]["median_step_ms"]["a"]
                lines.append(f"| {cfg.replace('x', ' x ')} | {step:.1f} | {100 * s[names[0]]:.1f}% | {100 * s[names[1]]:.1f}% |")
    if "scaling" in res:
        s = res["scaling"]
        lines += ["", "Scaling with K (batch 20, IWAE): ms per training step; L_k ms per test point", ""]
        lines += ["| K | (b) step ms | (c+flush) step ms | b speed-up | L_k ms/point (k = K) |", "|---|---|---|---|---|"]
        for K, v in s["K"].items():
            c = v["c_flush_step_ms"]
            lk = s["Lk_ms_per_point"].get(K, s["Lk_ms_per_point"].get(str(K)))
            lines.append(f"| {K} | {v['b_step_ms']:.1f} | {fmt(c, 1)} | {fmt(c / v['b_step_ms'] if c else None, 2)} | {fmt(lk, 2)} |")
        lines += ["", "Scaling with stochastic layers (h1 50, others 100, MLPs 100-100; K = 50)", "",
                  "| layers | (b) step ms | L_500 ms/point |", "|---|---|---|"]
        for L, v in s["layers"].items():
            lines.append(f"| {L} | {v['b_step_ms_K50']:.1f} | {v['L500_ms_per_point']:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == WORKER_FLAG:
        print(json.dumps(eval_worker(json.loads(sys.argv[2]))))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer configurations, subsets and repeats")
    p.add_argument("--sections", default="train,data,eval,scaling")
    p.add_argument("--out", type=Path, default=HERE / "results.json")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("IWAE_PL_DATA_DIR", "/work/shared/data")))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision to compare to, or 'none'")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--eval-rounds", type=int, default=3)
    p.add_argument("--eval-points", type=int, default=50)
    p.add_argument("--budget", type=float, default=None, help="seconds of (b) per variant and round")
    p.add_argument("--max-rounds-steps", type=int, default=200)
    p.add_argument("--warm-steps", type=int, default=None)
    args = p.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.budget = args.budget or (1.0 if args.quick else 2.5)
    args.warm_steps = args.warm_steps if args.warm_steps is not None else (200 if args.quick else 1000)
    if args.threads:
        torch.set_num_threads(args.threads)
    import logging
    import warnings
    warnings.filterwarnings("ignore")
    import pytorch_lightning  # noqa: F401  (configures its loggers on import: quiet them afterwards)
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)

    import iwae_pl
    res = {"meta": {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "quick": args.quick,
                    "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "load_before": os.getloadavg(), "baseline": args.baseline,
                    "warm_steps": args.warm_steps, "rounds": args.rounds, "time": time.strftime("%Y-%m-%d %H:%M:%S")}}
    try:
        res["meta"]["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        res["meta"]["commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                               capture_output=True, text=True).stdout.strip()
    except (OSError, StopIteration):
        pass
    base = None
    ctx_tmp = Path(tempfile.mkdtemp(prefix="iwae_bench_base_"))
    if args.baseline != "none":
        try:
            base = load_baseline(args.baseline, ctx_tmp)
        except (subprocess.CalledProcessError, ImportError, OSError) as err:
            log(f"baseline {args.baseline!r} not available ({err}); running without before/after columns")
            res["meta"]["baseline"] = None
    ctx = Ctx(args, iwae_pl, base)
    if base is not None:
        shutil.copytree(ctx_tmp / "iwae_pl_base", ctx.tmp / "base" / "iwae_pl_base")
    t_start = time.perf_counter()
    log(f"warm start: {args.warm_steps} steps of IWAE K=5 ...")
    ctx.state = warm_state(ctx, args.warm_steps)
    torch.save(ctx.state, ctx.tmp / "warm.pt")
    res["naive_check_max_abs_diff"] = check_naive_matches(ctx)
    sections = args.sections.split(",")
    for name, fn in [("train", section_train), ("data", section_data), ("eval", section_eval), ("scaling", section_scaling)]:
        if name in sections:
            log(f"section {name} ...")
            t0 = time.perf_counter()
            fn(ctx, res)
            res.setdefault("section_seconds", {})[name] = time.perf_counter() - t0
    res["meta"]["load_after"] = os.getloadavg()
    res["meta"]["total_seconds"] = time.perf_counter() - t_start
    text = report(res)
    res["table"] = text
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=str))
    log(f"wrote {args.out}")
    shutil.rmtree(ctx.tmp, ignore_errors=True)
    shutil.rmtree(ctx_tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
