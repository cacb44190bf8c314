"""Tests for boosting_tickets.data: registry, deterministic splits, loader, augmentation, files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from boosting_tickets.core.errors import UserError
from boosting_tickets.data import batching as data_batching
from boosting_tickets.data import files
from boosting_tickets.data import registry as data_registry
from boosting_tickets.data import splits as data_splits
from boosting_tickets.data import synthetic as data_synthetic
from boosting_tickets.data.files import MNIST_FILES
from boosting_tickets.data.splits import _stratified_choice

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


# ------------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------------


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(UserError) as info:
        data_registry.get_spec("imagenet")
    msg = str(info.value)
    assert "imagenet" in msg
    for name in data_registry.datasets().names:
        assert name in msg


def test_get_spec_normalises_case_and_underscores() -> None:
    assert data_registry.get_spec("Fashion_MNIST") is data_registry.datasets().get("fashion-mnist")


def test_registered_synthetic_statistics_are_the_measured_ones() -> None:
    # The registry keeps them as constants so the CLI can read it without generating images.
    registered, measured = data_registry.get_spec("synthetic"), data_synthetic.synthetic_spec()
    assert (registered.mean, registered.std) == (measured.mean, measured.std)
    assert registered == measured


def test_registry_is_immutable_and_consistent() -> None:
    with pytest.raises(TypeError):
        data_registry.datasets()["x"] = data_registry.get_spec("mnist")  # type: ignore[index]
    assert set(data_registry.datasets().names) == {
        "fashion-mnist",
        "mnist",
        "cifar10",
        "cifar100",
        "svhn",
        "dermamnist",
        "synthetic",
        # class views (ticket transfer): classes 0-4 and 5-9, relabelled from 0
        "fashion-mnist:0-4",
        "fashion-mnist:5-9",
        "synthetic:0-4",
        "synthetic:5-9",
    }
    for name, spec in ((s.name, s) for s in data_registry.datasets()):
        assert spec.name == name
        # Statistics are registered, or (empty) measured on the training file at load.
        assert len(spec.mean) == len(spec.std) == (spec.channels if spec.mean else 0)
        assert all(0 < s < 1 for s in spec.std) and all(0 < m < 1 for m in spec.mean)
        assert len(spec.class_names) == spec.num_classes == len(set(spec.class_names))
        assert spec.image_shape == (spec.channels, spec.size, spec.size)
        assert spec.fix_hint
    # The paper's CIFAR augmentation; digits are never flipped.
    for name in ("cifar10", "cifar100"):
        assert data_registry.get_spec(name).augmentation == data_registry.Augmentation(4, True)
    assert not data_registry.get_spec("mnist").augmentation.horizontal_flip
    assert not data_registry.get_spec("svhn").augmentation.horizontal_flip
    assert data_registry.get_spec("svhn").augmentation.crop_padding == 4
    assert data_registry.Augmentation().describe() == "none"
    assert "pad 4" in data_registry.get_spec("cifar10").augmentation.describe()


# ------------------------------------------------------------------------------------------------
# Synthetic splits
# ------------------------------------------------------------------------------------------------


def _load(**kw: object) -> data_splits.Splits:
    return data_splits.load_splits("synthetic", "/nonexistent-data-dir", **kw)  # type: ignore[arg-type]


def test_synthetic_splits_sizes_and_dtypes() -> None:
    s = _load(train_subset=300, val_size=100, test_subset=50)
    spec = s.spec
    assert (len(s.train), len(s.val), len(s.test)) == (300, 100, 50)
    for part in (s.train, s.val, s.test):
        assert part.images.dtype == torch.uint8
        assert part.labels.dtype == torch.int64 and part.indices.dtype == torch.int64
        assert tuple(part.images.shape[1:]) == spec.image_shape
        assert part.images.shape[0] == part.labels.shape[0] == part.indices.shape[0]
    assert s.source == "generated in memory"
    full = _load()
    assert len(full.train) == spec.train_size and len(full.val) == 0
    assert len(full.test) == spec.test_size
    assert full.val.images.shape == (0, *spec.image_shape)


def test_synthetic_splits_are_deterministic_and_disjoint() -> None:
    a = _load(train_subset=400, val_size=200, test_subset=100, data_seed=3)
    b = _load(train_subset=400, val_size=200, test_subset=100, data_seed=3)
    for part in ("train", "val", "test"):
        pa, pb = getattr(a, part), getattr(b, part)
        assert torch.equal(pa.images, pb.images) and torch.equal(pa.labels, pb.labels)
        assert torch.equal(pa.indices, pb.indices)
    train_idx, val_idx = set(a.train.indices.tolist()), set(a.val.indices.tolist())
    assert not train_idx & val_idx
    assert len(train_idx) == 400 and len(val_idx) == 200
    # indices really point into the source file
    tx, ty, _, _ = data_synthetic.make_synthetic(a.spec)
    assert torch.equal(tx[a.val.indices], a.val.images) and torch.equal(
        ty[a.train.indices], a.train.labels
    )

    c = _load(train_subset=400, val_size=200, test_subset=100, data_seed=4)
    assert not torch.equal(a.val.indices, c.val.indices)
    # The test subset follows test_seed only, never data_seed.
    assert torch.equal(a.test.indices, c.test.indices)
    d = _load(test_subset=100, test_seed=1)
    assert not torch.equal(a.test.indices, d.test.indices)


def test_train_subset_excludes_val_for_every_size() -> None:
    spec = data_registry.get_spec("synthetic")
    val = _load(val_size=500).val.indices
    rest = _load(val_size=500, train_subset=spec.train_size - 500)
    assert set(rest.train.indices.tolist()) == set(range(spec.train_size)) - set(val.tolist())


def test_subsets_are_stratified() -> None:
    s = _load(train_subset=250, val_size=300, test_subset=70)
    k = s.spec.num_classes
    assert s.val.class_counts(k).tolist() == [30] * k
    assert s.train.class_counts(k).tolist() == [25] * k
    assert s.test.class_counts(k).tolist() == [7] * k


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=6),
    frac=st.floats(min_value=0.0, max_value=1.0),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_stratified_choice_is_proportional(counts: list[int], frac: float, seed: int) -> None:
    labels = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(seed).shuffle(labels)
    n = labels.shape[0]
    k = int(round(frac * n))
    pos = _stratified_choice(labels, k, np.random.default_rng(seed))
    assert pos.shape[0] == k == np.unique(pos).shape[0]
    got = np.bincount(labels[pos], minlength=len(counts))
    expected = np.asarray(counts) * k / n
    assert np.all(np.abs(got - expected) < 1.0 + 1e-9)
    again = _stratified_choice(labels, k, np.random.default_rng(seed))
    assert np.array_equal(pos, again)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"val_size": -1}, "val_size=-1"),
        ({"train_subset": 0}, "train_subset=0"),
        ({"test_subset": -5}, "test_subset=-5"),
        ({"val_size": 2000}, "val_size=2000"),
        ({"val_size": 500, "train_subset": 1600}, "1500"),
        ({"test_subset": 501}, "500"),
        ({"train_subset": True}, "train_subset=True"),
        ({"data_seed": -1}, "data_seed=-1"),
    ],
)
def test_bad_sizes_raise_user_error(kwargs: dict, needle: str) -> None:
    with pytest.raises(UserError, match="fix") as info:
        _load(**kwargs)
    assert needle in str(info.value)


def test_custom_synthetic_spec_and_learnability() -> None:
    spec = data_synthetic.synthetic_spec(
        channels=3, size=8, num_classes=4, train_size=200, test_size=80
    )
    s = data_splits.load_splits(spec, "/nonexistent", val_size=40)
    assert s.train.images.shape == (160, 3, 8, 8) and len(s.spec.mean) == 3
    # A nearest-class-mean classifier separates the default synthetic classes: it is learnable.
    d = _load()
    x, y = data_splits.to_unit_float(d.train.images).flatten(1), d.train.labels
    means = torch.stack([x[y == c].mean(0) for c in range(d.spec.num_classes)])
    pred = torch.cdist(data_splits.to_unit_float(d.test.images).flatten(1), means).argmin(1)
    assert (pred == d.test.labels).float().mean() > 0.9
    with pytest.raises(UserError, match="size"):
        data_synthetic.synthetic_spec(size=2)


# ------------------------------------------------------------------------------------------------
# BatchLoader
# ------------------------------------------------------------------------------------------------


def _id_data(n: int = 53, c: int = 1, h: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose every pixel equals the example id (mod 256) and labels equal to the id."""
    ids = torch.arange(n)
    images = (ids % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, c, h, h).contiguous()
    return images, ids


