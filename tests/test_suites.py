"""Suite files: validation with one-line errors, sweep expansion, seeds and stable run hashes."""

from __future__ import annotations

import copy
import dataclasses
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boosting_tickets.bench.plan import plan_suite
from boosting_tickets.bench.suite_files import PACKAGE_SUITES as SUITES_DIR
from boosting_tickets.bench.suite_files import suite_names
from boosting_tickets.bench.suites import load_suite, parse_suite
from boosting_tickets.core.config import config_hash, setting
from boosting_tickets.core.errors import UserError
from boosting_tickets.training.hparams import TrainConfig

BASE = {
    "description": "test suite",
    "seeds": [0, 1],
    "run": {
        "data": {"dataset": "synthetic", "train_subset": 128, "val_size": 32, "test_subset": 32},
        "model": {"model": "small-cnn"},
        "train": {"epochs": 2, "warmup_epochs": 1, "warmup_lr": 0.01, "train_steps": 2},
        "eval": {"eval_steps": 3},
    },
    "find": {"train": {"epochs": 1}, "prune": {"sparsity": 0.8}},
    "arms": [
        {"name": "dense", "kind": "dense"},
        {"name": "ticket-natural", "kind": "ticket"},
        {"name": "ticket-fgsm", "kind": "ticket", "find": {"train": {"objective": "fgsm"}}},
        {"name": "reinit", "kind": "reinit", "ticket_of": "ticket-natural"},
    ],
}


def doc(**changes):
    d = copy.deepcopy(BASE)
    d.update(changes)
    return d


def error_of(d) -> str:
    with pytest.raises(UserError) as info:
        parse_suite(d, name="t")
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_valid_suite_expands_arms_times_seeds():
    s = parse_suite(doc(), name="t")
    assert [a.name for a in s.arms] == ["dense", "ticket-natural", "ticket-fgsm", "reinit"]
    plan = plan_suite(s)
    assert len(plan) == 8
    assert [(p.arm.name, p.seed) for p in plan[:4]] == [
        ("dense", 0),
        ("ticket-natural", 0),
        ("ticket-fgsm", 0),
        ("reinit", 0),
    ]
    by = {(p.arm.name, p.seed): p for p in plan}
    assert by["dense", 1].run.train.seed == 1 and by["dense", 1].find is None
    nat, fgsm = by["ticket-natural", 0].find, by["ticket-fgsm", 0].find
    assert nat.train.objective == "natural" and nat.train.lr == 0.01 and nat.train.epochs == 1
    assert fgsm.train.objective == "fgsm"
    # The control retrains the natural ticket: same find config, hence the same ticket directory.
    assert by["reinit", 0].find_key == by["ticket-natural", 0].find_key
    assert by["reinit", 0].control == "reinit" and by["ticket-natural", 0].control is None
    # Ticket finding follows the retraining run's data and model.
    assert nat.data == by["dense", 0].run.data and nat.model == by["dense", 0].run.model
    # Fair baseline: dense and ticket arms retrain with one schedule.
    assert by["dense", 0].run == by["ticket-natural", 0].run


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"seedz": 3}, "suite t has unknown key 'seedz'; valid keys:"),
        (
            {"arms": [{"name": "dense", "kind": "dense", "lr": 0.1}]},
            "arm 'dense' has unknown key 'lr'",
        ),
        ({"arms": [{"name": "dense", "kind": "dence"}]}, "arm 'dense' has unknown kind 'dence'"),
        ({"arms": [{"name": "Dense!", "kind": "dense"}]}, "needs a name"),
        ({"arms": []}, "has no arms"),
        (
            {"arms": [{"name": "dense", "kind": "dense"}, {"name": "dense", "kind": "dense"}]},
            "two arms named 'dense'",
        ),
        (
            {
                "arms": [
                    {"name": "dense", "kind": "dense"},
                    {"name": "reinit", "kind": "reinit", "ticket_of": "ticket-naturl"},
                ]
            },
            "arm 'reinit': ticket_of 'ticket-naturl' is not a ticket arm",
        ),
        (
            {"arms": [{"name": "dense", "kind": "dense"}, {"name": "r", "kind": "reinit"}]},
            "ticket_of",
        ),
        (
            {"arms": [{"name": "dense", "kind": "dense", "run": {"train": {"epochz": 2}}}]},
            "unknown config key 'epochz' in suite t, arm dense",
        ),
        (
            {"arms": [{"name": "dense", "kind": "dense", "run": {"eval": {"eval_steps": 7}}}]},
            "arm 'dense' overrides run.eval",
        ),
        (
            {"arms": [{"name": "dense", "kind": "dense", "run": {"data": {"train_subset": 9}}}]},
            "overrides run.data.train_subset",
        ),
        ({"run": {"train": {"lr": -1.0}}}, "--lr must be > 0"),
        ({"find": {"model": {"model": "wrn-10-1"}}}, "sets find.model.model"),
        ({"find": {"model": {"dropout": 0.1, "normalize": False}}}, "only find.model.dropout"),
        ({"find": {"data": {"batch_size": 8}}}, "sets find.data.batch_size"),
        ({"find": {"prune": {"sparsty": 0.8}}}, "unknown config key 'sparsty'"),
        ({"find": {"prune": {"sparsity": 1.5}}}, "--sparsity must be in [0, 1)"),
        (
            {"compare": {"baseline": "ticket-natural"}},
            "baseline 'ticket-natural' is not a dense arm",
        ),
        ({"compare": {"target": "fast"}}, "target = 'fast'"),
        ({"seeds": [0, 0]}, "seeds repeat"),
        ({"device": "tpu"}, "device = 'tpu'"),
        ({"reference": ["table9"]}, "reference = ['table9']"),
        (
            {"run": {**BASE["run"], "train": {"warmup_epochs": 1}}},
            "warmup without run.train.warmup_lr",
        ),
    ],
)
def test_bad_suites_name_the_problem_in_one_line(change, fragment):
    assert fragment in error_of(doc(**change))


