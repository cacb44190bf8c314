"""RobustBench comparison: zoo loading, the shared harness, published numbers, export, failures.

Zoo checkpoints are made here from robustbench's own constructors with seeded random weights
(``Wong2020Fast``'s PreActResNet-18, the smallest CIFAR-10 L∞ zoo architecture) and evaluated on
a few synthetic CIFAR-shaped images; nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support import cli_call, cli_find_ticket, run_cli, tree_digest
from torch import nn

from boosting_tickets.adversarial.evaluation import evaluate
from boosting_tickets.core.errors import UserError
from boosting_tickets.core.storage import safe_torch_load
from boosting_tickets.models.checkpoints import arch_meta, save_model
from boosting_tickets.models.layers import count_parameters, prunable_parameters
from boosting_tickets.models.masks import Mask
from boosting_tickets.models.registry import build_model
from boosting_tickets.report.results import PROTOCOL_KEYS, read_results
from boosting_tickets.training.hparams import DataConfig, RunConfig, eval_protocol
from boosting_tickets.zoo import checkpoints as zoo_checkpoints
from boosting_tickets.zoo import compare as zoo_compare
from boosting_tickets.zoo import config as zoo_config
from boosting_tickets.zoo import export as zoo_export
from boosting_tickets.zoo import reference as zoo_reference
from boosting_tickets.zoo import robustbench as zoo_robustbench

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
# science.md §7: clean / AutoAttack (%) of the RobustBench entries the paper's table sits next to.
SCIENCE_TABLE = {
    "Wang2023Better_WRN-70-16": (93.25, 70.69),
    "Wang2023Better_WRN-28-10": (92.44, 67.31),
    "Gowal2020Uncovering_70_16_extra": (91.10, 65.88),
    "Carmon2019Unlabeled": (89.69, 59.53),
    "Sehwag2020Hydra": (88.98, 57.14),
    "Gowal2020Uncovering_34_20": (85.64, 56.86),
    "Rice2020Overfitting": (85.34, 53.42),
    "Zhang2019Theoretically": (84.92, 53.08),
    "Engstrom2019Robustness": (87.03, 49.25),
    "Madry2018Towards": (87.14, 44.04),
    "Wong2020Fast": (83.34, 43.21),
    "Standard": (94.78, 0.00),
}
COMPARE = ("compare", "robustbench", "--eval-data", "synthetic", "--no-progress")


def _robustbench():
    try:
        return zoo_robustbench.import_robustbench()
    except UserError as exc:
        pytest.skip(f"robustbench unusable here: {exc}")


def _randomize_bn(model: nn.Module, seed: int) -> None:
    """Non-trivial BN statistics, so eval-mode logits depend on every buffer being carried over."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def wong(tmp_path_factory):
    """A Wong2020Fast checkpoint as published (plain state_dict, no mu/sigma), random weights."""
    _robustbench()
    from robustbench.model_zoo.cifar10 import Wong2020FastNet

    torch.manual_seed(0)
    net = Wong2020FastNet()
    _randomize_bn(net, 0)
    net.eval()
    model_dir = tmp_path_factory.mktemp("zoo") / "models"
    path = model_dir / "cifar10" / "Linf" / "Wong2020Fast.pt"
    path.parent.mkdir(parents=True)
    # 'module.' prefixes (a DataParallel save) are stripped by robustbench.load_model.
    sd = {f"module.{k}": v for k, v in net.state_dict().items() if k not in ("mu", "sigma")}
    torch.save({"state_dict": sd, "epoch": 15}, path)
    return SimpleNamespace(dir=model_dir, path=path, net=net)


@pytest.fixture(scope="module")
def compared(wong, tmp_path_factory):
    """One `compare robustbench` CLI run on 8 synthetic images."""
    out = tmp_path_factory.mktemp("cmp") / "robustbench" / "results.json"
    proc = run_cli(
        *COMPARE, "--models", "Wong2020Fast", "--model-dir", str(wong.dir), "--n-examples", "8",
        "--out", str(out),
    )  # fmt: skip
    return SimpleNamespace(out=out, proc=proc)


