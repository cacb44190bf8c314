"""The benchmark runner: plan a suite (arms x seeds), estimate its cost, run it, write its results.

``run_suite`` loads the suite's data split once, then for every (arm, seed):

* dense arms train with ``training.train`` in ``<out>/runs/train_<hash>``;
* ticket arms find their ticket with ``tickets.find_ticket`` in ``<out>/tickets/ticket_<hash>`` and
  retrain it with ``tickets.retrain_ticket`` in ``<out>/runs/retrain_<hash>``; controls retrain the
  same ticket with ``control="reinit"`` (or a random mask).

Every stage is idempotent and resumable (hashed directories, ``last.pt``), so rerunning a suite reuses
finished runs and resumes an interrupted one. A run that fails (``training.TrainingFailed`` or any
other :class:`UserError`) is reported on the console and in the results file and never tabulated; the
other runs go on. After every run ``<out>/results.json`` is rewritten (``results.write_results``):
the protocol, the environment, one row per finished run with its best/final test accuracies, its
per-epoch held-out curve and convergence numbers, and wall times with ticket finding and retraining
kept apart.

Cost model (``plan_suite``/``format_plan``, what ``bench run --dry-run`` prints): the work of a run is
counted in forward-pass equivalents per image, times images, times epochs, times the model's forward
FLOPs (torch's FlopCounterMode on the meta device; multiply-adds count 2). A backward pass through
the whole network costs 2 forwards (input and weight gradients), an attack's input-gradient backward 1
(no weight gradients), so one image costs per training epoch: natural 3, FGSM 2+3 = 5, PGD-k 2k+3,
TRADES-k 2k+7; per evaluation (clean + FGSM + PGD-k with r restarts, no early exit, so an upper bound)
1 + 3 + r(2k+1). Pruned weights are still multiplied (masks zero them; no sparse kernels), so a ticket
costs what the dense network costs per epoch: the paper's saving comes from fewer PGD epochs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import config_hash, non_default
from .errors import UserError
from .hparams import EvalConfig, RunConfig, TrainConfig
from .suites import Arm, Suite, split_settings

RESULTS_NAME = "results.json"
Log = Callable[[str], None]

# Effective throughput used to turn the cost model's FLOPs into seconds. CPU: measured with the
# `quick` suite (WRN-10-1 on 28x28 Fashion-MNIST): 42.5 TFLOP by the cost model in 576 CPU-seconds,
# run with one thread on this project's shared 2-core machine. It folds in the early exit of the
# evaluation (the model counts every PGD step) and the small convolutions' low efficiency (the GEMM
# peak is ~118 GFLOP/s); a quiet 2-core run is faster, so CPU estimates err long. GPU: implied by
# the paper's 134,764 s for the dense WRN-34-10 (Table 3, 2x V100), from the same cost model.
CPU_EFFECTIVE_FLOPS = 7.4e10
PAPER_DENSE_SECONDS = 134764.0
PAPER_HARDWARE = "2x V100"


# --------------------------------------------------------------------------------------------------
# Planning and cost
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedRun:
    """One (arm, seed): the retraining config and, for ticket arms and controls, the find config."""

    arm: Arm
    seed: int
    run: RunConfig
    find: Any | None

    @property
    def control(self) -> str | None:
        return self.arm.kind if self.arm.is_control else None

    @property
    def find_key(self) -> str | None:
        """The hash naming the ticket directory (shared by a ticket arm and its controls)."""
        return None if self.find is None else config_hash(self.find)

    @property
    def title(self) -> str:
        return f"{self.arm.name} seed {self.seed}"


def plan_suite(suite: Suite, seeds: Sequence[int] | None = None) -> list[PlannedRun]:
    """Expand ``suite`` into runs, seed by seed so that early seeds complete every arm first;
    within a seed dense arms come first, then tickets, then controls."""
    order = {"dense": 0, "ticket": 1}
    out = []
    for seed in suite.seeds if seeds is None else seeds:
        arms = sorted(suite.arms, key=lambda a: order.get(a.kind, 2))
        for arm in arms:
            out.append(
                PlannedRun(arm, seed, suite.run_config(arm, seed), suite.find_config(arm, seed))
            )
    return out


def train_passes(tc: TrainConfig) -> float:
    """Forward-equivalent passes per training image per epoch (see the module docstring)."""
    if tc.objective == "natural":
        return 3.0
    if tc.objective in ("fgsm", "fgsm-rs"):
        return 5.0
    if tc.objective == "pgd":
        return 2.0 * tc.train_steps + 3.0
    return 2.0 * tc.train_steps + 7.0  # trades: clean forward + k steps + clean and adversarial


def eval_passes(ec: EvalConfig) -> float:
    """Forward-equivalent passes per evaluated image: clean, FGSM and PGD-k without early exit."""
    return 1.0 + 3.0 + ec.eval_restarts * (2.0 * ec.eval_steps + 1.0)


def forward_flops(model: str, channels: int, size: int, num_classes: int) -> float:
    """FLOPs of one forward pass of ``model`` on one (channels, size, size) image (2 per MAC).

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` on the meta device: no memory, no time.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .models import build_model

    with torch.device("meta"):
        net = build_model(model, num_classes=num_classes, in_channels=channels)
        x = torch.empty(1, channels, size, size)
    net.eval()
    with FlopCounterMode(display=False) as counter:
        net(x)
    return float(counter.get_total_flops())


@dataclass(frozen=True)
class SplitSizes:
    """Images per split of a suite's data settings (without loading the data)."""

    train: int
    val: int
    test: int
    channels: int
    size: int
    num_classes: int


def split_sizes(cfg: RunConfig) -> SplitSizes:
    """Sizes the data settings of ``cfg`` select, from the dataset's nominal sizes."""
    from .data import get_spec

    spec = get_spec(cfg.data.dataset)
    left = spec.train_size - cfg.data.val_size
    train = left if cfg.data.train_subset is None else min(cfg.data.train_subset, left)
    test = spec.test_size if cfg.data.test_subset is None else cfg.data.test_subset
    return SplitSizes(train, cfg.data.val_size, test, spec.channels, spec.size, spec.num_classes)


def run_flops(cfg: RunConfig, sizes: SplitSizes, fwd: float) -> dict[str, float]:
    """FLOPs of a training run: training, per-epoch held-out evaluation, final test evaluation."""
    ec = cfg.eval
    n_val = min(ec.val_examples or sizes.val, sizes.val)
    per_epoch_train = train_passes(cfg.train) * sizes.train * fwd
    per_epoch_eval = eval_passes(ec) * n_val * fwd
    test = 2 * eval_passes(ec) * sizes.test * fwd if ec.test_eval else 0.0  # best and final
    epochs = cfg.train.epochs
    return {
        "train": per_epoch_train * epochs,
        "eval": per_epoch_eval * epochs + test,
        "total": (per_epoch_train + per_epoch_eval) * epochs + test,
    }


def paper_implied_rate() -> float:
    """FLOP/s implied by the paper's 134,764 s for dense WRN-34-10 PGD-10 training (Table 3).

    Cost model: 100 epochs x 50,000 CIFAR-10 images x (2*10+3) passes x the forward FLOPs of
    WRN-34-10 on 32x32 (training only; the paper does not say what its time includes beyond that).
    """
    fwd = forward_flops("wrn-34-10", 3, 32, 10)
    return 100 * 50000 * (2 * 10 + 3) * fwd / PAPER_DENSE_SECONDS


@dataclass(frozen=True)
class PlanLine:
    """Cost of one planned run (its ticket finding counted on the first run that needs it)."""

    run: PlannedRun
    forward_flops: float
    train_images: int
    retrain: dict[str, float]
    find: dict[str, float] | None  # None: no finding, or shared with an earlier line


def cost_plan(plan: Sequence[PlannedRun]) -> list[PlanLine]:
    """The cost model applied to every planned run (see the module docstring)."""
    lines = []
    seen_find: set[str] = set()
    fwd_cache: dict[tuple, float] = {}
    for pr in plan:
        sizes = split_sizes(pr.run)
        key = (pr.run.model.model, sizes.channels, sizes.size, sizes.num_classes)
        if key not in fwd_cache:
            fwd_cache[key] = forward_flops(*key)
        fwd = fwd_cache[key]
        find = None
        if pr.find is not None and pr.find_key not in seen_find:
            seen_find.add(pr.find_key)  # type: ignore[arg-type]
            find = run_flops(pr.find.run_config(), sizes, fwd)
        lines.append(PlanLine(pr, fwd, sizes.train, run_flops(pr.run, sizes, fwd), find))
    return lines


def _fmt_seconds(s: float) -> str:
    """Seconds in the largest unit that keeps the number readable (s, min, h, days, years)."""
    for limit, div, unit in ((120, 1, "s"), (7200, 60, "min"), (172800, 3600, "h")):
        if s < limit:
            return f"{s / div:.1f} {unit}" if div > 1 else f"{s:.0f} s"
    days = s / 86400
    return f"{days:.1f} days" if days < 730 else f"{days / 365.25:.1f} years"


def _fmt_flops(x: float) -> str:
    """FLOPs with an SI prefix (GFLOP ... EFLOP)."""
    for div, unit in ((1e18, "EFLOP"), (1e15, "PFLOP"), (1e12, "TFLOP")):
        if x >= div:
            return f"{x / div:.3g} {unit}"
    return f"{x / 1e9:.3g} GFLOP"


def format_plan(suite: Suite, plan: Sequence[PlannedRun]) -> str:
    """The dry-run report: every run with its epochs and cost, totals, and time estimates."""
    from .published import TABLES
    from .reporting import markdown_table

    lines = cost_plan(plan)
    sizes = split_sizes(suite.run)
    proto = _protocol(suite.run, sizes.test)
    out = [
        f"suite {suite.name} ({suite.path}): {suite.description}",
        f"intended device: {suite.device}; seeds: {', '.join(map(str, sorted({p.seed for p in plan})))}"
        f"; {len(plan)} runs",
        f"data: {suite.run.data.dataset}, {sizes.train} train / {sizes.val} held-out / "
        f"{sizes.test} test images",
        f"protocol: L∞ eps {proto['eps']:.4g}, PGD-{proto['pgd_steps']} step "
        f"{proto['step_size']:.4g}, {proto['restarts']} restart(s), random start "
        f"{proto['random_start']}, BN {proto['bn_mode']}, {proto['n_examples']} test images; "
        f"convergence target: {suite.compare.describe()}",
    ]
    table = []
    for i, ln in enumerate(lines, 1):
        pr = ln.run
        tc = pr.run.train
        obj = tc.objective + (f"-{tc.train_steps}" if tc.objective in ("pgd", "trades") else "")
        find_txt = "–"
        if pr.find is not None:
            ft = pr.find.train
            shared = "" if ln.find is not None else " (shared)"
            find_txt = f"{ft.objective} {ft.epochs} ep lr {ft.lr:g}{shared}"
        total = ln.retrain["total"] + (ln.find["total"] if ln.find else 0.0)
        table.append(
            [
                i,
                pr.arm.name,
                pr.seed,
                pr.arm.kind,
                pr.run.model.model,
                find_txt,
                f"{obj}, {tc.epochs} ep",
                ln.train_images,
                f"{train_passes(tc):g}",
                _fmt_flops(total),
            ]
        )
    out.append(
        markdown_table(
            [
                "#",
                "arm",
                "seed",
                "kind",
                "model",
                "ticket finding",
                "training",
                "train imgs",
                "passes/img",
                "cost",
            ],
            table,
        )
    )
    find_total = sum(ln.find["total"] for ln in lines if ln.find)
    train_total = sum(ln.retrain["total"] for ln in lines)
    total = find_total + train_total
    n_find = sum(1 for ln in lines if ln.find)
    out.append(
        f"total: {_fmt_flops(total)} = {_fmt_flops(train_total)} training/retraining + "
        f"{_fmt_flops(find_total)} for {n_find} ticket finding run(s)"
    )
    out.append(
        "cost model: FLOPs = forward-equivalent passes per image (natural 3, FGSM 5, PGD-k 2k+3; "
        "evaluation 4 + r(2k+1), no early exit) x images x epochs x the model's forward FLOPs "
        "(torch FlopCounterMode: "
        + ", ".join(
            sorted(
                {
                    f"{ln.run.run.model.model} {ln.forward_flops / 1e9:.4g} GFLOP/image"
                    for ln in lines
                }
            )
        )
        + "); masked weights are still computed"
    )
    cpu_s = total / CPU_EFFECTIVE_FLOPS
    gpu_rate = paper_implied_rate()
    out.append(
        f"estimated time: {_fmt_seconds(cpu_s)} on this project's CPU (effective "
        f"{CPU_EFFECTIVE_FLOPS / 1e9:.3g} GFLOP/s, measured with the quick suite on one thread); "
        f"{_fmt_seconds(total / gpu_rate)} on {PAPER_HARDWARE} at the "
        f"{gpu_rate / 1e12:.3g} TFLOP/s implied by the paper's {PAPER_DENSE_SECONDS:,.0f} s for "
        "dense WRN-34-10"
    )
    # Set arms with a published time beside their estimate (same seed 0 run, find included).
    published = {
        row.arm: row
        for name in suite.reference
        for row in TABLES[name].rows
        if row.total_seconds is not None
    }
    if published:
        out.append(f"compared with the published times ({PAPER_HARDWARE}), at the implied rate:")
        find_by_key = {ln.run.find_key: ln.find for ln in lines if ln.find}
        first_seed = min(p.seed for p in plan)
        for ln in lines:
            pr = ln.run
            row = published.get(pr.arm.published or "")
            if row is None or pr.seed != first_seed:
                continue
            find = find_by_key.get(pr.find_key) if pr.find_key else None
            est = (ln.retrain["train"] + (find["train"] if find else 0.0)) / gpu_rate
            out.append(
                f"  {pr.arm.name}: estimated {est:,.0f} s training"
                + (f" (finding {find['train'] / gpu_rate:,.0f} s)" if find else "")
                + f" vs published {row.total_seconds:,.0f} s ({row.label})"
            )
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """A finished run of the suite and what the results rows need from it."""

    planned: PlannedRun
    result: Any  # training.RunResult
    ticket_meta: dict[str, Any] | None
    ticket_dir: Path | None
    params: tuple[int, int]


@dataclass
class Failure:
    """A run that raised a UserError (e.g. training.TrainingFailed) in ``stage`` find or train."""

    planned: PlannedRun
    stage: str  # "find" or "train"
    error: str
    run_dir: str | None = None


@dataclass
class BenchReport:
    """What ``run_suite`` did: results path, rows written, failures."""

    results_path: Path
    rows: list[dict[str, Any]]
    failures: list[Failure]
    wall_seconds: float


def _protocol(cfg: RunConfig, n_test: int) -> dict[str, Any]:
    from .training import eval_protocol

    n_val = min(cfg.eval.val_examples or cfg.data.val_size, cfg.data.val_size)
    return {
        **eval_protocol(cfg).record(n_test),
        "dataset": cfg.data.dataset,
        "split": "test",
        "selection": f"best held-out {_select_label(cfg)} accuracy over epochs, on {n_val} "
        "validation images (never the test set)",
        "val_examples": n_val,
    }


def _select_label(cfg: RunConfig) -> str:
    sel = cfg.train.select_metric
    if sel == "auto":
        sel = "clean" if cfg.train.objective == "natural" else f"PGD-{cfg.eval.eval_steps}"
    return sel


def _params(run_dir: Path) -> tuple[int, int]:
    from .checkpoints import load_model
    from .models import count_parameters

    model, _ = load_model(run_dir / "best.pt")
    return count_parameters(model)


def check_out_dir(out: Path, suite: Suite) -> None:
    """Refuse an --out directory whose results file belongs to another suite (never overwrite it)."""
    path = out / RESULTS_NAME
    if not path.exists():
        return
    from .results import read_results

    doc = read_results(path)
    if doc.get("suite") != suite.name:
        raise UserError(
            f"{path} holds results of suite '{doc.get('suite')}', not '{suite.name}'; "
            "choose another --out directory"
        )


def run_suite(
    suite: Suite,
    *,
    out: str | Path,
    seeds: Sequence[int] | None = None,
    log: Log | None = None,
    progress: bool | None = None,
    splits: Any = None,
) -> BenchReport:
    """Run (or reuse, or resume) every planned run of ``suite`` under ``out``; write results.json.

    ``progress``: show the suite's progress bar (None: only on a terminal). ``splits`` replaces
    loading the suite's data (e.g. a split already in memory).
    """
    from tqdm import tqdm

    from .environment import environment_info, resolve_device
    from .training import run_dir_for, train

    say = log or (lambda msg: None)
    out = Path(out)
    check_out_dir(out, suite)
    plan = plan_suite(suite, seeds)
    t_start = time.perf_counter()
    if splits is None:
        from .data import load_splits

        s = split_settings(suite.run)
        splits = load_splits(
            s["dataset"],
            s["data_dir"],
            train_subset=s["train_subset"],
            val_size=s["val_size"],
            test_subset=s["test_subset"],
            data_seed=s["data_seed"],
            allow_download=suite.run.data.download,
        )
    outcomes: list[Outcome] = []
    failures: list[Failure] = []
    tickets: dict[str, Any] = {}
    find_errors: dict[str, str] = {}
    device = resolve_device(suite.run.train.device)
    environment = environment_info(device)
    results_path = out / RESULTS_NAME

    def write(status: str) -> list[dict[str, Any]]:
        rows = build_rows(suite, outcomes, out)
        _write(
            results_path,
            suite,
            plan,
            rows,
            outcomes,
            failures,
            environment,
            len(splits.test.labels),
            status,
            time.perf_counter() - t_start,
        )
        return rows

    bar = tqdm(
        total=len(plan),
        desc=f"bench {suite.name}",
        unit="run",
        disable=None if progress is None else not progress,
    )
    try:
        for i, pr in enumerate(plan, 1):
            head = f"[{i}/{len(plan)}] {pr.title}"
            stage = "find"
            ticket = None
            try:
                if pr.find is not None:
                    key = pr.find_key
                    assert key is not None
                    if key in find_errors:
                        raise UserError(f"its ticket could not be found: {find_errors[key]}")
                    if key not in tickets:
                        from .tickets import find_ticket

                        say(f"{head}: finding ticket ({pr.find.train.objective} training)")
                        try:
                            tickets[key] = find_ticket(
                                pr.find, out / "tickets", log=say, splits=splits
                            )
                        except UserError as exc:
                            find_errors[key] = str(exc)
                            raise
                    ticket = tickets[key]
                stage = "train"
                if ticket is not None:
                    from .tickets import retrain_ticket

                    say(f"{head}: retraining {'the ticket' if not pr.control else pr.control}")
                    result = retrain_ticket(
                        pr.run,
                        ticket,
                        out=out / "runs",
                        control=pr.control,
                        log=say,
                        splits=splits,
                    )
                else:
                    run_dir = run_dir_for(pr.run, out / "runs")
                    say(f"{head}: training {run_dir}")
                    result = train(pr.run, run_dir, splits=splits, log=say)
            except UserError as exc:
                failures.append(Failure(pr, stage, str(exc)))
                say(f"{head}: FAILED ({stage}): {exc}")
                write("running")
                bar.update(1)
                continue
            outcomes.append(
                Outcome(
                    pr,
                    result,
                    None if ticket is None else dict(ticket.meta),
                    None if ticket is None else Path(ticket.dir),
                    _params(Path(result.run_dir)),
                )
            )
            test = (result.test or {}).get("best") or {}
            say(
                f"{head}: {result.status}; best test clean {_pct(test.get('clean_acc'))}, "
                f"PGD {_pct(test.get('pgd_acc'))}; {result.train_seconds:.0f} s training"
            )
            write("running")
            bar.update(1)
    finally:
        bar.close()
    status = "complete" if not failures else "complete-with-failures"
    rows = write(status)
    return BenchReport(results_path, rows, failures, time.perf_counter() - t_start)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


# --------------------------------------------------------------------------------------------------
# Results rows
# --------------------------------------------------------------------------------------------------

_CURVE_KEYS = (
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "val_clean",
    "val_fgsm",
    "val_pgd",
    "train_seconds",
    "cum_train_seconds",
    "eval_seconds",
    "overfit",
)


def _target(
    suite: Suite, outcome: Outcome, by_arm_seed: Mapping[tuple[str, int], Outcome]
) -> tuple[float | None, str | None]:
    """(target accuracy, baseline arm name) for ``outcome``'s convergence numbers."""
    from .convergence import best_epoch

    arm = outcome.planned.arm
    base = suite.baseline_of(arm)
    base_name = base.name if base is not None else None
    if suite.compare.target is not None:
        return suite.compare.target, base_name
    ref = outcome if base is None else by_arm_seed.get((base.name, outcome.planned.seed))
    if ref is None:
        return None, base_name
    best = best_epoch(ref.result.metrics)
    return (None if best is None else best[1] * suite.compare.target_fraction), base_name


def build_rows(suite: Suite, outcomes: Sequence[Outcome], out: Path) -> list[dict[str, Any]]:
    """One results row per finished run (results.REQUIRED_ROW_KEYS plus convergence and curve)."""
    from .convergence import summarize

    by_arm_seed = {(o.planned.arm.name, o.planned.seed): o for o in outcomes}
    rows = []
    for o in outcomes:
        pr, res = o.planned, o.result
        test = res.test or {}
        best, final = test.get("best") or {}, test.get("final") or {}
        target, baseline = _target(suite, o, by_arm_seed)
        meta = o.ticket_meta or {}
        find_train = float(meta.get("find_train_seconds", 0.0))
        conv = summarize(res.metrics, target=target, find_seconds=find_train)
        row: dict[str, Any] = {
            "arm": pr.arm.name,
            "label": pr.arm.label,
            "kind": pr.arm.row_kind,
            "source": "measured",
            "seed": pr.seed,
            "dataset": pr.run.data.dataset,
            "model": pr.run.model.model,
            "params": o.params[0],
            "nonzero_params": o.params[1],
            "sparsity": float(meta.get("sparsity", 0.0)),
            "n": best.get("n"),
            "clean_acc": best.get("clean_acc"),
            "fgsm_acc": best.get("fgsm_acc"),
            "pgd_acc": best.get("pgd_acc"),
            "best_epoch": best.get("epoch"),
            "final_clean_acc": final.get("clean_acc"),
            "final_fgsm_acc": final.get("fgsm_acc"),
            "final_pgd_acc": final.get("pgd_acc"),
            "flags": sorted(set(best.get("flags", [])) | set(final.get("flags", []))),
            "status": res.status,
            "template": pr.arm.template,
            "grid": {k: v for k, v in pr.arm.grid},
            "baseline": baseline,
            "control": pr.control,
            "ticket_of": pr.arm.ticket_of,
            "train_objective": pr.run.train.objective,
            "epochs": len(res.metrics),
            "train_seconds": res.train_seconds,
            "run_seconds": sum(r["train_seconds"] + r["eval_seconds"] for r in res.metrics),
            "find_train_seconds": find_train if o.ticket_meta else None,
            "find_wall_seconds": meta.get("find_wall_seconds"),
            "find_objective": meta.get("objective"),
            "find_lr": meta.get("find_lr"),
            "find_overfit": meta.get("catastrophic_overfitting"),
            "convergence": conv,
            "curve": [{k: r.get(k) for k in _CURVE_KEYS} for r in res.metrics],
            "run_dir": _rel(Path(res.run_dir), out),
            "ticket_dir": None if o.ticket_dir is None else _rel(o.ticket_dir, out),
        }
        if pr.arm.note:
            row["note"] = pr.arm.note
        rows.append(row)
    return rows


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _write(
    path: Path,
    suite: Suite,
    plan: Sequence[PlannedRun],
    rows: list[dict[str, Any]],
    outcomes: Sequence[Outcome],
    failures: Sequence[Failure],
    environment: Mapping[str, Any],
    n_test: int,
    status: str,
    wall: float,
) -> None:
    from .results import write_results

    finds: dict[str, dict[str, Any]] = {}
    for o in outcomes:
        if o.ticket_meta is not None:
            finds[o.ticket_meta["hash"]] = o.ticket_meta
    arms = []
    for arm in suite.arms:
        first = next((p for p in plan if p.arm.name == arm.name), None)
        if first is None:
            continue
        from .training import train_attack_spec

        attack = train_attack_spec(first.run)
        arms.append(
            {
                "name": arm.name,
                "label": arm.label,
                "kind": arm.kind,
                "template": arm.template,
                "grid": {k: v for k, v in arm.grid},
                "ticket_of": arm.ticket_of,
                "baseline": (b.name if (b := suite.baseline_of(arm)) else None),
                "note": arm.note,
                "run_settings": {
                    k: v for k, v in non_default(first.run).items() if k != "train.seed"
                },
                "train_attack": None if attack is None else attack.protocol(),
                "find_settings": None
                if first.find is None
                else {k: v for k, v in non_default(first.find).items() if k != "train.seed"},
            }
        )
    write_results(
        path,
        suite=suite.name,
        protocol=_protocol(suite.run, n_test),
        rows=rows,
        environment=environment,
        status=status,
        description=suite.description,
        suite_file=str(suite.path),
        reference=list(suite.reference),
        seeds=sorted({p.seed for p in plan}),
        compare=dataclasses.asdict(suite.compare) | {"describe": suite.compare.describe()},
        arms=arms,
        failed=[
            {
                "arm": f.planned.arm.name,
                "seed": f.planned.seed,
                "stage": f.stage,
                "error": f.error,
            }
            for f in failures
        ],
        wall_seconds={
            "this_invocation": wall,
            "find_train_seconds": sum(m.get("find_train_seconds", 0.0) for m in finds.values()),
            "find_wall_seconds": sum(m.get("find_wall_seconds", 0.0) for m in finds.values()),
            "train_seconds": sum(r["train_seconds"] for r in rows),
            "run_seconds": sum(r["run_seconds"] for r in rows),
            "covers": "find_*: every ticket-finding run once; train/run_*: every tabulated "
            "(re)training run (run = training + per-epoch held-out evaluation)",
        },
    )


def list_suites(directory: Path | None = None) -> list[dict[str, Any]]:
    """Name, device, arms, seeds, runs and description of every suite file (invalid ones say why)."""
    from .suites import SUITES_DIR, load_suite, suite_names

    d = SUITES_DIR if directory is None else directory
    out = []
    for name in suite_names(d):
        try:
            s = load_suite(name, d)
        except UserError as exc:
            out.append({"name": name, "error": str(exc)})
            continue
        out.append(
            {
                "name": name,
                "device": s.device,
                "arms": len(s.arms),
                "seeds": len(s.seeds),
                "runs": len(s.arms) * len(s.seeds),
                "description": s.description,
            }
        )
    return out
