"""Planning a suite: its runs (arms x seeds), the protocol they share, and the dry-run report.

Nothing here imports torch or trains: ``bench run --dry-run`` prints :func:`format_plan` at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..core.config import config_hash
from ..core.errors import UserError
from ..models.registry import forward_flops
from ..report.formats import markdown_table
from ..report.published import published_tables
from ..training.hparams import RunConfig, eval_protocol, held_out_size, select_label
from ..training.objectives import objectives
from ..training.work import PAPER_DENSE_SECONDS, PAPER_HARDWARE, paper_implied_rate, train_passes
from .cost import CPU_EFFECTIVE_FLOPS, fmt_flops, fmt_seconds, run_flops, split_sizes
from .suites import Arm, Suite


@dataclass(frozen=True)
class PlannedRun:
    """One (arm, seed): the retraining config and, for ticket arms and controls, the find config."""

    arm: Arm
    seed: int
    run: RunConfig
    find: Any | None

    @property
    def control(self) -> str | None:
        return self.arm.kind_entry.control

    @property
    def transfer_head(self) -> str:
        """How a ticket found on another dataset gets this one's output layer."""
        return self.arm.transfer_head

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
    out = []
    for seed in suite.seeds if seeds is None else seeds:
        arms = sorted(suite.arms, key=lambda a: 0 if a.kind == "dense" else
                      (1 if a.kind_entry.finds else 2))  # fmt: skip
        for arm in arms:
            out.append(
                PlannedRun(arm, seed, suite.run_config(arm, seed), suite.find_config(arm, seed))
            )
    return out


def suite_protocol(cfg: RunConfig, n_test: int) -> dict[str, Any]:
    """The test protocol of a suite, with its dataset and how checkpoints are selected."""
    n_val = held_out_size(cfg)
    return {
        **eval_protocol(cfg).record(n_test),
        "dataset": cfg.data.dataset,
        "split": "test",
        "selection": f"best held-out {select_label(cfg)} accuracy over epochs, on {n_val} "
        "validation images (never the test set)",
        "val_examples": n_val,
    }


@dataclass(frozen=True)
class PlanLine:
    """Cost of one planned run (its ticket finding counted on the first run that needs it)."""

    run: PlannedRun
    forward_flops: float
    train_images: int
    retrain: dict[str, float]
    find: dict[str, float] | None  # None: no finding, or shared with an earlier line


def cost_plan(plan: Sequence[PlannedRun]) -> list[PlanLine]:
    """The cost model (:mod:`.cost`) applied to every planned run."""
    lines = []
    seen_find: set[str] = set()
    for pr in plan:
        sizes = split_sizes(pr.run)
        fwd = forward_flops(pr.run.model.model, sizes.channels, sizes.size, sizes.num_classes)
        find = None
        if pr.find is not None and pr.find_key not in seen_find:
            seen_find.add(pr.find_key)  # type: ignore[arg-type]
            find = run_flops(pr.find.run_config(), sizes, fwd)
        lines.append(PlanLine(pr, fwd, sizes.train, run_flops(pr.run, sizes, fwd), find))
    return lines


def _plan_table(lines: Sequence[PlanLine]) -> str:
    table = []
    for i, ln in enumerate(lines, 1):
        pr, tc = ln.run, ln.run.run.train
        steps = f"-{tc.train_steps}" if objectives().get(tc.objective).multi_step else ""
        find_txt = "–"
        if pr.find is not None:
            ft = pr.find.train
            shared = "" if ln.find is not None else " (shared)"
            on = pr.find.data.dataset
            where = f" on {on}" if on != pr.run.data.dataset else ""
            find_txt = f"{ft.objective} {ft.epochs} ep lr {ft.lr:g}{where}{shared}"
        total = ln.retrain["total"] + (ln.find["total"] if ln.find else 0.0)
        table.append(
            [i, pr.arm.name, pr.seed, pr.arm.kind, pr.run.model.model, find_txt,
             f"{tc.objective}{steps}, {tc.epochs} ep", ln.train_images,
             f"{train_passes(tc):g}", fmt_flops(total)]
        )  # fmt: skip
    headers = ["#", "arm", "seed", "kind", "model", "ticket finding", "training", "train imgs",
               "passes/img", "cost"]  # fmt: skip
    return markdown_table(headers, table)


def _published_times(suite: Suite, plan: Sequence[PlannedRun], lines: Sequence[PlanLine]) -> list:
    """Arms with a published time beside their estimate (first seed, finding included)."""
    gpu_rate = paper_implied_rate()
    tables = published_tables()
    published = {
        row.arm: row
        for name in suite.reference
        for row in tables[name].rows
        if row.total_seconds is not None
    }
    if not published:
        return []
    out = [f"compared with the published times ({PAPER_HARDWARE}), at the implied rate:"]
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
    return out