@pytest.fixture(scope="module")
def ticket(tmp_path_factory):
    """A preact-resnet18 ticket checkpoint (CIFAR normalization inside, 80% of weights zero)."""
    torch.manual_seed(1)
    model = build_model(
        "preact-resnet18", num_classes=10, in_channels=3, mean=CIFAR_MEAN, std=CIFAR_STD
    )
    _randomize_bn(model, 1)
    gen = torch.Generator().manual_seed(2)
    keep = {
        k: (torch.rand(p.shape, generator=gen) > 0.8).float()
        for k, p in prunable_parameters(model).items()
    }
    Mask(keep).apply_(model)
    path = tmp_path_factory.mktemp("ticket") / "best.pt"
    arch = arch_meta(
        "preact-resnet18",
        num_classes=10,
        in_channels=3,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        dataset="cifar10",
    )
    save_model(path, model, arch, epoch=3, kind="ticket")
    return SimpleNamespace(path=path, model=model.eval())


def _wrn10_checkpoint(path: Path, *, normalize: bool, seed: int = 3) -> nn.Module:
    mean, std = (CIFAR_MEAN, CIFAR_STD) if normalize else (None, None)
    torch.manual_seed(seed)
    model = build_model("wrn-10-1", num_classes=10, in_channels=3, mean=mean, std=std)
    _randomize_bn(model, seed)
    arch = arch_meta(
        "wrn-10-1", num_classes=10, in_channels=3, mean=mean, std=std, dataset="cifar10"
    )
    save_model(path, model, arch, epoch=1)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# Published numbers
# ---------------------------------------------------------------------------------------------


def test_reference_table_parses_and_matches_science_and_the_zoo():
    doc = zoo_reference.load_reference()
    entries = {e["name"]: e for e in doc["entries"]}
    assert len(entries) == len(doc["entries"])
    assert doc["dataset"] == "cifar10" and doc["threat_model"] == "Linf" and doc["source"]
    for name, (clean, aa) in SCIENCE_TABLE.items():
        assert (entries[name]["clean_acc"], entries[name]["autoattack_acc"]) == (clean, aa), name
    for e in entries.values():
        assert 0 <= e["autoattack_acc"] <= e["clean_acc"] <= 100
        assert e["source"].endswith(f"model_info/cifar10/Linf/{e['name']}.json")
        assert e["architecture"].startswith(("WideResNet-", "ResNet-"))
    robust = [e["leaderboard_robust_acc"] for e in doc["entries"]]
    assert robust == sorted(robust, reverse=True)
    # The packaged flag says which names robustbench.load_model knows: check against the zoo.
    _robustbench()
    known = zoo_robustbench.zoo_models("cifar10", "Linf")
    assert {n: n in known for n in entries} == {n: e["in_model_zoo"] for n, e in entries.items()}


