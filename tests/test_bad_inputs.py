"""Bad input refused: one table of bad command lines over every command.

Each case must exit non-zero with exactly one stderr line ``error: ...`` naming the problem (the
``expect`` fragment), print no traceback, and leave every file and directory of the workspace as it
was (hashed before and after). The cases run in-process through ``cli.main`` for speed; a few also
run in a real process to show that no traceback reaches a terminal. ``tests/test_cli.py`` holds the
first train/evaluate cases (flags out of range, HTML/truncated/foreign/empty checkpoints); the cases
here are the others.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import zipfile
from pathlib import Path

import click
import pytest
import torch
from support import cli_call, run_cli, small_config

from boosting_tickets.cli import cli
from boosting_tickets.core.storage import atomic_write_json
from boosting_tickets.models.checkpoints import MODEL_FORMAT
from boosting_tickets.models.layers import prunable_parameters
from boosting_tickets.models.masks import Mask
from boosting_tickets.models.registry import build_model
from boosting_tickets.report.results import PROTOCOL_KEYS, write_results
from boosting_tickets.training.run import train

SMALL_DATA = ["--dataset", "synthetic", "--train-subset", "64", "--val-size", "16",
              "--test-subset", "16", "--batch-size", "16", "--model", "wrn-10-1",
              "--no-progress"]  # fmt: skip


def registered(command: str) -> bool:
    """Whether ``command`` ('train', 'bench run', ...) exists in this version of the CLI."""
    group: click.Command | None = cli
    ctx = click.Context(cli)
    for part in command.split():
        if not isinstance(group, click.Group) or part not in group.list_commands(ctx):
            return False
        group = group.get_command(ctx, part)
    return group is not None


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad command line: ``argv`` with ``{name}`` placeholders for workspace paths."""

    id: str
    argv: tuple[str, ...]
    expect: str  # a fragment of the one-line error (the problem, and the fix where one is given)
    group_only: bool = False  # the case is about the top-level group itself (unknown command)

    @property
    def command(self) -> str:
        if self.group_only:
            return ""
        words = [a for a in self.argv[:2] if not a.startswith("-") and "{" not in a]
        return " ".join(words[:2]) if words[0] in ("bench", "compare") else words[0]


def C(id: str, argv: str, expect: str, group_only: bool = False) -> Case:  # noqa: N802 - a row
    return Case(id, tuple(argv.split()), expect, group_only)


T = "train " + " ".join(SMALL_DATA) + " --out {out}"
F = "find-ticket " + " ".join(SMALL_DATA) + " --epochs 1 --out {out}"
E = "evaluate {ckpt} --n-examples 4 --steps 1"

