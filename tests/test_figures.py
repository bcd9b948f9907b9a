"""Figures say what they show: every figure of the diagnostics config is >= 800 px wide and titled with the
run, objective, M, K and epoch; one style (labelled axes, legends only for several lines, labelled image
rows); the SNR history figure; `iwae_pl plot` draws the comparison figures from runs' metrics.csv."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from iwae_pl.cli import COMMANDS, main
from iwae_pl.diagnostics.figures import curves_figure, histogram_figure, image_figure, run_title
from iwae_pl.errors import DataError
from iwae_pl.runs import run
from iwae_pl.runs.plot import comparison_figures, plot_runs, read_run
from iwae_pl.runs.plot import main as plot_main

ROOT = Path(__file__).resolve().parents[1]


def png_title(path: Path) -> str:
    """The PNG's tEXt 'Title' field, read with the standard library (no PIL needed)."""
    import struct

    data = path.read_bytes()
    pos = 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"tEXt" and body.startswith(b"Title\0"):
            return body[6:].decode("latin-1")
        pos += 12 + length
    return ""


@pytest.fixture(scope="module")
def diagnostics_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("diag")
    result = run(["--config", str(ROOT / "sweeps" / "diagnostics.yaml"), "--trainer.max_epochs", "2",
                  "--trainer.check_val_every_n_epoch", "1", "--trainer.limit_train_batches", "10",
                  "--trainer.enable_progress_bar", "false", "--model.val_k", "10", "--model.test_k", "10",
                  "--data.eval_batch_size", "50", "--trainer.limit_test_batches", "1",  # 50 test digits
                  "--trainer.logger.init_args.save_dir", str(out / "logs")])
    return Path(result.run_dir)


def test_every_diagnostics_figure_is_wide_and_names_the_run(diagnostics_run):
    figures = sorted((diagnostics_run / "figures").glob("*.png"))
    names = {p.name for p in figures}
    assert {"activity_epoch0001.png", "activity_test.png", "ess_curve.png", "ess_weights_epoch0001.png",
            "snr_curve.png", "samples_epoch0001.png", "reconstructions_epoch0001.png"} <= names, names
    for path in figures:
        assert imread(path).shape[1] >= 800, path.name
        title = png_title(path)
        assert "diagnostics/version_0" in title and "IWAE (M=1, K=5)" in title, (path.name, title)
        assert ("epoch 1" in title) or (path.name == "activity_test.png" and title.endswith("test")), title


def test_the_title_reader_can_fail(tmp_path):
    from matplotlib.figure import Figure

    Figure().savefig(tmp_path / "bare.png")
    assert png_title(tmp_path / "bare.png") == ""


def test_run_title_names_run_objective_samples_and_epoch():
    assert run_title("cmp/version_0", "miwae", 8, 8, 59, "ESS") == "ESS - cmp/version_0: MIWAE (M=8, K=8), epoch 59"
    assert run_title("r", "iwae", 1, 5, "test") == "r: IWAE (M=1, K=5), test"