def test_compare_list_prints_the_published_table_and_json(capsys):
    code, out, err = cli_call(["compare", "list"], capsys)
    assert code == 0, err
    assert "published, not measured here" in out
    for name in SCIENCE_TABLE:
        assert name in out
    code, out, err = cli_call(["compare", "list", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out) == zoo_reference.load_reference()


# ---------------------------------------------------------------------------------------------
# Loading and measuring zoo models
# ---------------------------------------------------------------------------------------------


def test_zoo_model_loads_through_robustbench_with_its_own_logits(wong):
    model = zoo_checkpoints.load_zoo_model("Wong2020Fast", wong.dir)
    assert type(model).__name__ == "Wong2020FastNet" and not model.training
    x = _images(6)
    with torch.no_grad():
        assert torch.equal(model(x), wong.net(x))


def test_cli_comparison_writes_measured_and_published_rows(compared):
    proc = compared.proc
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "measured" in proc.stdout and "published" in proc.stdout
    doc = read_results(compared.out)
    assert doc["suite"] == zoo_config.COMPARE_SUITE
    measured, published = doc["rows"]
    assert (measured["kind"], measured["source"], measured["dataset"]) == (
        "zoo",
        "measured",
        "synthetic",
    )
    assert (published["kind"], published["source"], published["dataset"]) == (
        "reference",
        "published",
        "cifar10",
    )
    assert measured["label"] == published["label"] == "Wong2020Fast"
    assert published["clean_acc"] == pytest.approx(0.8334)
    assert published["autoattack_acc"] == pytest.approx(0.4321)
    assert published["pgd_acc"] is None and "not measured here" in published["note"]
    assert "synthetic" in measured["note"] and measured["n"] == 8
    assert measured["params"] == published["params"] == 11_171_146
    assert 0 < measured["nonzero_params"] <= measured["params"]
    proto = doc["protocol"]
    assert proto["eps"] == pytest.approx(8 / 255) and proto["pgd_steps"] == 20
    assert proto["step_size"] == pytest.approx(2 / 255)
    assert proto["random_start"] is True and proto["fgsm"] is True and proto["bn_mode"] == "eval"
    assert proto["data"]["dataset"] == "synthetic" and proto["n_examples"] == 8


def test_comparison_numbers_are_the_ticket_harness_and_a_rerun_does_no_work(compared, wong):
    assert compared.proc.returncode == 0, compared.proc.stderr
    cfg = zoo_config.CompareConfig(
        models=("Wong2020Fast",),
        model_dir=str(wong.dir),
        eval_data="synthetic",
        n_examples=8,
        progress=False,
    )
    data = zoo_compare.load_eval_data(cfg)
    tickets_protocol = eval_protocol(RunConfig(data=DataConfig(dataset="cifar10")))
    assert zoo_compare.comparison_protocol("cifar10") == tickets_protocol
    direct = evaluate(wong.net, data.images, data.labels, tickets_protocol)
    row = read_results(compared.out)["rows"][0]
    for key in ("clean_acc", "fgsm_acc", "pgd_acc"):
        assert row[key] == direct[key], key
    doc = read_results(compared.out)
    assert {k: doc["protocol"][k] for k in PROTOCOL_KEYS} == {
        k: direct["protocol"][k] for k in PROTOCOL_KEYS
    }
    before = compared.out.read_bytes()
    again = zoo_compare.run_comparison(cfg, compared.out)
    assert again.evaluated == () and again.reused == ("Wong2020Fast",) and not again.written
    assert compared.out.read_bytes() == before


def test_autoattack_runs_through_the_comparison_measure_on_a_tiny_model():
    # A linear model, so that which points AutoAttack must break is known exactly: a clean-correct
    # point x with label y falls to an L∞ perturbation of size min_j (f_y - f_j) / |w_y - w_j|_1
    # (pixels kept in [0.25, 0.75], so the [0, 1] box never binds). Only such points are used:
    # AutoAttack then stops after APGD-CE and stays cheap on a busy CPU.
    from boosting_tickets.models.layers import Normalize

    torch.manual_seed(4)
    norm, linear = Normalize(CIFAR_MEAN, CIFAR_STD), nn.Linear(3 * 32 * 32, 10)
    model = nn.Sequential(norm, nn.Flatten(), linear).eval()
    x = 0.25 + 0.5 * _images(64, seed=5)
    with torch.no_grad():
        logits = model(x)
    pred = logits.argmax(1)
    w = (linear.weight.detach().view(10, 3, 32, 32) / norm.std).flatten(1)  # pixel-space weights
    margin = (logits.gather(1, pred[:, None]) - logits).detach()
    flip = margin / (w[pred][:, None, :] - w[None, :, :]).abs().sum(-1)
    flip[torch.arange(64), pred] = float("inf")
    eps = zoo_compare.comparison_protocol("cifar10").eps
    fragile = (flip.min(1).values < eps / 2).nonzero().flatten()[:6]
    assert len(fragile) == 6
    # Six clean-correct, provably breakable points and two misclassified ones.
    images = torch.cat([x[fragile], x[:2]])
    labels = torch.cat([pred[fragile], (pred[:2] + 1) % 10])
    data = zoo_compare.EvalData(images, labels, "synthetic", "8 random images", 10)
    protocol = zoo_compare.comparison_protocol("cifar10", autoattack=True)
    res = zoo_compare.measure_model(model, data, protocol, batch_size=8)
    assert res["clean_acc"] == 0.75
    assert res["autoattack_acc"] == 0.0 and res["pgd_acc"] == 0.0
    assert res["protocol"]["autoattack"] == "standard (pyautoattack)"
    assert res["protocol"]["pgd_steps"] == 20 and res["params"] == 3 * 32 * 32 * 10 + 10


def test_download_goes_through_a_sniffed_temp_file(tmp_path, monkeypatch, wong):
    rb = _robustbench()
    target = zoo_robustbench.zoo_checkpoint_path(tmp_path, "Wong2020Fast")

    def html_page(gid, path):
        Path(path).write_text("<!DOCTYPE html><html>Google Drive quota exceeded</html>")

    monkeypatch.setattr(rb.utils, "download_gdrive_new", html_page)
    with pytest.raises(UserError, match="HTML page") as err:
        zoo_checkpoints.prepare_zoo_checkpoint("Wong2020Fast", tmp_path, allow_download=True)
    assert str(target) in str(err.value)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))

    def offline(gid, path):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(rb.utils, "download_gdrive_new", offline)
    with pytest.raises(UserError, match="downloading Wong2020Fast .* failed"):
        zoo_checkpoints.prepare_zoo_checkpoint("Wong2020Fast", tmp_path, allow_download=True)

    def copy(gid, path):
        Path(path).write_bytes(wong.path.read_bytes())

    monkeypatch.setattr(rb.utils, "download_gdrive_new", copy)
    ckpt = zoo_checkpoints.prepare_zoo_checkpoint("Wong2020Fast", tmp_path, allow_download=True)
    assert ckpt.files == (target,) and ckpt.export is None
    assert target.read_bytes() == wong.path.read_bytes()


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def test_exported_ticket_loads_with_robustbench_load_model_and_identical_logits(
    tmp_path, ticket, capsys
):
    rb = _robustbench()
    model_dir = tmp_path / "models"
    args = ["compare", "export", str(ticket.path), "--model-dir", str(model_dir)]
    code, out, err = cli_call([*args, "--name", "Wong2020Fast"], capsys)
    assert code == 0, err
    assert "robustbench.load_model('Wong2020Fast'" in out
    loaded = rb.load_model("Wong2020Fast", model_dir=str(model_dir), dataset="cifar10")
    x = _images(5, seed=6)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ticket.model(x), rtol=0, atol=1e-5)
    # Dense export: the pruned zeros travel as zeros; normalization lives in mu/sigma.
    assert count_parameters(loaded) == count_parameters(ticket.model)
    assert torch.allclose(loaded.mu.flatten(), torch.tensor(CIFAR_MEAN))
    meta = safe_torch_load(zoo_robustbench.zoo_checkpoint_path(model_dir, "Wong2020Fast"))[
        "boosting_tickets"
    ]
    assert meta["input_normalization"]["applied_by_architecture"] is True
    assert meta["nonzero_params"] == count_parameters(ticket.model)[1]
    # The staging dir is gone; RobustBench's model-info entry sits beside the weights.
    assert sorted(p.name for p in model_dir.iterdir()) == ["cifar10", "model_info"]
    info = json.loads((model_dir / "model_info/cifar10/Linf/Wong2020Fast.json").read_text())
    fields = {f.name for f in dataclasses.fields(rb.utils.ModelInfo)}
    assert set(info) <= fields and rb.utils.ModelInfo(**info).architecture == "PreActResNet-18"
    assert info["eps"] == "8/255" and info["dataset"] == "cifar10"
    assert info["additional_data"] is False and info["number_forward_passes"] == 1
    assert info["clean_acc"] is None and info["autoattack_acc"] is None  # never PGD as AutoAttack
    assert "% of the weights are zero (pruned)" in info["footnote"]
    assert f"model info: {model_dir / 'model_info'}" in out
    # Compared under its zoo name, the export is measured but never paired with Wong's numbers.
    cfg = zoo_config.CompareConfig(
        models=("Wong2020Fast",),
        model_dir=str(model_dir),
        eval_data="synthetic",
        n_examples=2,
        progress=False,
    )
    (row,) = zoo_compare.run_comparison(cfg, tmp_path / "cmp" / "results.json").rows
    assert row["source"] == "measured" and row["model"] == "preact-resnet18"
    assert "boosting-tickets export of" in row["note"]
    assert row["nonzero_params"] == count_parameters(ticket.model)[1]


