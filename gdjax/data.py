"""Datasets as `Batch(x, y)`: x `(N, n_in)` floats in [0, 1], y `(N, n_classes)` one-hot.

    >>> ds = load_dataset("digits")                     # offline: scikit-learn's bundled 8x8 digits
    >>> ds.train.x.shape, ds.train.y.shape, ds.test.x.shape
    ((1500, 64), (1500, 10), (297, 64))
    >>> fm = load_dataset("fashion-mnist")              # IDX files, e.g. from Debian's dataset-fashion-mnist
    >>> toy = synthetic(jax.random.key(0), 1024, n_in=100, n_classes=7)    # teacher-student, any size
    >>> mb = shuffled_batches(jax.random.key(1), ds.train, 100)            # x: (15, 100, 64), for lax.scan

Datasets:
  "digits":        1797 8x8 grey images (scikit-learn's `load_digits`, shipped with the package: works offline),
                   x = pixel / 16 in [0, 1], 64 inputs, 10 classes. A fixed split: 1500 train / 297 test, drawn
                   by a permutation from `key` (default `jax.random.key(0)`).
  "fashion-mnist": 60000 train / 10000 test 28x28 images, 784 inputs, 10 classes, from IDX files.
  "mnist":         the same shapes, from IDX files.
IDX files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
`t10k-labels-idx1-ubyte`, each raw or `.gz`) are looked up in `data_dir` when it is given, otherwise in
`default_data_dirs(name)`: `$GDJAX_DATA_DIR/<name>`, `$GDJAX_DATA_DIR`, then (fashion-mnist only) Debian's
`/usr/share/datasets/fashion-mnist`. The loader never unpickles anything.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import _checks
from gdjax.nn import MLP, Layer, init_mlp


class Batch(NamedTuple):
    """A batch of examples: `x: (N, n_in)`, `y: (N, n_out)` (one-hot targets for classification)."""

    x: jax.Array
    y: jax.Array


class Dataset(NamedTuple):
    """A train/test pair of `Batch`es with `n_classes` one-hot columns; a plain container (not a jit argument)."""

    train: Batch
    test: Batch
    n_classes: int
    name: str


DATASETS = ("digits", "fashion-mnist", "mnist")
DATA_DTYPES = _checks.FLOAT_DTYPES
DIGITS_SPLIT = (1500, 297)  # train, test: all 1797 images of scikit-learn's digits
DEBIAN_DIRS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist"}
ENV_VAR = "GDJAX_DATA_DIR"
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_HOW_TO_GET = {
    "fashion-mnist": (
        "install Debian's package (`make data` in a gdjax checkout, or sudo apt-get install dataset-fashion-mnist; "
        "files land in /usr/share/datasets/fashion-mnist) or download the four IDX files from "
        "https://github.com/zalandoresearch/fashion-mnist (data/fashion/) and pass data_dir=... "
        f"or set {ENV_VAR}"
    ),
    "mnist": (
        "download the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; e.g. from a mirror of Yann LeCun's MNIST page "
        f"such as https://ossci-datasets.s3.amazonaws.com/mnist/) into a folder and pass data_dir=... or set {ENV_VAR}"
    ),
}

# IDX type code (third magic byte) -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def one_hot(labels, n_classes: int, dtype="float32") -> jax.Array:
    """Integer labels `(N,)` in [0, n_classes) -> one-hot `(N, n_classes)`; out-of-range labels raise ValueError."""
    n_classes = _checks.positive_int(n_classes, "n_classes")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"labels must lie in [0, {n_classes}) for n_classes={n_classes}, got range [{labels.min()}, {labels.max()}]"
        )
    return jnp.asarray(np.eye(n_classes, dtype=dtype)[labels])


def _check_dtype(dtype) -> np.dtype:
    """A float/complex dtype name that JAX can hold as is (float64/complex128 need x64 enabled)."""
    dt = _checks.float_dtype(dtype)
    if dt.name in ("float64", "complex128") and not jax.config.jax_enable_x64:
        raise ValueError(f"dtype {dt.name} needs 64-bit JAX: call jax.config.update('jax_enable_x64', True) "
                         "first, or ask for float32/complex64")
    return dt


def check_batch(batch, name: str = "batch", *, net: MLP | None = None) -> int:
    """The one check of a `Batch` argument (used by costs, training and the data helpers); returns N.

    Args:
      batch: should be a `Batch(x: (N, ...), y: (N, ...))` whose x and y share the leading (example) axis.
      name: the argument's name in the error messages ("train", "test", ...).
      net: when given, x must be `(N, net.n_in)` and y `(N, net.n_out)` (one-hot targets).
    Raises TypeError when `batch` is not a `Batch`, ValueError naming the shapes expected and seen:
      >>> check_batch(Batch(jnp.zeros((4, 5)), jnp.zeros((4, 3))), net=MLP((5, 3)))   # 4
    """
    if not isinstance(batch, Batch):
        raise TypeError(f"{name} must be a gdjax.Batch(x, y), got {type(batch).__name__}")
    x, y = batch
    xs, ys = jnp.shape(x), jnp.shape(y)
    if net is not None:
        if len(xs) != 2 or xs[1] != net.n_in:
            raise ValueError(f"{name}.x must have shape (N, {net.n_in}) for this network, got {xs}")
        if ys != (xs[0], net.n_out):
            raise ValueError(f"{name}.y must have shape ({xs[0]}, {net.n_out}) (one-hot targets, see "
                             f"gdjax.data.one_hot), got {ys}")
    elif len(xs) < 1 or len(ys) < 1 or xs[0] != ys[0]:
        raise ValueError(f"{name}.x and {name}.y must share the leading (example) axis, got shapes {xs} and {ys}")
    return int(xs[0])


# --- IDX files -----------------------------------------------------------------------------------------------


def read_idx(path) -> np.ndarray:
    """Read one IDX file (raw, or gzip-compressed when the name ends in `.gz`) into a numpy array.

    The IDX format (MNIST's): two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions d, then d big-endian uint32 sizes and the data.

    Args:
      path: a file path (str or Path).
    Returns:
      an array of shape `(size_0, ..., size_{d-1})` in native byte order, e.g. `(60000, 28, 28)` uint8.
    Raises:
      ValueError naming the file when the magic number, type code, sizes or data length are wrong.
    Example:
      >>> labels = read_idx("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz")   # (60000,) uint8
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (EOFError, gzip.BadGzipFile, OSError) as err:
        if isinstance(err, FileNotFoundError | PermissionError | IsADirectoryError):
            raise
        raise ValueError(f"{path}: not a readable IDX file ({err}); re-download it") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes); re-download the file")
    zero0, zero1, code, ndim = raw[:4]
    if zero0 != 0 or zero1 != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{path}: bad IDX magic number {raw[:4].hex()} (expected 0000 then a type code in "
            f"{', '.join(f'{c:02x}' for c in _IDX_DTYPES)} and a dimension count >= 1); "
            "is it an IDX file (e.g. train-images-idx3-ubyte), and is a compressed file named .gz?"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dimensions); re-download the file")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got < expected:
        raise ValueError(
            f"{path}: truncated IDX data: shape {shape} of {dtype.str} needs {expected} bytes, found {got}; "
            "re-download the file"
        )
    if got > expected:
        raise ValueError(f"{path}: {got - expected} bytes of trailing data after shape {shape}; not a valid IDX file")
    data = np.frombuffer(raw, dtype, count=int(np.prod(shape, dtype=np.int64)), offset=header)
    return data.reshape(shape).astype(dtype.newbyteorder("="))