def format_plan(suite: Suite, plan: Sequence[PlannedRun]) -> str:
    """The dry-run report: every run with its epochs and cost, totals, and time estimates."""
    lines = cost_plan(plan)
    sizes = split_sizes(suite.run)
    proto = suite_protocol(suite.run, sizes.test)
    seeds = ", ".join(map(str, sorted({p.seed for p in plan})))
    find_total = sum(ln.find["total"] for ln in lines if ln.find)
    train_total = sum(ln.retrain["total"] for ln in lines)
    total = find_total + train_total
    per_image = sorted(
        {f"{ln.run.run.model.model} {ln.forward_flops / 1e9:.4g} GFLOP/image" for ln in lines}
    )
    gpu_rate = paper_implied_rate()
    return "\n".join(
        [
            f"suite {suite.name} ({suite.path}): {suite.description}",
            f"intended device: {suite.device}; seeds: {seeds}; {len(plan)} runs",
            f"data: {suite.run.data.dataset}, {sizes.train} train / {sizes.val} held-out / "
            f"{sizes.test} test images",
            f"protocol: {'L2' if proto['threat_model'] == 'L2' else 'L∞'} eps {proto['eps']:.4g}, "
            f"PGD-{proto['pgd_steps']}{'-L2' if proto['threat_model'] == 'L2' else ''} step "
            f"{proto['step_size']:.4g}, {proto['restarts']} restart(s), random start "
            f"{proto['random_start']}, BN {proto['bn_mode']}, {proto['n_examples']} test images; "
            f"convergence target: {suite.compare.describe()}",
            _plan_table(lines),
            f"total: {fmt_flops(total)} = {fmt_flops(train_total)} training/retraining + "
            f"{fmt_flops(find_total)} for {sum(1 for ln in lines if ln.find)} ticket finding run(s)",
            "cost model: FLOPs = forward-equivalent passes per image (natural 3, FGSM 5, PGD-k "
            "2k+3; evaluation 4 + r(2k+1), no early exit) x images x epochs x the model's forward "
            f"FLOPs (counted per layer, as torch's FlopCounterMode: {', '.join(per_image)}); masked "
            "weights are still computed",
            f"estimated time: {fmt_seconds(total / CPU_EFFECTIVE_FLOPS)} on this project's CPU "
            f"(effective {CPU_EFFECTIVE_FLOPS / 1e9:.3g} GFLOP/s, measured with the quick suite on "
            f"one thread); {fmt_seconds(total / gpu_rate)} on {PAPER_HARDWARE} at the "
            f"{gpu_rate / 1e12:.3g} TFLOP/s implied by the paper's {PAPER_DENSE_SECONDS:,.0f} s "
            "for dense WRN-34-10",
            *_published_times(suite, plan, lines),
            *(
                [
                    "structured tickets are costed at the dense network's FLOPs here (their slim widths "
                    "are known once found); their results record the work they really do"
                ]
                if any(not p.arm.is_control and p.arm.kind_entry.find_defaults for p in plan)
                else []
            ),
        ]
    )


def launch_estimate(plan: Sequence[PlannedRun], workers: int, gpus_per_worker: int) -> str:
    """The suite's wall time on ``workers`` workers (:mod:`.schedule`): each with
    ``gpus_per_worker`` V100-class GPUs (half the rate the paper's 2x V100 imply; several per
    worker scale ideally, an upper bound on DDP), or one CPU thread each when 0."""
    from .schedule import Task, describe, simulate

    lines = cost_plan(plan)
    if gpus_per_worker:
        rate = paper_implied_rate() / 2 * gpus_per_worker
        what = f"{gpus_per_worker} V100-class GPU(s)"
    else:
        rate, what = CPU_EFFECTIVE_FLOPS, "one CPU thread"
    finds = {ln.run.find_key: ln.find["total"] for ln in lines if ln.find is not None}
    tasks = [
        Task(ln.retrain["total"] / rate, ln.run.find_key,
             finds.get(ln.run.find_key, 0.0) / rate if ln.run.find_key else 0.0)
        for ln in lines
    ]  # fmt: skip
    return "estimated wall time: " + describe(simulate(tasks, workers), workers, what)


def check_statistics(suite: Suite, seeds: Sequence[int], *, allow: bool) -> list[str]:
    """Refuse, at planning time, a suite whose statistics cannot give a verdict: fewer seeds than
    an interval needs, or a fixed target at or below chance + 2 SE of the held-out set. With
    ``allow`` (``--allow-weak-stats`` or the suite's ``allow_weak_stats``) return the warnings
    instead. (A suite without a dense baseline is refused when it is read.)"""
    from ..data.registry import get_spec
    from ..report.stats import MIN_SEEDS
    from ..report.targets import chance_floor

    problems = []
    if len(seeds) < MIN_SEEDS:
        problems.append(
            f"suite {suite.name} runs {len(seeds)} seed(s); intervals and verdicts need at "
            f"least {MIN_SEEDS} (use --seeds {MIN_SEEDS})"
        )
    spec = get_spec(suite.run.data.dataset)
    floor = chance_floor(spec.num_classes, held_out_size(suite.run))
    target = suite.compare.target
    if target is not None and target <= floor:
        problems.append(
            f"suite {suite.name}: target {target:g} is at or below chance + 2 SE of its "
            f"{held_out_size(suite.run)} held-out images ({floor:.3f}); every arm reaches it by "
            "guessing (raise compare.target or val_size)"
        )
    if problems and not allow:
        raise UserError(
            "; ".join(problems) + "; or pass --allow-weak-stats to run it without verdicts"
        )
    return [f"warning: {p}; running anyway (--allow-weak-stats)" for p in problems]