def test_a_ticket_itself_is_not_exported_but_named_the_command_that_trains_it(tmp_path, capsys):
    # Before: a ticket directory failed with "checkpoint not found .../best.pt", and its rewind.pt
    # exported a dense, unmasked, untrained model without a word.
    ticket_dir, _ = cli_find_ticket(tmp_path / "t", capsys)
    before = tree_digest(tmp_path / "t")
    for source in (ticket_dir, ticket_dir / "rewind.pt"):
        code, out, err = cli_call(["compare", "export", str(source), "--model-dir",
                                   str(tmp_path / "m"), "--name", "MyTicket"], capsys)  # fmt: skip
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "untrained" in err and f"boosting-tickets train --ticket {ticket_dir}" in err
    assert "not masked" in err
    assert tree_digest(tmp_path / "t") == before and not (tmp_path / "m").exists()


def test_export_under_a_new_name_loads_strictly_into_plain_wideresnet(tmp_path):
    _robustbench()
    from robustbench.model_zoo.architectures.wide_resnet import WideResNet

    from boosting_tickets.models.layers import Normalize

    x = _images(4, seed=7)
    for normalize in (False, True):
        ours = _wrn10_checkpoint(tmp_path / f"wrn{normalize}.pt", normalize=normalize)
        res = zoo_export.export_checkpoint(
            tmp_path / f"wrn{normalize}.pt", tmp_path, f"W{normalize}"
        )
        assert not res.zoo_name and not res.normalization_in_target
        plain = WideResNet(depth=10, widen_factor=1, num_classes=10).eval()
        plain.load_state_dict(safe_torch_load(res.path)["state_dict"], strict=True)
        with torch.no_grad():
            inputs = Normalize(CIFAR_MEAN, CIFAR_STD)(x) if normalize else x
            torch.testing.assert_close(plain(inputs), ours(x), rtol=0, atol=1e-5)
        # A normalizing model is explained, not silently exported.
        assert bool(res.notes) == normalize
        meta = safe_torch_load(res.path)["boosting_tickets"]["input_normalization"]
        assert meta["identity"] is (not normalize)
        if normalize:
            assert meta["mean"] == pytest.approx(CIFAR_MEAN) and "wrap it" in res.notes[0]


