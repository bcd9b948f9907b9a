"""W&B sweep files (``sweeps/wandb_*.yaml``): the commands an agent would run, expanded locally.

``wandb sweep FILE`` + ``wandb agent ID`` run them for real; this module reproduces, without a
server, what the agent does with each run the sweep controller proposes: the ``sweeps`` package
(the engine behind W&B's local controller) checks the file against W&B's schema and proposes runs
(``next_run``), and the agent's own argument formatting (``--name=value`` per parameter) fills
``${args}`` in the file's ``command``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


def load(path: str | Path) -> dict:
    """A sweep file as a mapping."""
    return yaml.safe_load(Path(path).read_text())


def violations(config: dict) -> list[str]:
    """W&B schema violations of a sweep config ([] if it is valid)."""
    from sweeps import schema_violations_from_proposed_config

    return list(schema_violations_from_proposed_config(config))


def _plain(params: dict) -> dict[str, Any]:
    """Parameter name -> value as the agent receives it (JSON from the server: no numpy scalars)."""
    return json.loads(json.dumps({k: v["value"] for k, v in params.items()}, default=float))


def propose(config: dict, n: int | None = None, metric_value=lambda i: -100.0 + i) -> list[dict[str, Any]]:
    """The runs W&B's controller would start: every grid point (``n=None``), or ``n`` proposals of a
    random/Bayesian sweep, each earlier one marked finished with ``metric_value(i)`` as its metric."""
    from sweeps import RunState, next_run

    runs, out = [], []
    while n is None or len(out) < n:
        run = next_run(config, runs)
        if run is None:
            break
        out.append(_plain(run.config))
        run.state = RunState.finished
        run.summary_metrics = {config["metric"]["name"]: metric_value(len(out))}
        runs.append(run)
    return out


def command(config: dict, params: dict[str, Any], interpreter: str = "python") -> list[str]:
    """The argv the agent runs for one proposed run: the file's ``command`` with ``${env}``,
    ``${interpreter}``, ``${program}`` and ``${args}`` filled in as ``wandb agent`` fills them."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    macros = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    macros.update(env=["/usr/bin/env"], interpreter=[interpreter], program=[config.get("program", "")])
    argv: list[str] = []
    for item in config.get("command") or ["${env}", "${interpreter}", "${program}", "${args}"]:
        item = str(item)
        argv += macros.get(item[2:-1], []) if item.startswith("${") and item.endswith("}") else [item]
    return argv
