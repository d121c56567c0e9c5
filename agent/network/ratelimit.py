"""Fold a storm of identical findings into few events (000 §5.6: one incident, not a flood).

The first finding of a key goes out at once; the same key is then quiet for
`interval_s`, and what arrived meanwhile goes out as *one* event whose `occurrences`
says how many frames it stands for.  Past `max_keys` distinct keys of one event type
(an attacker spraying many MACs or destinations), new keys share one overflow key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.network.detectors import Finding


@dataclass(frozen=True)
class Emission:
    event_type: str
    data: dict[str, Any]
    local: tuple[str, str, int] | None = None


@dataclass
class _Slot:
    last_emit: float
    last_seen: float
    pending: int = 0
    latest: Finding | None = None


@dataclass
class RateLimiter:
    interval_s: float = 60.0
    max_keys: int = 32
    slots: dict[tuple, _Slot] = field(default_factory=dict)

    def _key(self, finding: Finding) -> tuple:
        if finding.key in self.slots:
            return finding.key
        same_type = sum(1 for key in self.slots if key[0] == finding.event_type)
        return finding.key if same_type < self.max_keys else (finding.event_type, "*overflow*")

    def offer(self, finding: Finding, now: float) -> list[Emission]:
        key = self._key(finding)
        slot = self.slots.get(key)
        if slot is None or (now - slot.last_emit >= self.interval_s and slot.pending == 0):
            self.slots[key] = _Slot(last_emit=now, last_seen=now)
            return [Emission(finding.event_type, {**finding.data, "occurrences": 1}, finding.local)]
        slot.pending += 1
        slot.latest = finding
        slot.last_seen = now
        return self.flush(now)

    def flush(self, now: float, *, force: bool = False) -> list[Emission]:
        """Events for keys whose quiet interval is over (all of them with `force`)."""
        out = []
        for key, slot in list(self.slots.items()):
            if slot.pending and (force or now - slot.last_emit >= self.interval_s):
                finding = slot.latest
                assert finding is not None
                out.append(Emission(finding.event_type, {**finding.data, "occurrences": slot.pending},
                                    finding.local))
                slot.pending, slot.latest, slot.last_emit = 0, None, now
            elif not slot.pending and now - slot.last_seen > 10 * self.interval_s:
                del self.slots[key]  # long quiet: forget it
        return out