def test_trades_style_wideresnet_gets_its_unused_sub_block_from_block1(tmp_path):
    # Carmon2019Unlabeled, Sehwag2020Hydra, Zhang2019Theoretically: WideResNet(sub_block1=True),
    # whose forward pass never runs sub_block1. Shown here at depth 10, width 1.
    _robustbench()
    from robustbench.model_zoo.architectures.wide_resnet import WideResNet

    ours = _wrn10_checkpoint(tmp_path / "wrn.pt", normalize=False)
    build = lambda: WideResNet(depth=10, widen_factor=1, sub_block1=True)  # noqa: E731
    state, diff, has_norm, sub_block = zoo_export._export_state_dict(
        ours.state_dict(), zoo_checkpoints.meta_shapes(build)
    )
    assert not diff and not has_norm and sub_block
    for key, value in state.items():
        if key.startswith("sub_block1."):
            assert torch.equal(value, ours.state_dict()["block1." + key[len("sub_block1.") :]])
    theirs = build().eval()
    theirs.load_state_dict(state, strict=True)
    x = _images(3, seed=8)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x), rtol=0, atol=1e-5)


def test_export_refuses_what_robustbench_would_get_wrong(tmp_path, ticket):
    _robustbench()
    model_dir = tmp_path / "models"
    # The zoo's PreActResNet-18 of Andriushchenko2020Understanding has no normalization buffers.
    with pytest.raises(UserError, match="normalizes its inputs .* load_model would feed it raw"):
        zoo_export.export_checkpoint(ticket.path, model_dir, "Andriushchenko2020Understanding")
    _wrn10_checkpoint(tmp_path / "wrn.pt", normalize=False)
    with pytest.raises(UserError, match="does not match the architecture .* Standard"):
        zoo_export.export_checkpoint(tmp_path / "wrn.pt", model_dir, "Standard")
    small = build_model("small-cnn", num_classes=10, in_channels=3)
    arch = arch_meta("small-cnn", num_classes=10, in_channels=3, mean=None, std=None)
    save_model(tmp_path / "cnn.pt", small, arch)
    with pytest.raises(UserError, match="no architecture matching our small-cnn"):
        zoo_export.export_checkpoint(tmp_path / "cnn.pt", model_dir, "MyCNN")
    assert not any(p.is_file() for p in model_dir.rglob("*"))


