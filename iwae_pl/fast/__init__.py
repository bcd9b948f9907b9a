"""The evaluation speed paths (no autograd), each tested equal to the plain reference it replaces
(tests/test_fast_paths.py).

    inplace     MLPs with tanh / ReLU in place                          (reference: ``nn.Sequential``)
    bernoulli   the visible block + Bernoulli pixel term in cache-sized row blocks, softplus sums
                (reference: the block, then ``model.densities.bernoulli_log_prob``)
    workspace   per-thread reused buffers for these paths

Training runs the plain modules: its fused versions did not pay for themselves. Plain PyTorch, no
Lightning. Measured gains: benchmarks/README.md.
"""
