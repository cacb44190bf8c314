"""DermaMNIST (MedMNIST v2) from an npz in exactly medmnist's layout, made by the test: loading,
its own validation split, measured statistics, checks of every array, and the download path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from boosting_tickets.core.errors import UserError
from boosting_tickets.data import medmnist
from boosting_tickets.data.registry import get_spec
from boosting_tickets.data.splits import load_splits

SIZES = {"train": 70, "val": 21, "test": 35}


def write_npz(path: Path, **changes) -> dict[str, np.ndarray]:
    """A DermaMNIST-layout file: uint8 (N, 28, 28, 3) images, (N, 1) labels, 7 classes."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in SIZES.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 7).reshape(n, 1).astype(np.uint8)
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return arrays


def test_dermamnist_loads_with_its_own_validation_split(tmp_path):
    arrays = write_npz(tmp_path / "dermamnist.npz")
    splits = load_splits("dermamnist", tmp_path, val_size=14, test_subset=21, train_subset=49)
    assert splits.train.images.shape == (49, 3, 28, 28) and splits.train.images.dtype == torch.uint8
    assert splits.val.images.shape[0] == 14 and splits.test.images.shape[0] == 21
    # The held-out images come from the file's val arrays, never from its training images.
    val = torch.from_numpy(arrays["val_images"]).permute(0, 3, 1, 2)
    for img in splits.val.images:
        assert any(torch.equal(img, v) for v in val)
    train = torch.from_numpy(arrays["train_images"]).permute(0, 3, 1, 2)
    assert all(any(torch.equal(img, t) for t in train) for img in splits.train.images[:5])
    # Stratified: every class in the held-out set, in proportion.
    assert sorted(torch.bincount(splits.val.labels, minlength=7).tolist()) == [2] * 7
    # Statistics are measured on the training file (none are published).
    x = train.double() / 255
    assert splits.spec.mean == pytest.approx(tuple(x.mean((0, 2, 3)).tolist()), abs=1e-4)
    assert len(splits.spec.std) == 3 and get_spec("dermamnist").mean == ()
    with pytest.raises(UserError, match="exceeds its own validation split of 21"):
        load_splits("dermamnist", tmp_path, val_size=22)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"val_labels": None}, "lacks val_labels"),
        ({"train_images": np.zeros((70, 28, 28, 3), np.float32)}, "are float32, expected uint8"),
        ({"test_images": np.zeros((35, 32, 32, 3), np.uint8)}, "expected (N, 28, 28, 3)"),
        ({"train_labels": np.full((70, 1), 7, np.int64)}, "outside 0..6"),
        ({"val_labels": np.zeros((20, 1), np.int64)}, "for 21 images"),
        ({"train_labels": np.zeros((70, 1), np.float32)}, "expected integers"),
    ],
)
def test_bad_npz_files_are_one_line(tmp_path, changes, fragment):
    write_npz(tmp_path / "dermamnist.npz", **changes)
    with pytest.raises(UserError) as err:
        load_splits("dermamnist", tmp_path, val_size=7)
    assert fragment in str(err.value) and "\n" not in str(err.value)


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_npz_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    objects = np.array([_Payload(marker)], dtype=object)
    write_npz(tmp_path / "dermamnist.npz", train_images=objects)
    with pytest.raises(UserError, match="not a readable .npz"):
        load_splits("dermamnist", tmp_path, val_size=7)
    assert not marker.exists()


def test_missing_file_names_the_fix_and_download_checks_md5(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="dermamnist.npz not found; fix: pass --download"):
        load_splits("dermamnist", tmp_path / "none", val_size=7)
    src = tmp_path / "src.npz"
    write_npz(src)
    blob = src.read_bytes()
    url = src.as_uri()
    good = hashlib.md5(blob).hexdigest()
    spec = get_spec("dermamnist")
    for md5, ok in (("0" * 32, False), (good, True)):
        monkeypatch.setattr(medmnist, "_info", lambda spec, md5=md5: (url, md5))
        target = tmp_path / f"d-{ok}"
        if ok:
            splits = load_splits("dermamnist", target, val_size=7, allow_download=True)
            assert splits.train.images.shape[0] == 70
            assert (target / "dermamnist.npz").read_bytes() == blob
        else:
            with pytest.raises(UserError, match="md5"):
                load_splits("dermamnist", target, val_size=7, allow_download=True)
            assert not any(target.iterdir())  # no partial file left
    monkeypatch.undo()
    monkeypatch.setitem(__import__("sys").modules, "medmnist", None)  # not installed
    with pytest.raises(UserError, match="pip install medmnist"):
        medmnist._info(spec)


