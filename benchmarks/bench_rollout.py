"""One day's rollout verdict at growing pool sizes: each figure bootstrapped on its own over every pooled customer (the
previous code path: the baseline, same run) against one set of draws for all figures, capped (`lib.rollout.judge`,
`lib.rollout.BOOTSTRAP_ROWS`: above it a seeded subsample, its spread scaled to the pool).

A day's verdict is the champion's matured ROC-AUC interval plus one paired comparison per challenger, each with 300
resamples. The pool is up to `rollout.min_matured_days` matured days of every scored customer: 3 x 387,000 rows at
10 M transactions a year. Reported: seconds per verdict, and how far the capped intervals' widths and bounds are from
the full bootstrap's.

    python -m benchmarks.bench_rollout [--quick] [--challengers N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import machine


def _pool(n: int, challengers: int, seed: int = 11) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Outcomes, a champion's scores, and challengers a little better or worse, on ``n`` customers."""
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    y = (risk + rng.normal(size=n) > 0.3).astype(np.int8)
    champion = 1 / (1 + np.exp(-(risk + rng.normal(scale=0.8, size=n))))
    others = [1 / (1 + np.exp(-(risk + rng.normal(scale=0.6 + 0.2 * i, size=n)))) for i in range(challengers)]
    return y, champion, others


def _separately(y: np.ndarray, champion: np.ndarray, others: list[np.ndarray]) -> list:
    """As rollout_evaluation did before (commit 8955b3f): each figure bootstrapped on its own."""
    from lib.rollout import compare, matured

    out: list = [matured(y, champion, champion="c", days=3)]
    out += [compare(y, champion, s, champion="c", challenger=f"x{i}", days=3, budget=0.1) for i, s in enumerate(others)]
    return out


def _together(y: np.ndarray, champion: np.ndarray, others: list[np.ndarray]) -> list:
    """As rollout_evaluation does now: one set of draws for all (`lib.rollout.judge`)."""
    from lib.rollout import judge

    own, comparisons = judge(y, champion, {f"x{i}": s for i, s in enumerate(others)}, champion="c", days=3, budget=0.1)
    return [own, *comparisons]


def main(argv: list[str] | None = None) -> str:
    import lib.rollout as rollout

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--challengers", type=int, default=3)
    args = parser.parse_args(argv)
    sizes = [20_000, 120_000] if args.quick else [25_000, 300_000, 1_160_000]
    cap = rollout.BOOTSTRAP_ROWS
    lines = [
        "",
        f"### Rollout verdict for one day (champion + {args.challengers} challengers, 300 resamples, cap {cap:,} rows)",
        "",
        "| pooled customers | each figure alone, every customer s (baseline) | one set of draws, capped s | speed-up "
        "| widest width gap | largest bound gap |",
        "|---|---|---|---|---|---|",
    ]
    _together(*_pool(1_000, 1)[:2], [])  # imports (scipy) before anything is timed
    for n in sizes:
        y, champion, others = _pool(n, args.challengers)
        rollout.BOOTSTRAP_ROWS = max(n, cap)
        t0 = time.perf_counter()
        full = _separately(y, champion, others)
        t1 = time.perf_counter()
        rollout.BOOTSTRAP_ROWS = cap
        capped = _together(y, champion, others)
        t2 = time.perf_counter()
        width, bound = 0.0, 0.0
        intervals = [(full[0].roc_auc, capped[0].roc_auc)] + [
            (f.difference[m], c.difference[m]) for f, c in zip(full[1:], capped[1:], strict=True) for m in rollout.METRICS
        ]
        for a, b in intervals:
            if a.high > a.low:
                width = max(width, abs((b.high - b.low) / (a.high - a.low) - 1))
                bound = max(bound, abs(b.low - a.low) / (a.high - a.low), abs(b.high - a.high) / (a.high - a.low))
        lines.append(
            f"| {n:,} | {t1 - t0:.2f} | {t2 - t1:.2f} | {(t1 - t0) / (t2 - t1):.1f}x | {width:.0%} of the full width "
            f"| {bound:.0%} of the full width |"
        )
    out = "\n".join(lines) + f"\n\n{machine()}"
    print(out)
    return out


if __name__ == "__main__":
    main()
