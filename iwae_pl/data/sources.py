"""The datasets: where their files come from, how they are checked, parsed and split.

Every loader returns float32 arrays ``[N, D]`` of gray values in ``[0, 1]`` (``D = rows * cols``), one per
requested split (``"train"``, ``"val"``, ``"test"``); binarization is the datamodule's job.

Datasets and the choices made, following the original IWAE experiments (Burda et al. 2015,
github.com/yburda/iwae ``datasets.py`` / ``experiments.py``):

``binarized_mnist``
    Larochelle's fixed binarization of MNIST (28x28, already 0/1, never resampled). Read from
    ``binarized_mnist_uint8.npz`` (keys train/valid/test, uint8 0/1) when present, else from the three
    ``binarized_mnist_{train,valid,test}.amat`` text files (downloaded when missing). Splits 50,000 /
    10,000 / 10,000 = the files' own train / valid / test (Burda concatenates train+valid and holds out the
    last 10,000: the same split).
``mnist``
    The original MNIST idx files, gray values /255, dynamically binarized. Train = the first 59,600 of the
    60,000 training images, val = the last 400 (Burda's ``n_validation=400``, no shuffling), test = the
    10,000 t10k images.
``omniglot``
    Burda's ``chardata.mat`` (keys ``data`` / ``testdata``, 784 x N, values in [0, 1]), transposed to rows
    and reshaped exactly like Burda's ``reshape_data``: ``x.reshape((-1, 28, 28)).reshape((-1, 784),
    order='F')`` (a transpose of each 28x28 image). The 24,345 training rows are permuted with
    ``np.random.RandomState(123).permutation``; the last 1,345 permuted rows are the validation set;
    test = the 8,070 ``testdata`` rows. Dynamically binarized.
``fashion_mnist``
    Zalando's Fashion-MNIST idx files, handled exactly like ``mnist`` (first 59,600 / last 400 / 10,000
    test). Also looked up in ``/usr/share/datasets/fashion-mnist/`` (Debian package
    ``dataset-fashion-mnist``); Debian re-compresses the .gz files, so a file is accepted if either the
    published md5 of the .gz or the md5 of its decompressed content (as published by torchvision) matches.
``digits``
    scikit-learn's bundled 8x8 digits (1797 images, values 0..16, gray = value/16; offline, no file to
    fetch). Split by ``np.random.RandomState(0).permutation(1797)``: the first 1,297 permuted images train,
    the next 200 validate, the last 300 test. Dynamically binarized.

Files live in ``<data_dir>/<dataset>/<file>`` with ``data_dir`` = the ``data_dir`` argument, else the
environment variable ``IWAE_PL_DATA_DIR``, else ``~/.cache/iwae_pl``. ``REMOTE_FILES`` (names, mirrors,
checksums) and ``EXTRA_DIRS`` are module-level data so tests can point them at local files.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection

import numpy as np

from iwae_pl.data.download import DataError, DataSettingError, RemoteFile, fetch, find_local

__all__ = [
    "DATASETS", "DatasetSpec", "ENV_VAR", "EXTRA_DIRS", "REMOTE_FILES", "SPLITS",
    "load_splits", "read_amat", "read_idx", "resolve_data_dir",
]

ENV_VAR = "IWAE_PL_DATA_DIR"
DEFAULT_DATA_DIR = "~/.cache/iwae_pl"
SPLITS = ("train", "val", "test")

_LAROCHELLE = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_OMNIGLOT = "https://raw.githubusercontent.com/yburda/iwae/master/datasets/OMNIGLOT/chardata.mat"
BINARIZED_MNIST_NPZ = "binarized_mnist_uint8.npz"


def _amat(split: str, sha256: str) -> RemoteFile:
    name = f"binarized_mnist_{split}.amat"
    return RemoteFile(name, (_LAROCHELLE + name,), f"sha256:{sha256}")


def _mirrored(name: str, mirrors: tuple[str, ...], md5: str, content_md5: str | None = None) -> RemoteFile:
    return RemoteFile(name, tuple(m + name for m in mirrors), f"md5:{md5}",
                      None if content_md5 is None else f"md5:{content_md5}")


# dataset -> file name -> RemoteFile. Only the files the loaders read (labels are never needed).
REMOTE_FILES: dict[str, dict[str, RemoteFile]] = {
    "binarized_mnist": {
        BINARIZED_MNIST_NPZ: RemoteFile(  # local only (no URL): the shared copy of the three .amat files
            BINARIZED_MNIST_NPZ, (),
            "sha256:350243cb824d66d022e0c3e87cac231231668817ff03f5f6d7b6533017d56b4b"),
        **{f.name: f for f in (
            _amat("train", "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d"),
            _amat("valid", "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2"),
            _amat("test", "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c"),
        )},
    },
    "mnist": {f.name: f for f in (
        _mirrored("train-images-idx3-ubyte.gz", _MNIST_MIRRORS, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        _mirrored("t10k-images-idx3-ubyte.gz", _MNIST_MIRRORS, "9fb629c4189551a2d022fa330f9573f3"),
    )},
    "fashion_mnist": {f.name: f for f in (
        _mirrored("train-images-idx3-ubyte.gz", (_FASHION,), "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                  "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
        _mirrored("t10k-images-idx3-ubyte.gz", (_FASHION,), "bef4ecab320f06d8554ea6380940ec79",
                  "8181f5470baa50b63fa0f6fddb340f0a"),
    )},
    "omniglot": {
        "chardata.mat": RemoteFile("chardata.mat", (_OMNIGLOT,),
                                   "git-blob-sha1:016a3536ffe5e1d38e42563a18d7a78bfaf643ec"),
    },
}

# Directories searched after <data_dir>/<dataset>/ (read-only system copies).
EXTRA_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion_mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}
_EXTRA_HINTS = {"fashion_mnist": "or `apt-get install dataset-fashion-mnist` (Debian)"}


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` if given, else $IWAE_PL_DATA_DIR, else ~/.cache/iwae_pl (user-expanded)."""
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(ENV_VAR) or DEFAULT_DATA_DIR
    return Path(data_dir).expanduser()


