"""Everything the CLI checks before it builds anything: one line for every bad setting, nothing on disk.

- :func:`parser_error_line` turns the config parser's multi-line messages (type errors, unknown keys)
  into one line naming the key, the value and what is allowed; :func:`check_config_files` reports a
  missing or malformed YAML file with its name and position.
- :func:`check_run_settings` rejects trainer values Lightning accepts but fails on later (or silently
  misreads), a monitored metric that the model settings disable, and a log directory that cannot be
  written.
- :func:`apply_checkpoint` gives a checkpoint's settings their place: its architecture is the model's,
  and every other model setting is a default that the config and the command line override.
- :class:`HeldChatter` holds Lightning's start-up log lines and warnings back until the settings are
  known to be valid, so an error is the only line a bad setting produces.
"""
from __future__ import annotations

import difflib
import inspect
import logging
import math
import numbers
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, DataError

# Settings that define the network: they come from a checkpoint and must not disagree with it.
ARCHITECTURE = ("layers", "std")
_LOGGERS = ("lightning_fabric", "pytorch_lightning", "lightning.pytorch", "lightning.fabric")


class HeldChatter:
    """Hold log records of Lightning's loggers and Python warnings until :meth:`release`; a context
    manager: leaving it without a release (an error) drops them."""

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []
        self._saved: list[tuple[logging.Logger, list[logging.Handler], bool]] = []
        self._warnings: warnings.catch_warnings | None = None
        self._caught: list[warnings.WarningMessage] = []

    def __enter__(self) -> HeldChatter:
        hold = self

        class _Hold(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                hold.records.append(record)

        handler = _Hold()
        for name in _LOGGERS:
            lg = logging.getLogger(name)
            self._saved.append((lg, lg.handlers[:], lg.propagate))
            lg.handlers, lg.propagate = [handler], False
        self._warnings = warnings.catch_warnings(record=True)
        self._caught = self._warnings.__enter__()
        return self

    def _restore(self) -> None:
        if self._warnings is not None:
            self._warnings.__exit__(None, None, None)
            self._warnings = None
        for lg, handlers, propagate in self._saved:
            lg.handlers, lg.propagate = handlers, propagate
        self._saved = []

    def release(self) -> None:
        """Settings are valid: emit what was held, in order, and stop holding."""
        if self._warnings is None:
            return
        caught = list(self._caught)
        self._restore()
        for record in self.records:
            logging.getLogger(record.name).handle(record)
        for w in caught:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        self.records = []

    def __exit__(self, *exc) -> None:
        self._restore()  # without release: an error ended the start-up, its chatter is dropped


# ---------------------------------------------------------------------------------------------- parser errors

def _clean_type(text: str) -> str:
    text = re.sub(r"<class '(?:[\w.]*\.)?(\w+)'>", r"\1", text.strip())
    text = text.replace("NoneType", "null")
    m = re.fullmatch(r"typing\.Literal\[(.*)\]", text)
    return f"one of {m.group(1)}" if m else re.sub(r"typing\.|[\w.]+\.(?=\w+\[)", "", text)


def _suggest(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.7)
    return f"; did you mean {close[0]}?" if close else ""


def parser_error_line(message: str, known: Iterable[str] = ()) -> str:
    """One line for one of jsonargparse's error messages: the key, the value and what is allowed."""
    text = message.strip()
    flat = " ".join(text.split())
    if m := re.match(r"unrecognized arguments: (\S+)", flat):
        key = m.group(1).lstrip("-").split("=")[0]
        return f"unknown setting {key!r}{_suggest(key, known)} (`--help` lists the settings)"
    if m := re.search(r"does not accept (?:option|nested key) '([^']+)'", flat):
        key = m.group(1)
        return f"unknown setting {key!r} in the config{_suggest(key, known)} (`--help` lists the settings)"
    if m := re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", flat):
        return f"unknown subcommand {m.group(1)!r}; allowed: {m.group(2).replace(chr(39), '')}"
    if m := re.match(r'Parser key "config": (.*)', flat):
        return f"--config: {m.group(1)}"
    if m := re.search(r'Parser key "([^"]+)"', text):
        key = m.group(1)
        value = re.search(r"(?:Given value|Got value): (.*)", text)
        given = f"={value.group(1).strip()!r}" if value else ""
        subtypes = re.search(r"Subtypes: \[(.*)\]", text)
        expected = re.search(r"Expected a (.+?)(?:\. Got value|$)", text, re.MULTILINE)
        if subtypes:
            allowed = ", ".join(_clean_type(t) for t in re.split(r", (?![^\[]*\])", subtypes.group(1)))
            allowed = f"expected one of the types {allowed}"
        elif expected:
            allowed = f"expected {_clean_type(expected.group(1))}"
        else:
            allowed = " ".join(text.split("\n", 1)[-1].split())
        return f"{key}{given}: {allowed}"
    return flat


def check_config_files(args: Sequence[str]) -> list[tuple[str, dict]]:
    """Each ``--config``/``-c`` file exists and is a YAML mapping; else one line naming the file.
    Returns (name, settings) of every file, read once (an empty file: {})."""
    args, files = list(args), []
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            name = args[i + 1]
        elif arg.startswith("--config="):
            name = arg.split("=", 1)[1]
        else:
            continue
        if name.lstrip().startswith(("{", "[")) or "\n" in name:
            continue  # an inline YAML/JSON string: the parser reports it
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"--config {name!r}: no such file")
        files.append((name, read_settings(path, f"--config {name!r}")))
    return files