def default_data_dirs(name: str) -> list[Path]:
    """The folders searched for `name`'s IDX files when no `data_dir` is given, in order.

    This is the one function of gdjax that reads the environment: `$GDJAX_DATA_DIR/<name>`, then
    `$GDJAX_DATA_DIR` (when the variable is set and non-empty), then Debian's folder for the dataset if it has one
    (`/usr/share/datasets/fashion-mnist` for "fashion-mnist", from `apt-get install dataset-fashion-mnist`).

    Example:
      >>> default_data_dirs("fashion-mnist")      # with GDJAX_DATA_DIR unset
      [PosixPath('/usr/share/datasets/fashion-mnist')]
    """
    dirs = []
    env = os.environ.get(ENV_VAR, "")
    if env:
        dirs += [Path(env) / name, Path(env)]
    if name in DEBIAN_DIRS:
        dirs.append(Path(DEBIAN_DIRS[name]))
    return dirs


def _idx_candidates(directory: Path, stem: str) -> list[Path]:
    """File names an IDX file goes by: `train-images-idx3-ubyte[.gz]` or `train-images.idx3-ubyte[.gz]`."""
    dotted = stem.replace("-idx", ".idx")
    return [directory / f"{s}{ext}" for s in (stem, dotted) for ext in (".gz", "")]


