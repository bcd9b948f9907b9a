#!/usr/bin/env python
"""Performance benchmark of iwae_pl against the strongest straightforward references, as fractions of
the machine's matrix-multiply peak. One command, tables on stdout, everything in a JSON file:

    python benchmarks/bench.py                     # all sections (estimated 7-10 min on 2 idle CPU cores)
    python benchmarks/bench.py --quick             # fewer rounds and points (~3 min)
    python benchmarks/bench.py --device cuda --tf32 --dtype bfloat16   # on a GPU (float32 by default)

Sections (``--sections``, default all):
  peak      torch.mm at every matrix shape of the training step (rows = batch x samples): the GEMM
            peak (the fastest of them) and the GEMM-only time of a step, i.e. the step's ceiling if
            nothing but its matrix products cost anything. Measured at the start and at the end.
  train     Burda's 2-layer model, IWAE K = 50, batch 20 (also K = 1 and 5 unless --quick): the
            project's network and objective in a hand loop vs the per-sample reference (``naive.py``),
            plain and with ``torch.set_flush_denormal(True)`` (its strongest one-line setting).
  flush     the project with and without torch.set_flush_denormal(True), at Glorot initialization
            (where normalized weights underflow into subnormals most) and after warm-up.
  pythae    1-layer model, K = 50: the project vs pythae's IWAE (``peers.py``; skipped with a note
            when pythae is not installed: ``pip install -e .[bench]``).
  lightning Trainer.fit(IWAEModule) (CSVLogger, checkpointing, progress bar off) vs the same network
            in the hand loop, 2-layer, K = 50, and where a step's time goes in each (median ms per
            step of the forward, the backward and the rest: optimizer, data, Lightning's loop).
  eval      L_5000 on evenly spaced test points (the full 10,000 on a GPU), each configuration in a
            fresh process with its peak memory: the project's default (on a CPU with T > 1 threads,
            whole points spread over T threads, torch single-threaded in each), the same network on
            its plain modules (no evaluation fast path), on a CPU the project on intra-op threads, and
            the per-sample reference at several chunk sizes (samples per pass, all points together).

Method: all variants start from the same briefly trained parameters; in every round each variant
runs a fixed number of steps after a few untimed ones, in an order rotated every round; tables give
medians over rounds and ratios of medians from this one run. FLOPs are counted from the layer sizes
(2 per multiply-add; a Linear costs its forward, its weight gradient and, where its input needs a
gradient, its input gradient); every variant's fraction of peak uses its own FLOPs. The load average
is printed before and after: on a shared machine the numbers are not an idle machine's.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from workloads import adam_step, batches, mnist, optimizer, test_split  # noqa: E402
B = 20
WORKER_FLAG = "--_eval-worker"
SECTIONS = ("peak", "train", "flush", "pythae", "lightning", "eval")


# ---------------------------------------------------------------------------------------------- helpers
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def load_avg() -> list[float]:
    return list(os.getloadavg())


class Settings:
    """Device, dtype and TF32 choices applied alike to every variant."""

    def __init__(self, args):
        self.device = torch.device(args.device)
        self.dtype = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
        if args.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def autocast(self):
        """Mixed precision only when asked for (--dtype); float32 otherwise."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def linears(net, naive: bool = False):
    """(rows per data point x sample?, in, out, needs input gradient) for every Linear of a network.

    The project runs the first encoder block once per data point; the naive reference runs it per
    sample. Every Linear fed by a sample (or by a layer that needs gradients) needs its input gradient.
    """
    out = []
    for i, block in enumerate(net.encoder.blocks):
        mods = [m for m in [*block.mlp, block.head] if isinstance(m, nn.Linear)]
        for j, m in enumerate(mods):
            out.append((naive or i > 0, m.in_features, m.out_features, i > 0 or j > 0))
    for block in [*net.decoder.blocks, net.decoder.visible]:
        for m in [*block.mlp, block.head]:
            if isinstance(m, nn.Linear):
                out.append((True, m.in_features, m.out_features, True))
    return out