def read_settings(path: Path, label: str) -> dict:
    """A YAML file of settings (a mapping; an empty file: {}); else one ConfigError line starting with
    ``label``: invalid YAML (with line and column), unreadable, or not a mapping."""
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).split("\n")[0]
        raise ConfigError(f"{label}: invalid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{label}: cannot read it: {e}") from None
    if content is not None and not isinstance(content, dict):
        raise ConfigError(f"{label}: expected a mapping of settings (key: value), got a {type(content).__name__}")
    return content or {}


# ---------------------------------------------------------------------------------------------- trainer settings

def setting(ns: Any, key: str, default: Any = None) -> Any:
    """``ns[key]`` of a config node that is a dict or a Namespace (``default`` if absent or no node)."""
    if ns is None:
        return default
    return ns.get(key, default) if isinstance(ns, dict) else getattr(ns, key, default)


def _int_at_least(key: str, value: Any, minimum: int, none_ok: bool = True, meaning: str = "") -> None:
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}{meaning}, got {value!r}")


def _count_or_fraction(key: str, value: Any, int_min: int, frac_low_open: bool) -> None:
    """An int >= int_min (batches) or a float fraction in [0, 1] / (0, 1] (of the epoch)."""
    if value is None:
        return
    if isinstance(value, bool):
        ok = False
    elif isinstance(value, numbers.Integral):
        ok = value >= int_min
    elif isinstance(value, numbers.Real):
        # Lightning reads a whole float above 1 as a count (the parser may hand over 10 as 10.0)
        ok = math.isfinite(value) and ((0.0 < value if frac_low_open else 0.0 <= value) and value <= 1.0
                                       or (value > 1.0 and float(value).is_integer() and value >= int_min))
    else:
        ok = False
    if not ok:
        frac = "(0, 1]" if frac_low_open else "[0, 1]"
        raise ConfigError(f"{key} must be an integer >= {int_min} (batches) or a fraction in {frac} "
                          f"(of an epoch), got {value!r}")


def check_trainer(trainer: Any) -> None:
    """Trainer values that Lightning would accept and then fail on mid-run, or misread."""
    def t(key: str) -> Any:
        return setting(trainer, key)

    _int_at_least("trainer.max_epochs", t("max_epochs"), -1, meaning=" (-1: no limit)")
    _int_at_least("trainer.min_epochs", t("min_epochs"), 0)
    _int_at_least("trainer.max_steps", t("max_steps"), -1, meaning=" (-1: no limit)")
    _int_at_least("trainer.min_steps", t("min_steps"), 0)
    _int_at_least("trainer.check_val_every_n_epoch", t("check_val_every_n_epoch"), 1)
    _int_at_least("trainer.log_every_n_steps", t("log_every_n_steps"), 1)
    _int_at_least("trainer.accumulate_grad_batches", t("accumulate_grad_batches"), 1)
    _int_at_least("trainer.num_sanity_val_steps", t("num_sanity_val_steps"), -1, meaning=" (-1: all)")
    _int_at_least("trainer.reload_dataloaders_every_n_epochs", t("reload_dataloaders_every_n_epochs"), 0)
    _count_or_fraction("trainer.val_check_interval", t("val_check_interval"), 1, frac_low_open=True)
    for split in ("train", "val", "test", "predict"):
        _count_or_fraction(f"trainer.limit_{split}_batches", t(f"limit_{split}_batches"), 0, frac_low_open=False)
    clip = t("gradient_clip_val")
    if clip is not None and not (isinstance(clip, numbers.Real) and not isinstance(clip, bool)
                                 and math.isfinite(clip) and clip >= 0):
        raise ConfigError(f"trainer.gradient_clip_val must be a finite number >= 0 (0 or null: no clipping), "
                          f"got {clip!r}")


def hardware_settings(trainer: Any) -> str:
    """``trainer.accelerator='gpu'``-style names of the set-up settings given (Lightning's errors about
    them often name only the value), for the one line that reports such an error."""
    defaults = {"accelerator": "auto", "strategy": "auto", "devices": "auto", "precision": None, "num_nodes": 1,
                "plugins": None}
    given = [f"trainer.{k}={setting(trainer, k)!r}" for k, d in defaults.items() if setting(trainer, k, d) != d]
    return ", ".join(given) or "trainer"