def find_idx_files(name: str, dirs: Sequence[Path]) -> dict[str, tuple[Path, Path]]:
    """The (images, labels) IDX paths of the train and test splits in the first folder that holds all four.

    Raises FileNotFoundError listing every folder (and file name) searched and how to get the files.
    """
    for d in dirs:
        found = {}
        for split, stems in IDX_FILES.items():
            paths = [next((p for p in _idx_candidates(Path(d), s) if p.is_file()), None) for s in stems]
            if None in paths:
                break
            found[split] = tuple(paths)
        else:
            return found
    looked = "; ".join(str(d) for d in dirs) or (
        f"nowhere (no data_dir given, {ENV_VAR} unset, and {name} has no system folder)"
    )
    files = ", ".join(f"{s}[.gz]" for stems in IDX_FILES.values() for s in stems)
    raise FileNotFoundError(
        f"{name}: IDX files not found. Looked for {files} in: {looked}. To get them: {_HOW_TO_GET[name]}."
    )


def load_idx_split(images_path, labels_path, n_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Images `(N, rows, cols)` and integer labels `(N,)` from an IDX image file and its label file.

    Raises ValueError when the counts differ, the images are not 3-D, or a label is outside [0, n_classes).
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise ValueError(f"{images_path}: expected images of shape (N, rows, cols), got {images.shape}")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{labels_path}: expected integer labels of shape (N,), got {labels.shape} {labels.dtype}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"image/label count mismatch: {images_path} has {images.shape[0]} images but {labels_path} has "
            f"{labels.shape[0]} labels; the two files must come from the same split"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"{labels_path}: labels must lie in [0, {n_classes}), got [{labels.min()}, {labels.max()}]")
    return images, labels


# --- datasets ------------------------------------------------------------------------------------------------


def _take(n, total: int, arg: str, name: str) -> int:
    if n is None:
        return total
    n = _checks.positive_int(n, arg)
    if n > total:
        raise ValueError(f"{arg}={n} exceeds the {total} examples available in {name}; pass at most {total}")
    return n


def _to_batch(x: np.ndarray, labels: np.ndarray, n_classes: int, dtype: np.dtype) -> Batch:
    return Batch(jnp.asarray(x.astype(dtype, copy=False)), one_hot(labels, n_classes, dtype))


def _load_digits(n_train, n_test, dtype, key) -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "the 'digits' dataset needs scikit-learn: pip install 'gdjax[data]' (or pip install scikit-learn)"
        ) from None
    digits = load_digits()
    x = np.asarray(digits.data, np.float64) / 16.0  # pixel values 0..16 -> [0, 1]
    labels = np.asarray(digits.target, np.int64)
    key = jax.random.key(0) if key is None else _checks.prng_key(key)
    perm = np.asarray(jax.random.permutation(key, x.shape[0]))
    train_idx, test_idx = perm[: DIGITS_SPLIT[0]], perm[DIGITS_SPLIT[0] :]
    n_train = _take(n_train, len(train_idx), "n_train", "digits")
    n_test = _take(n_test, len(test_idx), "n_test", "digits")
    train_idx, test_idx = train_idx[:n_train], test_idx[:n_test]
    return Dataset(
        _to_batch(x[train_idx], labels[train_idx], 10, dtype),
        _to_batch(x[test_idx], labels[test_idx], 10, dtype),
        10,
        "digits",
    )


def _load_idx_dataset(name, data_dir, n_train, n_test, dtype) -> Dataset:
    dirs = [Path(data_dir) / name, Path(data_dir)] if data_dir is not None else default_data_dirs(name)
    files = find_idx_files(name, dirs)
    batches = []
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = load_idx_split(*files[split], n_classes=10)
        n = _take(n, images.shape[0], f"n_{split}", f"{name} {split} ({files[split][0]})")
        x = images[:n].reshape(n, -1).astype(dtype) / dtype.type(255)  # 0..255 -> [0, 1]
        batches.append(_to_batch(x, labels[:n], 10, dtype))
    return Dataset(batches[0], batches[1], 10, name)