def test_loader_shapes_range_and_full_coverage() -> None:
    images, labels = _id_data()
    gen = torch.Generator().manual_seed(0)
    loader = data_batching.BatchLoader(images, labels, batch_size=8, shuffle=True, generator=gen)
    assert len(loader) == 7
    seen = []
    for x, y in loader:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (1, 6, 6) and x.shape[0] == y.shape[0] <= 8
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert torch.allclose(x[:, 0, 0, 0] * 255, y.float())  # image still matches its label
        seen.extend(y.tolist())
    assert sorted(seen) == list(range(53)) and seen != list(range(53))
    dropped = data_batching.BatchLoader(
        images, labels, batch_size=8, shuffle=False, generator=gen, drop_last=True
    )
    assert len(dropped) == 6 and sum(len(y) for _, y in dropped) == 48
    ordered = data_batching.BatchLoader(images, labels, batch_size=10, shuffle=False, generator=gen)
    assert torch.equal(torch.cat([y for _, y in ordered]), labels)


def test_loader_replays_after_generator_restore_and_mid_epoch() -> None:
    spec = data_registry.get_spec("synthetic")
    s = _load(train_subset=100)
    gen = torch.Generator().manual_seed(7)
    loader = data_batching.BatchLoader(
        s.train.images, s.train.labels, batch_size=16, shuffle=True, augment=spec, generator=gen
    )
    state = gen.get_state()
    first = list(loader)
    end_state = gen.get_state()
    gen.set_state(state)
    second = list(loader)
    for (xa, ya), (xb, yb) in zip(first, second, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # A re-seeded generator gives the same epoch too.
    fresh = data_batching.BatchLoader(
        s.train.images,
        s.train.labels,
        batch_size=16,
        shuffle=True,
        augment=spec.augmentation,
        generator=torch.Generator().manual_seed(7),
    )
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, fresh, strict=True))
    # Mid-epoch resume: same tail batches and same final generator state.
    gen.set_state(state)
    tail = list(loader.iterate(start_batch=3))
    assert len(tail) == len(first) - 3
    for (xa, ya), (xb, yb) in zip(first[3:], tail, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(gen.get_state(), end_state)
    # The next epoch differs from the first.
    assert not torch.equal(torch.cat([y for _, y in loader]), torch.cat([y for _, y in first]))


def test_loader_rejects_bad_input() -> None:
    images, labels = _id_data()
    gen = torch.Generator()
    with pytest.raises(UserError, match="batch_size"):
        data_batching.BatchLoader(images, labels, batch_size=0, shuffle=False, generator=gen)
    with pytest.raises(UserError, match="labels"):
        data_batching.BatchLoader(images, labels[:-1], batch_size=4, shuffle=False, generator=gen)


def _candidates(img: torch.Tensor, pad: int, flip: bool) -> list[torch.Tensor]:
    """Every crop of the zero-padded image, and (when ``flip``) its mirror images."""
    c, h, w = img.shape
    padded = F.pad(img, (pad, pad, pad, pad))
    out = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            out.append(crop)
            if flip:
                out.append(crop.flip(-1))
    return out


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 4),
    c=st.integers(1, 3),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    pad=st.integers(0, 3),
    flip=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
    as_float=st.booleans(),
)
def test_augmentation_is_a_crop_of_the_padded_image(
    b: int, c: int, h: int, w: int, pad: int, flip: bool, seed: int, as_float: bool
) -> None:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(1, 256, (b, c, h, w), generator=g, dtype=torch.uint8)
    if as_float:
        images = data_splits.to_unit_float(images)
    out = data_batching.augment_batch(images, data_registry.Augmentation(pad, flip), g)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.min() >= 0 and out.max() <= images.max()
    for i in range(b):
        assert any(torch.equal(out[i], cand) for cand in _candidates(images[i], pad, flip))


