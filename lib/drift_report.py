"""The drift report a person opens: the day's verdict on every column, evidently's plots where they matter.

Each report used to be evidently's whole DataDriftPreset page: 5.2 MB, of
which 3.5 MB was evidently's JavaScript bundle and its icon font inlined into
every page, and about 70 kB per column of plot data, whatever the column did.
A report now holds:

- the verdict on every column (distance, permutation p-value, counted or not)
  in a plain table, with the day's reason (``lib.drift.DriftResult.reason``):
  what the asset decided, not evidently's own summary, which counts columns
  differently (no significance test, ageing features included);
- evidently's per-column drift plots (``ValueDrift``, the same method and
  threshold) for the columns that reached the threshold, counted or not, and
  the churn score, the farthest first and at most the drift report's
  ``report_plots`` (a report asked for plots every one); on a quiet day, the
  ``QUIET_DETAIL`` closest ones;
- a reference to evidently's bundle and font stored once beside the reports
  (``lib_files``; evidently's own "folder" layout), not a copy in every page.

On the demo's days that is 0.18 to 0.54 MB a report (benchmarks/RESULTS.md).

Every other day has a page too, so the UI's link works for every day: the
verdict table alone (``verdict_page``, a few kB), rebuilt from the day's
stored verdict (``verdict_record``, JSON), which is also what a tool reads.
"""

from __future__ import annotations

import functools
import html
from typing import TYPE_CHECKING

from lib.drift import DRIFT_METHOD, SIGNIFICANCE, DriftResult, cap_tails

if TYPE_CHECKING:
    import pandas as pd

# Where evidently's bundle and font are stored, relative to the reports' folder.
LIB_DIR = "_lib"
FONT = "material-ui-icons.woff2"
# Columns plotted on a day where none reached the threshold: the closest ones.
QUIET_DETAIL = 3


@functools.cache
def lib_files() -> dict[str, bytes]:
    """evidently's JavaScript bundle (named by its version) and icon font, as its package ships them (read once per
    process: every report of a run needs them to find and replace the inlined copies)."""
    from pathlib import Path

    import evidently

    static = Path(evidently.__path__[0]) / "nbextension" / "static"
    return {bundle_name(): (static / "index.js").read_bytes(), FONT: (static / FONT).read_bytes()}


def bundle_name() -> str:
    import evidently

    return f"evidently-{evidently.__version__}.js"


def detail_columns(result: DriftResult, plots: int = 0) -> list[str]:
    """The columns whose plots the report carries: the ones at or over the threshold (the churn score included), the
    farthest first, at most ``plots`` of them (0: every one), or on a quiet day the ``QUIET_DETAIL`` closest to it.

    Each plot is most of a report's cost (about a quarter of a second: evidently builds a plotly figure per column),
    and a drift event moves many columns together; the verdict table names every one either way."""
    ranked = sorted(result.column_scores, key=lambda c: -result.column_scores[c])
    reached = [c for c in ranked if result.column_scores[c] >= result.threshold]
    return reached[: plots or None] or ranked[:QUIET_DETAIL]


def verdict_table(result: DriftResult, day: str, plotted: int | None = None) -> str:
    """The day's verdict as an HTML block: the reason and one row per column (escaped: column names are settings)."""
    rows = []
    for c in sorted(result.column_scores, key=lambda c: -result.column_scores[c]):
        p = result.p_values.get(c)
        if c in result.feature_columns:
            role = "counted" if result.drifted(c) else "within chance" if c in result.chance_columns else "no"
        else:
            role = "drifted (not in the share)" if result.drifted(c) else "not in the share"
        rows.append(
            f"<tr><td>{html.escape(c)}</td><td>{result.column_scores[c]:.4f}</td>"
            f"<td>{'' if p is None else f'{p:.4f}'}</td><td>{role}</td></tr>"
        )
    verdict = "drift event" if result.dataset_drift else "no drift event"
    return (
        '<div style="font-family: sans-serif; margin: 16px 24px">'
        f"<h2>Drift on {html.escape(day)}: {verdict}</h2><p>{html.escape(result.reason)}</p>"
        f"<p>Normed Wasserstein distance against the reference, threshold {result.threshold}; a column counts when its "
        f"permutation p-value is below {SIGNIFICANCE}. Plots below: {DRIFT_METHOD} drift of the columns that reached "
        f"the threshold (or, on a quiet day, the closest ones), tails capped as for the verdict{_plotted_note(result, day, plotted)}.</p>"
        '<table border="1" cellpadding="4" style="border-collapse: collapse">'
        "<tr><th>column</th><th>distance</th><th>p-value</th><th>counted</th></tr>" + "".join(rows) + "</table></div>"
    )


