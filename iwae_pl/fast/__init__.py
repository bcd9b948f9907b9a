"""The speed paths, each tested equal to the plain reference it replaces (tests/test_fast_paths.py).

    inplace     MLPs with tanh / ReLU in place, training tanh via sigmoid   (reference: ``nn.Sequential``)
    bernoulli   the visible head + Bernoulli pixel term as one autograd function; softplus sums
                (reference: the head, then ``model.densities.bernoulli_log_prob``)
    eval_pass   the CPU evaluation pass behind L_k         (reference: ``IWAENetwork.log_weights``)
    workspace   per-thread reused buffers for the no-autograd paths

Plain PyTorch, no Lightning. Measured gains: benchmarks/README.md.
"""
