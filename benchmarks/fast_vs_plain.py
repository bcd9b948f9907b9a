#!/usr/bin/env python
"""Does ``IWAENetwork(fast=True)`` pay for itself? The same network with ``fast=True`` and ``fast=False``
(its plain modules), side by side in one process, in alternating rounds, timed in process CPU time:

- training: Adam steps of IWAE M x K = 1 x 50, batch 20 (2-layer and 1-layer), torch's threads;
- evaluation: L_5000 of single test points, torch single-threaded (as each thread of the default
  evaluation runs).

    python benchmarks/fast_vs_plain.py            # ~3 min on 2 idle cores

The rule it serves: a fast path that buys less than ~20 % over its plain reference is not worth a
second implementation (benchmarks/README.md). Run it on any checkout (PYTHONPATH=<checkout>).
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import torch
from workloads import mnist, test_points, training_step

import iwae_pl


def training(layers, rounds: int = 12, steps: int = 24) -> dict:
    dm = mnist()
    variants = {"fast": training_step(layers, fast=True, dm=dm), "plain": training_step(layers, fast=False, dm=dm)}
    return alternate(variants, rounds, steps, warm=50)


def evaluation(rounds: int = 8, points: int = 5) -> dict:
    torch.set_num_threads(1)
    test = test_points(rounds * points + 1)
    torch.manual_seed(0)
    nets = {True: iwae_pl.IWAENetwork(784, iwae_pl.BURDA_2_LAYER, fast=True).eval()}
    nets[False] = iwae_pl.IWAENetwork(784, iwae_pl.BURDA_2_LAYER, fast=False).eval()
    nets[False].load_state_dict(nets[True].state_dict())
    counter = {True: 0, False: 0}

    def make(fast: bool):
        def point():
            b = counter[fast] % len(test)
            counter[fast] += 1
            iwae_pl.log_likelihood(nets[fast], test[b:b + 1], torch.tensor([b]), 5000)
        return point
    try:
        return alternate({"fast": make(True), "plain": make(False)}, rounds, points, warm=1)
    finally:
        torch.set_num_threads(os.cpu_count() or 1)


def alternate(variants: dict, rounds: int, n: int, warm: int) -> dict:
    """CPU ms per call of each variant: medians over rounds, order alternating every round."""
    for f in variants.values():
        for _ in range(warm):
            f()
    per = {k: [] for k in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names if r % 2 else names[::-1]:
            t0 = time.process_time()
            for _ in range(n):
                variants[name]()
            per[name].append(1e3 * (time.process_time() - t0) / n)
    med = {k: statistics.median(v) for k, v in per.items()}
    return {"cpu_ms": med, "plain_over_fast": med["plain"] / med["fast"], "rounds": per}


def main() -> None:
    print(f"iwae_pl {Path(iwae_pl.__file__).parent}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f}")
    for label, result in [("training, 2-layer, K = 50 (CPU ms/step)", training(iwae_pl.BURDA_2_LAYER)),
                          ("training, 1-layer, K = 50 (CPU ms/step)", training(iwae_pl.BURDA_1_LAYER)),
                          ("L_5000, 2-layer, 1 thread (CPU ms/point)", evaluation())]:
        m = result["cpu_ms"]
        print(f"{label}: fast {m['fast']:.1f}, plain {m['plain']:.1f}, plain / fast {result['plain_over_fast']:.2f}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