def test_sweep_expands_to_arms_and_keeps_controls_paired():
    s = parse_suite(
        doc(
            sweep={
                "arms": ["ticket-natural", "reinit"],
                "grid": {"find.prune.sparsity": [0.5, 0.9], "find.train.lr": [0.01, 0.1]},
            }
        ),
        name="t",
    )
    names = [a.name for a in s.arms]
    assert names[:1] == ["dense"] and "ticket-fgsm" in names
    assert "ticket-natural@sparsity=0.5,lr=0.1" in names
    assert len(names) == 2 + 2 * 4
    r = s.arm("reinit@sparsity=0.9,lr=0.01")
    assert r.ticket_of == "ticket-natural@sparsity=0.9,lr=0.01"
    t = s.arm(r.ticket_of)
    find = s.find_config(t, 0)
    assert find.prune.sparsity == 0.9 and find.train.lr == 0.01
    assert s.find_config(r, 0) == find  # the control retrains exactly that ticket
    assert s.baseline_of(r).name == "dense"
    # Grid points are different tickets.
    keys = {config_hash(s.find_config(a, 0)) for a in s.arms if a.kind == "ticket"}
    assert len(keys) == 4 + 1


def test_dropout_may_go_into_the_finding_the_retraining_or_both():
    s = load_suite(SUITES_DIR / "dropout-cpu.toml")
    apart = s.arm("ticket@dropout=0.5,objective=pgd")
    both = s.arm("ticket-both@dropout=0.5,objective=pgd")
    assert s.run_config(apart, 0).model.dropout == 0.5 == s.run_config(both, 0).model.dropout
    assert s.find_config(apart, 0).model.dropout == 0.0  # found without dropout
    assert s.find_config(both, 0).model.dropout == 0.5  # found with the retraining's dropout
    # At dropout 0 the two are the same ticket, found once; controls retrain the no-dropout one.
    zero = [s.arm(f"{n}@dropout=0,objective=natural") for n in ("ticket", "ticket-both")]
    assert s.find_config(zero[0], 0) == s.find_config(zero[1], 0)
    control = s.arm("reinit-rescaled@dropout=0.3,objective=natural")
    assert s.find_config(control, 0) == s.find_config(
        s.arm("ticket@dropout=0.3,objective=natural"), 0
    )
    assert s.baseline_of(control).name == "dense@dropout=0.3,objective=natural"


def test_capacity_sweep_pairs_each_model_with_its_own_dense_baseline():
    s = parse_suite(doc(sweep={"grid": {"run.model.model": ["wrn-10-1", "wrn-16-1"]}}), name="t")
    t = s.arm("ticket-natural@model=wrn-16-1")
    assert s.baseline_of(t).name == "dense@model=wrn-16-1"
    assert s.find_config(t, 0).model.model == "wrn-16-1"
    assert s.baseline_of(s.arm("dense@model=wrn-10-1")) is None


@pytest.mark.parametrize(
    "sweep, fragment",
    [
        ({"grid": {"find.prune.sparsity": [0.5]}}, "do not apply to dense arm 'dense'"),
        ({"arms": ["reinit"], "grid": {"run.train.lr": [0.1]}}, "its ticket arm 'ticket-natural'"),
        ({"arms": ["ticket-natural"], "grid": {"run.train.lr": [0.1]}}, "its control 'reinit'"),
        ({"grid": {"run.eval.eval_steps": [5]}}, "overrides run.eval"),
        ({"grid": {"lr": [0.1]}}, "must look like run.SECTION.SETTING"),
        ({"grid": {"run.train.epochz": [1]}}, "unknown setting 'run.train.epochz'"),
        ({"grid": {"run.train.lr": []}}, "non-empty list"),
        ({"arms": ["nope"], "grid": {"run.train.lr": [0.1]}}, "each entry must be an arm"),
        ({"grid": {}}, "has no grid"),
        ({"grid": {"run.train.lr": [0.1]}, "armz": []}, "unknown key 'armz'"),
    ],
)
def test_bad_sweeps(sweep, fragment):
    assert fragment in error_of(doc(sweep=sweep))


