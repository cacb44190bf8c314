"""Instability results: the ``instability.json`` format (written by
:mod:`boosting_tickets.instability`, read and checked here) and its table and figures, for
``boosting-tickets tables``:

* ``tables/instability.md``: per arm and rewind point K, the instability of clean and of PGD
  error, mean over seeds with every seed's value, and how many seeds are stable (< 2 pp);
* ``figures/instability_path_K<K>.png``: clean and PGD error against α on the path between the
  two copies, one thin line per seed and the mean in bold, per arm;
* ``figures/instability_vs_k.png``: instability (clean, PGD) against K, per-seed dots and the
  mean line, per arm.

Titles name the dataset, model, eps, attack and test n; the K axis has integer ticks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.config import MAX_SEED
from ..core.errors import UserError
from ..core.storage import read_json

FORMAT = "boosting-tickets/instability"
SCHEMA = 1
RESULTS_NAME = "instability.json"


_ROW_NUMBERS = ("instability_clean", "instability_pgd")


def read_instability(path: str | Path) -> dict[str, Any]:
    """Read and check an ``instability.json``: format, schema, checksum, and every row's fields
    (names, errors in [0, 1], a path of matching lengths from α = 0 to 1, a protocol)."""
    from .results import check_name

    doc = read_json(path, what="instability file", require_checksum=True)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UserError(f"{path} is not a boosting-tickets instability file")
    if doc.get("schema") != SCHEMA:
        raise UserError(f"{path} has instability schema {doc.get('schema')!r}; this reads {SCHEMA}")
    rows = doc.get("rows")
    if not isinstance(rows, list):
        raise UserError(f"{path} has no rows")
    for i, r in enumerate(rows):
        where = f"{path}: row {i}"
        if not isinstance(r, dict):
            raise UserError(f"{where} is not an object")
        check_name(r.get("arm"), f"{where}: arm")
        check_name(r.get("kind"), f"{where}: kind")
        a, c, p = r.get("alphas"), r.get("clean_err"), r.get("pgd_err")
        if not all(isinstance(x, list) and len(x) >= 3 for x in (a, c, p)) or not (
            len(a) == len(c) == len(p)
        ):
            raise UserError(
                f"{where}: alphas, clean_err and pgd_err must be lists of one length >= 3"
            )
        if a[0] != 0 or a[-1] != 1 or any(not _unit(v) for v in (*a, *c, *p)):
            raise UserError(f"{where}: alphas must run from 0 to 1 and errors lie in [0, 1]")
        for key in _ROW_NUMBERS:
            v = r.get(key)
            if isinstance(v, bool) or not isinstance(v, int | float) or not -1 <= v <= 1:
                raise UserError(f"{where}: {key} must be a number in [-1, 1]")
        k = r.get("rewind_step")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise UserError(f"{where}: rewind_step must be a whole number >= 0")
        seed = r.get("seed")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise UserError(f"{where}: seed must be in [0, 2^63 - 1]")
        if not isinstance(r.get("protocol"), dict) or "eps" not in r["protocol"]:
            raise UserError(f"{where}: no protocol with an eps")
    return doc


def _unit(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float) and 0 <= v <= 1


def find_instability(root: str | Path) -> list[dict[str, Any]]:
    """Every row of every ``instability.json`` under ``root`` (checked on reading)."""
    base = Path(root)
    if base.is_file():
        return []
    rows: list[dict[str, Any]] = []
    for p in sorted(base.rglob(RESULTS_NAME)):
        rows += read_instability(p)["rows"]
    return rows


def _by(rows: Sequence[dict[str, Any]], *keys: str) -> dict[tuple, list[dict[str, Any]]]:
    out: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[tuple(r[k] for k in keys)].append(r)
    # Numbers sort as numbers (K = 4 before 16), names as text.
    return dict(sorted(out.items(), key=lambda kv: tuple(
        (0, x, "") if isinstance(x, int | float) else (1, 0, str(x)) for x in kv[0])))  # fmt: skip


def instability_table(rows: Sequence[dict[str, Any]]) -> str:
    """The Markdown table (see the module docstring)."""

    def cell(vals: list[float]) -> str:
        mean = sum(vals) / len(vals)
        each = ", ".join(f"{100 * v:.2f}" for v in vals)
        return f"{100 * mean:.2f} ({each})"

    lines = [
        "| arm | kind | K | seeds | instability clean (pp) | instability PGD (pp) | stable PGD |",
        "|---|---|---|---|---|---|---|",
    ]
    for (arm, k), rs in _by(rows, "arm", "rewind_step").items():
        rs = sorted(rs, key=lambda r: r["seed"])
        stable = sum(bool(r["stable_pgd"]) for r in rs)
        lines.append(
            f"| {arm} | {rs[0]['kind']} | {k} | {len(rs)} | "
            f"{cell([r['instability_clean'] for r in rs])} | "
            f"{cell([r['instability_pgd'] for r in rs])} | {stable}/{len(rs)} |"
        )
    p = rows[0]["protocol"]
    bn = (
        f"BN statistics recomputed on {p['bn_images']} training images"
        if p.get("bn_recomputed")
        else "interpolated BN statistics"
    )
    return (
        "Instability = largest error on the linear path between two copies minus the mean of the "
        f"endpoint errors (Frankle et al. 2020; stable below 2 pp), over {len(rows[0]['alphas'])} "
        f"points, test n={p['n']}, {p.get('norm', 'Linf')} eps {p['eps']:.3g}, "
        f"PGD-{p['pgd_steps']}, {bn}. Mean over seeds (each seed's value).\n\n"
        + "\n".join(lines)
        + "\n"
    )


def _title(rows: Sequence[dict[str, Any]], what: str) -> str:
    r, p = rows[0], rows[0]["protocol"]
    seeds = len({x["seed"] for x in rows})
    return (
        f"{what}\n{r['dataset']}, {r['model']}, {p.get('norm', 'Linf')} eps {p['eps']:.3g}, "
        f"PGD-{p['pgd_steps']}, test n={p['n']}, {seeds} seed(s)"
    )


def instability_figures(rows: Sequence[dict[str, Any]]) -> dict[str, bytes]:
    """The PNG files (see the module docstring)."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("figures need matplotlib; run 'make setup' or pass --no-figures") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from .figures import _png

    out: dict[str, bytes] = {}
    for (k,), rs in _by(rows, "rewind_step").items():
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        for ax, key, name in zip(axes, ("clean_err", "pgd_err"), ("clean", "PGD"), strict=True):
            for (arm,), group in _by(rs, "arm").items():
                xs = group[0]["alphas"]
                mean = [sum(g[key][i] for g in group) / len(group) for i in range(len(xs))]
                (line,) = ax.plot(xs, [100 * v for v in mean], lw=2.2, label=f"{arm} (mean)")
                for g in group:
                    ax.plot(g["alphas"], [100 * v for v in g[key]], lw=0.8, alpha=0.45,
                            color=line.get_color())  # fmt: skip
            ax.set_xlabel("α (0: copy 1, 1: copy 2)")
            ax.set_ylabel(f"{name} test error (%)")
            ax.set_ylim(0, 100)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(_title(rs, f"error on the linear path, copies parted after step {k}"))
        fig.tight_layout()
        out[f"instability_path_K{k}.png"] = _png(fig)
        plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, name in zip(axes, ("instability_clean", "instability_pgd"), ("clean", "PGD"),
                             strict=True):  # fmt: skip
        for (arm,), group in _by(rows, "arm").items():
            by_k = _by(group, "rewind_step")
            ks = [k for (k,) in by_k]
            mean = [100 * sum(r[key] for r in v) / len(v) for v in by_k.values()]
            (line,) = ax.plot(ks, mean, marker="o", lw=2.2, label=f"{arm} (mean)")
            for r in group:
                ax.plot([r["rewind_step"]], [100 * r[key]], "o", ms=3, alpha=0.5,
                        color=line.get_color())  # fmt: skip
        ax.axhline(2.0, ls="--", lw=1, color="0.4", label="stable below 2 pp")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("K (optimizer step where the copies part)")
        ax.set_ylabel(f"instability of {name} error (pp)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(_title(rows, "instability against the rewind point K"))
    fig.tight_layout()
    out["instability_vs_k.png"] = _png(fig)
    plt.close(fig)
    return out
