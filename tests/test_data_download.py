"""Checksums, verification and atomic downloads, against a local HTTP server on 127.0.0.1 (no network)."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from iwae_pl.data import download as dl
from iwae_pl.data import sources
from iwae_pl.data.download import DataError, RemoteFile, download, fetch, file_checksum, verify_file

PAYLOAD = bytes(range(256)) * 40 + b"tail"  # 10,244 bytes


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# ------------------------------------------------------------------------------------------ local server

@dataclass
class Server:
    """Routes: path -> (body, mode); mode 'ok', 'cut' (full Content-Length, half the body, close),
    'half' (no Content-Length, half the body) or '404'. ``hits`` counts requests per path."""

    base: str
    routes: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)

    def serve(self, name: str, body: bytes, mode: str = "ok") -> str:
        self.routes["/" + name] = (body, mode)
        return f"{self.base}/{name}"


@pytest.fixture
def server(monkeypatch, direct_http):
    monkeypatch.setattr(dl, "DOWNLOAD_TIMEOUT_S", 5.0)
    state = Server(base="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server API)
            state.hits[self.path] = state.hits.get(self.path, 0) + 1
            body, mode = state.routes.get(self.path, (b"", "404"))
            if mode == "404":
                self.send_error(404)
                return
            self.send_response(200)
            if mode != "half":
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body if mode == "ok" else body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args):  # keep pytest output clean
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------------------------------ checksums

def test_file_checksum_algorithms(tmp_path):
    p = tmp_path / "hello"
    p.write_bytes(b"hello\n")
    assert file_checksum(p, "md5") == hashlib.md5(b"hello\n").hexdigest()
    assert file_checksum(p, "sha256") == hashlib.sha256(b"hello\n").hexdigest()
    # `echo hello | git hash-object --stdin`
    assert file_checksum(p, "git-blob-sha1") == "ce013625030ba8dba906f756967f9e9ca394464a"
    gz = tmp_path / "hello.gz"
    gz.write_bytes(gzip.compress(b"hello\n"))
    assert file_checksum(gz, "md5", gunzip=True) == md5(b"hello\n")
    assert file_checksum(gz, "git-blob-sha1", gunzip=True) == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_bad_checksum_spec_is_rejected():
    with pytest.raises(DataError, match="bad checksum spec"):
        RemoteFile("f", (), "crc32:1234")
    with pytest.raises(DataError, match="bad checksum spec"):
        RemoteFile("f", (), "0123abcd")


def test_verify_file_names_file_expected_and_actual(tmp_path):
    p = tmp_path / "data.bin"
    p.write_bytes(PAYLOAD)
    assert verify_file(p, RemoteFile("data.bin", (), f"md5:{md5(PAYLOAD)}")) == p
    wrong = "0" * 32
    with pytest.raises(DataError) as e:
        verify_file(p, RemoteFile("data.bin", (), f"md5:{wrong}"))
    msg = one_line(e)
    assert str(p) in msg and wrong in msg and md5(PAYLOAD) in msg


def test_gz_accepted_by_checksum_of_decompressed_content(tmp_path):
    """Debian re-compresses Fashion-MNIST: other .gz bytes, same content."""
    content = PAYLOAD * 3
    published = gzip.compress(content, compresslevel=9, mtime=0)
    repacked = tmp_path / "x.gz"
    repacked.write_bytes(gzip.compress(content, compresslevel=1, mtime=12345))
    assert md5(repacked.read_bytes()) != md5(published)
    remote = RemoteFile("x.gz", (), f"md5:{md5(published)}", f"md5:{md5(content)}")
    verify_file(repacked, remote)
    # Neither the .gz nor the content matches: rejected, and the message shows both expectations.
    repacked.write_bytes(gzip.compress(content + b"!", mtime=0))
    with pytest.raises(DataError) as e:
        verify_file(repacked, remote)
    msg = one_line(e)
    assert md5(published) in msg and md5(content) in msg and "decompressed" in msg
    # Not gzip at all: still a clean DataError.
    repacked.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="checksum mismatch"):
        verify_file(repacked, remote)


# ------------------------------------------------------------------------------------------ downloads

def test_download_writes_verified_file(server, tmp_path):
    url = server.serve("data.bin", PAYLOAD)
    dest = tmp_path / "ds"
    path = download(RemoteFile("data.bin", (url,), f"md5:{md5(PAYLOAD)}"), dest)
    assert path == dest / "data.bin"
    assert path.read_bytes() == PAYLOAD
    assert leftovers(dest) == ["data.bin"]  # no temporary file left behind


def test_download_with_wrong_checksum_leaves_no_file(server, tmp_path):
    url = server.serve("data.bin", PAYLOAD)
    with pytest.raises(DataError) as e:
        download(RemoteFile("data.bin", (url,), "sha256:" + "ab" * 32), tmp_path)
    msg = one_line(e)
    assert "data.bin" in msg and "checksum mismatch" in msg and "ab" * 32 in msg
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("mode, reason", [("cut", "incomplete download"), ("half", "checksum mismatch")])
def test_interrupted_download_leaves_no_partial_file(server, tmp_path, mode, reason):
    url = server.serve("data.bin", PAYLOAD, mode)
    with pytest.raises(DataError) as e:
        download(RemoteFile("data.bin", (url,), f"md5:{md5(PAYLOAD)}"), tmp_path)
    msg = one_line(e)
    assert "data.bin" in msg and reason in msg
    assert leftovers(tmp_path) == []


def test_download_falls_back_to_next_mirror(server, tmp_path):
    dead = server.serve("gone/data.bin", b"", "404")
    good = server.serve("data.bin", PAYLOAD)
    path = download(RemoteFile("data.bin", (dead, good), f"md5:{md5(PAYLOAD)}"), tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert server.hits == {"/gone/data.bin": 1, "/data.bin": 1}


def test_all_mirrors_failing_lists_each(server, tmp_path):
    a, b = server.serve("a/data.bin", b"", "404"), server.serve("b/data.bin", PAYLOAD, "cut")
    with pytest.raises(DataError) as e:
        download(RemoteFile("data.bin", (a, b), f"md5:{md5(PAYLOAD)}"), tmp_path)
    msg = one_line(e)
    assert a in msg and "404" in msg and b in msg and "incomplete" in msg


def test_download_into_read_only_directory(server, tmp_path):
    url = server.serve("data.bin", PAYLOAD)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(DataError) as e:
            download(RemoteFile("data.bin", (url,), f"md5:{md5(PAYLOAD)}"), ro)
        assert "read-only" in one_line(e) and str(ro) in str(e.value)
        assert leftovers(ro) == [] and server.hits == {}
    finally:
        ro.chmod(0o755)


def test_download_where_no_directory_can_be_made(server, tmp_path):
    url = server.serve("data.bin", PAYLOAD)
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")  # a file where the directory should be: fails even for root
    with pytest.raises(DataError) as e:
        download(RemoteFile("data.bin", (url,), f"md5:{md5(PAYLOAD)}"), blocker / "ds")
    assert "cannot create" in one_line(e)


# ------------------------------------------------------------------------------------------ fetch

def test_fetch_prefers_local_copy_and_never_replaces_a_corrupt_one(server, tmp_path):
    url = server.serve("data.bin", PAYLOAD)
    remote = RemoteFile("data.bin", (url,), f"md5:{md5(PAYLOAD)}")
    first, second = tmp_path / "a", tmp_path / "b"
    second.mkdir()
    (second / "data.bin").write_bytes(PAYLOAD)
    assert fetch(remote, [first, second], first, allow_download=True, hint="h") == second / "data.bin"
    assert server.hits == {}
    (second / "data.bin").write_bytes(PAYLOAD[:-1])
    with pytest.raises(DataError) as e:
        fetch(remote, [first, second], first, allow_download=True, hint="h")
    assert str(second / "data.bin") in one_line(e)
    assert server.hits == {} and (second / "data.bin").read_bytes() == PAYLOAD[:-1]


def test_fetch_missing_without_download_says_what_where_and_how(tmp_path):
    remote = RemoteFile("data.bin", ("http://example.invalid/data.bin",), f"md5:{md5(PAYLOAD)}")
    with pytest.raises(DataError) as e:
        fetch(remote, [tmp_path], tmp_path, allow_download=False, hint="get it from http://example.invalid")
    msg = one_line(e)
    assert "data.bin" in msg and str(tmp_path) in msg and "download=False" in msg
    assert "http://example.invalid" in msg


def test_fetch_downloads_when_missing(server, tmp_path):
    url = server.serve("data.bin", PAYLOAD)
    remote = RemoteFile("data.bin", (url,), f"md5:{md5(PAYLOAD)}")
    path = fetch(remote, [tmp_path / "ds"], tmp_path / "ds", allow_download=True, hint="h")
    assert path.read_bytes() == PAYLOAD
    # Second call finds the verified local copy.
    assert fetch(remote, [tmp_path / "ds"], tmp_path / "ds", allow_download=True, hint="h") == path
    assert server.hits == {"/data.bin": 1}


def test_load_splits_downloads_mnist_from_the_table(server, tmp_path, monkeypatch):
    """End to end: the module-level table pointed at the local server."""
    rng = np.random.default_rng(0)

    def idx_gz(n: int) -> bytes:
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        return gzip.compress(b"\0\0\x08\x03" + np.array([n, 28, 28], ">u4").tobytes() + images.tobytes())

    table = {}
    for name, n in (("train-images-idx3-ubyte.gz", 410), ("t10k-images-idx3-ubyte.gz", 7)):
        body = idx_gz(n)
        table[name] = RemoteFile(name, (server.serve(name, body),), f"md5:{md5(body)}")
    monkeypatch.setitem(sources.REMOTE_FILES, "mnist", table)
    out = sources.load_splits("mnist", tmp_path, download=True)
    assert {k: v.shape for k, v in out.items()} == {"train": (10, 784), "val": (400, 784), "test": (7, 784)}
    assert leftovers(tmp_path / "mnist") == sorted(table)