CASES = [
    # --- train: numbers ------------------------------------------------------------------------
    C("train-lr-nan", T + " --lr nan", "--lr must be a finite number, got nan"),
    C("train-lr-negative", T + " --lr -0.1", "--lr must be > 0.0, got -0.1"),
    C("train-lr-zero", T + " --lr 0", "--lr must be > 0.0, got 0.0"),
    C("train-lr-text", T + " --lr fast", "--lr expects float, got 'fast'"),
    C("train-lr-div-zero", T + " --lr 1/0", "--lr expects float, got '1/0'"),
    C("train-threads-zero", T + " --threads 0", "--threads must be >= 1"),
    C("train-objective-unknown", T + " --objective adam", "choose one of: natural, fgsm"),
    C("train-eps-nan", T + " --train-eps nan", "--train-eps must be a finite number"),
    C("train-eval-eps-inf", T + " --eval-eps inf", "--eval-eps must be a finite number"),
    C("train-momentum", T + " --momentum 1.5", "--momentum must be <= 0.999"),
    C("train-batch-zero", T + " --batch-size 0", "--batch-size must be >= 1"),
    C("train-subset-zero", T + " --train-subset 0", "--train-subset must be >= 1"),
    C("train-seed-negative", T + " --seed -1", "--seed must be >= 0"),
    C("train-dropout-one", T + " --dropout 1", "--dropout must be <= 0.99"),
    C("train-milestones-order", T + " --milestones 0.75,0.5", "--milestones must be increasing"),
    C("train-warmup-too-long", T + " --epochs 2 --warmup-epochs 5", "exceeds --epochs"),
    # --- train: names ---------------------------------------------------------------------------
    C("train-wrn-depth", T + " --model wrn-11-1", "depth must be 6n+4"),
    C("train-schedule", T + " --schedule cosine", "unknown schedule 'cosine'"),
    C("train-bn-mode", T + " --train-bn-mode frozen", "unknown train bn mode 'frozen'"),
    C("train-device", T + " --device tpu", "unknown device 'tpu'"),
    C("train-control", T + " --ticket {ticket} --control shuffle", "shuffle"),
    # --- train: files ---------------------------------------------------------------------------
    C("train-missing-data", T + " --dataset mnist --data-dir {root}/nodata", "mnist"),
    C("toml-wrong-type", T + " --config {toml_type}", "config key 'epochs' expects int, got str"),
    C("toml-list-for-float", T + " --config {toml_list}", "config key 'lr' expects float"),
    C("toml-section-scalar", T + " --config {toml_section}", "must be a [train] table"),
    C("toml-unknown-section", T + " --config {toml_unknown}", "unknown config key 'optim'"),
    C("toml-syntax", T + " --config {toml_syntax}", "is not valid TOML"),
    C("toml-missing", T + " --config {root}/nope.toml", "config file not found"),
    C("toml-directory", T + " --config {root}", "cannot read config file"),
    C("train-out-under-file", T.replace("{out}", "{blocker}/runs"), "not-a-dir is a file"),
    C("ticket-missing", T + " --ticket {root}/no-ticket", "ticket directory not found"),
    C("ticket-is-a-run", T + " --ticket {run}", "lacks ticket.json"),
    C("ticket-mask-shape", T + " --ticket {ticket_badmask}", "mask does not fit this model"),
    C("ticket-other-arch", T.replace("wrn-10-1", "wrn-10-2") + " --ticket {ticket}", "wrn-10-1"),
    C("ticket-no-hparams", T + " --ticket {ticket_nohparams}", "ticket hparams file not found"),
    # --- issue #13: transfer and the L2 threat model ---------------------------------------------
    C("transfer-shape", T + " --ticket {ticket} --dataset fashion-mnist", "inputs of one shape"),
    C("transfer-head", T + " --ticket {ticket} --transfer-head frozen", "'frozen' is not one"),
    C("transfer-head-alone", T + " --transfer-head dense", "--transfer-head needs --ticket"),
    C("train-threat", T + " --threat L3", "unknown threat 'L3' for --threat"),
    C("train-l2-eps-negative", T + " --threat L2 --eval-eps -1", "--eval-eps must be >= 0"),
    C("train-l2-eps-inf", T + " --threat L2 --eval-eps inf", "must be a finite number"),
    C("train-l2-no-eps", T + " --objective pgd-l2", "no customary L2 eps"),
    C("train-linf-eps-big", T + " --eval-eps 2", "--eval-eps must be <= 1.0 for an L∞ budget"),
    C("evaluate-threat", E + " --threat L3", "unknown threat 'L3' for --threat"),
    C("evaluate-l2-eps", E + " --threat L2 --eps -0.5", "--eps must lie in [0, inf]"),
    C("evaluate-l2-eps-nan", E + " --threat L2 --eps nan", "--eps must lie in [0, inf]"),
    C("ticket-bad-hparams", T + " --ticket {ticket_badhparams}", "'train_subset' expects int"),
    C("export-ticket-dir", "compare export {ticket} --model-dir {out}/m --name X", "untrained"),
    C(
        "export-rewind",
        "compare export {ticket}/rewind.pt --model-dir {out}/m --name X",
        "not masked",
    ),  # fmt: skip
    # --- evaluate -------------------------------------------------------------------------------
    C("eval-eps-nan", E + " --eps nan", "eps"),
    C("eval-eps-inf", E + " --eps inf", "eps"),
    C("eval-steps-text", E + " --steps ten", "--steps expects int, got 'ten'"),
    C("eval-restarts-zero", E + " --restarts 0", "restarts must be >= 1"),
    C("eval-batch-zero", E + " --batch-size 0", "--batch-size must be >= 1"),
    C("eval-step-negative", E + " --step-size -0.1", "--step-size must lie in [0, inf]"),
    C("eval-eps-div-zero", E + " --eps 1/0", "--eps expects a number such as 8/255"),
    C("eval-attack-unknown", E + " --attack cw", "unknown attack 'cw' for --attack; choose one of"),
    C("eval-dataset-unknown", E + " --dataset imagenet", "unknown dataset 'imagenet'"),
    C("eval-device", E + " --device tpu", "unknown device 'tpu'"),
    C("eval-split-val-standalone", "evaluate {standalone} --split val", "--split val needs"),
    C("eval-out-dir", E + " --out {root} --overwrite", "--out must name a file"),
    C("eval-out-under-file", E + " --out {blocker}/r.json", "not-a-dir is a file, not a dir"),
    C("ckpt-dir-without-best", "evaluate {emptydir}", "checkpoint not found"),
    C("ckpt-garbage", "evaluate {garbage}", "not a PyTorch checkpoint"),
    C("ckpt-bad-crc", "evaluate {badzip}", "corrupted"),
    C("ckpt-legacy-truncated", "evaluate {legacy_truncated}", "truncated or corrupted"),
    C("ckpt-xml-error-page", "evaluate {xmlpage}", "HTML page, not a checkpoint"),
    C("ckpt-raw-state-dict", "evaluate {statedict}", "not a boosting-tickets model checkpoint"),
    C("ckpt-training-state", "evaluate {last}", "not a boosting-tickets model checkpoint"),
    C("ckpt-mask-file", "evaluate {mask}", "not a boosting-tickets model checkpoint"),
    C("ckpt-no-state-dict", "evaluate {nostate}", "no tensor state_dict"),
    C("ckpt-wrong-width", "evaluate {wrongshape}", "does not fit"),
    C("ckpt-nan-weights", "evaluate {nanckpt}", "NaN/inf weights"),
    # --- find-ticket ----------------------------------------------------------------------------
    C("find-sparsity-high", F + " --sparsity 1.5", "--sparsity must be in [0, 1)"),
    C("find-sparsity-one", F + " --sparsity 1", "--sparsity must be in [0, 1)"),
    C("find-sparsity-negative", F + " --sparsity -0.2", "--sparsity must be in [0, 1)"),
    C("find-sparsity-nan", F + " --sparsity nan", "--sparsity must be a finite number"),
    C("find-objective", F + " --objective trades", "unknown objective 'trades'"),
    C("find-criterion", F + " --criterion snap", "unknown criterion 'snap' for --criterion"),
    C("find-scope", F + " --prune-scope layerwise", "unknown prune scope 'layerwise'"),
    C("find-rewind-malformed", F + " --rewind epoch:x", "--rewind 'epoch:x' is malformed"),
    C("find-rewind-missing", F + " --rewind {root}/nope.pt", "neither init, epoch:K"),
    C("find-rewind-late", F + " --rewind epoch:3", "must be below --epochs"),
    # --- instability ----------------------------------------------------------------------------
    C("instab-alphas", "instability {run} --alphas 2 --out {out}/i", "--alphas must be >= 3"),
    C("instab-late", "instability {run} --steps 4 --out {out}/i", "has no state at step 4"),
    C("instab-repeat", "instability {run} --steps 1,1 --out {out}/i", "rewind point twice"),
    C("instab-neither", "instability {emptydir} --out {out}/i", "neither a run directory"),
    C("instab-same-noise", "instability {run} --noise-seed 0 --out {out}/i", "must differ"),
    C("instab-negative", "instability {run} --steps -1 --out {out}/i", "--steps must be >= 0"),
    C(
        "find-rewind-iter-late",
        F + " --rewind iter:4",
        "beyond the finding run's 4 optimizer steps",
    ),
    C("find-imp-rounds", F + " --imp-rounds 0", "--imp-rounds must be >= 1"),
    C("find-output-rate", F + " --output-rate 2", "--output-rate must be <= 1.0"),
    # --- bench run ------------------------------------------------------------------------------
    C("bench-unknown-suite", "bench run no-such-suite --out {out}", "no-such-suite"),
    C("bench-arm-kind", "bench run {suite_kind} --out {out}", "superticket"),
    C("bench-ticket-of", "bench run {suite_ticket_of} --out {out}", "nonexistent"),
    C("bench-seeds-type", "bench run {suite_seeds} --out {out}", "seeds"),
    C("bench-unknown-key", "bench run {suite_key} --out {out}", "unknown config key 'epoks'"),
    C("bench-arm-changes-split", "bench run {suite_split} --out {out}", "val_size"),
    C("bench-seeds-zero", "bench run {suite_ok} --seeds 0 --out {out}", "--seeds must be >= 1"),
    C("bench-seeds-text", "bench run {suite_ok} --seeds two --out {out}", "--seeds expects"),
    C("bench-other-suite", "bench run {suite_ok} --out {bench_other}", "holds results of suite"),
    C("bench-old-schema", "bench run {suite_ok} --out {bench_schema}", "schema version 0"),
    # --- tables ---------------------------------------------------------------------------------
    C("tables-missing-dir", "tables {root}/no-results --out {out}", "does not exist"),
    C("tables-no-results", "tables {emptydir} --out {out}", "no results files"),
    C("tables-schema", "tables {res_schema} --out {out}", "schema version 2"),
    C("tables-edited", "tables {res_edited} --out {out}", "fails its checksum"),
    C("tables-truncated", "tables {res_truncated} --out {out}", "not valid JSON"),
    C("tables-no-checksum", "tables {res_nochecksum} --out {out}", "has no checksum"),
    C("tables-bad-accuracy", "tables {res_badacc} --out {out}", "fractions in [0, 1]"),
    C("tables-mixed-protocols", "tables {res_mixed} --out {out}", "different protocols"),
    C("tables-out-is-file", "tables {res_good} --out {blocker}", "is a file"),
    # --- compare --------------------------------------------------------------------------------
    C("compare-no-models", "compare robustbench --out {out}/r.json", "no models given"),
    C("compare-bad-name", "compare robustbench --models ../evil --out {out}/r.json", "bad model"),
    C("compare-dataset", "compare robustbench --models X --dataset svhn", "unknown dataset 'svhn'"),
    C("compare-threat", "compare robustbench --models X --threat L1", "unknown threat 'L1'"),
    C("compare-n-zero", "compare robustbench --models X --n-examples 0", "--n-examples must be"),
    C("compare-export-html", "compare export {xmlpage} --model-dir {out} --name X", "HTML page"),
    C("compare-export-no-name", "compare export {ckpt} --model-dir {out}", "--name"),
    # --- issue #12: values that ended as internal errors ------------------------------------
    C(
        "train-seed-2-64",
        T + " --seed 18446744073709551616",
        "--seed must be <= 9223372036854775807",
    ),
    C(
        "train-seed-2-63",
        T + " --seed 9223372036854775808",
        "--seed must be <= 9223372036854775807",
    ),
    C("train-data-seed-huge", T + " --data-seed 9223372036854775808", "--data-seed must be <="),
    C("train-eval-seed-huge", T + " --eval-seed 9223372036854775808", "--eval-seed must be <="),
    C("toml-seed-huge", T + " --config {toml_seed}", "--seed must be <= 9223372036854775807"),
    C("suite-seed-huge", "bench run {suite_seed_huge} --out {out}", "seeds must be integers in"),
    C("suite-seed-count-huge", "bench run {suite_seed_count} --out {out}", "use a count in"),
    C("toml-binary", T + " --config {toml_binary}", "not valid TOML"),
    C("toml-utf16", T + " --config {toml_utf16}", "not valid TOML"),
    C("toml-fifo", T + " --config {fifo}", "is not a regular file"),
    C("train-out-name-too-long", T.replace("{out}", "{out}/" + "a" * 300), "is over 255 bytes"),
    C("bench-out-name-too-long", "bench run {suite_ok} --out {out}/" + "b" * 300, "over 255 bytes"),
    C("eval-seed-negative", E + " --seed -7", "--seed must be >= 0, got -7"),
    C("eval-seed-huge", E + " --seed 9223372036854775808", "--seed must be <="),
    C("eval-lr-style-div-zero", E + " --step-size 1/0", "--step-size expects"),
    # --- issue #12: checkpoints ---------------------------------------------------------------
    C("ckpt-huge-arch", "evaluate {huge_arch}", "out of bounds"),
    C("ckpt-arch-name-type", "evaluate {arch_type}", "names no valid architecture"),
    C("ckpt-arch-classes", "evaluate {arch_classes}", "num_classes = -3"),
    C("ckpt-int64-weights", "evaluate {int64_weights}", "stores conv1.weight as torch.int64"),
    C("ckpt-float16-weights", "evaluate {half_weights}", "as torch.float16"),
    C("ckpt-version-99", "evaluate {version99}", "format version 99"),
    C("ckpt-fifo", "evaluate {fifo}", "is not a regular file"),
    # --- issue #12: resume states -------------------------------------------------------------
    C("resume-nan-last", "train --config {resume_nan_cfg} --out {resume_nan}", "NaN/inf weights"),
    C(
        "resume-negative-epoch",
        "train --config {resume_neg_cfg} --out {resume_neg}",
        "says epoch -3",
    ),  # fmt: skip
    C("resume-no-rng", "train --config {resume_norng_cfg} --out {resume_norng}", "lacks rng"),
    C(
        "resume-rows-mismatch",
        "train --config {resume_rows_cfg} --out {resume_rows}",
        "metrics rows that do not match",
    ),  # fmt: skip
    C(
        "resume-init-list",
        "train --config {resume_init_cfg} --out {resume_init}",
        "is not a model checkpoint",
    ),  # fmt: skip
    # --- issue #12: results files with a valid checksum and wrong content ---------------------
    C("tables-suite-escape", "tables {res_escape} --out {out}", "is not a safe name"),
    C("tables-arm-escape", "tables {res_arm_escape} --out {out}", "arm '../x' is not a safe name"),
    C("tables-model-slash", "tables {res_model_slash} --out {out}", "model 'a/b' is not a safe"),
    C("tables-params-negative", "tables {res_params} --out {out}", "params=-5"),
    C("tables-nonzero-float", "tables {res_nonzero} --out {out}", "nonzero_params=1.5"),
    C("tables-sparsity-high", "tables {res_sparsity} --out {out}", "sparsity=7.0"),
    C("tables-acc-bool", "tables {res_acc_bool} --out {out}", "clean_acc=True"),
    C("tables-acc-negative", "tables {res_acc_neg} --out {out}", "clean_acc=-3"),
    C("tables-final-acc", "tables {res_final_acc} --out {out}", "final_pgd_acc=1.5"),
    C("tables-seed-negative", "tables {res_seed} --out {out}", "seed=-1"),
    C("tables-seed-float", "tables {res_seed_float} --out {out}", "seed=0.5"),
    C("tables-n-negative", "tables {res_n} --out {out}", "n=-10"),
    C("tables-epochs-text", "tables {res_epochs} --out {out}", "epochs='four'"),
    C("tables-seconds-nan", "tables {res_seconds} --out {out}", "train_seconds="),
    C("tables-status-type", "tables {res_status} --out {out}", "status 3"),
    C("tables-no-protocol", "tables {res_noprotocol} --out {out}", "has no evaluation protocol"),
    C("tables-protocol-no-eps", "tables {res_noeps} --out {out}", "has no evaluation protocol"),
    C("tables-rows-not-list", "tables {res_rows_dict} --out {out}", "rows is not a list"),
    C("tables-row-not-object", "tables {res_row_str} --out {out}", "is not an object"),
    C("tables-schema-99", "tables {res_schema99} --out {out}", "schema version 99"),
    C("tables-fifo-json", "tables {res_fifo} --out {out}", "is not a regular file"),
    C("tables-kind-unknown", "tables {res_kind} --out {out}", "unknown kind 'superticket'"),
    C("tables-source-unknown", "tables {res_source} --out {out}", "source 'guessed'"),
    C("tables-dataset-space", "tables {res_dataset} --out {out}", "dataset 'my data'"),
    C("bench-schema-99", "bench run {suite_ok} --out {bench_schema99}", "schema version 99"),
    C("tables-acc-string", "tables {res_acc_str} --out {out}", "clean_acc='0.5'"),
    C("tables-acc-infinite", "tables {res_acc_inf} --out {out}", "fgsm_acc='inf'"),
    C("tables-sparsity-negative", "tables {res_sparsity_neg} --out {out}", "sparsity=-0.1"),
    C("tables-params-bool", "tables {res_params_bool} --out {out}", "params=True"),
    C("ckpt-arch-channels", "evaluate {arch_channels}", "in_channels = 0"),
    C("ckpt-arch-long-name", "evaluate {arch_long}", "names no valid architecture"),
    # --- tables: more escapes through the suite field ------------------------------------------
    C("tables-suite-absolute", "tables {res_abs} --out {out}", "is not a safe name"),
    C("tables-suite-dotdot", "tables {res_dotdot} --out {out}", "is not a safe name"),
    C("tables-suite-empty", "tables {res_empty_suite} --out {out}", "is not a safe name"),
    C("tables-suite-number", "tables {res_num_suite} --out {out}", "is not a safe name"),
    # --- doctor and the group -------------------------------------------------------------------
    C("doctor-unknown-flag", "doctor --fix", "No such option '--fix'"),
    C("doctor-extra-arg", "doctor now", "unexpected extra argument"),
    C("unknown-command", "trian", "No such command 'trian'", group_only=True),
]