def callback_configs(trainer: Any) -> list[tuple[str, Any]]:
    """(class name, init_args) of the configured callbacks."""
    callbacks = setting(trainer, "callbacks") or []
    if not isinstance(callbacks, list):
        callbacks = [callbacks]
    out = []
    for cb in callbacks:
        class_path = str(setting(cb, "class_path", type(cb).__name__))
        out.append((class_path.rsplit(".", 1)[-1], setting(cb, "init_args", cb)))
    return out


def check_monitors(trainer: Any, model: Any) -> None:
    """A callback that monitors a metric the model settings switch off fails now, not at its first save."""
    disabled = {"val/nll": ("model.val_k", setting(model, "val_k"))}
    for name, args in callback_configs(trainer):
        monitor = setting(args, "monitor")
        if monitor in disabled and disabled[monitor][1] == 0:
            key, _ = disabled[monitor]
            raise ConfigError(f"{key}=0 disables {monitor}, which {name} monitors; set {name}'s monitor "
                              f"to val/bound (mode: max) or null, or {key} >= 1")


def check_writable(directory: Any, key: str) -> None:
    """The first existing ancestor of ``directory`` can be written (so the run directory can be made)."""
    # one notion of "writable" (a root process ignores os.access)
    from ..data.download import _writable

    if directory is None:
        return
    path = Path(str(directory)).expanduser().absolute()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        raise DataError(f"{key} {str(directory)!r}: {existing} is a file, not a directory")
    if not _writable(existing):
        raise DataError(f"{key} {str(directory)!r} cannot be written ({existing} is read-only); "
                        f"choose a writable directory")


def check_run_settings(config: Any) -> None:
    """All settings checks that need no class built (``config`` is the subcommand's namespace)."""
    trainer, model = setting(config, "trainer"), setting(config, "model")
    check_trainer(trainer)
    check_monitors(trainer, model)
    if setting(config, "weights_only") is False:
        raise ConfigError("weights_only must be true: checkpoints are loaded as data, never with code execution")
    logger = setting(trainer, "logger")
    for lg in (logger if isinstance(logger, list) else [logger]):
        check_writable(setting(setting(lg, "init_args"), "save_dir"), "trainer.logger save_dir")
    check_writable(setting(trainer, "default_root_dir"), "trainer.default_root_dir")


# ---------------------------------------------------------------------------------------------- checkpoints

def _layers(value: Any) -> list[dict]:
    from dataclasses import asdict

    from ..model.network import as_layer_specs

    if value is None:
        return []
    items = [vars(v) if hasattr(v, "__dict__") and not hasattr(v, "__dataclass_fields__") else v for v in value]
    return [asdict(s) for s in as_layer_specs(items)]


def same_setting(key: str, a: Any, b: Any) -> bool:
    if key == "layers":
        return _layers(a) == _layers(b)
    return a == b


def checkpoint_defaults(hparams: dict, model_class: type) -> dict[str, Any]:
    """The checkpoint's model settings that the model class still takes, as ``model.<key>`` defaults."""
    accepted = set(inspect.signature(model_class.__init__).parameters) - {"self", "input_dim"}
    return {f"model.{k}": v for k, v in hparams.items() if k in accepted}


def check_architecture(model: Any, hparams: dict, path: str) -> None:
    """The config's architecture equals the checkpoint's (it was parsed with the checkpoint's as defaults,
    so a difference is a value the user gave)."""
    for key in ARCHITECTURE:
        if key in hparams and not same_setting(key, setting(model, key), hparams[key]):
            ours = _layers(setting(model, key)) if key == "layers" else setting(model, key)
            theirs = _layers(hparams[key]) if key == "layers" else hparams[key]
            raise ConfigError(f"model.{key} differs from the checkpoint's: {_short(ours)} here, {_short(theirs)} in "
                              f"{path}; the architecture comes from the checkpoint: drop model.{key} or use a "
                              f"checkpoint of this architecture")


def check_dataset(data: Any, checkpoint: dict, path: str) -> None:
    """The checkpoint's network takes the configured dataset's images."""
    from ..data.sources import dataset_spec

    hparams = checkpoint.get("hyper_parameters", {})
    dataset = setting(data, "dataset")
    if dataset is None or "input_dim" not in hparams:
        return
    pixels = dataset_spec(dataset).input_dim
    if hparams["input_dim"] != pixels:
        theirs = checkpoint.get("datamodule_hyper_parameters", {}).get("dataset")
        of = f" (dataset {theirs!r})" if theirs else ""
        raise ConfigError(f"ckpt_path {path!r} is a model of {hparams['input_dim']}-pixel images{of}, but "
                          f"data.dataset {dataset!r} has {pixels} pixels; use a checkpoint trained on {dataset}")


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 120 else text[:117] + "..."