@dataclass(frozen=True)
class _Files:
    """Finds (and if allowed downloads) one dataset's files."""

    dataset: str
    data_dir: Path
    download: bool

    @property
    def own_dir(self) -> Path:
        return self.data_dir / self.dataset

    @property
    def search_dirs(self) -> tuple[Path, ...]:
        return (self.own_dir, *EXTRA_DIRS.get(self.dataset, ()))

    def remote(self, name: str) -> RemoteFile:
        return REMOTE_FILES[self.dataset][name]

    def get(self, name: str) -> Path:
        remote = self.remote(name)
        how = f"download {remote.urls[0]} into {self.own_dir}" if remote.urls else f"put it in {self.own_dir}"
        hint = f"to get it: {how}, or set {ENV_VAR} to a directory holding {self.dataset}/{name}"
        if self.dataset in _EXTRA_HINTS:
            hint += ", " + _EXTRA_HINTS[self.dataset]
        if (self.download and not self.data_dir.exists() and self.data_dir != Path(DEFAULT_DATA_DIR).expanduser()
                and self.find_local(name) is None):  # a mistyped path is reported, not created
            raise DataError(f"data_dir {str(self.data_dir)!r} does not exist; create it to download {self.dataset} "
                            f"there, or point data_dir (or {ENV_VAR}) at the directory that holds {self.dataset}/")
        return fetch(remote, self.search_dirs, self.own_dir, allow_download=self.download, hint=hint)

    def find_local(self, name: str) -> Path | None:
        """The verified local copy of ``name`` if there is one (never downloads)."""
        return find_local(self.remote(name), self.search_dirs)


# ---------------------------------------------------------------------------------------------- parsers