def _plotted_note(result: DriftResult, day: str, plotted: int | None) -> str:
    """Says so when the plots leave out columns that reached the threshold."""
    reached = sum(v >= result.threshold for v in result.column_scores.values())
    if plotted is None or plotted >= reached:
        return ""
    return f"; the {plotted} farthest of the {reached} that reached it (<code>churn report drift {html.escape(day)}</code> plots every one)"


def render_report(reference: pd.DataFrame, current: pd.DataFrame, result: DriftResult, day: str, lib_prefix: str, plots: int = 0) -> bytes:
    """One standalone page: the verdict table, then evidently's drift plots of ``detail_columns`` (at most ``plots``,
    0: every column that reached the threshold). The page loads evidently's bundle and font from ``lib_prefix`` (a
    relative folder holding ``lib_files``)."""
    import base64

    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    columns = detail_columns(result, plots)
    reference, current = cap_tails(reference, current, columns)
    definition = DataDefinition(numerical_columns=columns)
    ref = Dataset.from_pandas(reference[columns], data_definition=definition)
    cur = Dataset.from_pandas(current[columns], data_definition=definition)
    report = Report([ValueDrift(column=c, method=DRIFT_METHOD, threshold=result.threshold) for c in columns])
    page = report.run(current_data=cur, reference_data=ref).get_html_str(as_iframe=False)
    files = lib_files()
    # evidently's single-file page inlines both; its folder layout references them instead, as here.
    page = page.replace(f"<script>{files[bundle_name()].decode()}</script>", f'<script src="{lib_prefix}{bundle_name()}"></script>', 1)
    page = page.replace(f"url(data:font/ttf;base64,{base64.b64encode(files[FONT]).decode()})", f"url({lib_prefix}{FONT})", 1)
    return page.replace("<body>", "<body>" + verdict_table(result, day, len(columns)), 1).encode()


def verdict_record(result: DriftResult, day: str, reference: str, full_report: str | None) -> bytes:
    """The day's verdict as stored JSON (``drift_reports/DAY.json``, a few kB): every column's distance and p-value,
    the thresholds, and why the day has a full report (None: the verdict page). The page of any day can be
    rebuilt from it without the day's samples (``verdict_page``)."""
    import json

    return json.dumps(
        {
            "day": day,
            "reference": reference,
            "column_scores": result.column_scores,
            "p_values": result.p_values,
            "threshold": result.threshold,
            "drift_share_threshold": result.drift_share_threshold,
            "judged": result.judged,
            "dataset_drift": result.dataset_drift,
            "reason": result.reason,
            "full_report": full_report,
        },
        sort_keys=True,
    ).encode()


def read_verdict(data: bytes) -> tuple[DriftResult, dict[str, object]]:
    """A stored verdict (``verdict_record``) back as the DriftResult it was written from, and the record itself."""
    import json

    record = json.loads(data)
    result = DriftResult(
        {str(k): float(v) for k, v in record["column_scores"].items()},
        float(record["threshold"]),
        float(record["drift_share_threshold"]),
        bool(record["judged"]),
        {str(k): float(v) for k, v in record["p_values"].items()},
    )
    return result, record


def verdict_page(result: DriftResult, day: str, reference: str) -> bytes:
    """The page of a day without a full report: the same verdict table (every column), the reference it was measured
    against, and the command that adds evidently's plots. A few kB, rendered in well under a millisecond."""
    command = f"churn report drift {day}"
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f"<title>Drift on {html.escape(day)}</title></head><body>"
        + verdict_table(result, day)
        + '<div style="font-family: sans-serif; margin: 0 24px 16px">'
        f"<p>Reference: {html.escape(reference)}.</p><p>This page holds the verdict only: the day had no drift event "
        f"and was not the newest day reported. <code>{html.escape(command)}</code> re-runs the day (the same seeded "
        "samples, the same verdict) and replaces this page with evidently's plots.</p></div></body></html>"
    ).encode()


def report_placement(event: bool, asked: bool, latest: bool) -> str | None:
    """Why a day gets the full report (verdict and evidently's plots): ``drift event``, ``asked`` (``churn report
    drift DAY``) or ``latest`` (the newest day reported, quiet: the freshest picture one click away, turned into a
    verdict page when a newer day is reported). None: the verdict page (``verdict_page``)."""
    if event:
        return "drift event"
    if asked:
        return "asked"
    return "latest" if latest else None


def demoted_latest(previous: str | None, previous_full_report: str | None, day: str) -> bool:
    """Whether the day that was the newest before (``previous``) loses its full report now that ``day`` is the newest:
    only when it had one for being the latest (an event's or an asked-for report stays)."""
    return previous is not None and previous != day and previous_full_report == "latest"