def test_augmentation_reaches_every_offset_and_flip() -> None:
    img = torch.arange(1, 10, dtype=torch.uint8).view(1, 1, 3, 3).expand(400, 1, 3, 3)
    out = data_batching.augment_batch(
        img.contiguous(), data_registry.Augmentation(1, True), torch.Generator().manual_seed(0)
    )
    cands = _candidates(img[0], 1, True)
    hits = {next(j for j, cand in enumerate(cands) if torch.equal(o, cand)) for o in out}
    assert hits == set(range(len(cands)))


# ------------------------------------------------------------------------------------------------
# Files: missing data, fake IDX files, real Fashion-MNIST
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "folder"), [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")]
)
def test_missing_cifar_names_path_and_fix(tmp_path: Path, name: str, folder: str) -> None:
    with pytest.raises(UserError) as info:
        data_splits.load_splits(name, tmp_path)
    msg = str(info.value)
    assert name in msg and str(tmp_path / folder) in msg and "--download" in msg
    # An existing but broken folder is reported the same way, not as a traceback.
    (tmp_path / folder).mkdir()
    with pytest.raises(UserError, match="fix") as info:
        data_splits.load_splits(name, tmp_path)
    assert str(tmp_path / folder) in str(info.value)


def test_missing_svhn_and_mnist(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        data_splits.load_splits("svhn", tmp_path)
    assert str(tmp_path / "SVHN") in str(info.value)
    with pytest.raises(UserError) as info:
        data_splits.load_splits("mnist", tmp_path)
    assert str(tmp_path / "MNIST" / "raw") in str(info.value) and "--download" in str(info.value)


def test_missing_fashion_mnist_points_to_apt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-such-dir")
    with pytest.raises(UserError) as info:
        data_splits.load_splits("fashion-mnist", tmp_path / "data")
    msg = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert str(tmp_path / "data" / "FashionMNIST" / "raw") in msg


def _write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    n, h, w = images.shape
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, h, w) + images.astype(np.uint8).tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 0x801, n) + labels.astype(np.uint8).tobytes())