_IDX_UBYTE = 0x08


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an idx file of unsigned bytes (gzipped or not) into a uint8 array of its declared shape.

    Checks the magic number (0, 0, type 0x08, ndim) and that the payload is exactly prod(dims) bytes.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; EOFError = truncated stream
        raise DataError(f"cannot read idx file {path}: {type(e).__name__}: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE or raw[3] == 0:
        raise DataError(f"{path} is not an idx file of unsigned bytes (magic {raw[:4].hex() or 'missing'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, shorter than its {header}-byte idx header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise DataError(f"{path} is truncated or padded: {len(raw) - header} data bytes, "
                        f"expected {expected} for shape {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_idx_images(path: Path, shape: tuple[int, int] = (28, 28)) -> np.ndarray:
    """idx images -> float32 [N, rows*cols] gray values in [0, 1]."""
    images = read_idx(path)
    if images.ndim != 3 or images.shape[1:] != shape:
        raise DataError(f"{path} holds shape {images.shape}, expected (N, {shape[0]}, {shape[1]})")
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)


def _amat_exact_layout(raw: np.ndarray, dim: int) -> np.ndarray | None:
    """Larochelle's files are exactly ``"d d ... d\\n"`` (2 * dim bytes a line; rebuilding them so from
    the npz reproduces the published sha256): parse them by reshaping. None for any other layout."""
    if raw.size == 0 or raw.size % (2 * dim):
        return None
    grid = raw.reshape(-1, 2 * dim)
    values, gaps = grid[:, 0::2], grid[:, 1::2]
    if not (((values == ord("0")) | (values == ord("1"))).all() and (gaps[:, :-1] == ord(" ")).all()
            and (gaps[:, -1] == ord("\n")).all()):
        return None
    return values - ord("0")


def read_amat(path: str | os.PathLike, dim: int = 784) -> np.ndarray:
    """Parse a .amat text file (lines of ``dim`` space-separated '0'/'1') into a uint8 array [N, dim].

    Vectorised over the raw bytes instead of np.loadtxt: the exact layout of Larochelle's files is parsed by
    a reshape; any other spacing goes through a general pass.
    """
    path = Path(path)
    try:
        raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from e
    zero, one, newline = ord("0"), ord("1"), ord("\n")
    fast = _amat_exact_layout(raw, dim)
    if fast is not None:
        return fast
    is_digit = (raw == zero) | (raw == one)
    allowed = is_digit | (raw == ord(" ")) | (raw == newline) | (raw == ord("\r")) | (raw == ord("\t"))
    if not allowed.all():
        bad = int(np.argmax(~allowed))
        raise DataError(f"{path} is not a binary .amat file: byte {bad} is {bytes(raw[bad:bad + 1])!r}, "
                        f"expected '0', '1' or whitespace")
    if (is_digit[1:] & is_digit[:-1]).any():  # e.g. "10": values must be single characters
        raise DataError(f"{path} is not a binary .amat file: values longer than one digit")
    if raw.size == 0:
        raise DataError(f"{path} is empty, expected lines of {dim} binary values")
    ends = raw == newline
    line_of_byte = np.cumsum(ends) - ends  # a newline belongs to the line it ends
    counts = np.bincount(line_of_byte[is_digit], minlength=int(line_of_byte[-1]) + 1)
    nonblank = np.flatnonzero(counts)
    counts = counts[: nonblank[-1] + 1] if nonblank.size else counts[:1]  # trailing blank lines are harmless
    wrong = np.flatnonzero(counts != dim)
    if wrong.size:
        line = int(wrong[0])
        raise DataError(f"{path} is malformed or truncated: line {line + 1} has {int(counts[line])} values, "
                        f"expected {dim}")
    return (raw[is_digit] - zero).reshape(-1, dim)


# ---------------------------------------------------------------------------------------------- loaders

Arrays = dict[str, np.ndarray]


def _load_binarized_mnist(files: _Files, splits: Collection[str]) -> Arrays:
    names = {"train": "train", "val": "valid", "test": "test"}
    npz_path = files.find_local(BINARIZED_MNIST_NPZ)
    out: Arrays = {}
    if npz_path is not None:
        try:
            with np.load(npz_path) as npz:
                for split in splits:
                    out[split] = np.asarray(npz[names[split]])
        except (OSError, ValueError, KeyError, zlib.error) as e:
            raise DataError(f"cannot read {npz_path}: {type(e).__name__}: {e}") from e
    else:
        for split in splits:
            out[split] = read_amat(files.get(f"binarized_mnist_{names[split]}.amat"))
    for split, x in out.items():
        if x.ndim != 2 or x.shape[1] != 784 or not ((x == 0) | (x == 1)).all():
            raise DataError(f"binarized_mnist {split} split must be 0/1 of shape (N, 784), got {x.shape}")
    return {split: x.astype(np.float32) for split, x in out.items()}


def _load_idx_pair(files: _Files, splits: Collection[str], n_val: int = 400) -> Arrays:
    """MNIST-format datasets: train/val from the training file (last ``n_val`` = val), test from t10k."""
    out: Arrays = {}
    if "train" in splits or "val" in splits:
        path = files.get("train-images-idx3-ubyte.gz")
        x = _read_idx_images(path)
        if len(x) <= n_val:
            raise DataError(f"{path} holds {len(x)} images, need more than the {n_val} held out for val")
        out.update(train=x[:-n_val], val=x[-n_val:])
    if "test" in splits:
        out["test"] = _read_idx_images(files.get("t10k-images-idx3-ubyte.gz"))
    return out


def burda_reshape(x: np.ndarray) -> np.ndarray:
    """Burda's ``reshape_data``: rows of 784 -> 28x28 (C order) -> rows read in Fortran order."""
    return x.reshape((-1, 28, 28)).reshape((-1, 28 * 28), order="F")


def _load_omniglot(files: _Files, splits: Collection[str], n_val: int = 1345) -> Arrays:
    import scipy.io  # only this loader needs scipy

    path = files.get("chardata.mat")
    try:
        mat = scipy.io.loadmat(path)
        train, test = mat["data"], mat["testdata"]
    except (OSError, ValueError, KeyError, TypeError, NotImplementedError, zlib.error) as e:
        raise DataError(f"cannot read {path} as Burda's chardata.mat: {type(e).__name__}: {e}") from e
    for key, a in (("data", train), ("testdata", test)):
        if a.ndim != 2 or a.shape[0] != 784:
            raise DataError(f"{path}: '{key}' has shape {a.shape}, expected (784, N)")
    train = burda_reshape(train.T.astype(np.float32))
    train = train[np.random.RandomState(123).permutation(len(train))]
    if len(train) <= n_val:
        raise DataError(f"{path} holds {len(train)} training images, need more than {n_val}")
    out = {"train": train[:-n_val], "val": train[-n_val:], "test": burda_reshape(test.T.astype(np.float32))}
    return {s: np.ascontiguousarray(out[s]) for s in splits}


def _load_digits(files: _Files, splits: Collection[str]) -> Arrays:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no file, no network

    x = load_digits().data.astype(np.float32) / np.float32(16.0)
    perm = np.random.RandomState(0).permutation(len(x))
    parts = {"train": perm[:1297], "val": perm[1297:1497], "test": perm[1497:]}
    return {s: x[parts[s]] for s in splits}


# ---------------------------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class DatasetSpec:
    """What is known about a dataset without loading it."""

    name: str
    image_shape: tuple[int, int]
    prebinarized: bool  # True: pixels are already 0/1 (fixed binarization); False: dynamic binarization
    loader: Callable[[_Files, Collection[str]], Arrays]
    source: str

    @property
    def input_dim(self) -> int:
        return self.image_shape[0] * self.image_shape[1]


DATASETS: dict[str, DatasetSpec] = {
    s.name: s for s in (
        DatasetSpec("binarized_mnist", (28, 28), True, _load_binarized_mnist,
                    "Larochelle's fixed-binarization MNIST (.npz or .amat)"),
        DatasetSpec("mnist", (28, 28), False, _load_idx_pair, "MNIST idx files"),
        DatasetSpec("omniglot", (28, 28), False, _load_omniglot, "Burda's OMNIGLOT chardata.mat"),
        DatasetSpec("fashion_mnist", (28, 28), False, _load_idx_pair, "Fashion-MNIST idx files"),
        DatasetSpec("digits", (8, 8), False, _load_digits, "scikit-learn's bundled 8x8 digits"),
    )
}


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of ``name``; DataError listing the known names otherwise."""
    if not isinstance(name, str) or name not in DATASETS:
        raise DataSettingError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


def load_splits(
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    splits: Collection[str] = SPLITS,
) -> dict[str, np.ndarray]:
    """Load the requested splits of ``dataset`` as float32 gray values in [0, 1], each ``[N, D]``.

    Only the files those splits need are read (e.g. MNIST's test split needs only the t10k file).
    """
    spec = dataset_spec(dataset)
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise DataSettingError(f"unknown split(s) {unknown}; choose from: {', '.join(SPLITS)}")
    files = _Files(dataset, resolve_data_dir(data_dir), bool(download))
    out = spec.loader(files, tuple(dict.fromkeys(splits)))
    for split, x in out.items():
        if x.ndim != 2 or x.shape[1] != spec.input_dim or x.dtype != np.float32:
            raise DataError(f"{dataset} {split}: got {x.dtype} {x.shape}, "
                            f"expected float32 (N, {spec.input_dim})")
        if not (np.isfinite(x).all() and x.min(initial=0.0) >= 0.0 and x.max(initial=0.0) <= 1.0):
            raise DataError(f"{dataset} {split}: gray values outside [0, 1]")
    return out