def load_dataset(name: str, data_dir=None, *, n_train=None, n_test=None, dtype="float32", key=None) -> Dataset:
    """Load a classification dataset as a train/test pair of `Batch(x, y)`.

    Args:
      name: one of `DATASETS`: "digits" (offline, scikit-learn), "fashion-mnist", "mnist" (IDX files).
      data_dir: folder of the IDX files (searched as `data_dir/<name>` then `data_dir`); default
        `default_data_dirs(name)` ($GDJAX_DATA_DIR, then Debian's folder for fashion-mnist). Ignored for digits.
      n_train, n_test: keep only the first n examples of each split (default: all).
      dtype: float32 (default), float64, complex64 or complex128 (64-bit types need jax_enable_x64).
      key: PRNG key of the digits train/test permutation; default `jax.random.key(0)`, the documented fixed
        split (1500 train / 297 test). IDX datasets keep the files' own split and order.
    Returns:
      `Dataset(train, test, n_classes=10, name)`; `x: (N, n_in)` of `dtype` in [0, 1] (n_in 64 for digits,
      784 for the IDX datasets), `y: (N, 10)` one-hot of `dtype`.
    Raises:
      ValueError for an unknown name (listing the valid ones) or bad n_train/n_test; FileNotFoundError listing
      where it looked and how to get the files; ValueError for corrupt IDX files.
    Example:
      >>> ds = load_dataset("digits")
      >>> ds.train.x.shape, ds.test.y.shape
      ((1500, 64), (297, 10))
    """
    _checks.choice(name, DATASETS, "dataset name")
    dtype = _check_dtype(dtype)
    if name == "digits":
        return _load_digits(n_train, n_test, dtype, key)
    if key is not None:
        _checks.prng_key(key)
    return _load_idx_dataset(name, data_dir, n_train, n_test, dtype)


# --- synthetic teacher-student data --------------------------------------------------------------------------


def _check_hidden(hidden) -> tuple[int, ...]:
    if isinstance(hidden, str | bytes) or not isinstance(hidden, Sequence):
        raise TypeError(f"hidden must be a sequence of hidden-layer widths such as (32,) or (), got {hidden!r}")
    return tuple(_checks.positive_int(h, f"hidden[{i}]") for i, h in enumerate(hidden))


def make_teacher(key: jax.Array, n_in: int, n_classes: int, hidden: Sequence[int] = (32,)):
    """The random teacher network of `synthetic`: `(net, params)` of an MLP `(n_in, *hidden, n_classes)`.

    tanh hidden units, identity output, LeCun-normal weights (float32); the first layer is shifted so that the
    teacher sees the centred input `2x - 1` for `x` in [0, 1] (otherwise the mean input dominates and one class
    wins almost everywhere). The label of `x` is `argmax(net.apply(params, x))`.
    """
    key = _checks.prng_key(key)
    n_in = _checks.positive_int(n_in, "n_in")
    n_classes = _checks.positive_int(n_classes, "n_classes", minimum=2)
    hidden = _check_hidden(hidden)
    net = MLP((n_in, *hidden, n_classes), activation="tanh", output="identity")
    params = init_mlp(key, net.sizes, scheme="lecun", dtype="float32")
    w0, b0 = params[0]
    params = (Layer(2 * w0, b0 - jnp.sum(w0, axis=0)), *params[1:])  # w0 (2x - 1) + b0
    return net, params


