"""Loaders on generated files (idx .gz, .amat, .npz, .mat) and, when available, on the real data."""
from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from iwae_pl.data import sources
from iwae_pl.data.download import DataError, RemoteFile, file_checksum
from iwae_pl.data.sources import DATASETS, load_splits, read_amat, read_idx, resolve_data_dir

RNG = np.random.default_rng(1234)
NPZ_SHA256 = "350243cb824d66d022e0c3e87cac231231668817ff03f5f6d7b6533017d56b4b"


# ------------------------------------------------------------------------------------------ helpers

def idx_bytes(array: np.ndarray) -> bytes:
    """idx encoding of a uint8 array: magic (0, 0, 0x08, ndim), big-endian dims, raw bytes."""
    return bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">u4").tobytes() + array.tobytes()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def amat_bytes(array: np.ndarray, line_end: str = "\n") -> bytes:
    """Larochelle's layout by default: values separated by single spaces, one image per line."""
    n, dim = array.shape
    grid = np.full((n, 2 * dim - 1), ord(" "), np.uint8)
    grid[:, 0::2] = array + ord("0")
    ends = np.tile(np.frombuffer(line_end.encode(), np.uint8), (n, 1))
    return np.concatenate([grid, ends], axis=1).tobytes()


def pin(monkeypatch, dataset: str, directory: Path, algo: str = "md5") -> None:
    """Point the dataset's remote table at the files in ``directory``: their checksums, no URLs."""
    table = {}
    for name in sources.REMOTE_FILES[dataset]:
        path = directory / name
        digest = file_checksum(path, algo) if path.exists() else "0" * 32
        table[name] = RemoteFile(name, (), f"{algo}:{digest}")
    monkeypatch.setitem(sources.REMOTE_FILES, dataset, table)