# ---------------------------------------------------------------------------------------------
# Failure modes through the CLI: one line, exit 2, nothing written or replaced
# ---------------------------------------------------------------------------------------------


def _fake_damaged_robustbench(root: Path) -> Path:
    """A site dir whose robustbench RECORD no longer matches its files (torchattacks' damage)."""
    site = root / "site"
    (site / "robustbench").mkdir(parents=True)
    (site / "robustbench" / "__init__.py").write_text("# stale copy shipped by torchattacks\n")
    info = site / "robustbench-1.1.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: robustbench\nVersion: 1.1.1\n")
    (info / "RECORD").write_text(
        "robustbench/__init__.py,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,10\n"
        "robustbench/utils.py,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,10\n"
        "robustbench-1.1.1.dist-info/RECORD,,\n"
    )
    return site


class _Pickled:
    """An arbitrary class: files holding one need code execution to unpickle."""


def _assert_one_line_error(code: int, stderr: str, expected: str, case: str) -> None:
    err = stderr.strip()
    assert code == 2, (case, err)
    assert err.startswith("error: ") and "\n" not in err, (case, err)
    assert "Traceback" not in stderr and expected in err, (case, err)


def test_loading_failures_are_one_line_through_the_cli(tmp_path, wong):
    """Missing, HTML, truncated, other-architecture files and a damaged robustbench install."""
    _robustbench()
    from robustbench.model_zoo.architectures.wide_resnet import WideResNet

    def model_dir(case: str) -> Path:
        return tmp_path / case

    def ckpt(case: str) -> Path:
        path = zoo_robustbench.zoo_checkpoint_path(model_dir(case), "Wong2020Fast")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    ckpt("missing")
    ckpt("html").write_text("<!DOCTYPE html>\n<html><body>Sign in to Google Drive</body></html>")
    ckpt("truncated").write_bytes(wong.path.read_bytes()[: wong.path.stat().st_size // 2])
    wrn = WideResNet(depth=10, widen_factor=1).state_dict()
    torch.save({"state_dict": wrn}, ckpt("wrong_arch"))
    site = _fake_damaged_robustbench(tmp_path / "damaged_site")
    out = tmp_path / "out" / "results.json"
    expected = {
        "missing": f"expected {ckpt('missing')}; fix: pass --allow-download",
        "html": "is an HTML page, not a checkpoint",
        "truncated": "is truncated or corrupted",
        "wrong_arch": "holds weights of another architecture",
        "damaged": "files were changed by another package (1 modified, 1 missing, e.g. "
        "robustbench/__init__.py); fix: pip install --force-reinstall --no-deps robustbench==1.1.1",
    }
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}

    def run(case: str):
        where = wong.dir if case == "damaged" else model_dir(case)
        return run_cli(
            *COMPARE, "--models", "Wong2020Fast", "--model-dir", str(where), "--n-examples", "4",
            "--out", str(out), env=env if case == "damaged" else None,
        )  # fmt: skip

    before = tree_digest(tmp_path), tree_digest(wong.dir)
    with ThreadPoolExecutor(max_workers=3) as pool:
        procs = dict(zip(expected, pool.map(run, expected), strict=True))
    for case, proc in procs.items():
        _assert_one_line_error(proc.returncode, proc.stderr, expected[case], case)
    assert (tree_digest(tmp_path), tree_digest(wong.dir)) == before
    assert not out.exists()


def test_refusals_leave_earlier_results_and_exports_untouched(tmp_path, wong, compared, capsys):
    assert compared.proc.returncode == 0, compared.proc.stderr
    pickled = zoo_robustbench.zoo_checkpoint_path(tmp_path / "pickled", "Wong2020Fast")
    pickled.parent.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": _Pickled()}, pickled)
    _wrn10_checkpoint(tmp_path / "wrn.pt", normalize=False)
    existing = zoo_robustbench.zoo_checkpoint_path(tmp_path / "exported", "MyWRN")
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"an earlier export")
    out = str(tmp_path / "out" / "results.json")
    base = [*COMPARE, "--models", "Wong2020Fast", "--n-examples", "4"]
    cases = {
        "pickled": (
            [*base, "--model-dir", str(tmp_path / "pickled"), "--out", out],
            "was refused: it contains Python objects",
        ),
        "unknown": (
            [*COMPARE, "--models", "Wong2020Fats", "--model-dir", str(wong.dir), "--out", out],
            "did you mean Wong2020Fast",
        ),
        "no_models": ([*COMPARE, "--model-dir", str(wong.dir), "--out", out], "--models"),
        "no_cifar": (
            [
                "compare",
                "robustbench",
                "--models",
                "Wong2020Fast",
                "--model-dir",
                str(wong.dir),
                "--data-dir",
                str(tmp_path / "data"),
                "--out",
                out,
            ],  # fmt: skip
            f"cifar10: files not found in {tmp_path / 'data' / 'cifar-10-batches-py'}; fix:",
        ),
        "other_settings": (
            [*base, "--model-dir", str(wong.dir), "--out", str(compared.out)],
            "holds a comparison under other settings",
        ),
        "export_exists": (
            [
                "compare",
                "export",
                str(tmp_path / "wrn.pt"),
                "--model-dir",
                str(tmp_path / "exported"),
                "--name",
                "MyWRN",
            ],  # fmt: skip
            "exists; pass --overwrite",
        ),
    }
    before = tree_digest(tmp_path), tree_digest(compared.out.parent)
    for case, (args, expected) in cases.items():
        code, _, err = cli_call(args, capsys)
        _assert_one_line_error(code, err, expected, case)
    assert (tree_digest(tmp_path), tree_digest(compared.out.parent)) == before


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

