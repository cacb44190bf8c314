"""Robust accuracy against eps for the selected models of a suite (``[compare] eps_curve``).

After a run finishes, its held-out-selected model (``best.pt``) is attacked on the first
``eps_curve_n`` test images at every eps of the suite's list, with the suite's evaluation protocol
otherwise (PGD steps, restarts, random start, BN mode, seed) and the step scaled with eps (the
protocol's step / eps ratio, eps/4 by default). The result goes to ``eps_curve.json`` in the run
directory, written once under a claim (``core.claims``), so concurrent workers never compute it
twice; the results rows carry it and ``tables`` draws it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..core.claims import holding
from ..core.storage import atomic_write_json, read_json
from ..training.hparams import RunConfig, eval_protocol

FILE = "eps_curve.json"
FORMAT = "boosting-tickets/eps-curve"


def read_curve(run_dir: Path) -> dict[str, Any] | None:
    """The run's eps curve, or None when it has none (or an unreadable one)."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return None
    doc = read_json(path, what="eps curve", require_checksum=True)
    return doc if isinstance(doc, dict) and doc.get("format") == FORMAT else None


def ensure_curve(
    run_dir: Path, cfg: RunConfig, eps_values: tuple[float, ...], n: int, test: Any
) -> dict[str, Any]:
    """Compute (once) and return the eps curve of the run in ``run_dir`` on ``test`` (a split
    with ``images``/``labels``). Raises ClaimBusy while another worker computes it."""
    done = read_curve(run_dir)
    wanted = [float(e) for e in eps_values]
    if done is not None and [p["eps"] for p in done["points"]] == wanted and done["n"] == n:
        return done
    with holding(Path(run_dir) / "eps_curve", f"eps curve of {Path(run_dir).name}"):
        done = read_curve(run_dir)
        if done is not None and [p["eps"] for p in done["points"]] == wanted and done["n"] == n:
            return done
        return _compute(Path(run_dir), cfg, wanted, n, test)


def _compute(
    run_dir: Path, cfg: RunConfig, eps_values: list[float], n: int, test: Any
) -> dict[str, Any]:
    from ..adversarial.evaluation import evaluate
    from ..core.environment import environment_info, resolve_device
    from ..training.run import RunResult

    base = eval_protocol(cfg)
    ratio = base.pgd_spec().step_size / base.eps
    device = resolve_device(cfg.train.device)
    model = RunResult(run_dir, "complete", [], None).load_model("best", device=device)
    images, labels = test.images[:n], test.labels[:n]
    points = []
    for eps in eps_values:
        protocol = dataclasses.replace(base, eps=eps, step_size=eps * ratio, fgsm=False)
        res = evaluate(model, images, labels, protocol, batch_size=cfg.eval.eval_batch_size,
                       device=device, progress=False)  # fmt: skip
        points.append({"eps": eps, "clean_acc": res["clean_acc"], "pgd_acc": res["pgd_acc"],
                       "protocol": protocol.record(len(labels))})  # fmt: skip
    doc = {"format": FORMAT, "schema": 1, "n": len(labels), "points": points,
           "environment": environment_info(device)}  # fmt: skip
    atomic_write_json(run_dir / FILE, doc, checksum=True)
    return doc
