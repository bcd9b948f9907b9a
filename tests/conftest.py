"""Shared fixtures: small random networks and data, deterministic seeds."""
from __future__ import annotations

import pytest
import torch

from iwae_pl import IWAENetwork, LayerSpec

torch.set_num_threads(2)


def make_net(layers=((3, (8,)),), input_dim: int = 6, seed: int = 0, dtype=torch.float64) -> IWAENetwork:
    """A small random network; float64 so that exact identities can be checked tightly."""
    torch.manual_seed(seed)
    net = IWAENetwork(input_dim, [LayerSpec(d, tuple(h)) for d, h in layers]).to(dtype)
    # Random (non-zero) biases so no identity holds by accident of a zero initialisation.
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.3)
    return net


def make_data(n: int = 5, dim: int = 6, seed: int = 1, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, dim, generator=g) < 0.4).to(dtype)


@pytest.fixture(params=["one_layer", "two_layers"])
def net(request) -> IWAENetwork:
    layers = ((3, (8,)),) if request.param == "one_layer" else ((4, (8, 7)), (2, (5,)))
    return make_net(layers)


@pytest.fixture
def x() -> torch.Tensor:
    return make_data()


def surrogate_grads(net, objective, x, eps):
    """(bound, gradient of -mean surrogate for every parameter) of an objective on given noise."""
    net.zero_grad()
    lw = objective.log_weights(net, x, eps=eps)
    bound, surrogate = objective(lw)
    (-surrogate.mean()).backward()
    return bound.detach(), [p.grad.clone() for p in net.parameters()]


@pytest.fixture
def direct_http(monkeypatch) -> None:
    """urllib goes straight to 127.0.0.1: no proxy from the environment stands between a test and its
    local HTTP server."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


# --- PostgreSQL for the sweep storage tests (tests/postgres.py) -----------------------------------
@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server on 127.0.0.1 for the session; skips when PostgreSQL is absent."""
    from postgres import PostgresServer, missing

    reason = missing()
    if reason:
        pytest.skip(reason)
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server, request) -> str:
    """The URL of a fresh, empty database on the session's server (one per test)."""
    import re

    return postgres_server.create_database(re.sub(r"\W", "_", request.node.name).lower()[:60])
