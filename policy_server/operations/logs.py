"""JSON logs on request (`kalkan-server run --log-format json`): one JSON object a line, for
journald/Loki/Elasticsearch; the default stays the human-readable text."""

from __future__ import annotations

import json
import logging
import time

STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """`{"ts": ..., "level": ..., "logger": ..., "message": ..., "exc": ...}` plus any `extra=`."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        for key, value in vars(record).items():
            if key not in STANDARD and not key.startswith("_") and key not in out:
                out[key] = value if isinstance(value, str | int | float | bool | None) else repr(value)
        return json.dumps(out, ensure_ascii=False)


def uvicorn_log_config(level: str, log_format: str) -> dict | None:
    """uvicorn's `log_config`: None (its own text) or every logger through `JsonFormatter`."""
    if log_format != "json":
        return None
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "policy_server.operations.logs.JsonFormatter"}},
        "handlers": {"default": handler},
        "loggers": {
            name: {"handlers": ["default"], "level": level.upper(), "propagate": False}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "kalkan")
        },
        "root": {"handlers": ["default"], "level": "WARNING"},
    }
