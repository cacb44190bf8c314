"""Several processes on one run: who this process is, and the few collective operations we need.

Runs are spread over processes (one per GPU, or several on a CPU) by ``torchrun`` (or ``--nproc N``,
which starts it): each process is a *rank*; rank 0 is the *primary*, the only one that writes
files or prints. :func:`init_from_env` joins the process group that ``torchrun`` describes in the
environment (NCCL on GPUs, gloo on the CPU); :func:`current` describes the group this process is
in (a process alone is rank 0 of 1). The object is passed explicitly to whatever needs it.

Gradients are averaged by :meth:`Distributed.average_gradients` after every backward pass, weighted
by each rank's share of the global batch, so unequal shards (a last, smaller batch) average like
one batch; evaluation is sharded by batch and the per-image results are summed
(``adversarial.evaluation``), so every rank ends with exactly the single-process numbers.
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import UserError

#: How long a collective may wait for a slow rank (ticket finding runs on rank 0 only between
#: barriers, evaluation of a large test set too).
TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a group of ``world`` processes (``rank`` 0 is the primary)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = "none"

    @property
    def primary(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        """Wait for every rank (no-op alone)."""
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def sum_(self, tensor: Any) -> Any:
        """Sum ``tensor`` over the ranks, in place (no-op alone); returns it."""
        if self.active:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (``[obj]`` alone)."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast_parameters(self, tensors: Iterable[Any]) -> None:
        """Make every rank's ``tensors`` (parameters and buffers) equal to the primary's."""
        if self.active:
            import torch.distributed as dist

            for t in tensors:
                dist.broadcast(t.data, src=0)

    def average_gradients(self, params: Sequence[Any], batch: int) -> None:
        """Replace each gradient by the batch-weighted mean over the ranks: this rank's
        gradient of its shard's mean loss counts ``batch`` / (the global batch) times."""
        if not self.active:
            return
        import torch
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = _flatten_dense_tensors([*grads, torch.tensor([1.0], device=grads[0].device)])
        flat[:-1].mul_(batch)
        flat[-1] = batch
        self.sum_(flat)
        flat[:-1].div_(flat[-1])
        for p, g in zip(params, _unflatten_dense_tensors(flat[:-1], grads), strict=True):
            if p.grad is None:
                p.grad = g
            else:
                p.grad.copy_(g)

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of a global batch of ``n`` items."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))


def current() -> Distributed:
    """The process group this process is in (rank 0 of 1 when there is none)."""
    if "torch.distributed" not in sys.modules:
        return Distributed()
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return Distributed()
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return Distributed(dist.get_rank(), dist.get_world_size(), local, dist.get_backend())


def launched_by_torchrun() -> bool:
    """Whether ``torchrun`` started this process as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "auto") -> Distributed:
    """Join the group ``torchrun`` described (NCCL for CUDA devices, else gloo), once."""
    if not launched_by_torchrun():
        return current()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        try:
            _join("nccl" if cuda else "gloo")
        except (RuntimeError, ValueError) as exc:
            detail = " ".join(str(exc).split())[:200]
            raise UserError(f"cannot join the torchrun process group ({detail})") from None
    return current()


def _join(backend: str) -> None:
    """``init_process_group`` from torchrun's environment. After an elastic restart the agent's
    store still holds the previous attempt's addresses (pytorch/pytorch#167288: ranks then dial
    dead peers), so each attempt gets keys of its own under a prefix."""
    import torch.distributed as dist

    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if restart is None or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        dist.init_process_group(backend, timeout=TIMEOUT)
        return
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    agent = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          is_master=False, timeout=TIMEOUT)  # fmt: skip
    store = dist.PrefixStore(f"boosting-tickets/attempt-{restart}/", agent)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=TIMEOUT)


def check_nproc(nproc: int, device: str) -> None:
    """Refuse ``--nproc`` below 1 or above the devices there are (GPUs, or CPU cores)."""
    import torch

    if nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {nproc}")
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    have = torch.cuda.device_count() if cuda else (os.cpu_count() or 1)
    if nproc > have:
        what = "GPUs" if cuda else "CPU cores"
        raise UserError(f"--nproc {nproc} exceeds the {have} {what} here; use at most {have}")


def check_global_batch(batch_size: int, world: int) -> None:
    """The global batch is split over the ranks: it must divide evenly."""
    if world > 1 and batch_size % world:
        raise UserError(
            f"--batch-size {batch_size} does not split over {world} processes; use a multiple of "
            f"{world} (the batch size is the global batch, split over the ranks)"
        )