def test_balanced_accuracy_is_the_mean_recall_over_present_classes():
    from torch import nn

    from boosting_tickets.adversarial.evaluation import evaluate
    from boosting_tickets.adversarial.protocol import EvalProtocol

    class Always0(nn.Module):  # predicts class 0 for everything, beyond any attack's reach
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            z = torch.zeros(x.shape[0], 7) + self.w
            z[:, 0] = 100.0 + 0 * x.flatten(1).sum(1)
            return z

    # Imbalanced like DermaMNIST: 6 images of class 0, one each of classes 1 and 5; class 3 absent.
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 5])
    images = torch.rand(8, 3, 28, 28)
    res = evaluate(Always0(), images, labels, EvalProtocol(eps=2 / 255, pgd_steps=2),
                   num_classes=7, per_class=True)  # fmt: skip
    assert res["clean_acc"] == 0.75  # the mean over images flatters it...
    pc = res["per_class"]
    assert pc["balanced_clean"] == pytest.approx(1 / 3) == pc["balanced_pgd"]  # ...this does not
    assert pc["clean"][3] is None and pc["support"][3] == 0
    # Macro-F1 over the classes present: class 0 has F1 = 2·6 / (2·6 + 2) = 6/7, classes 1 and 5
    # have 0: (6/7 + 0 + 0) / 3.
    assert pc["macro_f1_clean"] == pytest.approx(6 / 7 / 3)


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_matches_its_definition_class_by_class(seed):
    from boosting_tickets.adversarial.evaluation import macro_f1

    g = torch.Generator().manual_seed(seed)
    labels, pred = torch.randint(0, 5, (40,), generator=g), torch.randint(0, 6, (40,), generator=g)
    f1s = []
    for c in set(labels.tolist()) | set(pred.tolist()):  # sklearn's labels: y_true ∪ y_pred
        tp = int(((pred == c) & (labels == c)).sum())
        precision = tp / max(int((pred == c).sum()), 1)
        recall = tp / max(int((labels == c).sum()), 1)
        f1s.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    assert macro_f1(labels, pred, 7) == pytest.approx(sum(f1s) / len(f1s))


def test_the_per_class_table_shows_balanced_accuracy_macro_f1_and_every_class():
    from boosting_tickets.report.collect import Group
    from boosting_tickets.report.tables import per_class_table

    def row(seed, bal, f1):
        return {"seed": seed, "source": "measured", "per_class": {
            "support": [6, 1, 1], "clean": [1.0, 0.0, bal], "pgd": [0.5, 0.0, 0.0],
            "balanced_clean": bal, "balanced_pgd": 0.5 / 3, "macro_f1_clean": f1}}  # fmt: skip

    g = Group(None, "s", "ticket", [row(0, 0.5, 0.4), row(1, 1.0, 0.6)], {"pgd_steps": 10})
    t = per_class_table([g])
    (cells,) = t.rows
    assert cells[:6] == ("s", "ticket", "2", "75.0", "16.7", "0.500")
    assert cells[6] == "100.0 / 0.0 / 75.0" and cells[7] == "50.0 / 0.0 / 0.0"
    assert [r[6] for r in t.csv_rows] == [0, 1, 2] and t.csv_rows[0][7] == 6


def test_the_cost_model_keeps_the_whole_training_file_when_validation_is_its_own():
    from boosting_tickets.bench.cost import split_sizes
    from boosting_tickets.training.hparams import DataConfig, RunConfig

    sizes = split_sizes(RunConfig(data=DataConfig(dataset="dermamnist", val_size=1003)))
    assert (sizes.train, sizes.val, sizes.test) == (7007, 1003, 2005)


def test_class_weighted_cross_entropy_weighs_by_inverse_frequency(tmp_path):
    import dataclasses

    from support import small_config

    from boosting_tickets.training.losses import cross_entropy
    from boosting_tickets.training.run import class_weights, train

    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    w = class_weights(labels, 4, "cpu")
    assert w.tolist() == pytest.approx([2 / 3, 2.0, 1.0, 0.0])  # N / (present · n_c)
    assert float(w[labels].mean()) == pytest.approx(1.0)  # the unweighted loss's scale
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    per = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert float(cross_entropy(logits, labels, w)) == pytest.approx(float((per * w[labels]).mean()))
    assert torch.equal(
        cross_entropy(logits, labels), torch.nn.functional.cross_entropy(logits, labels)
    )
    # A run with it trains (and differently from one without).
    cfg = small_config(epochs=1)
    weighted = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, class_weighted=True))
    a, b = train(cfg, tmp_path / "a"), train(weighted, tmp_path / "b")
    assert a.metrics[0]["train_loss"] != b.metrics[0]["train_loss"]