def _hashes(s):
    return [(p.arm.name, p.seed, config_hash(p.run), p.find_key) for p in plan_suite(s)]


def test_spelled_out_defaults_and_cosmetic_edits_keep_run_hashes():
    plain = parse_suite(doc(), name="t")
    d = doc(description="another text")
    d["run"]["train"].update(momentum=0.9, weight_decay=1e-4, gamma=0.1)  # all defaults
    d["find"]["prune"].update(prune_scope="global", normalize_by_mean=True)  # defaults too
    d["arms"][0]["label"] = "renamed label"
    spelled = parse_suite(d, name="other-name")
    assert _hashes(spelled) == _hashes(plain)


def test_adding_a_new_setting_with_its_default_keeps_run_hashes():
    s = parse_suite(doc(), name="t")
    run = plan_suite(s)[0].run

    @dataclasses.dataclass(frozen=True)
    class NewTrain(TrainConfig):
        label_smoothing: float = setting(0.0, "a knob added in a later version")

    # A later version's RunConfig: the same class name and sections, one more train setting.
    NewRun = dataclasses.make_dataclass(
        "RunConfig",
        [
            ("data", type(run.data), dataclasses.field(default=type(run.data)())),
            ("model", type(run.model), dataclasses.field(default=type(run.model)())),
            ("train", NewTrain, dataclasses.field(default=NewTrain())),
            ("eval", type(run.eval), dataclasses.field(default=type(run.eval)())),
        ],
        frozen=True,
    )
    fields = {f.name: getattr(run.train, f.name) for f in dataclasses.fields(TrainConfig)}
    later = NewRun(data=run.data, model=run.model, train=NewTrain(**fields), eval=run.eval)
    assert config_hash(later) == config_hash(run)


def test_seeds_for_extends_the_suite_list():
    s = parse_suite(doc(seeds=[3, 5]), name="t")
    assert s.seeds_for(None) == (3, 5)
    assert s.seeds_for(1) == (3,)
    assert s.seeds_for(4) == (3, 5, 6, 7)
    assert parse_suite(doc(seeds=3), name="t").seeds == (0, 1, 2)


def test_suite_lookup_by_name_and_path(tmp_path):
    (tmp_path / "mine.toml").write_text(
        "\n".join(
            [
                'description = "file"',
                "[run.data]",
                'dataset = "synthetic"',
                "[[arms]]",
                'name = "dense"',
                'kind = "dense"',
            ]
        )
    )
    assert load_suite("mine", tmp_path).name == "mine"
    assert load_suite(str(tmp_path / "mine.toml")).name == "mine"
    with pytest.raises(UserError, match="unknown suite 'nope'; known suites: mine"):
        load_suite("nope", tmp_path)
    with pytest.raises(UserError, match="suite file not found"):
        load_suite(str(tmp_path / "missing.toml"))
    (tmp_path / "broken.toml").write_text("[run\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_suite("broken", tmp_path)


def test_shipped_suites_validate():
    names = suite_names(SUITES_DIR)
    for required in ("quick", "paper-vgg16", "paper-wrn34-10", "fgsm-overfitting"):
        assert required in names
    sweeps = 0
    for name in names:
        s = load_suite(name)
        assert s.description
        sweeps += bool(s.sweep)
        with open(SUITES_DIR / f"{name}.toml", "rb") as fh:
            assert tomllib.load(fh)["arms"]
    assert sweeps >= 3  # pruning ratio, finding lr, capacity
    quick = load_suite("quick")
    assert quick.device == "cpu" and {a.kind for a in quick.arms} >= {"dense", "ticket", "reinit"}
    assert load_suite("paper-wrn34-10").device == "gpu"


@settings(max_examples=15, deadline=None)
@given(
    sparsities=st.lists(
        st.sampled_from([0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]),
        min_size=1,
        max_size=4,
        unique=True,
    ),
    lrs=st.lists(st.sampled_from([0.005, 0.01, 0.05, 0.1]), min_size=1, max_size=3, unique=True),
)
def test_sweep_expansion_invariants(sparsities, lrs):
    grid = {"find.prune.sparsity": sparsities, "find.train.lr": lrs}
    s = parse_suite(doc(sweep={"arms": ["ticket-natural", "reinit"], "grid": grid}), name="t")
    points = len(sparsities) * len(lrs)
    assert len(s.arms) == 2 + 2 * points
    names = [a.name for a in s.arms]
    assert len(set(names)) == len(names)
    tickets = {}
    for a in s.arms:
        if a.kind == "ticket" and a.grid:
            f = s.find_config(a, 0)
            assert dict(a.grid) == {
                "find.prune.sparsity": f.prune.sparsity,
                "find.train.lr": f.train.lr,
            }
            tickets[a.name] = config_hash(f)
    assert len(set(tickets.values())) == points  # one distinct ticket per grid point
    for a in s.arms:
        if a.kind == "reinit":
            assert a.grid == s.arm(a.ticket_of).grid
            assert config_hash(s.find_config(a, 0)) == tickets[a.ticket_of]
