"""The service's log lines: one JSON object per line, so a client value cannot start a line of its own."""

from __future__ import annotations

import datetime as dt
import json
import logging


class JsonFormatter(logging.Formatter):
    """One JSON object per line: a client value (a path with CR LF in it) is escaped, so it cannot start a line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=True, default=str)


def install_json_logging() -> None:
    """uvicorn configures only its own loggers; the service's lines get a handler of their own, one JSON object per line."""
    service_log = logging.getLogger("churn.service")
    if not any(isinstance(h.formatter, JsonFormatter) for h in service_log.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        service_log.addHandler(handler)
        service_log.setLevel(logging.INFO)