def synthetic(
    key: jax.Array, n: int, n_in: int, n_classes: int, *, hidden: Sequence[int] = (32,), dtype="float32"
) -> Batch:
    """Teacher-student classification data of any size: inputs uniform in [0, 1], labels from a random MLP.

    `k_teacher, k_x = jax.random.split(key)`; the teacher is `make_teacher(k_teacher, n_in, n_classes, hidden)`,
    `x ~ U[0, 1)^(n, n_in)` drawn in float32 from `k_x` (then cast, so every dtype gets the same data and
    labels), `y = one_hot(argmax teacher(x))`.

    Args:
      key: PRNG key.
      n: number of examples; n_in: inputs per example; n_classes: classes (>= 2).
      hidden: hidden-layer widths of the teacher.
      dtype: dtype of x and y (float32, float64, complex64, complex128).
    Returns:
      `Batch(x: (n, n_in), y: (n, n_classes))`.
    Example:
      >>> b = synthetic(jax.random.key(0), 256, n_in=20, n_classes=3)
    """
    key = _checks.prng_key(key)
    n = _checks.positive_int(n, "n")
    dtype = _check_dtype(dtype)
    k_teacher, k_x = jax.random.split(key)
    net, params = make_teacher(k_teacher, n_in, n_classes, hidden)
    x = jax.random.uniform(k_x, (n, n_in), jnp.float32)
    labels = jnp.argmax(jax.vmap(net.apply, (None, 0))(params, x), axis=-1)
    return Batch(x.astype(dtype), jax.nn.one_hot(labels, n_classes, dtype=dtype))


# --- splits and mini-batches ---------------------------------------------------------------------------------


def train_test_split(key: jax.Array, batch: Batch, n_test: int) -> tuple[Batch, Batch]:
    """Shuffle `batch` with `key` and cut it into `(train, test)` with `n_test` test examples.

    Args:
      key: PRNG key of the permutation; batch: `Batch(x: (N, ...), y: (N, ...))`; n_test: 1 <= n_test < N.
    Returns:
      `(Batch(x: (N - n_test, ...), ...), Batch(x: (n_test, ...), ...))`.
    Example:
      >>> train, test = train_test_split(jax.random.key(0), synthetic(jax.random.key(1), 100, 5, 2), 20)
    """
    key = _checks.prng_key(key)
    n = check_batch(batch)
    n_test = _checks.positive_int(n_test, "n_test")
    if n_test >= n:
        raise ValueError(f"n_test={n_test} leaves no training examples out of {n}; pass n_test < {n}")
    perm = jax.random.permutation(key, n)
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    return Batch(batch.x[train_idx], batch.y[train_idx]), Batch(batch.x[test_idx], batch.y[test_idx])


def shuffled_batches(key: jax.Array, batch: Batch, batch_size: int) -> Batch:
    """One epoch of mini-batches stacked on a leading axis, for `lax.scan`: a permutation from `key`, cut in
    `n_batches = N // batch_size` batches; the last `N % batch_size` shuffled examples are dropped.

    Jittable with `batch_size` static (`jax.jit(shuffled_batches, static_argnums=2)`).

    Args:
      key: PRNG key (use `fold_in(key, epoch)` for a new order each epoch).
      batch: `Batch(x: (N, n_in), y: (N, n_out))`.
      batch_size: examples per mini-batch, 1 <= batch_size <= N.
    Returns:
      `Batch(x: (n_batches, batch_size, n_in), y: (n_batches, batch_size, n_out))`.
    Example:
      >>> mb = shuffled_batches(jax.random.key(0), load_dataset("digits").train, 100)   # x: (15, 100, 64)
      >>> params, _ = jax.lax.scan(lambda p, b: (step(p, b), None), params, mb)
    """
    key = _checks.prng_key(key)
    n = check_batch(batch)
    batch_size = _checks.positive_int(batch_size, "batch_size")
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the {n} examples; pass batch_size <= {n}")
    n_batches = n // batch_size
    idx = jax.random.permutation(key, n)[: n_batches * batch_size].reshape(n_batches, batch_size)
    return Batch(batch.x[idx], batch.y[idx])


def iterate_batches(key: jax.Array, batch: Batch, batch_size: int) -> Iterator[Batch]:
    """Yield the mini-batches of `shuffled_batches(key, batch, batch_size)` one at a time (a Python loop).

    Each item is `Batch(x: (batch_size, n_in), y: (batch_size, n_out))`; the remainder is dropped.
    Example:
      >>> for mb in iterate_batches(jax.random.key(0), train, 32): params = step(params, mb)
    """
    stacked = shuffled_batches(key, batch, batch_size)  # validates now, not at the first next()
    return (Batch(stacked.x[i], stacked.y[i]) for i in range(stacked.x.shape[0]))
