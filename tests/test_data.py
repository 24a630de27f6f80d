"""gdjax.data: digits, IDX files (written here, and the real Fashion-MNIST), synthetic data, splits, mini-batches."""

import gzip
import struct
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import skip_or_fail

import gdjax
from gdjax import data
from gdjax.data import Batch, Dataset, load_dataset, read_idx

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# --- a hand-written IDX writer (independent of the reader under test) ----------------------------------------

IDX_CODES = {np.dtype("uint8"): 0x08, np.dtype("int8"): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
             np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array)
    big = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    header = bytes([0, 0, IDX_CODES[big.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + big.tobytes()


def write_idx(path: Path, array=None, raw: bytes | None = None) -> Path:
    payload = idx_bytes(array) if raw is None else raw
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def write_fake_mnist(directory: Path, n_train=12, n_test=5, gz=True, seed=0):
    """Four small IDX files with MNIST's names; returns the arrays written."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train": (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_train, dtype=np.uint8)),
        "test": (rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_test, dtype=np.uint8)),
    }
    ext = ".gz" if gz else ""
    for split, (images, labels) in arrays.items():
        stem = "t10k" if split == "test" else "train"
        write_idx(directory / f"{stem}-images-idx3-ubyte{ext}", images)
        write_idx(directory / f"{stem}-labels-idx1-ubyte{ext}", labels)
    return arrays


# --- read_idx ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["", ".gz"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-3, 0, 7], np.int8),
        np.array([[1, -2], [300, -400]], np.int16),
        np.array([70000, -1], np.int32),
        np.array([0.5, -1.25], np.float32),
        np.array([[1e-300, np.pi]], np.float64),
    ],
    ids=["u8-3d", "i8", "i16", "i32", "f32", "f64"],
)
def test_read_idx_round_trip(tmp_path, ext, array):
    path = write_idx(tmp_path / f"a-idx{ext}", array)
    got = read_idx(path)
    assert got.shape == array.shape and got.dtype == array.dtype  # native byte order, same values
    np.testing.assert_array_equal(got, array)
    assert got.flags.writeable


def test_read_idx_bad_magic(tmp_path):
    good = idx_bytes(np.zeros((2, 2), np.uint8))
    for name, raw in [("png", b"\x89PNG" + good[4:]), ("code", b"\x00\x00\x07\x02" + good[4:]),
                      ("zero-dims", b"\x00\x00\x08\x00"), ("short", b"\x00\x00")]:
        path = write_idx(tmp_path / f"{name}-idx", raw=raw)
        with pytest.raises(ValueError, match=f"{path}.*(magic|too short)"):
            read_idx(path)


def test_read_idx_truncated_and_trailing_data(tmp_path):
    full = idx_bytes(np.ones((10, 4, 4), np.uint8))
    for ext in ("", ".gz"):
        path = write_idx(tmp_path / f"cut-idx{ext}", raw=full[:-16])  # 9 images where the header says 10
        with pytest.raises(ValueError, match=f"{path}.*truncated IDX data.*needs 160 bytes, found 144"):
            read_idx(path)
    path = write_idx(tmp_path / "head-idx", raw=full[:9])  # 3 dims declared, header cut after 1 size
    with pytest.raises(ValueError, match="truncated IDX header"):
        read_idx(path)
    path = write_idx(tmp_path / "long-idx", raw=full + b"\x00\x00")
    with pytest.raises(ValueError, match="trailing data"):
        read_idx(path)


def test_read_idx_broken_gzip(tmp_path):
    compressed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(ValueError, match=f"{cut}: not a readable IDX file"):
        read_idx(cut)
    fake = tmp_path / "plain.gz"  # an uncompressed file named .gz
    fake.write_bytes(idx_bytes(np.arange(3, dtype=np.uint8)))
    with pytest.raises(ValueError, match=f"{fake}: not a readable IDX file"):
        read_idx(fake)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing-idx")


def test_load_idx_split_checks_counts_and_labels(tmp_path):
    images = write_idx(tmp_path / "im-idx", np.zeros((5, 28, 28), np.uint8))
    labels4 = write_idx(tmp_path / "lab4-idx", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match=f"image/label count mismatch: {images} has 5 images but {labels4} has 4"):
        data.load_idx_split(images, labels4)
    bad = write_idx(tmp_path / "lab-bad-idx", np.array([0, 1, 2, 3, 10], np.uint8))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\), got \[0, 10\]"):
        data.load_idx_split(images, bad)
    flat = write_idx(tmp_path / "flat-idx", np.zeros((5, 784), np.uint8))
    with pytest.raises(ValueError, match=r"expected images of shape \(N, rows, cols\)"):
        data.load_idx_split(flat, write_idx(tmp_path / "lab5-idx", np.zeros(5, np.uint8)))


# --- IDX datasets --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_load_idx_dataset_from_data_dir(tmp_path, name, gz):
    arrays = write_fake_mnist(tmp_path, gz=gz)
    ds = load_dataset(name, tmp_path)
    assert isinstance(ds, Dataset) and ds.name == name and ds.n_classes == 10
    for batch, (images, labels) in ((ds.train, arrays["train"]), (ds.test, arrays["test"])):
        n = images.shape[0]
        chex.assert_shape([batch.x, batch.y], [(n, 784), (n, 10)])
        assert batch.x.dtype == batch.y.dtype == jnp.float32
        np.testing.assert_allclose(batch.x, images.reshape(n, 784) / 255.0, rtol=1e-7)  # float32 rounding only
        np.testing.assert_array_equal(np.argmax(batch.y, 1), labels)
        np.testing.assert_array_equal(np.sum(batch.y, 1), 1)
        assert float(batch.x.min()) >= 0 and float(batch.x.max()) <= 1


def test_load_idx_dataset_subfolder_env_dtype_and_counts(tmp_path, monkeypatch):
    arrays = write_fake_mnist(tmp_path / "mnist", n_train=12, n_test=5)
    ds = load_dataset("mnist", tmp_path, n_train=7, n_test=5, dtype="float64")  # found in data_dir/mnist
    chex.assert_shape([ds.train.x, ds.test.x], [(7, 784), (5, 784)])
    assert ds.train.x.dtype == jnp.float64
    np.testing.assert_array_equal(ds.train.x, arrays["train"][0][:7].reshape(7, 784) / 255.0)  # exact in float64
    with pytest.raises(ValueError, match="n_train=13 exceeds the 12 examples"):
        load_dataset("mnist", tmp_path, n_train=13)
    with pytest.raises(ValueError, match="n_test must be an integer >= 1"):
        load_dataset("mnist", tmp_path, n_test=0)

    monkeypatch.setenv("GDJAX_DATA_DIR", str(tmp_path))
    assert data.default_data_dirs("mnist") == [tmp_path / "mnist", tmp_path]
    assert load_dataset("mnist").train.x.shape == (12, 784)  # found through $GDJAX_DATA_DIR/mnist
    monkeypatch.delenv("GDJAX_DATA_DIR")
    assert data.default_data_dirs("mnist") == []
    assert data.default_data_dirs("fashion-mnist") == [FASHION_DIR]


def test_load_idx_dataset_mismatched_counts(tmp_path):
    write_fake_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))  # 12 images, 11 labels
    with pytest.raises(ValueError, match="image/label count mismatch.*12 images.*11 labels"):
        load_dataset("mnist", tmp_path)


def test_missing_files_error_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.delenv("GDJAX_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("fashion-mnist", tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "fashion-mnist") in msg and str(tmp_path / "nowhere") in msg
    assert "train-images-idx3-ubyte" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "GDJAX_DATA_DIR" in msg and "data_dir" in msg

    monkeypatch.setenv("GDJAX_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("mnist")
    msg = str(err.value)
    assert str(tmp_path / "env" / "mnist") in msg and "download the four IDX files" in msg

    monkeypatch.delenv("GDJAX_DATA_DIR")
    with pytest.raises(FileNotFoundError, match="GDJAX_DATA_DIR unset"):
        load_dataset("mnist")

    write_fake_mnist(tmp_path / "partial")
    (tmp_path / "partial" / "t10k-labels-idx1-ubyte.gz").unlink()  # three of four files is not a dataset
    with pytest.raises(FileNotFoundError, match="IDX files not found"):
        load_dataset("mnist", tmp_path / "partial")


def test_real_fashion_mnist(monkeypatch):
    if not all((FASHION_DIR / f"{s}.gz").is_file() for stems in data.IDX_FILES.values() for s in stems):
        skip_or_fail(f"Fashion-MNIST IDX files not in {FASHION_DIR} (apt-get install dataset-fashion-mnist)")
    train_images = read_idx(FASHION_DIR / "train-images-idx3-ubyte.gz")
    train_labels = read_idx(FASHION_DIR / "train-labels-idx1-ubyte.gz")
    test_images = read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")
    test_labels = read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")
    assert train_images.shape == (60000, 28, 28) and train_images.dtype == np.uint8
    assert test_images.shape == (10000, 28, 28) and train_labels.shape == (60000,) and test_labels.shape == (10000,)
    np.testing.assert_array_equal(np.bincount(train_labels, minlength=10), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(test_labels, minlength=10), np.full(10, 1000))
    assert train_images.max() == 255 and train_images.min() == 0

    monkeypatch.delenv("GDJAX_DATA_DIR", raising=False)  # exercise the default (Debian) folder
    ds = load_dataset("fashion-mnist", n_train=500, n_test=200)
    assert ds.n_classes == 10
    chex.assert_shape([ds.train.x, ds.train.y, ds.test.x], [(500, 784), (500, 10), (200, 784)])
    np.testing.assert_allclose(ds.train.x, train_images[:500].reshape(500, 784) / 255.0, rtol=1e-7)
    np.testing.assert_array_equal(np.argmax(ds.test.y, 1), test_labels[:200])


# --- digits ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex128"])
def test_digits(dtype):
    ds = gdjax.data.load_dataset("digits", dtype=dtype)  # the README quickstart's spelling
    assert ds.name == "digits" and ds.n_classes == 10
    chex.assert_shape([ds.train.x, ds.train.y, ds.test.x, ds.test.y], [(1500, 64), (1500, 10), (297, 64), (297, 10)])
    for a in (*ds.train, *ds.test):
        assert a.dtype == jnp.dtype(dtype)
    x = np.real(np.concatenate([ds.train.x, ds.test.x]))
    assert x.min() == 0 and x.max() == 1  # pixels 0..16 scaled by 1/16
    np.testing.assert_array_equal(np.sum(np.real(ds.train.y), 1), 1)


def test_digits_split_is_fixed_disjoint_and_complete():
    from sklearn.datasets import load_digits

    ds, again = load_dataset("digits", dtype="float64"), load_dataset("digits", dtype="float64")
    chex.assert_trees_all_equal(ds.train, again.train)  # the documented fixed split
    other = load_dataset("digits", key=jax.random.key(1), dtype="float64")
    assert not np.array_equal(ds.train.x, other.train.x)
    # train + test are exactly scikit-learn's 1797 (image, label) pairs, each once
    ref = load_digits()
    want = sorted(map(tuple, np.column_stack([ref.data / 16.0, ref.target])))
    got = np.concatenate([np.column_stack([b.x, np.argmax(b.y, 1)]) for b in (ds.train, ds.test)])
    assert sorted(map(tuple, got)) == want
    small = load_dataset("digits", n_train=100, n_test=10, dtype="float64")
    np.testing.assert_array_equal(small.train.x, ds.train.x[:100])
    with pytest.raises(ValueError, match="n_train=1501 exceeds the 1500"):
        load_dataset("digits", n_train=1501)


def test_load_dataset_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset name 'cifar10'; valid: digits, fashion-mnist, mnist"):
        load_dataset("cifar10")
    with pytest.raises(TypeError, match="dtype must be one of float32, float64, complex64, complex128"):
        load_dataset("digits", dtype="int8")
    with pytest.raises(TypeError, match="key must be a single PRNG key"):
        load_dataset("digits", key=1)
    with pytest.raises(TypeError, match="n_train must be an integer"):
        load_dataset("digits", n_train=10.0)


def test_64_bit_dtype_without_x64_is_refused():
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match="jax_enable_x64"):
            data.synthetic(jax.random.key(0), 4, 3, 2, dtype="float64")
        with pytest.raises(ValueError, match="complex128 needs 64-bit JAX"):
            load_dataset("digits", dtype="complex128")
    finally:
        jax.config.update("jax_enable_x64", True)


def test_one_hot():
    y = data.one_hot(np.array([2, 0, 1]), 3)
    np.testing.assert_array_equal(y, [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    assert y.dtype == jnp.float32
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*got range \[-1, 2\]"):
        data.one_hot(np.array([2, -1]), 3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        data.one_hot(np.array([3]), 3)
    with pytest.raises(TypeError, match="1-D integer array"):
        data.one_hot(np.array([0.0, 1.0]), 3)
    with pytest.raises(ValueError, match="n_classes must be an integer >= 1"):
        data.one_hot(np.array([0]), 0)


# --- synthetic --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, n_in, n_classes, hidden, dtype",
    [(64, 5, 3, (4,), "float64"), (400, 9, 10, (6, 5), "complex128")],
)
def test_synthetic_shapes_and_teacher_labels(key, n, n_in, n_classes, hidden, dtype):
    b = data.synthetic(key, n, n_in, n_classes, hidden=hidden, dtype=dtype)
    chex.assert_shape([b.x, b.y], [(n, n_in), (n, n_classes)])
    assert b.x.dtype == b.y.dtype == jnp.dtype(dtype)
    x = np.real(np.asarray(b.x))
    assert x.min() >= 0 and x.max() < 1
    np.testing.assert_array_equal(np.sum(np.real(b.y), 1), 1)
    # the labels are the argmax of the documented teacher on the documented inputs
    k_teacher, _ = jax.random.split(key)
    net, params = data.make_teacher(k_teacher, n_in, n_classes, hidden)
    assert net.sizes == (n_in, *hidden, n_classes)
    out = jax.vmap(net.apply, (None, 0))(params, jnp.asarray(x, jnp.float32))
    np.testing.assert_array_equal(np.argmax(np.real(b.y), 1), np.argmax(out, 1))


def test_synthetic_is_deterministic_dtype_independent_and_varied(key):
    a = data.synthetic(key, 400, 9, 10, hidden=(6, 5))  # the shapes of the test above: compiled already
    chex.assert_trees_all_equal(a, data.synthetic(key, 400, 9, 10, hidden=(6, 5)))
    b = data.synthetic(key, 400, 9, 10, hidden=(6, 5), dtype="float64")
    np.testing.assert_array_equal(a.x, b.x)  # same draws: float32 values cast to float64
    np.testing.assert_array_equal(a.y, b.y)
    counts = np.bincount(np.argmax(a.y, 1), minlength=10)
    assert np.count_nonzero(counts) >= 5, counts  # the centred teacher does not put everything in one class
    c = data.synthetic(jax.random.key(1), 400, 9, 10, hidden=(6, 5))
    assert not np.array_equal(a.x, c.x) and not np.array_equal(a.y, c.y)


def test_synthetic_bad_arguments(key):
    with pytest.raises(TypeError, match="key must be a single PRNG key"):
        data.synthetic(0, 10, 3, 2)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        data.synthetic(key, 0, 3, 2)
    with pytest.raises(ValueError, match="n_in must be an integer >= 1"):
        data.synthetic(key, 10, -1, 2)
    with pytest.raises(ValueError, match="n_classes must be an integer >= 2"):
        data.synthetic(key, 10, 3, 1)
    with pytest.raises(ValueError, match=r"hidden\[0\] must be an integer >= 1"):
        data.synthetic(key, 10, 3, 2, hidden=(0,))
    with pytest.raises(TypeError, match="hidden must be a sequence"):
        data.synthetic(key, 10, 3, 2, hidden=32)


# --- splits and mini-batches -------------------------------------------------------------------------------------


def rows(batch):
    """The multiset of (x, y) rows of a batch, for comparing shuffles."""
    x, y = np.asarray(batch.x), np.asarray(batch.y)
    x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    return sorted(map(tuple, np.column_stack([x, y])))


@pytest.fixture
def small_batch():
    x = jnp.arange(23 * 3, dtype=jnp.float64).reshape(23, 3)  # distinct rows, so shuffles can be checked
    return Batch(x, jax.nn.one_hot(jnp.arange(23) % 4, 4, dtype=jnp.float64))


def test_train_test_split(key, small_batch):
    train, test = data.train_test_split(key, small_batch, 5)
    chex.assert_shape([train.x, train.y, test.x, test.y], [(18, 3), (18, 4), (5, 3), (5, 4)])
    assert rows(train) + rows(test) != rows(small_batch)  # shuffled, not a prefix cut
    assert sorted(rows(train) + rows(test)) == rows(small_batch)  # disjoint and complete
    with pytest.raises(ValueError, match="n_test=23 leaves no training examples"):
        data.train_test_split(key, small_batch, 23)
    with pytest.raises(ValueError, match="n_test must be an integer >= 1"):
        data.train_test_split(key, small_batch, 0)


def test_shuffled_batches(key, small_batch):
    mb = data.shuffled_batches(key, small_batch, 5)
    chex.assert_shape([mb.x, mb.y], [(4, 5, 3), (4, 5, 4)])  # 23 // 5 = 4 batches; 3 examples dropped
    got = rows(mb)
    assert len(set(got)) == 20 and set(got) <= set(rows(small_batch))  # no example twice
    again = data.shuffled_batches(key, small_batch, 5)
    chex.assert_trees_all_equal(mb, again)
    other = data.shuffled_batches(jax.random.fold_in(key, 1), small_batch, 5)
    assert not np.array_equal(mb.x, other.x)
    one = data.shuffled_batches(key, small_batch, 23)
    assert sorted(rows(one)) == rows(small_batch)  # batch_size == N: one batch, everything
    listed = list(data.iterate_batches(key, small_batch, 5))
    assert len(listed) == 4 and all(isinstance(b, Batch) and b.x.shape == (5, 3) for b in listed)
    np.testing.assert_array_equal(np.stack([b.x for b in listed]), mb.x)


def test_shuffled_batches_jit_scan_without_retracing(key, small_batch):
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def epoch_sum(k, batch):
        mb = data.shuffled_batches(k, batch, 4)
        total, _ = jax.lax.scan(lambda s, b: (s + jnp.sum(b.x), None), jnp.zeros((), batch.x.dtype), mb)
        return total, mb

    t1, mb1 = epoch_sum(key, small_batch)
    t2, mb2 = epoch_sum(jax.random.fold_in(key, 1), small_batch)  # new key, same shapes: no retrace
    assert float(t1) == pytest.approx(float(np.sum(mb1.x))) and float(t2) == pytest.approx(float(np.sum(mb2.x)))
    chex.assert_trees_all_equal(mb1, data.shuffled_batches(key, small_batch, 4))


def test_batches_bad_arguments(key, small_batch):
    for bs in (0, 24):
        with pytest.raises(ValueError, match=f"batch_size.*{bs}"):
            data.shuffled_batches(key, small_batch, bs)
        with pytest.raises(ValueError, match="batch_size"):
            data.iterate_batches(key, small_batch, bs)  # validated at the call, not at the first next()
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        data.shuffled_batches(key, small_batch, 2.0)
    with pytest.raises(TypeError, match="key must be a single PRNG key"):
        data.shuffled_batches(42, small_batch, 4)
    with pytest.raises(TypeError, match="batch must be a gdjax.Batch"):
        data.shuffled_batches(key, (small_batch.x, small_batch.y), 4)
    with pytest.raises(ValueError, match="share the leading"):
        data.shuffled_batches(key, Batch(small_batch.x, small_batch.y[:-1]), 4)


def test_public_names_exported():
    for name in ("Batch", "Dataset", "load_dataset", "synthetic", "shuffled_batches", "one_hot", "read_idx"):
        assert getattr(gdjax, name) is getattr(data, name)