_keys = st.text(alphabet="abcdefgh.", min_size=1, max_size=6)
_shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)


@settings(max_examples=60, deadline=None)
@given(
    expected=st.dictionaries(_keys, _shapes, max_size=8),
    drop=st.sets(_keys, max_size=4),
    extra=st.dictionaries(_keys, _shapes, max_size=3),
    reshape=st.sets(_keys, max_size=3),
)
def test_state_dict_mismatch_reports_exactly_the_differences(expected, drop, extra, reshape):
    given_ = {k: v for k, v in expected.items() if k not in drop}
    given_ = {k: ((*v, 9) if k in reshape else v) for k, v in given_.items()}
    given_.update({k: v for k, v in extra.items() if k not in expected})
    diff = zoo_checkpoints.state_dict_mismatch(expected, given_)
    assert set(diff.missing) == {k for k in expected if k not in given_}
    assert set(diff.unexpected) == {k for k in given_ if k not in expected}
    assert {k for k, _, _ in diff.shape} == {k for k in expected if k in given_ and k in reshape}
    assert bool(diff) == (given_ != expected)
    optional = set(diff.missing)
    assert not zoo_checkpoints.state_dict_mismatch(expected, given_, optional=optional).missing


@settings(max_examples=60, deadline=None)
@given(
    old=st.lists(st.sampled_from("ABCDEF"), max_size=6),
    new=st.lists(st.sampled_from("ABCDEF"), max_size=4, unique=True),
)
def test_merge_rows_replaces_remeasured_models_and_keeps_the_rest(old, new):
    old_rows = [{"label": m, "v": i} for i, m in enumerate(old)]
    new_rows = [{"label": m, "v": -1} for m in new]
    merged = zoo_compare.merge_rows(old_rows, new_rows)
    assert merged[len(merged) - len(new_rows) :] == new_rows
    assert merged[: len(merged) - len(new_rows)] == [r for r in old_rows if r["label"] not in new]


