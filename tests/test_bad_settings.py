"""Every bad setting, whoever detects it (config parser, Lightning, torch, the project), ends before
anything is built or written: exactly one line on stderr naming the key, exit code 2 (1 for files),
no traceback, no usage dump, no directory created."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iwae_pl.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "sweeps" / "quickstart.yaml")

CONFIGS = {
    "bad_yaml.yaml": "model:\n  lr: [1\n",
    "unknown_key.yaml": "model:\n  lrr: 1\n",
    "list.yaml": "- a\n- b\n",
    "bad_warmup.yaml": ("trainer:\n  callbacks:\n    - class_path: iwae_pl.callbacks.BetaWarmup\n"
                        "      init_args: {schedule: nope}\n"),
}

# (arguments after `fit --config quickstart.yaml`, expected exit code, text the one line must contain)
CASES = [
    # the config parser: types, unknown keys, files
    (["--model.lr", "abc"], 2, "model.lr='abc'"),
    (["--model.lrr", "1"], 2, "unknown setting 'model.lrr'; did you mean model.lr?"),
    (["--model.std", "sig"], 2, "model.std='sig'"),
    (["--model.objective", "iwea"], 2, "model.objective='iwea'"),
    (["--model.K", "2.5"], 2, "model.K"),
    (["--model.init_visible_bias", "maybe"], 2, "model.init_visible_bias"),
    (["--model.adam_betas", "[0.9]"], 2, "model.adam_betas"),
    (["--data.batch_size", "ten"], 2, "data.batch_size='ten'"),
    (["--trainer.max_epochs", "x"], 2, "trainer.max_epochs='x'"),
    (["--trainer.callbacks+=Nope"], 2, "trainer.callbacks"),
    (["--config", "nofile.yaml"], 2, "nofile.yaml"),
    (["--config", "@bad_yaml.yaml"], 2, "bad_yaml.yaml': invalid YAML at line 3"),
    (["--config", "@unknown_key.yaml"], 2, "model.lrr"),
    (["--config", "@list.yaml"], 2, "list.yaml"),
    # the project's classes
    (["--model.lr", "-1"], 2, "model.lr"),
    (["--model.lr", "0"], 2, "model.lr"),
    (["--model.adam_betas", "[1.5, 0.999]"], 2, "model.adam_betas[0]"),
    (["--model.adam_betas", "[0.9, 1.0]"], 2, "model.adam_betas[1]"),
    (["--model.adam_eps", "-1"], 2, "model.adam_eps"),
    (["--model.warmup_beta", "-1"], 2, "model.warmup_beta"),
    (["--model.val_k", "-1"], 2, "model.val_k"),
    (["--model.test_k", "-1"], 2, "model.test_k"),
    (["--model.eval_chunk", "0"], 2, "model.eval_chunk"),
    (["--model.eval_seed", "-3"], 2, "model.eval_seed"),
    (["--model.val_k", "0"], 2, "model.val_k=0"),  # the shipped ModelCheckpoint monitors val/nll
    (["--model.K", "0"], 2, "K must be an integer >= 1"),
    (["--model.objective", "miwae", "--model.M", "0"], 2, "M must be an integer >= 1"),
    (["--model.M", "8"], 2, "takes M=1, got M=8"),
    (["--model.objective", "ciwae", "--model.beta", "1.5"], 2, "beta"),
    (["--model.layers", "[{latent: 0}]"], 2, "latent size"),
    (["--model.layers", "[{latent: 5, activation: sigmoidal}]"], 2, "sigmoidal"),
    (["--data.dataset", "mnist_typo"], 2, "mnist_typo"),
    (["--data.batch_size", "0"], 2, "batch_size"),
    (["--data.eval_batch_size", "0"], 2, "eval_batch_size"),
    (["--data.num_workers", "-1"], 2, "num_workers"),
    (["--data.seed", "-1"], 2, "seed"),
    (["--config", "@bad_warmup.yaml"], 2, "warm-up schedule"),
    (["--last_checkpoint.every_n_steps", "0"], 2, "last_checkpoint.every_n_steps"),
    (["--non_finite.action", "ignore"], 2, "non_finite.action"),
    (["--non_finite.max_skips", "-1"], 2, "non_finite.max_skips"),
    # trainer values Lightning accepts and fails on later, or rejects itself
    (["--trainer.max_epochs", "-5"], 2, "trainer.max_epochs"),
    (["--trainer.min_epochs", "-1"], 2, "trainer.min_epochs"),
    (["--trainer.max_steps", "-2"], 2, "trainer.max_steps"),
    (["--trainer.check_val_every_n_epoch", "0"], 2, "trainer.check_val_every_n_epoch"),
    (["--trainer.log_every_n_steps", "0"], 2, "trainer.log_every_n_steps"),
    (["--trainer.accumulate_grad_batches", "0"], 2, "trainer.accumulate_grad_batches"),
    (["--trainer.num_sanity_val_steps", "-5"], 2, "trainer.num_sanity_val_steps"),
    (["--trainer.val_check_interval", "0.0"], 2, "trainer.val_check_interval"),
    (["--trainer.limit_train_batches", "-1"], 2, "trainer.limit_train_batches"),
    (["--trainer.limit_val_batches", "1.5"], 2, "trainer.limit_val_batches"),
    (["--trainer.gradient_clip_val", "-1"], 2, "trainer.gradient_clip_val"),
    (["--trainer.accelerator", "gpu"] if not torch.cuda.is_available() else ["--trainer.accelerator", "tpu"],
     2, "accelerator"),
    (["--trainer.precision", "13"], 2, "precision"),
    (["--trainer.strategy", "nope"], 2, "strategy"),
    (["--weights_only", "false"], 2, "weights_only"),
    (["--ckpt_path", "best"], 2, "ckpt_path 'best'"),
    # files: checkpoints, directories (exit code 1)
    (["--ckpt_path", "missing.ckpt"], 1, "ckpt_path 'missing.ckpt'"),
    (["--ckpt_path", "@truncated.ckpt"], 1, "truncated"),
    (["--ckpt_path", "@garbage.ckpt"], 1, "garbage.ckpt"),
    (["--trainer.logger.init_args.save_dir", "@readonly/logs"], 1, "save_dir"),
    (["--data.dataset", "mnist", "--data.data_dir", "@no_such_dir/typo"], 1, "data_dir"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Config files, a truncated and a garbage checkpoint, a read-only directory."""
    d = tmp_path_factory.mktemp("files")
    for name, text in CONFIGS.items():
        (d / name).write_text(text)
    model = torch.nn.Linear(2, 2)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {}}, d / "whole.ckpt")
    data = (d / "whole.ckpt").read_bytes()
    (d / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (d / "garbage.ckpt").write_bytes(b"not a checkpoint at all\n" * 10)
    (d / "readonly").mkdir()
    os.chmod(d / "readonly", stat.S_IRUSR | stat.S_IXUSR)
    yield d
    os.chmod(d / "readonly", stat.S_IRWXU)


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.mark.parametrize("args,code,needle", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_setting_is_one_line(args, code, needle, files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IWAE_PL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IWAE_PL_CACHE_DIR", str(tmp_path / "cache"))
    args = [str(files / a[1:]) if a.startswith("@") else a for a in args]
    before = _tree(tmp_path) | _tree(files)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", QUICK, "--trainer.enable_progress_bar", "false", *args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert info.value.code == code, err
    assert len(lines) == 1, err
    assert lines[0].startswith("iwae_pl: "), err
    assert needle in lines[0], err
    assert "Traceback" not in err and "usage:" not in err
    assert _tree(tmp_path) | _tree(files) == before  # nothing created: no run directory, no data directory


def test_at_least_forty_cases():
    assert len(CASES) >= 40


SCRIPT = """
import sys
from iwae_pl.cli import main
for args in ARGS:
    sys.stderr.write("=== case\\n"); sys.stderr.flush()
    try:
        main(args)
    except SystemExit as e:
        sys.stdout.write(f"exit {e.code}\\n")
"""


def test_real_entry_point_prints_only_the_error(tmp_path):
    """In a fresh process (Lightning's own log handlers, warnings on): "Seed set to 0", "GPU available"
    and warnings do not precede the error; it is the only line. ``--help`` still prints the usage."""
    cases = [(["--model.lr", "abc"], "model.lr"),                                 # the parser's
             (["--trainer.check_val_every_n_epoch", "0"], "check_val_every_n_epoch"),  # Lightning's
             (["--model.adam_betas", "[1.5, 0.999]"], "adam_betas")]               # the project's, after seeding
    argv = [["fit", "--config", QUICK, *args] for args, _ in cases] + [["fit", "--help"]]
    env = {**os.environ, "IWAE_PL_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT.replace("ARGS", repr(argv))], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.stdout.count("exit ") == 4, proc.stdout + proc.stderr
    blocks = proc.stderr.split("=== case\n")[1:]
    codes = [line for line in proc.stdout.splitlines() if line.startswith("exit ")]
    for (args, needle), block, code in zip(cases, blocks, codes):
        assert code == "exit 2", (args, proc.stdout)
        assert block.count("\n") == 1 and block.startswith("iwae_pl: error: ") and needle in block, block
    assert "Seed set" not in proc.stdout + proc.stderr and "GPU available" not in proc.stderr
    assert codes[3] == "exit 0" and "usage:" in proc.stdout and "--last_checkpoint.every_n_steps" in proc.stdout
    assert _tree(tmp_path) == set()