def flops(net, batch: int, samples: int, train: bool, naive: bool = False) -> float:
    """FLOPs of one pass (train: forward + backward) over `samples` samples of `batch` points."""
    total = 0.0
    for per_sample, n_in, n_out, grad_in in linears(net, naive):
        rows = batch * (samples if per_sample else 1)
        total += 2 * rows * n_in * n_out * ((2 + grad_in) if train else 1)
    return total


def gemm_shapes(net, rows_per_point: int):
    """(m, k, n, count) of every matrix product of a training step (forward, weight and input grads)."""
    shapes = {}
    for per_sample, n_in, n_out, grad_in in linears(net):
        rows = B * (rows_per_point if per_sample else 1)
        for shape in [(rows, n_in, n_out), (n_out, rows, n_in)] + ([(rows, n_out, n_in)] if grad_in else []):
            shapes[shape] = shapes.get(shape, 0) + 1
    return shapes


def time_mm(m: int, k: int, n: int, settings: Settings, seconds: float = 0.25) -> float:
    """Seconds per torch.mm of [m, k] x [k, n] (median of 5 batches of repetitions)."""
    a = torch.randn(m, k, device=settings.device)
    b = torch.randn(k, n, device=settings.device)
    out = torch.empty(m, n, device=settings.device)
    with settings.autocast():
        for _ in range(3):
            torch.mm(a, b, out=out) if settings.dtype is None else torch.mm(a, b)
        settings.sync()
        t0 = time.perf_counter()
        torch.mm(a, b, out=out) if settings.dtype is None else torch.mm(a, b)
        settings.sync()
        reps = max(3, int(seconds / 5 / max(time.perf_counter() - t0, 1e-6)))
        per = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b, out=out) if settings.dtype is None else torch.mm(a, b)
            settings.sync()
            per.append((time.perf_counter() - t0) / reps)
    return median(per)


def measure_peak(ctx, label: str) -> dict:
    """GFLOP/s of torch.mm at the training step's shapes; peak = the fastest; GEMM-only step time."""
    net = ctx.net()
    rows = {}
    gemm_only = 0.0
    for (m, k, n), count in gemm_shapes(net, 50).items():
        secs = time_mm(m, k, n, ctx.settings)
        rows[f"{m}x{k}x{n}"] = {"count": count, "gflops": 2 * m * k * n / secs / 1e9, "ms": 1e3 * secs}
        gemm_only += count * secs
    # The peak: the step's largest product (the visible layer's 1000 x 200 x 784 and its transposes),
    # not the fastest small shape (on a busy machine one lucky sample of a tiny product can win).
    size = {shape: math.prod(map(int, shape.split("x"))) for shape in rows}
    largest = [shape for shape in rows if size[shape] == max(size.values())]
    peak = max(rows[shape]["gflops"] for shape in largest)
    log(f"  GEMM peak ({label}): {peak:.1f} GFLOP/s; GEMM-only K=50 step {1e3 * gemm_only:.2f} ms")
    return {"peak_gflops": peak, "peak_shapes": largest, "shapes": rows, "gemm_only_step_ms": 1e3 * gemm_only,
            "step_gflop": flops(net, B, 50, train=True) / 1e9, "load": load_avg()}