def test_compare_config_needs_models_and_names_that_can_be_files():
    with pytest.raises(UserError, match="no models given"):
        zoo_config.CompareConfig().validate()
    with pytest.raises(UserError, match="bad model name"):
        dataclasses.replace(zoo_config.CompareConfig(), models=("../etc/passwd",)).validate()
    with pytest.raises(UserError, match="more than once"):
        zoo_config.CompareConfig(models=("Standard", "Standard")).validate()


def test_compare_config_loads_from_toml_with_cli_overrides(tmp_path):
    from boosting_tickets.core.config import build_config, config_hash

    toml = tmp_path / "compare.toml"
    toml.write_text('models = ["Wong2020Fast", "Standard"]\nn_examples = 100\nautoattack = true\n')
    cfg = build_config(zoo_config.CompareConfig, config_path=toml, cli_values={"n_examples": "50"})
    assert cfg.models == ("Wong2020Fast", "Standard") and cfg.n_examples == 50 and cfg.autoattack
    # Which models, where they live and how fast they run never change one model's numbers.
    same = dataclasses.replace(cfg, models=("Standard",), model_dir="elsewhere", batch_size=7)
    assert config_hash(same) == config_hash(cfg)
    assert config_hash(dataclasses.replace(cfg, n_examples=51)) != config_hash(cfg)


def test_an_l2_export_is_compared_under_the_l2_protocol(tmp_path):
    # A WRN-28-10 of ours filed under the L2 zoo's Standard (a plain WideResNet-28-10).
    torch.manual_seed(5)
    model = build_model("wrn-28-10", num_classes=10, in_channels=3, mean=None, std=None)
    arch = arch_meta("wrn-28-10", num_classes=10, in_channels=3, mean=None, std=None,
                     dataset="cifar10")  # fmt: skip
    save_model(tmp_path / "wrn.pt", model, arch, epoch=1)
    models = tmp_path / "models"
    res = zoo_export.export_checkpoint(tmp_path / "wrn.pt", models, "Standard", threat="L2")
    assert res.zoo_name and res.path == models / "cifar10" / "L2" / "Standard.pt"
    info = json.loads((models / "model_info" / "cifar10" / "L2" / "Standard.json").read_text())
    assert info["eps"] == "0.5"
    out = tmp_path / "cmp" / "results.json"
    proc = run_cli(*COMPARE, "--threat", "L2", "--models", "Standard", "--model-dir",
                   str(models), "--n-examples", "4", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "protocol: L2 eps 0.5, PGD-20-L2" in proc.stdout and "FGM" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["protocol"]["threat_model"] == "L2" and doc["protocol"]["eps"] == 0.5
    # Our export under a zoo name is not the published model: no published row beside it.
    assert [r["source"] for r in doc["rows"]] == ["measured"]
