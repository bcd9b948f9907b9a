"""pythae's IWAE as a peer (``pip install -e .[bench]``), with the architecture and weights of a 1-layer
``IWAENetwork``: encoder once per data point, decoder per sample, sigmoid outputs with pythae's own
``binary_cross_entropy`` loss. Its log-weights equal the project's on the same noise
(tests/test_bench_references.py). Nothing here is used by the package.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


def available() -> str | None:
    """None if pythae imports, else why not (one line)."""
    try:
        import pythae  # noqa: F401
    except Exception as err:  # ImportError, or a pythae broken by this environment's versions
        return f"pythae not importable ({type(err).__name__}: {err}); install the `bench` extra"
    return None


def pythae_iwae(net, K: int) -> nn.Module:
    """pythae.models.IWAE with the layers and parameters of ``net`` (1 stochastic layer, std exp)."""
    from pythae.models import IWAE, IWAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    if len(net.encoder.blocks) != 1 or net.encoder.blocks[0].std != "exp":
        raise ValueError("pythae's IWAE has one stochastic layer: pass a 1-layer network with std='exp'")
    enc, vis = net.encoder.blocks[0], net.decoder.visible

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.mlp, self.head = copy.deepcopy(enc.mlp), copy.deepcopy(enc.head)

        def forward(self, x: Tensor):
            mean, log_std = self.head(self.mlp(x)).chunk(2, -1)
            return ModelOutput(embedding=mean, log_covariance=2 * log_std)

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.mlp, self.head = copy.deepcopy(vis.mlp), copy.deepcopy(vis.head)

        def forward(self, z: Tensor):
            return ModelOutput(reconstruction=torch.sigmoid(self.head(self.mlp(z))))

    config = IWAEConfig(input_dim=(net.input_dim,), latent_dim=net.latent_sizes[0], number_samples=K,
                        reconstruction_loss="bce")
    return IWAE(config, encoder=Encoder(), decoder=Decoder())


def pythae_log_weights(model: nn.Module, x: Tensor, eps: Tensor) -> Tensor:
    """pythae's own log-weights of x [B, D] on given noise eps [K, B, d] -> [K, B].

    pythae computes log w inside ``loss_function`` and returns only the loss; on one sample of one
    point the loss is exactly -log w, so each log-weight is read from pythae's code on that slice.
    """
    real_loss, real_sample = model.loss_function, model._sample_gauss
    out = torch.empty(eps.shape[:2], dtype=x.dtype)

    def read(recon_x, xs, mu, log_var, z):
        n, model.n_samples = model.n_samples, 1  # loss_function repeats x n_samples times
        try:
            for b in range(z.shape[0]):
                for k in range(z.shape[1]):
                    one = (slice(b, b + 1), slice(k, k + 1))
                    out[k, b] = -real_loss(recon_x[one], xs[b:b + 1], mu[one], log_var[one], z[one])[0]
        finally:
            model.n_samples = n
        return real_loss(recon_x, xs, mu, log_var, z)

    model.loss_function = read
    model._sample_gauss = lambda mu, std: (mu + eps.transpose(0, 1) * std, eps.transpose(0, 1))
    try:
        with torch.no_grad():
            model({"data": x})
    finally:
        model.loss_function, model._sample_gauss = real_loss, real_sample
    return out
