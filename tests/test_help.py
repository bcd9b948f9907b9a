"""`--help` reads: every model, data and callback setting has a description and its true default; the
program is called iwae_pl; the optimizer/lr_scheduler blocks that would replace the model's Adam are gone."""
from __future__ import annotations

import inspect
import re

import pytest
import yaml

from iwae_pl import callbacks
from iwae_pl.cli import main, make_cli
from iwae_pl.data import BinarizedDataModule
from iwae_pl.errors import ConfigError
from iwae_pl.lightning.module import IWAEModule
from iwae_pl.model.objectives import make_objective

CALLBACKS = ["BetaWarmup", "ActivityStats", "EffectiveSampleSize", "GradientSNR", "SampleImages"]


def _help(args, capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "200")  # argparse wraps at the terminal width; one line per option is easier to read
    with pytest.raises(SystemExit) as exit_info:
        make_cli(args)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def _options(text: str, prefix: str) -> dict[str, str]:
    """Help text of every ``--<prefix>.<name>`` option: {name: description and '(type: ..., default: ...)'}."""
    blocks: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        m = re.match(rf"  --{re.escape(prefix)}\.(\w+)\b(?!\.)(.*)", line)
        if m:
            current = m.group(1)
            blocks[current] = m.group(2)
        elif line.startswith("  --") or not line.strip() or not line.startswith(" "):
            current = None
        elif current is not None:
            blocks[current] += " " + line.strip()
    return blocks


def _shown_default(value) -> str:
    if value is None:
        return "null"
    return str(value)


def _check_class(cls, blocks: dict[str, str], skip=("self", "input_dim")) -> None:
    params = [p for p in inspect.signature(cls.__init__).parameters.values()
              if p.name not in skip and p.kind is p.POSITIONAL_OR_KEYWORD]
    assert params
    for p in params:
        assert p.name in blocks, f"{cls.__name__}.{p.name} missing from --help"
        text = blocks[p.name]
        description = re.sub(r"^\s*(\[ITEM,\.\.\.\]|\{[^}]*\}|[A-Z_]+)?(, --\S+ \S+)?", "", text).split("(type:")[0]
        assert len(description.strip()) >= 10, f"{cls.__name__}.{p.name} has no description: {text!r}"
        if not isinstance(p.default, (tuple, list)):  # sequences print as Python reprs of dataclasses
            assert f"default: {_shown_default(p.default)})" in text, (p.name, text)


def test_fit_help_describes_every_model_and_data_setting(capsys, monkeypatch):
    text = _help(["fit", "--help"], capsys, monkeypatch)
    assert text.startswith("usage: iwae_pl "), text[:80]
    _check_class(IWAEModule, _options(text, "model"))
    _check_class(BinarizedDataModule, _options(text, "data"))
    model = _options(text, "model")
    # the True defaults of the settings that print as null: the objective's own
    assert make_objective("ciwae", 1, 5).beta == 0.5 and "null means 0.5" in model["beta"]
    assert make_objective("vr", 1, 5).alpha == 0.5 and "null means 0.5" in model["alpha"]
    # no LightningCLI optimizer / scheduler blocks that would replace the model's Adam and schedule
    assert "--optimizer" not in text and "--lr_scheduler" not in text


@pytest.mark.parametrize("name", CALLBACKS)
def test_callback_help_describes_every_setting(name, capsys, monkeypatch):
    text = _help(["fit", "--trainer.callbacks.help", f"iwae_pl.callbacks.{name}"], capsys, monkeypatch)
    _check_class(getattr(callbacks, name), _options(text, "trainer.callbacks"), skip=("self",))


def test_the_checker_catches_a_missing_description():
    """The check above can fail: an option without a description is reported."""
    blocks = {"lr": " LR (type: float, default: 0.001)"}

    class Bare:
        def __init__(self, lr: float = 0.001):
            pass

    with pytest.raises(AssertionError, match="no description"):
        _check_class(Bare, blocks)


def test_print_config_has_no_optimizer_blocks(capsys, monkeypatch):
    text = _help(["fit", "--print_config"], capsys, monkeypatch)
    config = yaml.safe_load(text)
    assert "model" in config and "optimizer" not in config and "lr_scheduler" not in config


def test_optimizer_settings_are_refused_with_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"--optimizer is not a setting here.*model\.lr_schedule"):
        make_cli(["fit", "--optimizer", "torch.optim.SGD", "--print_config"])  # never trains if accepted
    config = tmp_path / "sgd.yaml"
    config.write_text("lr_scheduler:\n  class_path: torch.optim.lr_scheduler.StepLR\n")
    with pytest.raises(ConfigError, match="lr_scheduler"):
        make_cli(["fit", "--config", str(config), "--print_config"])
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--optimizer.lr=0.1", "--print_config"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("iwae_pl: error: --optimizer.lr is not a setting"), err


def test_error_tips_name_the_program(capsys, monkeypatch):
    """A parser error is one line that names the program (no usage dump, no __main__.py)."""
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model.K", "five"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("iwae_pl: error:") and "model.K" in err and "\n" not in err, err[-500:]
    assert "__main__.py" not in err


def test_top_level_help_lists_the_project_commands(capsys, monkeypatch):
    text = _help(["--help"], capsys, monkeypatch)
    assert text.startswith("usage: iwae_pl ")
    assert "iwae_pl plot: figures comparing runs" in " ".join(text.split())