def images(n: int, shape=(28, 28)) -> np.ndarray:
    return RNG.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def one_line(e: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.fixture
def no_system_dirs(monkeypatch, tmp_path):
    """Never let an installed Debian package (/usr/share/datasets) stand in for generated files."""
    monkeypatch.setattr(sources, "EXTRA_DIRS", {"fashion_mnist": (tmp_path / "no-system-dir",)})


# ------------------------------------------------------------------------------------------ registry

def test_registry_shapes_and_names():
    assert list(DATASETS) == ["binarized_mnist", "mnist", "omniglot", "fashion_mnist", "digits"]
    assert DATASETS["digits"].input_dim == 64 and DATASETS["digits"].image_shape == (8, 8)
    assert all(DATASETS[n].input_dim == 784 for n in DATASETS if n != "digits")
    assert [n for n in DATASETS if DATASETS[n].prebinarized] == ["binarized_mnist"]


def test_unknown_dataset_and_split():
    with pytest.raises(DataError) as e:
        load_splits("cifar10")
    msg = one_line(e)
    assert "'cifar10'" in msg and all(name in msg for name in DATASETS)
    with pytest.raises(DataError, match="unknown split"):
        load_splits("digits", splits=["training"])


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("IWAE_PL_DATA_DIR", raising=False)
    assert resolve_data_dir() == Path("~/.cache/iwae_pl").expanduser()
    monkeypatch.setenv("IWAE_PL_DATA_DIR", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    assert resolve_data_dir(tmp_path / "x") == tmp_path / "x"


# ------------------------------------------------------------------------------------------ idx files

@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_idx_loader_splits_and_values(dataset, tmp_path, monkeypatch, no_system_dirs):
    train, test = images(430), images(25)
    d = tmp_path / dataset
    write(d / "train-images-idx3-ubyte.gz", gzip.compress(idx_bytes(train)))
    write(d / "t10k-images-idx3-ubyte.gz", gzip.compress(idx_bytes(test)))
    pin(monkeypatch, dataset, d)
    out = load_splits(dataset, tmp_path, download=False)
    flat = lambda a: a.reshape(len(a), -1).astype(np.float32) / 255  # noqa: E731
    np.testing.assert_array_equal(out["train"], flat(train[:30]))  # first N - 400
    np.testing.assert_array_equal(out["val"], flat(train[30:]))  # last 400
    np.testing.assert_array_equal(out["test"], flat(test))
    assert all(x.dtype == np.float32 for x in out.values())


def test_mnist_test_split_needs_only_t10k(tmp_path, monkeypatch):
    d = tmp_path / "mnist"
    write(d / "t10k-images-idx3-ubyte.gz", gzip.compress(idx_bytes(images(5))))
    pin(monkeypatch, "mnist", d)
    assert load_splits("mnist", tmp_path, download=False, splits=["test"])["test"].shape == (5, 784)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz not found"):
        load_splits("mnist", tmp_path, download=False, splits=["val"])


def test_fashion_from_system_dir_accepts_recompressed_gz(tmp_path, monkeypatch):
    """Debian's copies: different .gz bytes, same decompressed content, in /usr/share/datasets/..."""
    system = tmp_path / "usr-share"
    monkeypatch.setattr(sources, "EXTRA_DIRS", {"fashion_mnist": (system,)})
    raw = {"train": idx_bytes(images(401)), "t10k": idx_bytes(images(3))}
    content = {k: hashlib.md5(v).hexdigest() for k, v in raw.items()}
    published = {f"{k}-images-idx3-ubyte.gz": hashlib.md5(gzip.compress(v, 9, mtime=0)).hexdigest()
                 for k, v in raw.items()}
    for k, v in raw.items():
        write(system / f"{k}-images-idx3-ubyte.gz", gzip.compress(v, 1, mtime=99))
    table = {n: RemoteFile(n, (), f"md5:{published[n]}", f"md5:{content[n.split('-')[0]]}")
             for n in published}
    monkeypatch.setitem(sources.REMOTE_FILES, "fashion_mnist", table)
    out = load_splits("fashion_mnist", tmp_path / "empty-data-dir", download=False)
    assert {k: v.shape for k, v in out.items()} == {"train": (1, 784), "val": (400, 784), "test": (3, 784)}
    # Content changed: rejected although the file is a valid idx.
    write(system / "t10k-images-idx3-ubyte.gz", gzip.compress(idx_bytes(images(3))))
    with pytest.raises(DataError) as e:
        load_splits("fashion_mnist", tmp_path / "empty-data-dir", download=False, splits=["test"])
    assert str(system / "t10k-images-idx3-ubyte.gz") in one_line(e)


def test_fashion_missing_mentions_debian_package(tmp_path, no_system_dirs):
    with pytest.raises(DataError) as e:
        load_splits("fashion_mnist", tmp_path, download=False, splits=["test"])
    msg = one_line(e)
    assert "t10k-images-idx3-ubyte.gz" in msg and str(tmp_path / "fashion_mnist") in msg
    assert "dataset-fashion-mnist" in msg and "IWAE_PL_DATA_DIR" in msg and "http" in msg


def test_wrong_checksum_names_file_and_both_digests(tmp_path, monkeypatch):
    d = tmp_path / "mnist"
    path = write(d / "t10k-images-idx3-ubyte.gz", gzip.compress(idx_bytes(images(2))))
    with pytest.raises(DataError) as e:  # the real table's md5 cannot match generated data
        load_splits("mnist", tmp_path, download=False, splits=["test"])
    msg = one_line(e)
    assert str(path) in msg and "9fb629c4189551a2d022fa330f9573f3" in msg
    assert file_checksum(path, "md5") in msg


@pytest.mark.parametrize("case, data, match", [
    ("bad magic", b"\0\0\x09\x03" + bytes(12), "not an idx file"),
    ("short header", b"\0\0\x08\x03\0\0", "header"),
    ("truncated payload", idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-5], "truncated"),
    ("trailing bytes", idx_bytes(np.zeros((3, 28, 28), np.uint8)) + b"xx", "padded"),
    ("truncated gzip", gzip.compress(idx_bytes(np.zeros((3, 28, 28), np.uint8)))[:-20], "cannot read idx"),
    ("empty", b"", "not an idx file"),
])
def test_read_idx_rejects_corrupt_files(tmp_path, case, data, match):
    path = write(tmp_path / "bad-idx3-ubyte", data)
    with pytest.raises(DataError, match=match) as e:
        read_idx(path)
    assert str(path) in one_line(e)


def test_read_idx_plain_and_gz_and_loader_checks_image_shape(tmp_path, monkeypatch):
    a = images(4, (5, 7))
    assert np.array_equal(read_idx(write(tmp_path / "a", idx_bytes(a))), a)
    assert np.array_equal(read_idx(write(tmp_path / "a.gz", gzip.compress(idx_bytes(a)))), a)
    # A valid idx of the wrong image size is rejected by the loader (checksum pinned to it).
    d = tmp_path / "mnist"
    write(d / "t10k-images-idx3-ubyte.gz", gzip.compress(idx_bytes(a)))
    pin(monkeypatch, "mnist", d)
    with pytest.raises(DataError, match=r"shape \(4, 5, 7\)"):
        load_splits("mnist", tmp_path, download=False, splits=["test"])


def test_truncated_file_with_matching_checksum_is_still_rejected(tmp_path, monkeypatch):
    d = tmp_path / "mnist"
    path = write(d / "t10k-images-idx3-ubyte.gz", gzip.compress(idx_bytes(images(3))[:-100]))
    pin(monkeypatch, "mnist", d)
    with pytest.raises(DataError, match="truncated") as e:
        load_splits("mnist", tmp_path, download=False, splits=["test"])
    assert str(path) in one_line(e)


# ------------------------------------------------------------------------------------------ binarized mnist

def binary(n: int) -> np.ndarray:
    return RNG.integers(0, 2, size=(n, 784), dtype=np.uint8)


def test_read_amat_roundtrip_and_tolerates_spacing(tmp_path):
    a = binary(6)
    assert np.array_equal(read_amat(write(tmp_path / "a.amat", amat_bytes(a))), a)
    assert np.array_equal(read_amat(write(tmp_path / "c.amat", amat_bytes(a, " \n"))), a)
    # No trailing spaces, CRLF line ends, no final newline.
    text = "\r\n".join(" ".join(map(str, row)) for row in a).encode()
    assert np.array_equal(read_amat(write(tmp_path / "b.amat", text)), a)


@pytest.mark.parametrize("case, mutate, match", [
    ("short line", lambda t: t[2:], "line 1 has 783 values"),
    ("not binary", lambda t: b"2" + t[1:], "not a binary .amat"),
    ("two digits", lambda t: b"10" + t[1:], "longer than one digit"),
    ("truncated", lambda t: t[: len(t) // 2], "truncated"),
    ("empty", lambda t: b"", "empty"),
])
def test_read_amat_rejects_malformed(tmp_path, case, mutate, match):
    path = write(tmp_path / "x.amat", mutate(amat_bytes(binary(3))))
    with pytest.raises(DataError, match=match) as e:
        read_amat(path)
    assert str(path) in one_line(e)


def write_amats(d: Path, sizes=(5, 4, 3)) -> dict[str, np.ndarray]:
    arrays = dict(zip(("train", "valid", "test"), (binary(n) for n in sizes)))
    for split, a in arrays.items():
        write(d / f"binarized_mnist_{split}.amat", amat_bytes(a))
    return arrays


def test_binarized_mnist_from_amat(tmp_path, monkeypatch):
    d = tmp_path / "binarized_mnist"
    arrays = write_amats(d)
    pin(monkeypatch, "binarized_mnist", d, "sha256")
    out = load_splits("binarized_mnist", tmp_path, download=False)
    for split, name in (("train", "train"), ("val", "valid"), ("test", "test")):
        np.testing.assert_array_equal(out[split], arrays[name].astype(np.float32))


def test_binarized_mnist_prefers_npz(tmp_path, monkeypatch):
    d = tmp_path / "binarized_mnist"
    write_amats(d)
    arrays = {k: binary(n) for k, n in (("train", 2), ("valid", 3), ("test", 4))}
    d.mkdir(exist_ok=True)
    np.savez(d / "binarized_mnist_uint8.npz", **arrays)
    pin(monkeypatch, "binarized_mnist", d, "sha256")
    out = load_splits("binarized_mnist", tmp_path, download=False)
    assert {k: len(v) for k, v in out.items()} == {"train": 2, "val": 3, "test": 4}
    np.testing.assert_array_equal(out["val"], arrays["valid"])


def test_binarized_mnist_npz_rejections(tmp_path, monkeypatch):
    d = tmp_path / "binarized_mnist"
    d.mkdir()
    npz = d / "binarized_mnist_uint8.npz"
    np.savez(npz, train=binary(2), valid=binary(2), test=binary(2))
    with pytest.raises(DataError) as e:  # generated file vs the real, documented sha256
        load_splits("binarized_mnist", tmp_path, download=False)
    msg = one_line(e)
    assert str(npz) in msg and NPZ_SHA256 in msg
    np.savez(npz, train=binary(2) * 3, valid=binary(2), test=binary(2))  # not 0/1
    pin(monkeypatch, "binarized_mnist", d, "sha256")
    with pytest.raises(DataError, match="must be 0/1"):
        load_splits("binarized_mnist", tmp_path, download=False)
    np.savez(npz, train=binary(2), test=binary(2))  # key missing
    pin(monkeypatch, "binarized_mnist", d, "sha256")
    with pytest.raises(DataError, match="valid") as e:
        load_splits("binarized_mnist", tmp_path, download=False)
    assert str(npz) in one_line(e)


def test_binarized_mnist_missing_everything(tmp_path):
    with pytest.raises(DataError) as e:
        load_splits("binarized_mnist", tmp_path, download=False)
    msg = one_line(e)
    assert "binarized_mnist_train.amat" in msg and str(tmp_path / "binarized_mnist") in msg
    assert "www.cs.toronto.edu/~larocheh" in msg


# ------------------------------------------------------------------------------------------ omniglot

def write_chardata(path: Path, n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    data = RNG.random((784, n_train))  # stored like Burda's file: one image per column
    testdata = RNG.random((784, n_test))
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"data": data, "testdata": testdata})
    return data, testdata


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob " + str(len(data)).encode() + b"\0" + data).hexdigest()


def test_omniglot_reshape_permutation_and_split(tmp_path, monkeypatch):
    path = tmp_path / "omniglot" / "chardata.mat"
    data, testdata = write_chardata(path, 1400, 6)
    monkeypatch.setitem(sources.REMOTE_FILES, "omniglot", {
        "chardata.mat": RemoteFile("chardata.mat", (), f"git-blob-sha1:{git_blob_sha1(path.read_bytes())}")})
    out = load_splits("omniglot", tmp_path, download=False)

    # Independent computation: each column is a 28x28 image in C order; Burda's Fortran-order reshape
    # reads it out column by column, i.e. flattens its transpose.
    def burda(columns: np.ndarray) -> np.ndarray:
        return np.stack([c.reshape(28, 28).T.ravel() for c in columns.T]).astype(np.float32)

    perm = np.random.RandomState(123).permutation(1400)
    expected_train = burda(data)[perm]
    np.testing.assert_array_equal(out["train"], expected_train[:55])
    np.testing.assert_array_equal(out["val"], expected_train[55:])
    np.testing.assert_array_equal(out["test"], burda(testdata))
    assert out["val"].shape == (1345, 784)


def test_omniglot_corrupt_or_wrong_file(tmp_path, monkeypatch):
    path = tmp_path / "omniglot" / "chardata.mat"
    write(path, b"MATLAB 5.0 MAT-file, but then garbage" * 10)
    with pytest.raises(DataError) as e:  # real git blob id cannot match
        load_splits("omniglot", tmp_path, download=False)
    assert str(path) in one_line(e) and "016a3536ffe5e1d38e42563a18d7a78bfaf643ec" in str(e.value)
    pin(monkeypatch, "omniglot", path.parent, "git-blob-sha1")
    with pytest.raises(DataError, match="cannot read") as e:
        load_splits("omniglot", tmp_path, download=False)
    assert str(path) in one_line(e)
    scipy.io.savemat(path, {"data": np.zeros((784, 2000))})  # no 'testdata'
    pin(monkeypatch, "omniglot", path.parent, "git-blob-sha1")
    with pytest.raises(DataError, match="testdata"):
        load_splits("omniglot", tmp_path, download=False)


# ------------------------------------------------------------------------------------------ digits

def test_digits_splits_partition_the_bundled_data():
    from sklearn.datasets import load_digits

    out = load_splits("digits")
    assert {k: v.shape for k, v in out.items()} == {"train": (1297, 64), "val": (200, 64), "test": (300, 64)}
    expected = load_digits().data.astype(np.float32) / 16
    perm = np.random.RandomState(0).permutation(1797)
    np.testing.assert_array_equal(np.concatenate([out["train"], out["val"], out["test"]]), expected[perm])
    assert out["train"].min() == 0 and out["train"].max() == 1


# ------------------------------------------------------------------------------------------ real data

def real_data_dir() -> Path:
    root = os.environ.get("IWAE_PL_DATA_DIR")
    if not root:
        pytest.skip("IWAE_PL_DATA_DIR not set: real binarized MNIST not available")
    return Path(root)


def test_real_binarized_mnist():
    root = real_data_dir()
    npz = root / "binarized_mnist" / "binarized_mnist_uint8.npz"
    if not npz.exists():
        pytest.skip(f"{npz} not present")
    assert hashlib.sha256(npz.read_bytes()).hexdigest() == NPZ_SHA256
    out = load_splits("binarized_mnist", download=False)
    assert {k: v.shape for k, v in out.items()} == {"train": (50000, 784), "val": (10000, 784),
                                                    "test": (10000, 784)}
    for x in out.values():
        assert np.array_equal(np.unique(x), [0.0, 1.0])


def test_real_mnist_t10k():
    root = real_data_dir()
    if not (root / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("real MNIST t10k images not present in IWAE_PL_DATA_DIR")
    test = load_splits("mnist", download=False, splits=["test"])["test"]  # md5 checked on the way
    assert test.shape == (10000, 784) and test.dtype == np.float32
    assert test.min() == 0.0 and test.max() == 1.0
    assert 0.1 < test.mean() < 0.15  # MNIST's mean gray level is about 0.13


def test_real_amat_layout(tmp_path):
    """The valid split rebuilt from the npz in Larochelle's layout has the published sha256, parses back."""
    npz = real_data_dir() / "binarized_mnist" / "binarized_mnist_uint8.npz"
    if not npz.exists():
        pytest.skip(f"{npz} not present")
    valid = np.load(npz)["valid"]
    path = write(tmp_path / "binarized_mnist_valid.amat", amat_bytes(valid))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == (
        "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2")
    np.testing.assert_array_equal(read_amat(path), valid)