def test_gz_files_in_raw_are_decompressed_and_loaded(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, (40, 28, 28))
    train_y = np.arange(40) % 10
    _write_idx(raw, "train", train_x, train_y)
    _write_idx(raw, "t10k", rng.integers(0, 256, (20, 28, 28)), np.arange(20) % 10)
    report = {r["name"]: r for r in data_registry.describe_datasets(tmp_path)}
    assert report["mnist"]["found"] and report["mnist"]["location"] == str(raw)
    assert not report["cifar10"]["found"] and report["synthetic"]["found"]

    s = data_splits.load_splits("mnist", tmp_path, val_size=10, test_subset=10)
    assert (len(s.train), len(s.val), len(s.test)) == (30, 10, 10)
    assert s.train.images.shape == (30, 1, 28, 28)
    assert np.array_equal(s.train.images[:, 0].numpy(), train_x[s.train.indices.numpy()])
    assert s.val.class_counts(10).tolist() == [1] * 10
    assert (raw / "train-images-idx3-ubyte").is_file()
    assert not list(raw.glob("*.tmp"))  # atomic decompression leaves no temp files


def test_corrupt_gz_is_a_user_error(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        (raw / f"{name}.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="decompress") as info:
        data_splits.load_splits("mnist", tmp_path)
    assert str(raw) in str(info.value)
    assert not list(raw.glob("*.tmp")) and not (raw / MNIST_FILES[0]).exists()


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, data_splits.Splits]:
    if not all((DEBIAN_DIR / f"{f}.gz").is_file() for f in MNIST_FILES):
        pytest.skip(
            f"Fashion-MNIST not installed in {DEBIAN_DIR} (apt-get install dataset-fashion-mnist)"
        )
    data_dir = tmp_path_factory.mktemp("data")
    return data_dir, data_splits.load_splits("fashion-mnist", data_dir)


def test_real_fashion_mnist_loads(fashion: tuple[Path, data_splits.Splits]) -> None:
    data_dir, s = fashion
    assert (len(s.train), len(s.val), len(s.test)) == (60000, 0, 10000)
    assert int(s.train.labels[0]) == 9 and int(s.train.indices[0]) == 0
    assert s.train.images.shape == (60000, 1, 28, 28) and s.train.images.dtype == torch.uint8
    assert s.train.class_counts(10).tolist() == [6000] * 10
    mean = data_splits.to_unit_float(s.train.images[:10000]).mean().item()
    assert abs(mean - s.spec.mean[0]) < 0.01
    assert all((data_dir / "FashionMNIST" / "raw" / f).is_file() for f in MNIST_FILES)
    # Second load reads the decompressed copy; subsets are stratified and disjoint.
    sub = data_splits.load_splits(
        "fashion-mnist", data_dir, train_subset=1000, val_size=500, test_subset=200
    )
    assert sub.val.class_counts(10).tolist() == [50] * 10
    assert sub.test.class_counts(10).tolist() == [20] * 10
    assert not set(sub.train.indices.tolist()) & set(sub.val.indices.tolist())
    report = {r["name"]: r for r in data_registry.describe_datasets(data_dir)}
    assert report["fashion-mnist"]["found"]
