"""Do torch's sparse formats speed up an unstructured ticket's layers here? (issue #14, part 4)

An 80–95% unstructured ticket keeps every dense FLOP: its zeros are multiplied like any weight. A
sparse kernel could skip them. Measured, interleaved in one process with the same thread count, on
one 3×3 convolution of a WRN-10-2 group-2 block (32 → 32 channels, 14×14 maps, batch 128, the
``--channels``/``--size``/``--batch`` defaults) at each ``--sparsities`` level, forward and
forward + backward (the gradient of the input and of the kept weights, as PGD training needs):

* ``dense``: ``F.conv2d`` with the masked (mostly zero) weight, what training runs today;
* ``csr``: im2col (``F.unfold``) then ``torch.sparse.mm`` of the weight in CSR layout with the
  columns, the backward through autograd of the same ops;
* ``coo``: the same with the weight in COO layout.

Every arm computes the same outputs (checked to float tolerance before timing). Reports the
median time per arm and the median paired ratio dense / sparse (> 1: sparse faster), and says
for each sparsity whether a sparse kernel wins; the toolkit uses one only where it does.

Run: ``python benchmarks/sparse_kernels.py [--quick] [--threads 1]``.
"""

from __future__ import annotations

import statistics
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from _common import (
    Arm,
    Measurement,
    config_command,
    interleave,
    run_command,
    timed,
    write_results,
)

from boosting_tickets.core.config import setting
from boosting_tickets.core.errors import UserError


@dataclass(frozen=True)
class SparseConfig:
    """Settings of the sparse-kernel benchmark."""

    channels: int = setting(32, "input and output channels of the convolution", low=1)
    size: int = setting(14, "height = width of the feature maps", low=3)
    batch: int = setting(128, "batch size", low=1)
    sparsities: tuple[float, ...] = setting(
        (0.8, 0.9, 0.95), "fractions of zero weights to measure (unstructured, random)"
    )
    threads: int | None = setting(1, "torch CPU threads, same for every arm", low=1)
    reps: int | None = setting(None, "timed repetitions per arm; none = 7 (3 with --quick)", low=1)
    quick: bool = setting(False, "short run: a smaller batch and fewer repetitions")
    seed: int = setting(0, "seed of the weights, the mask and the inputs", low=0)
    json_out: str | None = setting(None, "also write the measurements as JSON to this file")

    def validate(self) -> None:
        if not self.sparsities or any(not 0.0 <= s < 1.0 for s in self.sparsities):
            raise UserError(f"--sparsities must lie in [0, 1), got {self.sparsities}")


def _conv_as_matmul(x: torch.Tensor, w: Any, k: int, size: int) -> torch.Tensor:
    """3×3 'same' convolution as (C_out × C_in·9) @ im2col(x): ``w`` dense, CSR or COO."""
    n = x.shape[0]
    cols = F.unfold(x, k, padding=k // 2)  # (N, C_in·k·k, H·W)
    cols = cols.transpose(0, 1).reshape(cols.shape[1], -1)  # (C_in·k·k, N·H·W)
    out = torch.sparse.mm(w, cols) if w.layout != torch.strided else w @ cols
    return out.reshape(out.shape[0], n, size * size).transpose(0, 1).reshape(n, -1, size, size)


def _arms(cfg: SparseConfig, sparsity: float, backward: bool) -> list[Arm]:
    g = torch.Generator().manual_seed(cfg.seed)
    c, k, size = cfg.channels, 3, cfg.size
    batch = max(8, cfg.batch // 4) if cfg.quick else cfg.batch
    weight = torch.randn(c, c, k, k, generator=g) * (2.0 / (c * k * k)) ** 0.5
    weight = weight * (torch.rand(weight.shape, generator=g) >= sparsity)
    x = torch.rand(batch, c, size, size, generator=g)
    flat = weight.reshape(c, -1)
    layouts = {"dense": None, "csr": flat.to_sparse_csr(), "coo": flat.to_sparse_coo()}

    def make(name: str) -> Any:
        def step() -> torch.Tensor:
            xi = x.clone().requires_grad_(backward)
            if name == "dense":
                w = weight.clone().requires_grad_(backward)
                out = F.conv2d(xi, w, padding=1)
            else:
                w = layouts[name].clone()
                if backward:
                    w.requires_grad_(True)
                out = _conv_as_matmul(xi, w, k, size)
            if backward:
                out.sum().backward()
            return out.detach()

        return step

    steps = {name: make(name) for name in layouts}
    ref = steps["dense"]()
    for name in ("csr", "coo"):
        got = steps[name]()
        if not torch.allclose(got, ref, rtol=1e-4, atol=1e-4):
            raise UserError(f"the {name} convolution disagrees with F.conv2d; not timing it")

    def arm(name: str) -> Arm:
        def run() -> Measurement:
            seconds, _ = timed(steps[name], torch.device("cpu"))
            return Measurement(seconds, float(batch))

        return Arm(name, run, warmup=steps[name])

    return [arm(name) for name in layouts]


def main(cfg: SparseConfig) -> None:
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    torch.manual_seed(cfg.seed)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    reps = cfg.reps or (3 if cfg.quick else 7)
    print(f"3×3 conv {cfg.channels}→{cfg.channels}, {cfg.size}×{cfg.size} maps, "
          f"{torch.get_num_threads()} thread(s), {reps} interleaved rounds; ratio = dense time / "
          "sparse time (> 1: the sparse kernel is faster)")  # fmt: skip
    print("| sparsity | pass | dense ms | csr ms | coo ms | dense/csr | dense/coo | sparse wins |")
    print("|---|---|---|---|---|---|---|---|")
    records = []
    for sparsity in cfg.sparsities:
        for backward in (False, True):
            ms = interleave(_arms(cfg, sparsity, backward), reps, desc=f"s={sparsity}")
            med = {n: statistics.median(m.seconds for m in v) for n, v in ms.items()}
            ratio = {
                n: statistics.median(
                    d.seconds / s.seconds for d, s in zip(ms["dense"], ms[n], strict=True)
                )
                for n in ("csr", "coo")
            }
            wins = [n for n in ("csr", "coo") if ratio[n] > 1.0]
            what = "forward + backward" if backward else "forward"
            print(f"| {sparsity:.0%} | {what} | {1e3 * med['dense']:.2f} | {1e3 * med['csr']:.2f} | "
                  f"{1e3 * med['coo']:.2f} | {ratio['csr']:.2f}× | {ratio['coo']:.2f}× | "
                  f"{', '.join(wins) or 'no'} |")  # fmt: skip
            records.append({"sparsity": sparsity, "backward": backward, "median_seconds": med,
                            "dense_over_sparse": ratio})  # fmt: skip
    any_win = any(r["dense_over_sparse"][n] > 1.0 for r in records for n in ("csr", "coo"))
    print("verdict: " + ("a sparse kernel wins somewhere above; see the rows" if any_win else
                         "dense kernels win at every sparsity measured: tickets train with dense "
                         "kernels (masked weights), and sparse formats are not used"))  # fmt: skip
    write_results(cfg.json_out, {"benchmark": "sparse_kernels", "config": cfg.__dict__,
                                 "rows": records}, torch.device("cpu"))  # fmt: skip


COMMAND = config_command(SparseConfig, main, __doc__ or "")

if __name__ == "__main__":
    run_command(COMMAND)