def _toml(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


SUITE = """description = "bad-input fixture"
seeds = {seeds}
device = "cpu"
[compare]
allow_weak_stats = true
[run.data]
dataset = "synthetic"
train_subset = 64
val_size = 16
test_subset = 16
batch_size = 16
[run.model]
model = "wrn-10-1"
[run.train]
epochs = 1
{train_extra}
[[arms]]
name = "dense"
kind = "{kind}"
{arm_extra}
"""


def _suite(path: Path, **kw: str) -> str:
    fields = {"seeds": "[0]", "train_extra": "", "kind": "dense", "arm_extra": "", **kw}
    return _toml(path, SUITE.format(**fields))


def _results(path: Path, *, suite: str = "fixture", eps: float = 0.1, acc: float = 0.5) -> Path:
    protocol = {k: None for k in PROTOCOL_KEYS} | {"threat_model": "Linf", "eps": eps}
    row = {
        "arm": "dense", "kind": "dense", "source": "measured", "seed": 0, "dataset": "synthetic",
        "model": "wrn-10-1", "params": 10, "nonzero_params": 10, "clean_acc": acc,
        "fgsm_acc": 0.2, "pgd_acc": 0.1,
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    write_results(path, suite=suite, protocol=protocol, rows=[row], environment={})
    return path


def _edit_json(path: Path, *, checksum: bool = False, **changes) -> None:
    """Change top-level fields; ``checksum=True`` re-signs the file (as another version would)."""
    doc = json.loads(path.read_text())
    doc.update(changes)
    if checksum:
        atomic_write_json(path, {k: v for k, v in doc.items() if k != "sha256"}, checksum=True)
    else:
        path.write_text(json.dumps(doc))  # the old checksum no longer matches


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict[str, str]:
    """A workspace of good and bad files; every case formats its argv with these paths."""
    from boosting_tickets.tickets.config import FindConfig, FindTrainConfig
    from boosting_tickets.tickets.finding import find_ticket

    root = tmp_path_factory.mktemp("bad-inputs")
    p: dict[str, str] = {"root": str(root), "out": str(root / "out")}
    (root / "out").mkdir()

    cfg = small_config(epochs=1)
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, test_eval=False))
    run = root / "run"
    train(cfg, run)
    p.update(run=str(run), ckpt=str(run / "best.pt"), last=str(run / "last.pt"))

    fc = FindConfig(
        data=cfg.data,
        model=cfg.model,
        train=FindTrainConfig(epochs=1, progress=False),
        eval=cfg.eval,
    )
    ticket = find_ticket(fc, root / "tickets")
    p.update(ticket=str(ticket.dir), mask=str(Path(ticket.dir) / "mask.pt"))
    bad = root / "ticket-badmask"
    bad.mkdir()
    for name in ("ticket.json", "rewind.pt", "hparams.json"):
        (bad / name).write_bytes((Path(ticket.dir) / name).read_bytes())
    other = build_model("wrn-10-2", num_classes=10, in_channels=1, mean=None, std=None)
    Mask.ones(prunable_parameters(other)).save(bad / "mask.pt")  # a WRN-10-2 mask
    p["ticket_badmask"] = str(bad)
    # train --ticket reads the finding run's settings: a ticket without them, or with bad ones.
    for name, record in (("nohparams", None), ("badhparams", "many")):
        d = root / f"ticket-{name}"
        shutil.copytree(ticket.dir, d, ignore=shutil.ignore_patterns("level_*", "rewind_*"))
        if record is None:
            (d / "hparams.json").unlink()
        else:
            doc = json.loads((d / "hparams.json").read_text())
            doc["config"]["data"]["train_subset"] = record
            (d / "hparams.json").write_text(json.dumps(doc))
        p[f"ticket_{name}"] = str(d)

    ckpt = torch.load(run / "best.pt", weights_only=True)
    blocker = root / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    p["blocker"] = str(blocker)
    (root / "empty").mkdir()
    p["emptydir"] = str(root / "empty")
    standalone = root / "standalone.pt"
    standalone.write_bytes((run / "best.pt").read_bytes())
    p["standalone"] = str(standalone)

    garbage = root / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 8)
    badzip = root / "badzip.pt"
    data = bytearray((run / "best.pt").read_bytes())
    with zipfile.ZipFile(run / "best.pt") as zf:
        big = max(zf.infolist(), key=lambda i: i.compress_size)
    data[big.header_offset + 30 + len(big.filename) + big.compress_size // 2] ^= 0xFF  # flip a bit
    badzip.write_bytes(bytes(data))
    legacy = root / "legacy.pt"
    torch.save(ckpt, legacy, _use_new_zipfile_serialization=False)
    blob = legacy.read_bytes()
    legacy.write_bytes(blob[: len(blob) // 2])
    xml = root / "s3-error.pt"
    xml.write_text('<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>')
    statedict = root / "statedict.pt"
    torch.save(ckpt["state_dict"], statedict)
    nostate = root / "nostate.pt"
    torch.save({k: v for k, v in ckpt.items() if k != "state_dict"}, nostate)
    wrong = root / "wrongshape.pt"
    torch.save({**ckpt, "arch": {**ckpt["arch"], "model": "wrn-10-2"}}, wrong)
    nan = root / "nan.pt"
    sd = dict(ckpt["state_dict"])
    first = next(k for k, v in sd.items() if v.is_floating_point())
    sd[first] = sd[first].clone().fill_(float("nan"))
    torch.save({**ckpt, "state_dict": sd, "format": MODEL_FORMAT}, nan)
    p.update(
        garbage=str(garbage), badzip=str(badzip), legacy_truncated=str(legacy), xmlpage=str(xml),
        statedict=str(statedict), nostate=str(nostate), wrongshape=str(wrong), nanckpt=str(nan),
    )  # fmt: skip

    p["toml_type"] = _toml(root / "type.toml", '[train]\nepochs = "three"\n')
    p["toml_list"] = _toml(root / "list.toml", "[train]\nlr = [0.1]\n")
    p["toml_section"] = _toml(root / "section.toml", "train = 5\n")
    p["toml_unknown"] = _toml(root / "unknown.toml", "[optim]\nlr = 0.1\n")
    p["toml_syntax"] = _toml(root / "syntax.toml", "[train\nepochs = 3\n")

    s = root / "suites"
    s.mkdir()
    p["suite_ok"] = _suite(s / "ok.toml")
    p["suite_kind"] = _suite(s / "kind.toml", kind="superticket")
    p["suite_ticket_of"] = _suite(
        s / "ticket_of.toml", kind="reinit", arm_extra='ticket_of = "nonexistent"'
    )
    p["suite_seeds"] = _suite(s / "seeds.toml", seeds='"two"')
    p["suite_key"] = _suite(s / "key.toml", train_extra="epoks = 3")
    p["suite_split"] = _suite(s / "split.toml", arm_extra="run.data.val_size = 8")
    _results(root / "bench-other" / "results.json", suite="other")
    p["bench_other"] = str(root / "bench-other")
    _edit_json(
        _results(root / "bench-schema" / "results.json", suite="ok"), schema=0, checksum=True
    )
    p["bench_schema"] = str(root / "bench-schema")

    p["res_good"] = str(_results(root / "res-good" / "results.json"))
    _edit_json(_results(root / "res-schema" / "results.json"), schema=2, checksum=True)
    p["res_schema"] = str(root / "res-schema")
    _edit_json(_results(root / "res-edited" / "results.json"), suite="renamed")
    p["res_edited"] = str(root / "res-edited")
    trunc = _results(root / "res-truncated" / "results.json")
    trunc.write_text(trunc.read_text()[:-80])
    p["res_truncated"] = str(root / "res-truncated")
    nock = _results(root / "res-nochecksum" / "results.json")
    doc = json.loads(nock.read_text())
    del doc["sha256"]
    nock.write_text(json.dumps(doc))
    p["res_nochecksum"] = str(root / "res-nochecksum")
    # A file written by another tool (the checksum is valid, the accuracy is a percentage).
    bad_acc = _results(root / "res-badacc" / "results.json")
    doc = json.loads(bad_acc.read_text())
    doc["rows"][0]["clean_acc"] = 85.0
    atomic_write_json(bad_acc, {k: v for k, v in doc.items() if k != "sha256"}, checksum=True)
    p["res_badacc"] = str(root / "res-badacc")
    _results(root / "res-mixed" / "a" / "results.json", eps=0.1)
    _results(root / "res-mixed" / "b" / "results.json", eps=0.2)
    p["res_mixed"] = str(root / "res-mixed")
    _hardening_files(root, p, run, ckpt, cfg)
    return p


def _signed(path: Path, doc: dict) -> None:
    atomic_write_json(path, {k: v for k, v in doc.items() if k != "sha256"}, checksum=True)


def _bad_results(root: Path, name: str, *, row: dict | None = None, **top) -> str:
    """A results file with a valid checksum and one bad field (as a hostile tool would write)."""
    path = _results(root / name / "results.json")
    doc = json.loads(path.read_text())
    if row:
        doc["rows"][0].update(row)
    doc.update(top)
    _signed(path, doc)
    return str(path.parent)


def _resume_case(root: Path, name: str, cfg, edit) -> tuple[str, str]:
    """A run directory trained 1 of 2 epochs whose last.pt (or init.pt) ``edit`` damages, and
    a config file for 'train --out' to resume it (3 epochs)."""
    from boosting_tickets.core.config import non_default
    from boosting_tickets.training.run import run_dir_for

    c2 = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=3))
    run = run_dir_for(c2, root / name)
    with pytest.raises(KeyboardInterrupt):  # interrupted in epoch 2: last.pt of epoch 1 stays
        train(c2, run, log=_stop_in_epoch_2)
    edit(run)
    lines = []
    for key, value in non_default(c2).items():
        section, field = key.split(".", 1)
        lines.append((section, field, value))
    text = ""
    for section in ("data", "model", "train", "eval"):
        text += f"[{section}]\n" + "".join(
            f"{f} = {json.dumps(list(v) if isinstance(v, tuple) else v)}\n"
            for sec, f, v in lines
            if sec == section
        )
    cfg_path = root / name / "cfg.toml"
    cfg_path.write_text(text)
    return str(cfg_path), str(root / name)


def _stop_in_epoch_2(msg: str) -> None:
    if msg.startswith("epoch 2/"):
        raise KeyboardInterrupt


def _edit_last(**changes):
    def edit(run: Path) -> None:
        state = torch.load(run / "last.pt", weights_only=True)
        for k, v in changes.items():
            if v is _DROP:
                state.pop(k)
            elif callable(v):
                state[k] = v(state[k])
            else:
                state[k] = v
        torch.save(state, run / "last.pt")

    return edit


_DROP = object()


def _nan_weights(sd: dict) -> dict:
    out = dict(sd)
    k = next(k for k, v in out.items() if v.is_floating_point())
    out[k] = out[k].clone().fill_(float("nan"))
    return out


def _hardening_files(root: Path, p: dict, run: Path, ckpt: dict, cfg) -> None:
    import os

    fifo = root / "fifo.json"
    os.mkfifo(fifo)
    p["fifo"] = str(fifo)
    p["toml_seed"] = _toml(root / "seed.toml", "[train]\nseed = 9223372036854775808\n")
    (root / "binary.toml").write_bytes(bytes(range(256)))
    p["toml_binary"] = str(root / "binary.toml")
    (root / "utf16.toml").write_bytes("[train]\nepochs = 2\n".encode("utf-16"))
    p["toml_utf16"] = str(root / "utf16.toml")
    s = root / "suites"
    p["suite_seed_huge"] = _suite(s / "seedhuge.toml", seeds="[9223372036854775808]")
    p["suite_seed_count"] = _suite(s / "seedcount.toml", seeds="100000000000")

    def variant(name: str, **changes) -> str:
        path = root / f"{name}.pt"
        torch.save({**ckpt, **changes}, path)
        return str(path)

    p["huge_arch"] = variant("huge", arch={**ckpt["arch"], "model": "wrn-1000000-1000"})
    p["arch_type"] = variant("archtype", arch={**ckpt["arch"], "model": 7})
    p["arch_classes"] = variant("archclasses", arch={**ckpt["arch"], "num_classes": -3})
    sd = dict(ckpt["state_dict"])
    p["int64_weights"] = variant(
        "int64", state_dict={**sd, "conv1.weight": sd["conv1.weight"].long()}
    )
    p["half_weights"] = variant(
        "half", state_dict={**sd, "conv1.weight": sd["conv1.weight"].half()}
    )
    p["version99"] = variant("v99", version=99)
    p["arch_channels"] = variant("archchannels", arch={**ckpt["arch"], "in_channels": 0})
    p["arch_long"] = variant("archlong", arch={**ckpt["arch"], "model": "wrn-10-1" * 20})

    for key, edit in {
        "resume_nan": _edit_last(model=_nan_weights),
        "resume_neg": _edit_last(epoch=-3),
        "resume_norng": _edit_last(rng=_DROP),
        "resume_rows": _edit_last(metrics=lambda rows: rows + rows),
        "resume_init": lambda r: torch.save([1, 2, 3], r / "init.pt"),
    }.items():
        p[f"{key}_cfg"], p[key] = _resume_case(root, key, cfg, edit)

    p["res_escape"] = _bad_results(root, "res-escape", suite="../../../x")
    p["res_abs"] = _bad_results(root, "res-abs", suite="/tmp/x")
    p["res_dotdot"] = _bad_results(root, "res-dotdot", suite="a..b")
    p["res_empty_suite"] = _bad_results(root, "res-empty-suite", suite="")
    p["res_num_suite"] = _bad_results(root, "res-num-suite", suite=5)
    p["res_arm_escape"] = _bad_results(root, "res-arm", row={"arm": "../x"})
    p["res_model_slash"] = _bad_results(root, "res-model", row={"model": "a/b"})
    p["res_dataset"] = _bad_results(root, "res-dataset", row={"dataset": "my data"})
    p["res_params"] = _bad_results(root, "res-params", row={"params": -5})
    p["res_nonzero"] = _bad_results(root, "res-nonzero", row={"nonzero_params": 1.5})
    p["res_sparsity"] = _bad_results(root, "res-sparsity", row={"sparsity": 7.0})
    p["res_acc_bool"] = _bad_results(root, "res-acc-bool", row={"clean_acc": True})
    p["res_acc_neg"] = _bad_results(root, "res-acc-neg", row={"clean_acc": -3})
    p["res_final_acc"] = _bad_results(root, "res-final", row={"final_pgd_acc": 1.5})
    p["res_seed"] = _bad_results(root, "res-seed", row={"seed": -1})
    p["res_seed_float"] = _bad_results(root, "res-seed-float", row={"seed": 0.5})
    p["res_n"] = _bad_results(root, "res-n", row={"n": -10})
    p["res_epochs"] = _bad_results(root, "res-epochs", row={"epochs": "four"})
    p["res_seconds"] = _bad_results(root, "res-seconds", row={"train_seconds": -1.0})
    p["res_status"] = _bad_results(root, "res-status", row={"status": 3})
    p["res_acc_str"] = _bad_results(root, "res-acc-str", row={"clean_acc": "0.5"})
    p["res_acc_inf"] = _bad_results(root, "res-acc-inf", row={"fgsm_acc": float("inf")})
    p["res_sparsity_neg"] = _bad_results(root, "res-sparsity-neg", row={"sparsity": -0.1})
    p["res_params_bool"] = _bad_results(root, "res-params-bool", row={"params": True})
    p["res_kind"] = _bad_results(root, "res-kind", row={"kind": "superticket"})
    p["res_source"] = _bad_results(root, "res-source", row={"source": "guessed"})
    p["res_noprotocol"] = _bad_results(root, "res-noprotocol", protocol={})
    p["res_noeps"] = _bad_results(root, "res-noeps", protocol={"threat_model": "Linf"})
    p["res_rows_dict"] = _bad_results(root, "res-rows-dict", rows={"a": 1})
    p["res_row_str"] = _bad_results(root, "res-row-str", rows=["dense"])
    p["res_schema99"] = _bad_results(root, "res-schema99", schema=99)
    (root / "res-fifo").mkdir()
    os.mkfifo(root / "res-fifo" / "results.json")
    p["res_fifo"] = str(root / "res-fifo")
    _edit_json(
        _results(root / "bench-schema99" / "results.json", suite="ok"), schema=99, checksum=True
    )
    p["bench_schema99"] = str(root / "bench-schema99")


def _state(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and directory or FIFO (None) under ``root``."""
    return {
        str(q.relative_to(root)): (q.read_bytes() if q.is_file() else None)
        for q in sorted(root.rglob("*"))
    }


def test_the_matrix_is_comprehensive():
    assert len(CASES) >= 150 and len({c.id for c in CASES}) == len(CASES)
    commands = {c.command for c in CASES}
    for command in ("train", "evaluate", "find-ticket", "bench run", "tables", "compare",
                    "instability"):  # fmt: skip
        assert any(c == command or c.startswith(command) for c in commands), command
    assert "doctor" in commands and "" in commands  # "": the group itself


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_one_line_and_changes_nothing(case, ws, capsys):
    if not registered(case.command):
        pytest.skip(f"'{case.command}' is not registered in this version of the CLI")
    argv = [a.format(**ws) for a in case.argv]
    root = Path(ws["root"])
    before = _state(root)
    code, out, err = cli_call(argv, capsys)
    assert code != 0, f"accepted: {out}"
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert case.expect in err, err
    assert _state(root) == before, "a refused command changed the workspace"


REAL_PROCESS = ["ckpt-garbage", "toml-wrong-type", "tables-mixed-protocols"]


@pytest.mark.parametrize("case_id", REAL_PROCESS)
def test_no_traceback_reaches_a_real_terminal(case_id, ws):
    case = next(c for c in CASES if c.id == case_id)
    if not registered(case.command):
        pytest.skip(f"'{case.command}' is not registered in this version of the CLI")
    proc = run_cli(*(a.format(**ws) for a in case.argv))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert case.expect in proc.stderr and "Traceback" not in proc.stderr


def test_mixed_protocols_are_tabulated_only_when_asked(ws, tmp_path, capsys):
    """The refusal above is specific: asked to mix, tables shows each row with its protocol."""
    if not registered("tables"):
        pytest.skip("'tables' is not registered in this version of the CLI")
    out = tmp_path / "tables"
    argv = ["tables", ws["res_mixed"], "--out", str(out), "--no-figures", "--mix-protocols"]
    code, stdout, err = cli_call(argv, capsys)
    assert code == 0, err
    assert "Linf 0.1" in stdout and "Linf 0.2" in stdout
