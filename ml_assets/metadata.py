"""Helpers that turn data and plots into metadata the Dagster UI renders."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dagster as dg
import polars as pl

from lib.contract import preview_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def column_schema(frame: pl.DataFrame, descriptions: dict[str, str] | None = None) -> dg.TableSchema:
    descriptions = descriptions or {}
    return dg.TableSchema(
        columns=[dg.TableColumn(name, str(dtype), description=descriptions.get(name)) for name, dtype in frame.schema.items()]
    )


def frame_metadata(frame: pl.DataFrame, descriptions: dict[str, str] | None = None, preview_rows: int = 5) -> dict[str, Any]:
    """Row count, column schema and a small preview, for any table output."""
    preview = frame.head(preview_rows)
    return {
        "dagster/row_count": frame.height,
        "dagster/column_schema": column_schema(frame, descriptions),
        "preview": dg.MetadataValue.md(markdown_table(preview)),
    }


# Columns that identify a person: never in event metadata, which Dagster keeps for as long as the run
# exists and which `churn erase` cannot rewrite. The rows themselves are in the lake.
PERSONAL_COLUMNS = ("customer_id",)


def markdown_table(frame: pl.DataFrame) -> str:
    if frame.is_empty():
        return "_no rows_"
    frame = frame.drop([c for c in PERSONAL_COLUMNS if c in frame.columns])
    if not frame.columns:
        return "_identifying columns only_"
    header = "| " + " | ".join(frame.columns) + " |"
    sep = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, sep, *rows])


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    # Client values in full belong in the lake, not in event metadata: bounded, escaped, one line.
    return preview_text(str(value), 120).replace("|", "\\|")


def figure_markdown(fig: Figure, alt: str, dpi: int = 90) -> dg.MetadataValue:
    """Embed a matplotlib figure as a PNG the UI shows inline (a figure on every day's materialization: a lower ``dpi``)."""
    from lib.evaluation import png_base64

    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{png_base64(fig, dpi)})")


def plots_of(metadata: dict[str, Any]) -> dict[str, bytes]:
    """The PNG plots embedded in a materialization's metadata (``figure_markdown``), by metadata key: what the UI shows,
    for a system that wants the files (MLflow)."""
    import base64
    import re

    out = {}
    for name, value in metadata.items():
        text = value.value if isinstance(value, dg.MarkdownMetadataValue) else None
        if text and (found := re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)):
            out[name] = base64.b64decode(found.group(1))
    return out
