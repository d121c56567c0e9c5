"""Which collectors exist, by name → "module:Class".  Imported lazily, so a
collector whose dependencies are missing fails alone (its health says why) and
never stops the agent from starting."""

from __future__ import annotations

import importlib

COLLECTORS: dict[str, str] = {
    "heartbeat": "agent.collectors.heartbeat:HeartbeatCollector",
    "proxy": "agent.collectors.proxy:ProxyCollector",
    "antivirus": "agent.collectors.antivirus:AntivirusCollector",
    "usb": "agent.collectors.usb:UsbCollector",
    "integrity": "agent.collectors.integrity:IntegrityCollector",
    "idle": "agent.collectors.idle:IdleCollector",
    "network": "agent.collectors.network:NetworkCollector",
}


def load_collector_class(name: str):
    try:
        target = COLLECTORS[name]
    except KeyError:
        raise KeyError(f"unknown collector {name!r}; known: {', '.join(COLLECTORS)}") from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)
