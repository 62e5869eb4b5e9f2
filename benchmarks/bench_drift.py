"""Drift at scale: the drift report of a 1 M-row day as `drift_report` computes it (seeded samples of 5,000 rows)
against unsampled evidently on all rows, on undrifted and on drifted data, each in a fresh process (time, peak memory).

Why a sample keeps the verdict: the score is the normed Wasserstein distance
W1(ref, cur) / sd(ref) with threshold 0.1, and its sampling error shrinks
like 1/sqrt(n).  Rather than trust a formula, the benchmark measures the
worst |sampled - full| score over many seeds and columns: an undrifted column
(full score near 0) can only be flagged if that spread approaches 0.1, and a
drifted column can only flip if its full score lies within the spread of the
threshold.  It also checks that the sampled verdicts equal the unsampled ones.
"""

from __future__ import annotations

import argparse

from benchmarks.common import run_python

N_COLUMNS = 20
DRIFTED_COLUMNS = 12  # of 20: above the 0.5 dataset-drift share
SHIFT_SD = 0.3  # drifted columns move by 0.3 reference sd: a clear, realistic shift (threshold 0.1)

_CHILD = """
import json, sys, time, warnings
warnings.filterwarnings("ignore")
sys.path.insert(0, {repo!r})
from benchmarks.bench_drift import frames
from benchmarks.common import peak_rss_mb
from lib.drift import compute_drift, sample_rows
import evidently  # imported once per run by the asset; not part of one day's cost
ref, cur, cols = frames({rows}, {drifted})
t = time.perf_counter()
if {sample}:
    ref, cur = sample_rows(ref, {sample}, seed=11), sample_rows(cur, {sample}, seed=13)
r = compute_drift(ref, cur, cols, 0.1, 0.5)
html = b""
if {render!r} in ("compact", "verdict"):
    # Every day stores its verdict (JSON) and a page: the full report, or the verdict page.
    from lib.drift_report import render_report, verdict_page, verdict_record
    page = render_report(ref, cur, r, "day", "_lib/") if {render!r} == "compact" else verdict_page(r, "day", "reference")
    html = page + verdict_record(r, "day", "reference", None)
elif {render!r} == "full":
    # The page every day stored before: evidently's whole preset, its bundle and font inlined.
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset
    from lib.drift import cap_tails
    a, b = cap_tails(ref, cur, cols)
    d = DataDefinition(numerical_columns=cols)
    html = Report([DataDriftPreset(columns=cols, method="wasserstein", threshold=0.1)]).run(
        current_data=Dataset.from_pandas(b[cols], data_definition=d), reference_data=Dataset.from_pandas(a[cols], data_definition=d)
    ).get_html_str(as_iframe=False).encode()
took = time.perf_counter() - t
print(json.dumps({{"s": took, "peak_mb": peak_rss_mb(), "drift": r.dataset_drift,
                  "drifted": r.drifted_columns, "scores": r.column_scores, "html_bytes": len(html)}}))
"""