def _axes(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def test_curves_have_labelled_axes_and_a_legend_only_for_several_lines():
    x = [0, 1, 2]
    fig = curves_figure([("ESS", [("a", x, [1, 2, 3]), ("b", x, [3, 2, 1])], False),
                         ("SNR", [("only", x, [1, 10, 100])], True)], "title")
    two, one = _axes(fig)
    assert two.get_legend() is not None and one.get_legend() is None
    assert one.get_title() == "only" and one.get_yscale() == "log"
    for ax in (two, one):
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel()
    assert fig.get_suptitle() == "title" and fig.get_figwidth() * 100 >= 800


def test_histograms_label_axes_and_reconstruction_rows_are_labelled():
    fig = histogram_figure([("layer 1", np.ones(3), np.arange(4.0)), ("layer 2", np.ones(3), np.arange(4.0))],
                           "log10 A_u", "run title", threshold=1.0, ylabel="units")
    assert [ax.get_ylabel() for ax in _axes(fig)] == ["units", "units"]
    assert [ax.get_title() for ax in _axes(fig)] == ["layer 1", "layer 2"]
    grid = np.zeros((40, 80))
    fig = image_figure(grid, "recon", ("original", "reconstruction"), rows=4)
    labels = [t.get_text() for t in _axes(fig)[0].get_yticklabels()]
    assert labels == ["original", "reconstruction", "original", "reconstruction"]


def test_snr_history_is_kept_and_drawn(diagnostics_run):
    rows = list(csv.DictReader(open(diagnostics_run / "metrics.csv")))
    logged = [float(r["snr/encoder"]) for r in rows if r.get("snr/encoder")]
    from iwae_pl.callbacks import GradientSNR

    snr = GradientSNR()
    snr.load_state_dict({"history": [{"epoch": 1, "snr/encoder": logged[-1], "snr/decoder": 2.0}]})
    fig = snr.curve_figure("t")
    (encoder, decoder), = [ax.get_lines() for ax in _axes(fig)]
    assert list(encoder.get_ydata()) == [logged[-1]] and encoder.get_label() == "encoder"


def _fake_run(root: Path, name: str, objective: str, ess: list[float]) -> Path:
    """A run directory with a metrics.csv as CSVLogger writes it (rows per logging call)."""
    run_dir = root / name / "version_0"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(f"model:\n  objective: {objective}\n  M: 1\n  K: 50\n")
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["epoch", "step", "ess/group", "active/layer1", "train/bound"])
        writer.writeheader()
        for epoch, value in enumerate(ess):
            writer.writerow({"epoch": epoch, "step": 10 * epoch, "train/bound": -30.0})
            writer.writerow({"epoch": epoch, "step": 10 * epoch + 9, "ess/group": value, "active/layer1": 3})
        writer.writerow({"epoch": len(ess) - 1, "step": 99, "active/layer1": 7})  # a test row repeats the epoch
    return run_dir


def test_plot_compares_runs_from_their_metrics(tmp_path):
    vae = _fake_run(tmp_path, "cmp_vae", "vae", [20.0, 21.5, 21.2])
    iwae = _fake_run(tmp_path, "cmp_iwae", "iwae", [6.0, 5.1, 4.9])
    runs = [read_run(vae), read_run(iwae)]
    assert runs[0].series["ess/group"] == ([0, 1, 2], [20.0, 21.5, 21.2])
    assert runs[0].series["active/layer1"] == ([0, 1, 2], [3.0, 3.0, 3.0])  # the first value of each epoch
    figures = comparison_figures(runs)
    assert set(figures) == {"ess_comparison", "activity_comparison"}
    ess_ax = _axes(figures["ess_comparison"])[0]
    assert [list(line.get_ydata()) for line in ess_ax.get_lines()] == [[20.0, 21.5, 21.2], [6.0, 5.1, 4.9]]
    assert [t.get_text() for t in ess_ax.get_legend().get_texts()] == [
        "cmp_vae/version_0: VAE (M=1, K=50)", "cmp_iwae/version_0: IWAE (M=1, K=50)"]

    written = plot_main([str(vae), str(iwae), "--out", str(tmp_path / "out")])
    assert {p.name for p in written} == {"ess_comparison.png", "activity_comparison.png"}
    for path in written:
        assert imread(path).shape[1] >= 800
        assert "cmp_vae/version_0 vs cmp_iwae/version_0" in png_title(path)


def test_plot_copies_the_runs_histograms_and_refuses_non_runs(diagnostics_run, tmp_path, capsys):
    written = {p.name for p in plot_runs([diagnostics_run], tmp_path / "out")}
    assert {"ess_comparison.png", "snr_comparison.png", "activity_comparison.png", "val_nll_comparison.png",
            "activity_diagnostics.png", "ess_weights_diagnostics.png"} <= written
    assert "plot" in COMMANDS
    with pytest.raises(DataError, match="no metrics.csv"):
        plot_runs([tmp_path], tmp_path / "out2")
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing: no metrics.csv" in err[0]
