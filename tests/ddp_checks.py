"""Run by ``tests/test_distributed.py`` under ``torchrun --nproc_per_node 2`` (gloo, CPU).

``python ddp_checks.py OUT REFERENCE`` with REFERENCE written by the single-process part of the
test (``reference.pt``: per-step weights and momentum of a 1-process run, and the single-process
evaluation of a fixed model). Every rank

* trains the same run with 2 ranks x B/2 and SyncBatchNorm; after every step it compares the
  weights with the 1-process run's after the same step, then adopts them (so each step is
  compared from identical starting points: PGD's sign would otherwise amplify float rounding);
* evaluates the fixed model sharded over the ranks (random starts, two restarts, several
  batches) and compares with the single-process numbers;
* records every file write it makes.

Rank r writes ``OUT/rank_r.json`` (not through the library) with what it found.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import boosting_tickets.core.storage as storage
from boosting_tickets.adversarial.evaluation import evaluate
from boosting_tickets.core.distributed import init_from_env
from boosting_tickets.training.loop import Callback
from boosting_tickets.training.run import train

sys.path.insert(0, str(Path(__file__).parent))
from support import ddp_reference_config, ddp_reference_protocol  # noqa: E402

WRITES: list[str] = []
_real_target = storage._atomic_target


def _recording_target(path: Path):  # noqa: ANN202 - a context manager, as the original
    WRITES.append(str(path))
    return _real_target(path)


storage._atomic_target = _recording_target


class TeacherForcing(Callback):
    """Compare each step with the reference run's, then continue from the reference's state."""

    def __init__(self, reference: list[dict]) -> None:
        self.reference, self.diffs = reference, []

    def on_step_end(self, state, step) -> None:  # noqa: ANN001
        ref = self.reference[len(self.diffs)]
        weights = state.model.state_dict()
        diff = max((weights[k].double() - v.double()).abs().max().item() for k, v in
                   ref["model"].items())  # fmt: skip
        self.diffs.append(diff)
        with torch.no_grad():
            for k, v in ref["model"].items():
                weights[k].copy_(v)
            for p, buf in zip(state.model.parameters(), ref["momentum"], strict=True):
                state.optimizer.state[p]["momentum_buffer"].copy_(buf)


def main(out: Path, reference_path: Path) -> None:
    torch.set_num_threads(1)
    dist = init_from_env("cpu")
    ref = torch.load(reference_path, weights_only=True)
    forcing = TeacherForcing(ref["steps"])
    result = train(ddp_reference_config(sync_bn=True), out / "run", callbacks=[forcing], dist=dist)
    model = result.load_model("final")
    model.load_state_dict(ref["eval_model"])
    images, labels = ref["eval_images"], ref["eval_labels"]
    sharded = evaluate(model, images, labels, ddp_reference_protocol(), batch_size=8,
                       num_classes=10, per_class=True, per_point=True, dist=dist)  # fmt: skip
    found = {
        "rank": dist.rank,
        "world": dist.world,
        "step_diffs": forcing.diffs,
        "eval": {
            k: sharded[k] for k in ("clean_acc", "fgsm_acc", "pgd_acc", "per_class", "per_point")
        },
        "writes": WRITES,
    }
    (out / f"rank_{dist.rank}.json").write_text(json.dumps(found))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
