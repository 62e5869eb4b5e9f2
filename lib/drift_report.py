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
  the churn score; on a quiet day, the ``QUIET_DETAIL`` closest ones;
- a reference to evidently's bundle and font stored once beside the reports
  (``lib_files``; evidently's own "folder" layout), not a copy in every page.

On the demo's days that is 0.18 to 0.54 MB a report (benchmarks/RESULTS.md).
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


def detail_columns(result: DriftResult) -> list[str]:
    """The columns whose plots the report carries: every one at or over the threshold (the churn score included),
    or on a quiet day the ``QUIET_DETAIL`` closest to it."""
    ranked = sorted(result.column_scores, key=lambda c: -result.column_scores[c])
    reached = [c for c in ranked if result.column_scores[c] >= result.threshold]
    return reached or ranked[:QUIET_DETAIL]


def verdict_table(result: DriftResult, day: str) -> str:
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
        "the threshold (or, on a quiet day, the closest ones), tails capped as for the verdict.</p>"
        '<table border="1" cellpadding="4" style="border-collapse: collapse">'
        "<tr><th>column</th><th>distance</th><th>p-value</th><th>counted</th></tr>" + "".join(rows) + "</table></div>"
    )


def render_report(reference: pd.DataFrame, current: pd.DataFrame, result: DriftResult, day: str, lib_prefix: str) -> bytes:
    """One standalone page: the verdict table, then evidently's drift plots of ``detail_columns``. The page loads
    evidently's bundle and font from ``lib_prefix`` (a relative folder holding ``lib_files``)."""
    import base64

    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    columns = detail_columns(result)
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
    return page.replace("<body>", "<body>" + verdict_table(result, day), 1).encode()


def report_placement(event: bool, asked: bool, latest: bool) -> str | None:
    """Where a day's HTML report goes: ``kept`` (a drift event, or a day someone asked for), ``latest`` (the newest
    day, replaced by the next one, so the freshest picture is one click away), or None (not rendered: the verdict
    and scores are in the table and metadata, and the report can be asked for)."""
    if event or asked:
        return "kept"
    return "latest" if latest else None