def read_test_subset(data_dir: Path, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """n evenly spaced points of the binarized-MNIST test split (all 10,000 if n is None), and their indices."""
    test = test_split(data_dir)
    idx = np.arange(len(test)) if n is None else np.linspace(0, len(test) - 1, n).round().astype(np.int64)
    return torch.from_numpy(test[idx].astype(np.float32)), torch.from_numpy(idx)


# ---------------------------------------------------------------------------------------------- variants
class Ctx:
    """What every variant needs: the data, the warm parameters, device settings."""

    def __init__(self, args):
        import iwae_pl
        self.args, self.pkg, self.settings = args, iwae_pl, Settings(args)
        self.dm = mnist(args.data_dir, B)
        self.tmp = Path(tempfile.mkdtemp(prefix="iwae_bench_"))
        self.states: dict[str, dict] = {}

    def batches(self):
        return batches(self.dm, self.settings.device)

    def net(self, layers: str = "2", warm: bool = True):
        pkg = self.pkg
        torch.manual_seed(0)
        net = pkg.IWAENetwork(784, pkg.BURDA_2_LAYER if layers == "2" else pkg.BURDA_1_LAYER)
        net.set_visible_bias(self.dm.train_mean())
        if warm:
            net.load_state_dict(self.warm_state(layers))
        return net.to(self.settings.device)

    def warm_state(self, layers: str) -> dict:
        """Parameters after --warm-steps of IWAE K=5 from Glorot init (every variant starts from them)."""
        if layers not in self.states:
            net = self.net(layers, warm=False)
            objective = self.pkg.make_objective("iwae", 1, 5)
            step = project_step(net, objective, self.settings)
            it = self.batches()
            for _ in range(self.args.warm_steps):
                step(next(it))
            self.states[layers] = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        return self.states[layers]


def project_step(net, objective, settings):
    return adam_step(lambda x: -objective.estimate(net, x).surrogate.mean(), net.parameters(), settings.autocast)


def make_project(ctx, layers="2", M=1, K=50, warm=True):
    net = ctx.net(layers, warm)
    return project_step(net, ctx.pkg.make_objective("iwae" if M == 1 else "miwae", M, K), ctx.settings)


def make_naive(ctx, layers="2", M=1, K=50, warm=True):
    from naive import NaiveIWAE
    model = NaiveIWAE(ctx.net(layers, warm).cpu()).to(ctx.settings.device)
    return adam_step(lambda x: model.loss(x, M, K), model.parameters(), ctx.settings.autocast)


def make_pythae(ctx, K=50, warm=True):
    from peers import pythae_iwae
    model = pythae_iwae(ctx.net("1", warm).cpu(), K).to(ctx.settings.device)
    return adam_step(lambda x: model({"data": x}).loss, model.parameters(), ctx.settings.autocast)


@contextlib.contextmanager
def flush_denormal(on: bool):
    torch.set_flush_denormal(on)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def run_steps(ctx, make, steps: int, skip: int = 5, wrap=contextlib.nullcontext) -> float:
    """Steps per second of a freshly made variant over `steps` steps after `skip` untimed ones."""
    it = ctx.batches()
    with wrap():
        step = make()
        for _ in range(skip):
            step(next(it))
        ctx.settings.sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step(next(it))
        ctx.settings.sync()
        return steps / (time.perf_counter() - t0)


def interleaved(ctx, variants: dict, steps: int, rounds: int, label: str) -> dict:
    """{name: [steps/s per round]}: every round runs every variant, in an order rotated per round."""
    names = list(variants)
    per = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            make, wrap = variants[name]
            per[name].append(run_steps(ctx, make, steps, wrap=wrap))
        log(f"  {label} round {r + 1}: " + ", ".join(f"{n} {per[n][-1]:.1f}/s" for n in names))
    return per


def steps_for(ctx, make, budget: float) -> int:
    """Steps that take about `budget` seconds for this variant."""
    rate = run_steps(ctx, make, 5, skip=2)
    return max(10, int(rate * budget))


# ---------------------------------------------------------------------------------------------- sections
def section_peak(ctx, res):
    res.setdefault("peak", {})["start"] = measure_peak(ctx, "start")


def train_table(ctx, per: dict, fl: dict, peak: float) -> dict:
    out = {}
    for name, rates in per.items():
        r = median(rates)
        out[name] = {"steps_per_s": r, "rounds": rates, "points_per_s": B * r, "step_ms": 1e3 / r,
                     "gflop_per_step": fl[name] / 1e9, "gflops": fl[name] * r / 1e9,
                     "fraction_of_peak": fl[name] * r / 1e9 / peak}
    return out


def peak_now(res) -> float:
    p = res.get("peak", {})
    return max([v["peak_gflops"] for v in p.values()] or [float("nan")])


def section_train(ctx, res):
    args = ctx.args
    configs = [(1, 50)] if args.quick else [(1, 50), (1, 5), (1, 1)]
    net = ctx.net()
    out = {}
    for M, K in configs:
        variants = {
            "project": (lambda: make_project(ctx, "2", M, K), contextlib.nullcontext),
            "naive": (lambda: make_naive(ctx, "2", M, K), contextlib.nullcontext),
            "naive+ftz": (lambda: make_naive(ctx, "2", M, K), lambda: flush_denormal(True)),
        }
        steps = steps_for(ctx, variants["project"][0], args.budget)
        per = interleaved(ctx, variants, steps, args.rounds, f"train K={K}")
        fl = {"project": flops(net, B, M * K, True), "naive": flops(net, B, M * K, True, naive=True)}
        fl["naive+ftz"] = fl["naive"]
        out[f"{M}x{K}"] = {"M": M, "K": K, "steps_per_round": steps, "variants": train_table(ctx, per, fl, peak_now(res))}
    res["train"] = out


def section_flush(ctx, res):
    args = ctx.args
    out = {}
    for state in ("init", "warm"):
        warm = state == "warm"
        variants = {
            "project": (lambda: make_project(ctx, "2", 1, 50, warm), contextlib.nullcontext),
            "project + set_flush_denormal": (lambda: make_project(ctx, "2", 1, 50, warm), lambda: flush_denormal(True)),
        }
        steps = max(10, int(args.budget * 20))
        per = interleaved(ctx, variants, steps, args.rounds, f"flush {state}")
        out[state] = {n: {"steps_per_s": median(v), "rounds": v} for n, v in per.items()}
    res["flush"] = out


def section_pythae(ctx, res):
    import peers
    why = peers.available()
    if why is not None:
        log(f"  pythae skipped: {why}")
        res["pythae"] = {"skipped": why}
        return
    net = ctx.net("1")
    variants = {"project": (lambda: make_project(ctx, "1", 1, 50), contextlib.nullcontext),
                "pythae": (lambda: make_pythae(ctx, 50), contextlib.nullcontext)}
    steps = steps_for(ctx, variants["project"][0], ctx.args.budget)
    per = interleaved(ctx, variants, steps, ctx.args.rounds, "pythae 1-layer K=50")
    fl = {n: flops(net, B, 50, True) for n in variants}
    res["pythae"] = {"steps_per_round": steps, "variants": train_table(ctx, per, fl, peak_now(res))}


class Segments:
    """Per-step clocks: forward, backward and the step's whole period (medians in ms)."""

    def __init__(self, sync):
        self.sync, self.marks = sync, []

    def mark(self, name: str) -> None:
        self.sync()
        self.marks.append((name, time.perf_counter()))

    def medians(self, skip: int) -> dict:
        spans = {"forward": [], "backward": [], "step": []}
        last = {}
        for name, t in self.marks:
            if name == "forward end":
                spans["forward"].append(t - last["forward"])
            elif name == "backward end":
                spans["backward"].append(t - last["backward"])
            elif name == "step end" and "step end" in last:
                spans["step"].append(t - last["step end"])
            last[name] = t
        out = {k: 1e3 * median(v[skip:]) for k, v in spans.items()}
        out["rest"] = out["step"] - out["forward"] - out["backward"]
        return out


def run_lightning(ctx, steps: int, skip: int = 5) -> tuple[float, dict]:
    """Steps/s of Trainer.fit(IWAEModule) on the benchmark's data, timed between on_train_batch_end calls,
    and the median segments of a step."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    from iwae_pl.lightning.module import IWAEModule

    seg = Segments(ctx.settings.sync)

    class Clocked(IWAEModule):
        def training_step(self, batch, batch_idx):
            seg.mark("forward")
            out = super().training_step(batch, batch_idx)
            seg.mark("forward end")
            return out

        def on_before_backward(self, loss):
            seg.mark("backward")

        def on_after_backward(self):
            seg.mark("backward end")

        def on_train_batch_end(self, outputs, batch, batch_idx):
            seg.mark("step end")

    module = Clocked(input_dim=784, layers=ctx.pkg.BURDA_2_LAYER, objective="iwae", K=50,
                     init_visible_bias=False, val_k=0)
    module.net.load_state_dict(ctx.warm_state("2"))
    run_dir = Path(tempfile.mkdtemp(dir=ctx.tmp))
    precision = {None: "32-true", torch.bfloat16: "bf16-mixed", torch.float16: "16-mixed"}[ctx.settings.dtype]
    trainer = pl.Trainer(max_steps=skip + steps + 1, accelerator=ctx.settings.device.type, devices=1,
                         precision=precision, logger=CSVLogger(str(run_dir), name="bench"),
                         callbacks=[ModelCheckpoint(dirpath=str(run_dir / "ckpt"), save_last=True)],
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0)
    trainer.fit(module, datamodule=ctx.dm)
    shutil.rmtree(run_dir, ignore_errors=True)
    ends = [t for name, t in seg.marks if name == "step end"]
    return steps / (ends[skip + steps] - ends[skip]), seg.medians(skip)


def run_hand(ctx, steps: int, skip: int = 5) -> tuple[float, dict]:
    """The project's network and objective in the hand loop, with the same segment clocks."""
    net = ctx.net()
    objective = ctx.pkg.make_objective("iwae", 1, 50)
    opt = optimizer(net.parameters())
    seg, it = Segments(ctx.settings.sync), ctx.batches()
    for _ in range(skip + steps + 1):
        x = next(it)
        seg.mark("forward")
        with ctx.settings.autocast():
            loss = -objective.estimate(net, x).surrogate.mean()
        seg.mark("forward end")
        opt.zero_grad()
        seg.mark("backward")
        loss.backward()
        seg.mark("backward end")
        opt.step()
        seg.mark("step end")
    ends = [t for name, t in seg.marks if name == "step end"]
    return steps / (ends[skip + steps] - ends[skip]), seg.medians(skip)


def section_lightning(ctx, res):
    args = ctx.args
    steps = 50 * max(1, round(args.budget * 40 / 50))  # a multiple of Lightning's logging period (50)
    runners = {"lightning": lambda: run_lightning(ctx, steps), "hand loop": lambda: run_hand(ctx, steps)}
    per = {n: [] for n in runners}
    segments = {n: [] for n in runners}
    names = list(runners)
    for r in range(args.rounds):
        for name in names[r % 2:] + names[:r % 2]:
            rate, seg = runners[name]()
            per[name].append(rate)
            segments[name].append(seg)
        log(f"  lightning round {r + 1}: " + ", ".join(f"{n} {per[n][-1]:.1f}/s" for n in names))
    res["lightning"] = {"steps_per_round": steps, "variants": {
        n: {"steps_per_s": median(v), "rounds": v,
            "segments_ms": {k: median([s[k] for s in segments[n]]) for k in segments[n][0]}}
        for n, v in per.items()}}


# ---------------------------------------------------------------------------------------------- L_5000
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark (VmHWM, via /proc/self/clear_refs); the current RSS in bytes."""
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


def eval_worker(spec: dict) -> dict:
    """In a fresh process: one L_5000 measurement and its peak memory (RSS on CPU, allocator on CUDA)."""
    torch.set_num_threads(spec["threads"])
    import iwae_pl
    from naive import NaiveIWAE
    device = torch.device(spec["device"])
    if spec["tf32"]:
        torch.backends.cuda.matmul.allow_tf32 = True
    x, index = read_test_subset(Path(spec["data_dir"]), spec["points"])
    x = x.to(device)
    net = iwae_pl.IWAENetwork(784, iwae_pl.BURDA_2_LAYER)
    net.load_state_dict(torch.load(spec["state"], weights_only=True))
    net = net.to(device).eval()
    k, batch = 5000, spec["batch"]
    if spec["impl"] == "naive":
        naive = NaiveIWAE(net.cpu()).to(device)
        torch.manual_seed(0)

        def run(xb, ib):
            return naive.log_likelihood(xb, k, chunk=spec["chunk"])
    else:
        if spec["impl"] == "plain":  # the same network on its plain modules (no evaluation fast path)
            plain = iwae_pl.IWAENetwork(784, iwae_pl.BURDA_2_LAYER, fast=False)
            plain.load_state_dict(net.state_dict())
            net = plain.to(device).eval()
        kw = {"threads_over_points": False} if spec["impl"] == "intra-op" else {}

        def run(xb, ib):
            return iwae_pl.log_likelihood(net, xb, ib, k, seed=0, **kw)
    run(x[:2], index[:2])  # warm up: the measured workload on two points, every configuration alike
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss0 = reset_peak_rss()
    t0 = time.perf_counter()
    ll = torch.cat([run(x[i:i + batch], index[i:i + batch]) for i in range(0, len(x), batch)])
    if device.type == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else peak_rss()
    return {"seconds": secs, "points_per_s": len(x) / secs, "peak_mb": peak / 2**20,
            "above_idle_mb": (peak - (0 if device.type == "cuda" else rss0)) / 2**20,
            "mean_ll": ll.mean().item(), "ll": ll.tolist()}


def spawn_eval(ctx, spec: dict) -> dict:
    spec = {**spec, "threads": torch.get_num_threads(), "data_dir": str(ctx.args.data_dir),
            "state": str(ctx.tmp / "warm2.pt"), "device": str(ctx.settings.device), "tf32": ctx.args.tf32}
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), WORKER_FLAG, json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"eval worker failed: {spec}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def section_eval(ctx, res):
    args = ctx.args
    torch.save(ctx.warm_state("2"), ctx.tmp / "warm2.pt")
    gpu = ctx.settings.device.type == "cuda"
    points = None if gpu else (10 if args.quick else args.eval_points)
    batch = 500 if gpu else 20
    configs = {"project default": {"impl": "project", "batch": batch},
               "project, plain modules (fast=False)": {"impl": "plain", "batch": batch}}
    if not gpu and torch.get_num_threads() > 1:  # the default spreads points over threads: vs intra-op threads
        configs["project, intra-op threads"] = {"impl": "intra-op", "batch": batch}
    chunks = (16, 50, 200) if args.quick else (8, 16, 50, 100, 500)
    for chunk in chunks:  # the naive reference's sweep: samples per pass, all points of a batch together
        configs[f"naive chunk {chunk}"] = {"impl": "naive", "chunk": chunk, "batch": 500 if gpu else 20}
    names = list(configs)
    out = {n: [] for n in names}
    rounds = 1 if args.quick or gpu else args.eval_rounds
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            out[name].append(spawn_eval(ctx, {**configs[name], "points": points}))
            o = out[name][-1]
            log(f"  eval {name}: {o['points_per_s']:.2f} pt/s, peak {o['peak_mb']:.0f} MB, mean L_5000 {o['mean_ll']:.3f}")
    net = ctx.net()
    summary = {}
    for name, runs in out.items():
        pps = median([o["points_per_s"] for o in runs])
        fl = flops(net, 1, 5000, train=False, naive=configs[name]["impl"] == "naive")
        summary[name] = {"points_per_s": pps, "full_test_set_minutes": 10000 / pps / 60,
                         "peak_mb": max(o["peak_mb"] for o in runs),
                         "above_idle_mb": max(o["above_idle_mb"] for o in runs),
                         "mean_ll": runs[0]["mean_ll"], "gflop_per_point": fl / 1e9,
                         "fraction_of_peak": fl * pps / 1e9 / peak_now(res),
                         "rounds": [o["points_per_s"] for o in runs]}
    res["eval"] = {"points": points or 10000, "configs": summary, "max_abs_diff_default_vs_plain": max(
        abs(a - b) for a, b in zip(out["project default"][0]["ll"], out["project, plain modules (fast=False)"][0]["ll"]))}


# ---------------------------------------------------------------------------------------------- report
def fmt(v, nd=1):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.{nd}f}"


def report(res) -> str:
    meta = res["meta"]
    lines = [f"iwae_pl benchmark: {meta['cpu']}, device {meta['device']}, {meta['threads']} threads, "
             f"torch {meta['torch']}, dtype {meta['dtype']}{' +TF32' if meta['tf32'] else ''}, commit {meta.get('commit')}",
             f"load average {meta['load_before'][0]:.2f} at the start, {meta['load_after'][0]:.2f} at the end",
             f"command: {meta['command']}"]
    peak = peak_now(res)
    if "peak" in res:
        p = res["peak"]
        lines += ["", "GEMM at the training step's shapes (torch.mm, GFLOP/s)", "",
                  "| m x k x n | per step | start | end |", "|---|---|---|---|"]
        for shape, v in p["start"]["shapes"].items():
            end = p.get("end", {}).get("shapes", {}).get(shape, {}).get("gflops")
            lines.append(f"| {shape} | {v['count']} | {v['gflops']:.1f} | {fmt(end)} |")
        s = p["start"]
        lines += ["", f"peak (the largest shape and its transposes, best of start and end): {peak:.1f} GFLOP/s. A 2-layer K = 50 step is "
                      f"{s['step_gflop']:.3f} GFLOP; its matrix products alone take {s['gemm_only_step_ms']:.2f} ms "
                      f"(the ceiling: {s['step_gflop'] / s['gemm_only_step_ms'] * 1e3 / peak:.0%} of peak)."]
    for key, title in [("train", None), ("pythae", "1-layer, IWAE K = 50, batch 20: project vs pythae")]:
        if key not in res:
            continue
        if key == "pythae" and "skipped" in res["pythae"]:
            lines += ["", f"pythae: skipped ({res['pythae']['skipped']})"]
            continue
        blocks = res["train"].items() if key == "train" else [("1x50", res["pythae"])]
        for cfg, r in blocks:
            v = r["variants"]
            head = title or f"Training, BURDA_2_LAYER, IWAE M x K = {cfg.replace('x', ' x ')}, batch 20"
            lines += ["", head, "", "| variant | steps/s | points/s | ms/step | GFLOP/step | GFLOP/s | of peak | project / variant |",
                      "|---|---|---|---|---|---|---|---|"]
            for name, s in v.items():
                lines.append(f"| {name} | {s['steps_per_s']:.1f} | {s['points_per_s']:.0f} | {s['step_ms']:.2f} | "
                             f"{s['gflop_per_step']:.3f} | {s['gflops']:.1f} | {s['fraction_of_peak']:.0%} | "
                             f"{v['project']['steps_per_s'] / s['steps_per_s']:.2f} |")
    if "flush" in res:
        lines += ["", "Subnormal gradients, 2-layer K = 50 (steps/s)", "", "| variant | at init | warm |", "|---|---|---|"]
        for name in res["flush"]["init"]:
            lines.append(f"| {name} | {res['flush']['init'][name]['steps_per_s']:.1f} | "
                         f"{res['flush']['warm'][name]['steps_per_s']:.1f} |")
    if "lightning" in res:
        v = res["lightning"]["variants"]
        lines += ["", f"Lightning vs hand loop, 2-layer K = 50: {v['lightning']['steps_per_s']:.1f} vs "
                      f"{v['hand loop']['steps_per_s']:.1f} steps/s = {v['lightning']['steps_per_s'] / v['hand loop']['steps_per_s']:.3f}x",
                  "", "| median ms per step | forward | backward | rest (optimizer, data, loop) | whole step |",
                  "|---|---|---|---|---|"]
        for name, s in v.items():
            g = s["segments_ms"]
            lines.append(f"| {name} | {g['forward']:.2f} | {g['backward']:.2f} | {g['rest']:.2f} | {g['step']:.2f} |")
    if "eval" in res:
        e = res["eval"]
        c = e["configs"]
        best = max((n for n in c if n.startswith("naive")), key=lambda n: c[n]["points_per_s"])
        lines += ["", f"L_5000, BURDA_2_LAYER, {e['points']} test points (rates extrapolate to 10,000)", "",
                  "| configuration | points/s | 10k points (min) | GFLOP/point | of peak | peak MB | above idle MB | default / this | mean L_5000 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, s in c.items():
            lines.append(f"| {name} | {s['points_per_s']:.2f} | {s['full_test_set_minutes']:.1f} | {s['gflop_per_point']:.2f} | "
                         f"{s['fraction_of_peak']:.0%} | {s['peak_mb']:.0f} | {s['above_idle_mb']:.0f} | "
                         f"{c['project default']['points_per_s'] / s['points_per_s']:.2f} | {s['mean_ll']:.3f} |")
        lines += ["", f"tuned naive reference: {best}; default vs plain modules, same noise: max |L_5000 difference| "
                      f"{e['max_abs_diff_default_vs_plain']:.2e}"]
    return "\n".join(lines)


def main(argv=None):
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == WORKER_FLAG:
        print(json.dumps(eval_worker(json.loads(sys.argv[2]))))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer configurations, rounds and points")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, from {', '.join(SECTIONS)}")
    p.add_argument("--out", type=Path, default=HERE / "results.json")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("IWAE_PL_DATA_DIR", "/work/shared/data")))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="autocast dtype for every variant (default float32: no autocast)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matrix products on CUDA")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--eval-rounds", type=int, default=2)
    p.add_argument("--eval-points", type=int, default=50)
    p.add_argument("--budget", type=float, default=None, help="seconds per variant and round")
    p.add_argument("--warm-steps", type=int, default=300)
    args = p.parse_args(argv)
    sections = args.sections.split(",")
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        p.error(f"unknown section {bad[0]!r}; allowed: {', '.join(SECTIONS)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device!r}: CUDA is not available here; allowed: cpu")
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.budget = args.budget or (1.0 if args.quick else 3.0)
    if args.threads:
        torch.set_num_threads(args.threads)
    import logging
    import warnings
    warnings.filterwarnings("ignore")
    import pytorch_lightning  # noqa: F401  (configures its loggers on import: quiet them afterwards)
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    res = {"meta": {"command": " ".join(["python benchmarks/bench.py", *sys.argv[1:]]), "quick": args.quick,
                    "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "device": args.device, "dtype": args.dtype, "tf32": args.tf32,
                    "load_before": load_avg(), "warm_steps": args.warm_steps, "rounds": args.rounds,
                    "time": time.strftime("%Y-%m-%d %H:%M:%S")}}
    with contextlib.suppress(OSError, StopIteration):
        res["meta"]["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                                  if line.startswith("model name"))
    if args.device.startswith("cuda"):
        res["meta"]["cpu"] = torch.cuda.get_device_name()
    res["meta"]["commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                           capture_output=True, text=True).stdout.strip() or None
    ctx = Ctx(args)
    t_start = time.perf_counter()
    log(f"load average {res['meta']['load_before']}; warm start: {args.warm_steps} steps of IWAE K=5 ...")
    section_peak(ctx, res)  # every run: the fractions of peak need it
    for name in SECTIONS[1:]:
        if name in sections:
            log(f"section {name} ...")
            t0 = time.perf_counter()
            globals()[f"section_{name}"](ctx, res)
            res.setdefault("section_seconds", {})[name] = time.perf_counter() - t0
    res["peak"]["end"] = measure_peak(ctx, "end")
    for block in [*res.get("train", {}).values(), res.get("pythae", {})]:  # fractions against the final peak
        for v in block.get("variants", {}).values():
            v["fraction_of_peak"] = v["gflops"] / peak_now(res)
    for v in res.get("eval", {}).get("configs", {}).values():
        v["fraction_of_peak"] = v["gflop_per_point"] * v["points_per_s"] / peak_now(res)
    res["meta"]["load_after"] = load_avg()
    res["meta"]["total_seconds"] = time.perf_counter() - t_start
    text = report(res)
    res["table"] = text
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=str))
    log(f"wrote {args.out} ({res['meta']['total_seconds'] / 60:.1f} min)")
    shutil.rmtree(ctx.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
