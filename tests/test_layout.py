"""The layering the README promises: the math, the fast paths and the diagnostics never import Lightning,
and data/ never imports the math."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BLOCK_LIGHTNING = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {BLOCKED}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import importlib
for m in {MODULES}:
    importlib.import_module(m)
print('imported', len({MODULES}))
"""

PLAIN = ["iwae_pl.errors", "iwae_pl.rng", "iwae_pl.model", "iwae_pl.model.network", "iwae_pl.model.likelihood",
         "iwae_pl.model.objectives", "iwae_pl.model.noise", "iwae_pl.model.schedules",
         "iwae_pl.fast.bernoulli", "iwae_pl.fast.inplace", "iwae_pl.diagnostics", "iwae_pl.diagnostics.images",
         "iwae_pl.diagnostics.figures", "iwae_pl.runs.result"]


def _import_with(blocked: set[str], modules: list[str]) -> subprocess.CompletedProcess:
    code = BLOCK_LIGHTNING.replace("{BLOCKED}", repr(blocked)).replace("{MODULES}", repr(modules))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_math_fast_and_diagnostics_import_without_lightning():
    proc = _import_with({"pytorch_lightning", "lightning", "lightning_fabric", "torchmetrics"}, PLAIN)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"imported {len(PLAIN)}" in proc.stdout


def test_the_blocker_really_blocks():
    """The check above can fail: importing the Lightning module under the same blocker does."""
    proc = _import_with({"pytorch_lightning"}, ["iwae_pl.lightning.module"])
    assert proc.returncode != 0 and "blocked: pytorch_lightning" in proc.stderr


def _imports(path: Path) -> set[str]:
    """Absolute names of the iwae_pl modules a file imports (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            names.add(f"{base}.{node.module}" if node.level else node.module or "")
    return {n for n in names if n.startswith("iwae_pl")}


@pytest.mark.parametrize("folder,forbidden", [
    ("data", ("iwae_pl.model", "iwae_pl.fast", "iwae_pl.diagnostics", "iwae_pl.lightning", "iwae_pl.runs")),
    ("model", ("iwae_pl.lightning", "iwae_pl.diagnostics", "iwae_pl.data", "iwae_pl.runs")),
    ("fast", ("iwae_pl.lightning", "iwae_pl.diagnostics", "iwae_pl.data", "iwae_pl.runs")),
    ("diagnostics", ("iwae_pl.lightning", "iwae_pl.data", "iwae_pl.runs")),
    ("lightning", ("iwae_pl.runs", "iwae_pl.cli", "iwae_pl.sweeps", "iwae_pl.report")),
    ("lightning/callbacks", ("iwae_pl.runs", "iwae_pl.cli", "iwae_pl.sweeps", "iwae_pl.report")),
    ("runs", ("iwae_pl.cli", "iwae_pl.sweeps", "iwae_pl.report")),  # the command line sits on top of runs
    ("sweeps", ("iwae_pl.cli", "iwae_pl.report")),
    ("report", ("iwae_pl.cli", "iwae_pl.sweeps")),
])
def test_dependencies_point_one_way(folder, forbidden):
    files = sorted((ROOT / "iwae_pl" / folder).glob("*.py"))
    assert files
    bad = {f.name: sorted(n for n in _imports(f) if n.startswith(forbidden)) for f in files}
    assert not {k: v for k, v in bad.items() if v}


def test_import_scan_sees_relative_imports():
    assert "iwae_pl.model.network" in _imports(ROOT / "iwae_pl" / "lightning" / "module.py")


def test_no_source_file_is_git_ignored():
    """An ignored module works in the checkout it was written in and is missing from every clone."""
    import shutil
    import subprocess

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = [str(p.relative_to(ROOT)) for folder in ("iwae_pl", "tests", "benchmarks", "sweeps")
             for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in (".py", ".yaml", ".json", ".md")
             and "__pycache__" not in p.parts]
    assert len(files) > 100
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, input="\n".join(files),
                             capture_output=True, text=True).stdout.split()
    assert ignored == []
