"""No checkpoint is unpickled with code execution: a payload is refused from a local path and from an
http URL (a local server on 127.0.0.1); a good remote checkpoint is downloaded atomically, verified and
kept under a name of its whole URL."""
from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest
import torch

from iwae_pl.cli import main
from iwae_pl.runs import run
from iwae_pl.runs.safety import CheckpointError, fetch_checkpoint, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model.layers", "[{latent: 2, hidden: [8]}]", "--model.K", "2", "--model.test_k", "10",
        "--trainer.enable_progress_bar", "false"]


class Payload:
    """Unpickling this runs ``exec``: it writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("good")
    result = run(["--config", str(ROOT / "sweeps" / "quickstart.yaml"), *TINY, "--trainer.max_steps", "2",
                  "--test_after_fit", "false", "--trainer.logger.init_args.save_dir", str(out / "logs")])
    return Path(result.last_checkpoint)


@pytest.fixture
def evil(tmp_path, good_checkpoint) -> tuple[Path, Path]:
    """A real checkpoint with a payload among its entries, and the marker the payload would write."""
    marker = tmp_path / "marker"
    checkpoint = torch.load(good_checkpoint, weights_only=True)
    checkpoint["hyper_parameters"]["note"] = Payload(marker)
    path = tmp_path / "serve" / "model.ckpt"
    path.parent.mkdir()
    torch.save(checkpoint, path)
    return path, marker


@pytest.fixture
def server(tmp_path, direct_http):
    """An HTTP server on 127.0.0.1 serving tmp_path/serve; yields its base URL."""
    (tmp_path / "serve").mkdir(exist_ok=True)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep stderr for the CLI's line
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path / "serve"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_the_payload_is_real(evil):
    """The file does run code when unpickled without weights_only: the refusal below means something."""
    path, marker = evil
    torch.load(path, weights_only=False)
    assert marker.read_text() == "pwned"


def _test(args, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IWAE_PL_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as info:
        main(["test", "--config", str(ROOT / "sweeps" / "quickstart.yaml"), *TINY, *args])
    return info.value.code, capsys.readouterr().err.strip()


def test_local_payload_is_refused(evil, tmp_path, monkeypatch, capsys):
    path, marker = evil
    code, err = _test(["--ckpt_path", str(path)], tmp_path, monkeypatch, capsys)
    assert code == 1 and err.count("\n") == 0, err
    assert "refused: loading it would execute code" in err and "exec" in err
    assert not marker.exists()


def test_remote_payload_is_refused_and_not_kept(evil, server, tmp_path, monkeypatch, capsys):
    _, marker = evil
    code, err = _test(["--ckpt_path", f"{server}/model.ckpt"], tmp_path, monkeypatch, capsys)
    assert code == 1 and err.count("\n") == 0, err
    assert "refused: loading it would execute code" in err and "127.0.0.1" in err
    assert not marker.exists()
    assert list((tmp_path / "cache" / "checkpoints").iterdir()) == []  # nothing left under any name
    assert not (tmp_path / "logs").exists()


def test_remote_checkpoint_is_downloaded_verified_and_used(good_checkpoint, server, tmp_path, monkeypatch):
    serve = tmp_path / "serve"
    (serve / "a").mkdir()
    (serve / "b").mkdir()
    (serve / "a" / "model.ckpt").write_bytes(good_checkpoint.read_bytes())
    other = torch.load(good_checkpoint, weights_only=True)
    other["global_step"] = 12345
    torch.save(other, serve / "b" / "model.ckpt")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IWAE_PL_CACHE_DIR", str(tmp_path / "cache"))
    result = run(["--config", str(ROOT / "sweeps" / "quickstart.yaml"), *TINY,
                  "--ckpt_path", f"{server}/a/model.ckpt"], subcommand="test")
    assert result.metrics["test/nll"] > 0
    # Same file name, another URL: another file (torch.hub's cache would hand back the first one).
    path_a, _ = fetch_checkpoint(f"{server}/a/model.ckpt")
    path_b, contents_b = fetch_checkpoint(f"{server}/b/model.ckpt")
    assert path_a != path_b and contents_b["global_step"] == 12345
    assert path_a.read_bytes() == good_checkpoint.read_bytes()
    assert sorted(p.name for p in path_a.parent.iterdir()) == sorted([path_a.name, path_b.name])  # no temp files


def test_sha256_in_the_url_is_checked(good_checkpoint, server, tmp_path, monkeypatch):
    (tmp_path / "serve" / "m.ckpt").write_bytes(good_checkpoint.read_bytes())
    monkeypatch.setenv("IWAE_PL_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match="sha256 .* does not match the URL's 00ff"):
        fetch_checkpoint(f"{server}/m.ckpt#sha256=00ff")
    import hashlib

    digest = hashlib.sha256(good_checkpoint.read_bytes()).hexdigest()
    path, _ = fetch_checkpoint(f"{server}/m.ckpt#sha256={digest}")
    assert path.read_bytes() == good_checkpoint.read_bytes()


def test_missing_remote_file_is_one_line(server, tmp_path, monkeypatch, capsys):
    code, err = _test(["--ckpt_path", f"{server}/nope.ckpt"], tmp_path, monkeypatch, capsys)
    assert code == 1 and err.count("\n") == 0 and "HTTP 404" in err, err


def test_truncated_checkpoint_is_one_line(good_checkpoint, tmp_path):
    data = good_checkpoint.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "cut.ckpt")