def frames(rows: int, drifted: bool):
    """A reference (50 k rows) and a current day (`rows`), skewed like spend and counts; the last column is the score."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    cols = [f"f{i:02d}" for i in range(N_COLUMNS)] + ["prediction"]

    def draw(n: int, shift: bool) -> pd.DataFrame:
        data = {}
        for i, c in enumerate(cols):
            x = rng.lognormal(mean=0.0, sigma=0.6, size=n) if i % 2 else rng.normal(size=n)
            if shift and i < DRIFTED_COLUMNS:
                x = x + SHIFT_SD * (x.std() if i % 2 else 1.0)
            data[c] = x
        return pd.DataFrame(data)

    return draw(50_000, False), draw(rows, drifted), cols


def sampling_spread(rows: int, seeds: int) -> dict[str, float]:
    """Normed Wasserstein of 5,000-row samples over many seeds, against the same score on all rows (scipy, same formula as evidently)."""
    import numpy as np
    from scipy.stats import wasserstein_distance

    out = {}
    for drifted in (False, True):
        ref, cur, cols = frames(rows, drifted)
        worst = 0.0
        full = {c: wasserstein_distance(ref[c], cur[c]) / ref[c].std() for c in cols}
        rng = np.random.default_rng(1)
        for _ in range(seeds):
            r = ref.iloc[rng.choice(len(ref), 5000, replace=False)]
            k = cur.iloc[rng.choice(len(cur), 5000, replace=False)]
            for c in cols:
                worst = max(worst, abs(wasserstein_distance(r[c], k[c]) / r[c].std() - full[c]))
        out["drifted" if drifted else "undrifted"] = worst
        out[("drifted" if drifted else "undrifted") + "_min_full_score_of_drifted"] = (
            min(full[c] for c in cols[:DRIFTED_COLUMNS]) if drifted else max(full.values())
        )
    return out


def _day_cost(repo: str, quick: bool = False) -> list[str]:
    """A demo-sized day (5,000 + 5,000 sampled rows): the verdict page (every quiet day but the newest now), the compact
    report (events and the newest day now), and evidently's whole page (every day before); each with the verdict."""
    lines = ["", "### One day's drift work at the demo's size: verdict page, compact report, the whole page before (same run)", ""]
    lines += ["| data | work | s | stored bytes | dataset drift | same verdict |", "|---|---|---|---|---|---|"]
    work = {
        "full": "scores + tests + evidently's whole page (before: every day)",
        "compact": "scores + tests + compact report + verdict JSON (now: events, the newest day)",
        "verdict": "scores + tests + verdict page + verdict JSON (now: every other day)",
    }
    # The quick smoke run: the drifted day only.
    for drifted in (True,) if quick else (False, True):
        runs = {mode: run_python(_CHILD.format(repo=repo, rows=5_000, drifted=drifted, sample=5_000, render=mode)) for mode in work}
        same = len({(r["drift"], tuple(r["drifted"])) for r in runs.values()}) == 1
        for mode, r in runs.items():
            lines.append(
                f"| {'drifted' if drifted else 'undrifted'} | {work[mode]} | {r['s']:.2f} | {r['html_bytes']:,} | {r['drift']} | {same} |"
            )
        full, compact = runs["full"], runs["compact"]
        lines.append(
            f"| | ratio whole page / compact report | {full['s'] / compact['s']:.1f}x | "
            f"{full['html_bytes'] / max(compact['html_bytes'], 1):.0f}x | | |"
        )
    return lines


def main(argv: list[str] | None = None) -> str:
    from pathlib import Path

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    rows = 50_000 if args.quick else args.rows
    repo = str(Path(__file__).resolve().parents[1])
    lines = ["", f"### Drift report, one day of {rows:,} rows x {N_COLUMNS + 1} columns (target: under 15 s and 1 GB, same verdict)", ""]
    lines += ["| data | method | s | peak MB | dataset drift | drifted columns |", "|---|---|---|---|---|---|"]
    agree = True
    for drifted in (False, True):
        results = {}
        samples = (5_000, 0) if args.quick else (5_000, 20_000, 0)  # the quick smoke run: the default sample and all rows
        for sample in samples:
            r = run_python(_CHILD.format(repo=repo, rows=rows, drifted=drifted, sample=sample, render="full" if sample == 0 else "none"))
            results[sample] = r
            method = {
                5_000: "sampled 5,000 + 5,000 (drift_report's default)",
                20_000: "sampled 20,000 + 20,000",
                0: "unsampled evidently, all rows",
            }[sample]
            lines.append(
                f"| {'drifted' if drifted else 'undrifted'} | {method} | {r['s']:.1f} | {r['peak_mb']:.0f} | {r['drift']} | {len(r['drifted'])} |"
            )
        for sample in samples[:-1]:
            same = results[sample]["drift"] == results[0]["drift"] and results[sample]["drifted"] == results[0]["drifted"]
            agree &= same
            diff = max(abs(results[sample]["scores"][c] - results[0]["scores"][c]) for c in results[0]["scores"])
            lines.append(f"| | {sample:,}-row sample vs all rows: verdicts equal {same}, max score difference {diff:.3f} | | | | |")
    lines += _day_cost(repo, args.quick)
    spread = sampling_spread(min(rows, 200_000), 5 if args.quick else 50)
    lines += [
        "",
        f"sampled vs full score over {5 if args.quick else 50} seeds: worst |difference| {spread['undrifted']:.3f} (undrifted), "
        f"{spread['drifted']:.3f} (drifted); threshold 0.1; largest undrifted full score {spread['undrifted_min_full_score_of_drifted']:.3f}, "
        f"smallest drifted {spread['drifted_min_full_score_of_drifted']:.3f}; all verdicts equal: {agree}",
    ]
    out = "\n".join(lines)
    print(out)
    return out


if __name__ == "__main__":
    main()
