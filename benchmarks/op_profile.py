#!/usr/bin/env python
"""Where the time goes: torch.profiler self time of a training step or of an L_5000 point, by operator
and grouped (matrix products, transcendental elementwise, other elementwise, noise, optimizer, copies).

    python benchmarks/op_profile.py train            # 2-layer IWAE K = 50, batch 20, torch's threads
    python benchmarks/op_profile.py eval             # L_5000 of single test points, 1 thread, the passes
                                                     # of one thread of the default (points over threads)

Run it on any checkout (PYTHONPATH=<checkout>) to compare before and after a change. The shares are
the profiler's (it adds a little per operation); the unprofiled time is printed too.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from workloads import test_points, training_step

import iwae_pl

GROUPS = {
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm", "aten::addmv_", "aten::mv", "aten::addmv"),
    "transcendental": ("aten::sigmoid_", "aten::sigmoid", "aten::tanh_", "aten::tanh", "aten::exp", "aten::exp_",
                       "aten::log", "aten::log_", "aten::softplus", "aten::cos", "aten::sin", "aten::log1p",
                       "aten::softplus_backward", "aten::tanh_backward", "aten::sigmoid_backward"),
    "noise": ("aten::normal_", "aten::bitwise_right_shift", "aten::bitwise_xor_", "aten::bitwise_and_",
              "aten::bitwise_xor", "aten::__rshift__"),
    "optimizer": ("aten::_fused_adam_", "aten::_foreach_add_"),
    "copies": ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::cat"),
}


def train_step():
    return training_step(), 300, 100, "step"


def eval_point():
    torch.set_num_threads(1)
    test = test_points(64)
    torch.manual_seed(0)
    net = iwae_pl.IWAENetwork(784, iwae_pl.BURDA_2_LAYER).eval()
    count = [0]
    try:
        from iwae_pl.model.likelihood import auto_chunk, default_max_rows
        kw = {"chunk": auto_chunk(1, 5000, default_max_rows(net, torch.device("cpu")))}  # a worker's passes
    except ImportError:  # a checkout from before points over threads
        kw = {}

    def point():
        b = count[0] % len(test)
        count[0] += 1
        iwae_pl.log_likelihood(net, test[b:b + 1], torch.tensor([b]), 5000, **kw)
    return point, 3, 12, "point"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["train", "eval"])
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    fn, warm, n, unit = train_step() if args.what == "train" else eval_point()
    for _ in range(warm):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    wall = 1e3 * (time.perf_counter() - t0) / n
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"iwae_pl {Path(iwae_pl.__file__).parent}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{args.what}: {wall:.2f} ms per {unit} unprofiled, {total / 1e3 / n:.2f} ms profiled (self time)")
    grouped = {g: 0.0 for g in [*GROUPS, "other"]}
    for e in events:
        group = next((g for g, names in GROUPS.items() if e.key in names), "other")
        grouped[group] += e.self_cpu_time_total
    print("| group | ms per " + unit + " | share |\n|---|---|---|")
    for g, t in grouped.items():
        print(f"| {g} | {t / 1e3 / n:.2f} | {t / total:.0%} |")
    print(f"\n| operator | calls per {unit} | ms per {unit} | share |\n|---|---|---|---|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.top]:
        print(f"| {e.key} | {e.count // n} | {e.self_cpu_time_total / 1e3 / n:.2f} | {e.self_cpu_time_total / total:.1%} |")


if __name__ == "__main__":
    main()
