"""The agent's metrics as a Prometheus text file (node-exporter textfile-collector style).

`kalkan-agent run` rewrites `<state dir>/metrics.prom` atomically with `status.json` (every
few seconds), from the same status dict: point node-exporter's
`--collector.textfile.directory` at the state dir (or link the file into its folder) and
Prometheus gets the seat's outbox depth, drops, uplink and policy state without a port open
on the workstation.  No dependency: the format is a few lines of text.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

FILE_NAME = "metrics.prom"


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _value(value: object) -> str:
    if value is None:
        return "NaN"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    value = float(value)  # type: ignore[arg-type]
    return "NaN" if math.isnan(value) else repr(value)


def render(status: dict[str, Any]) -> str:
    """The metrics text for one status dict (`AgentRuntime.status()`)."""
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[dict, object]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(
                f"{name}{{{label_text}}} {_value(value)}" if label_text else f"{name} {_value(value)}"
            )

    uplink = status.get("uplink") or {}
    policy = status.get("policy") or {}
    outbox = status.get("outbox") or {}
    family(
        "kalkan_agent_info",
        "gauge",
        "Always 1; the labels say which agent this is.",
        [
            (
                {
                    "version": status.get("agent_version", ""),
                    "agent_id": status.get("agent_id") or "",
                    "platform": status.get("platform", ""),
                },
                1,
            )
        ],
    )
    family(
        "kalkan_agent_running",
        "gauge",
        "1 while the agent runs (0 in the file it leaves when it stops).",
        [({}, bool(status.get("running")))],
    )
    family(
        "kalkan_agent_updated_timestamp_seconds",
        "gauge",
        "When the agent last wrote this file.",
        [({}, status.get("updated_at", time.time()))],
    )
    family(
        "kalkan_agent_uptime_seconds",
        "gauge",
        "Seconds since the agent started.",
        [({}, status.get("uptime_s"))],
    )
    family(
        "kalkan_agent_enrolled",
        "gauge",
        "1 when the workstation is enrolled.",
        [({}, bool(status.get("enrolled")))],
    )
    family(
        "kalkan_agent_outbox_events",
        "gauge",
        "Events waiting in the outbox for the server.",
        [({}, outbox.get("depth", 0))],
    )
    family("kalkan_agent_outbox_bytes", "gauge", "Size of the outbox.", [({}, outbox.get("bytes", 0))])
    family(
        "kalkan_agent_outbox_max_bytes",
        "gauge",
        "The outbox's size limit.",
        [({}, outbox.get("max_bytes", 0))],
    )
    dropped = outbox.get("dropped") or {}
    family(
        "kalkan_agent_outbox_dropped_total",
        "counter",
        "Events dropped because the outbox was full, by type.",
        [({"type": k}, v) for k, v in sorted(dropped.items())] if isinstance(dropped, dict) else [],
    )
    family(
        "kalkan_agent_events_rejected_total",
        "counter",
        "Events the server refused as invalid.",
        [({}, outbox.get("rejected", 0))],
    )
    family(
        "kalkan_agent_uplink_sent_total",
        "counter",
        "Events delivered to the server since start.",
        [({}, uplink.get("sent", 0))],
    )
    family(
        "kalkan_agent_uplink_reachable",
        "gauge",
        "1 when the last contact with the server worked.",
        [({}, uplink.get("reachable") is True)],
    )
    family(
        "kalkan_agent_uplink_last_success_timestamp_seconds",
        "gauge",
        "Last successful upload.",
        [({}, uplink.get("last_success_at"))],
    )
    family(
        "kalkan_agent_token_refused",
        "gauge",
        "1 when the server refused the agent's token (enrol again).",
        [({}, bool(uplink.get("token_refused")))],
    )
    family(
        "kalkan_agent_policy_version",
        "gauge",
        "The applied policy version (NaN: none yet).",
        [({}, policy.get("version"))],
    )
    family(
        "kalkan_agent_push_connected",
        "gauge",
        "1 while the policy push (SSE) is connected.",
        [({}, bool(policy.get("push_connected")))],
    )
    collectors = status.get("collectors") or {}
    family(
        "kalkan_agent_collector_ok",
        "gauge",
        "1 when a collector reports itself healthy.",
        [({"collector": name}, _healthy(h)) for name, h in sorted(collectors.items())],
    )
    return "\n".join(lines) + "\n"


def _healthy(health: object) -> bool:
    if not isinstance(health, dict):
        return False
    if "ok" in health:
        return bool(health["ok"])
    return str(health.get("state", health.get("status", ""))).lower() in ("ok", "running", "healthy")


def write(state, status: dict[str, Any]) -> None:
    """Write `metrics.prom` beside status.json (atomically: a scraper never reads half a file)."""
    from agent.state import atomic_write

    try:
        atomic_write(state.paths.root / FILE_NAME, render(status), durable=False)
    except (OSError, TypeError, ValueError) as exc:
        logging.getLogger("kalkan.agent").warning("could not write %s: %s", FILE_NAME, exc)


class JsonFormatter(logging.Formatter):
    """`kalkan-agent --log-format json`: one JSON object a line (for journald, Loki, …)."""

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
        return json.dumps(out, ensure_ascii=False)
