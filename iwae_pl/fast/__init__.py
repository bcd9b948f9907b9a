"""The speed paths, each tested equal to the plain reference it replaces (tests/test_fast_paths.py).

    inplace     MLPs with tanh / ReLU in place            (reference: ``nn.Sequential``)
    bernoulli   the Bernoulli pixel term, fused backward  (reference: ``model.densities.bernoulli_log_prob``)
    eval_pass   the CPU evaluation pass behind L_k         (reference: ``IWAENetwork.log_weights``)
    workspace   per-thread reused buffers for the no-autograd paths

Plain PyTorch, no Lightning. Measured gains: benchmarks/README.md.
"""
