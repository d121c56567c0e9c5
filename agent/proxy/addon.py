"""The Kalkan mitmproxy addon: thin hooks over the pure parts.

Run by `agent.collectors.proxy.ProxyCollector` as
`mitmdump -s agent/proxy/mitm_entry.py --set kalkan_state_dir=…`.

Per connection:
* `client_connected`: who owns the client socket (`subject.connection_owner`).
* `tls_clienthello`: decide from the SNI (or the original destination) whether to
  pass the TLS through untouched (most traffic; always ISUO, banks, system users),
  or intercept it (search and video for SafeSearch, blocked hosts for the block page).
Per request (intercepted TLS and plain HTTP):
* the reserved pages (`http://report.kalkan/`, `/__kalkan__/unblock` on any host);
* the filter's verdict → block page + `web.blocked`, or SafeSearch + query alert,
  then per-domain usage counts (never URLs) and the 15-minute in-memory history.
A background task reloads `policy.json` within 0.25 s of a change (no restart, no
dropped connection), flushes `web.usage` and ends idle ISUO sessions.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import json
import logging
import os
import re
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from mitmproxy import connection, ctx, http, tls
from mitmproxy.addons.next_layer import stack_match
from mitmproxy.net.http import url as mitm_url
from mitmproxy.proxy import layer as mitm_layer
from mitmproxy.proxy import layers as mitm_layers
from mitmproxy.proxy.layers import modes as mitm_modes
from mitmproxy.proxy.layers.http import HttpStream

from agent.artifacts import current_index, index_dir, read_report_status, report_key
from agent.network.detectors import Finding
from agent.network.ratelimit import RateLimiter
from agent.proxy import engine as engine_mod
from agent.proxy import kernel_relay, relay
from agent.proxy.destcheck import DestinationCheck, is_ip, normal_ip
from agent.proxy.fastconnect import AnsweredConnect, parse_connect
from agent.proxy.history import RecentPages
from agent.proxy.i18n import pick_language, t
from agent.proxy.isuo import IsuoTracker
from agent.proxy.pages import (
    REPORT_HAND_PATH,
    REPORT_HOST,
    REPORT_SEND_PATH,
    UNBLOCK_PATH,
    BlockInfo,
    PageSet,
)
from agent.proxy.sni import UNSURE, client_hello_sni
from agent.proxy.subject import OsUser, connection_owner
from agent.proxy.usage import UsageCounter
from agent.proxy.watch import POLL_S, FileWatch
from policy_server.protocol import (
    LessonActivity,
    NetBypass,
    Subject,
    WebAlert,
    WebBlocked,
    WebReport,
    WebUnblockRequest,
)

log = logging.getLogger("kalkan.proxy")

HTML = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}
BLOCK_EVENT_DEDUP_S = 60.0
BYPASS_EVENT_INTERVAL_S = 60.0


@dataclass(frozen=True)
class ConnSubject:
    user: OsUser | None
    system: bool  # a system account (apt, the agent): passed through, never a person
    # worked out once per connection, read on every request
    name: str | None = field(init=False, compare=False)
    groups: tuple[str, ...] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.user.name if self.user else None)
        object.__setattr__(self, "groups", self.user.groups if self.user else ())


UNKNOWN = ConnSubject(user=None, system=False)
# Where a client's first TLS bytes can arrive: inside a CONNECT tunnel of the regular proxy
# (the proxy mode, its HTTP layer, the CONNECT stream), or first thing on the transparent port.
_CONNECT_TUNNEL = (mitm_modes.HttpProxy, mitm_layers.HttpLayer, HttpStream)
_TRANSPARENT = (mitm_modes.TransparentProxy,)
_ANSWERED_TUNNEL = (mitm_modes.HttpProxy, AnsweredConnect)  # a CONNECT the addon answered itself
_EXPLICIT = (mitm_modes.HttpProxy,)


def freeze_startup_objects() -> int:
    """Move everything alive once the proxy has started (mitmproxy, Kalkan's modules, the policy
    and its engine: ~100,000 objects) out of the cyclic garbage collector's reach (`gc.freeze`).

    Why: mitmproxy leaves ~40 objects of cyclic garbage per request, so under load the collector
    runs a full collection every few thousand requests, and each one walked these long-lived
    objects again (~40–70 ms of the proxy's CPU each).  Measured under plain-HTTP load, the GC's
    CPU per request fell from 35 to 27.5 µs (bare mitmdump: 39; benchmarks/proxy/RESULTS.md,
    "the garbage collector").  They are never garbage (a new policy's engine replaces
    the old one by reference count: no cycles, tests/proxy/test_pure_parts.py), so nothing is
    lost by not walking them.  Returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class KalkanAddon:
    def __init__(self, *, sink: Any = None, clock=time.time) -> None:
        self._sink = sink
        self._own_sink = sink is None
        self.clock = clock
        self.engine: engine_mod.Engine = engine_mod.Engine.empty()
        self.pages = PageSet(category_name=engine_mod.category_name)
        self.history = RecentPages()
        self.usage = UsageCounter()
        self.isuo = IsuoTracker()
        self._subjects: dict[str, ConnSubject] = {}
        self._known: dict[str, _KnownShape] = {}  # client id → its last request's shape (`request`)
        self._isuo_conns: dict[str, tuple[str, str]] = {}
        self._refused: set[str] = set()
        self._recent_blocks: dict[tuple[str | None, str], float] = {}
        self._lesson_seen: dict[str, tuple[str, float]] = {}  # user → (host, when) last told the teacher
        self._watch: FileWatch | None = None
        self._index_watch: FileWatch | None = None
        self._sent_reports: dict[str, str] = {}  # report key → the URL sent (agent/artifacts.py)
        self.index_in_force: str | None = None
        self._task: asyncio.Task | None = None
        self.policy_error: str = ""
        # copies of options read on every request (ctx.options lookups cost ~5 µs each)
        self._seat: str | None = None
        self._room: str | None = None
        self._system_uid_max = 999
        self._fast_relay = False
        self._relay_mode = "kernel"
        self._fast_connect = False
        self._front = None  # agent/proxy/front.py, when `kalkan_front` is on
        self._front_answered: dict[tuple, tuple[str, int, bytes]] = {}  # client address → CONNECT answered
        # the destination checks (no name that does not lead where the connection goes)
        self.dest = DestinationCheck()
        self._claims: dict[str, str] = {}  # client id → the name its TLS ClientHello claimed
        self._bypass = RateLimiter(interval_s=BYPASS_EVENT_INTERVAL_S, max_keys=64)

    # ------------------------------------------------------------------ options

    def load(self, loader) -> None:
        loader.add_option("kalkan_state_dir", str, "", "Kalkan agent state dir (policy.json, outbox.sqlite).")
        loader.add_option("kalkan_policy", str, "", "Policy bundle file; default <state dir>/policy.json.")
        loader.add_option("kalkan_outbox", str, "", "Event outbox; default <state dir>/outbox.sqlite.")
        loader.add_option("kalkan_event_fd", int, -1,
                          "A pipe from the agent's proxy collector: events go there, not to the outbox.")
        loader.add_option("kalkan_index", str, "", "Category lists: a UT1-format folder or compiled index.")
        loader.add_option("kalkan_seat", str, "", "This workstation's seat name (from the agent's config).")
        loader.add_option("kalkan_room", str, "", "This workstation's room (lessons are per room).")
        loader.add_option("kalkan_language", str, "ky", "School default language of the pages: ky, ru or en.")
        loader.add_option("kalkan_isuo_idle_s", int, 120,
                          "An ISUO session ends after this many seconds without an open connection.")
        loader.add_option("kalkan_system_uid_max", int, 999,
                          "Connections of uids up to this (system services) pass through unfiltered.")
        loader.add_option("kalkan_fast_relay", bool, True,
                          "Relay passed-through TLS with Kalkan's own socket relay (agent/proxy/relay.py) "
                          "instead of mitmproxy's layers.")
        loader.add_option("kalkan_relay_mode", str, "kernel",
                          "How Kalkan's relay moves the bytes: kernel (a BPF sockhash redirects them, "
                          "agent/proxy/kernel_relay.py; where it is not available: process), process "
                          "(os.splice in a small pump process), splice (the same pump as a thread) "
                          "or asyncio.",
                          choices=["kernel", "process", "splice", "asyncio"])
        loader.add_option("kalkan_kernel_relay", str, "auto",
                          "The kernel relay's maps: 'pairs,counts[,ring][,direct,ports]' "
                          "(descriptors the agent created and passed), 'auto' (create them if this "
                          "process may: root) or 'off'.")
        loader.add_option("kalkan_fast_connect", bool, True,
                          "Answer a plain CONNECT on the explicit port without mitmproxy's HTTP layer "
                          "(agent/proxy/fastconnect.py); its tunnel is decided as before.")
        loader.add_option("kalkan_front", bool, True,
                          "Accept the proxy's connections in Kalkan's front listener (agent/proxy/front.py): "
                          "passed-through TLS never enters mitmproxy; everything else is handed to it.")

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        self._seat = opts.kalkan_seat or None
        self._room = opts.kalkan_room or None
        self._system_uid_max = opts.kalkan_system_uid_max
        self._fast_relay = opts.kalkan_fast_relay
        self._relay_mode = opts.kalkan_relay_mode
        if "kalkan_kernel_relay" in updated:
            kernel_relay.configure(opts.kalkan_kernel_relay)
        self._fast_connect = opts.kalkan_fast_connect
        if "kalkan_language" in updated and opts.kalkan_language not in ("ky", "ru", "en"):
            raise ValueError(f"kalkan_language={opts.kalkan_language!r}: use ky, ru or en")
        if "kalkan_isuo_idle_s" in updated:
            self.isuo.idle_end_s = opts.kalkan_isuo_idle_s
        state = Path(opts.kalkan_state_dir) if opts.kalkan_state_dir else None
        if updated & {"kalkan_state_dir", "kalkan_outbox", "kalkan_event_fd"} and self._own_sink:
            outbox = Path(opts.kalkan_outbox) if opts.kalkan_outbox else None
            outbox = outbox or (state / "outbox.sqlite" if state else None)
            if self._sink is not None:
                self._sink.close()
                self._sink = None
            if opts.kalkan_event_fd >= 0:
                from agent.proxy.events import pipe_sink

                self._sink = pipe_sink(opts.kalkan_event_fd, on_broken=_stop_this_process)
            elif outbox is not None:
                from agent.proxy.events import outbox_sink

                self._sink = outbox_sink(outbox)
        if updated & {"kalkan_state_dir", "kalkan_policy", "kalkan_index"}:
            policy = Path(opts.kalkan_policy) if opts.kalkan_policy else None
            policy = policy or (state / "policy.json" if state else None)
            self._watch = FileWatch(policy) if policy else None
            self._state_dir = state
            self._index_watch = FileWatch(index_dir(state) / "current") if state else None
            self.engine_index = opts.kalkan_index or None
            self.reload_policy()

    # ------------------------------------------------------------------ lifecycle

    def running(self) -> None:
        # Never relay bytes that are neither HTTP nor TLS: mitmproxy's "raw TCP" guess would pass
        # a tunnel whose first bytes are held back (next_layer refuses the rest and reports it).
        if ctx.options.rawtcp:
            ctx.options.update(rawtcp=False)
        self._task = asyncio.get_running_loop().create_task(self._background())
        if ctx.options.kalkan_front:
            from agent.proxy.front import Front

            self._front = Front(self)
            self._front.adopt()
        freeze_startup_objects()

    def done(self) -> None:
        now = self.clock()
        for user, event in self.isuo.end_all(now):
            self._emit("isuo.session", event, user)
        self._flush_usage(now, force=True)
        self._flush_bypass(now, force=True)
        if self._task:
            self._task.cancel()
        if self._own_sink and self._sink is not None:
            self._sink.close()

    async def _background(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                policy_changed = self._watch is not None and self._watch.changed()
                index_changed = self._index_watch is not None and self._index_watch.changed()
                if policy_changed or index_changed:
                    await asyncio.to_thread(self.reload_policy, False)
                if self._front is not None:
                    self._front.adopt()  # mitmproxy restarted a listener (its modes changed)
                now = self.clock()
                for user, event in self.isuo.expire(now):
                    self._emit("isuo.session", event, user)
                self._flush_usage(now)
                self._flush_bypass(now)
            except Exception:  # the loop must survive anything one round does
                log.exception("kalkan background round failed")

    def reload_policy(self, mark_seen: bool = True) -> None:
        """Load the policy (the last good one stays if the new file is bad)."""
        if self._watch is None:
            return
        if mark_seen:
            self._watch.changed()
            if self._index_watch is not None:
                self._index_watch.changed()
        try:
            raw = json.loads(self._watch.path.read_text())
        except FileNotFoundError:
            self.policy_error = f"no policy yet at {self._watch.path}; using the strict defaults"
            log.warning(self.policy_error)
            return
        except (OSError, json.JSONDecodeError) as exc:
            self.policy_error = f"could not read {self._watch.path}: {exc}; keeping the last good policy"
            log.error(self.policy_error)
            return
        try:
            self.engine = engine_mod.Engine.from_bundle(raw, index=self._index_source(raw))
            self.policy_error = ""
            log.info("kalkan policy version %s loaded", self.engine.version)
        except Exception as exc:
            self.policy_error = f"policy in {self._watch.path} rejected: {exc}; keeping the last good policy"
            log.error(self.policy_error)

    def _index_source(self, raw: dict) -> str | None:
        """The category index: the one the policy names, once the agent has fetched it; else the
        last good one the agent fetched; else the `kalkan_index` option (agent/artifacts.py)."""
        state = getattr(self, "_state_dir", None)
        if state is not None:
            wanted = ((raw.get("filtering") or {}) if isinstance(raw, dict) else {}).get("index_sha256")
            path = current_index(state, wanted)
            if path is not None:
                self.index_in_force = path.stem
                return str(path)
        self.index_in_force = None
        return getattr(self, "engine_index", None)

    # ------------------------------------------------------------------ subject

    def client_connected(self, client: connection.Client) -> None:
        dialled = (client.sockname[0], client.sockname[1]) if client.sockname else None
        owner = connection_owner(client.peername[0], client.peername[1], dialled)
        system = owner is not None and owner.uid <= self._system_uid_max
        self._subjects[client.id] = ConnSubject(user=owner, system=system)

    def owner_known(self, client: connection.Client) -> bool:
        """Whether this connection's owner has been looked up (`client_connected`)."""
        return client.id in self._subjects

    def client_disconnected(self, client: connection.Client) -> None:
        self._subjects.pop(client.id, None)
        self._known.pop(client.id, None)
        self._refused.discard(client.id)
        self._claims.pop(client.id, None)
        isuo = self._isuo_conns.pop(client.id, None)
        if isuo is not None:
            self.isuo.closed(isuo[0], isuo[1], self.clock())

    def _subject_of(self, client: connection.Client) -> ConnSubject:
        return self._subjects.get(client.id, UNKNOWN)

    def _group(self, subject: ConnSubject) -> str:
        return self.engine.group_of(subject.name, subject.groups)

    # ------------------------------------------------------------------ TLS: decide at ClientHello

    def next_layer(self, nextlayer: mitm_layer.NextLayer) -> None:
        """Decide a tunnel's ClientHello before mitmproxy builds its TLS layers.

        For a connection that passes through untouched (most traffic) this sets the plain TCP
        relay at once — what bare mitmdump's `ignore_hosts` does — instead of letting mitmproxy
        parse the whole ClientHello (~200 µs) and relay every later chunk through two idle TLS
        layers.  Only the first TLS bytes of a CONNECT tunnel or a transparent connection are
        looked at; the server name is read strictly (`sni.client_hello_sni`), and whenever it is
        not sure, or the connection is to be intercepted, mitmproxy goes on as before and
        `tls_clienthello` decides.  The decision is the same one either way (`_pass_untouched`).
        """
        if nextlayer.layer is not None:
            return
        context = nextlayer.context
        if context.client.transport_protocol != "tcp":
            return
        if self._front_answered and stack_match(context, _EXPLICIT):
            answered = self._front_answered.pop(tuple(context.client.peername[:2]), None)
            if answered is not None:  # the front answered this CONNECT; the tunnel's bytes follow
                context.server.address = (answered[0], answered[1])
                nextlayer.layer = AnsweredConnect(context, answered[2], answered=True)
                return
        if self._fast_connect and stack_match(context, _EXPLICIT):
            self._answer_connect(nextlayer)
            return
        if not context.server.address:
            return
        if not (stack_match(context, _ANSWERED_TUNNEL) or stack_match(context, _CONNECT_TUNNEL)
                or stack_match(context, _TRANSPARENT)):
            return
        data = nextlayer.data_client()
        if not data:
            return
        if data[0] != 0x16:  # not a TLS handshake record: HTTP, or nothing passes
            kind = _plain_kind(data)
            if kind == "raw" and not self._subject_of(context.client).system:
                self._refuse_raw(context)
                nextlayer.layer = mitm_layers.TCPLayer(context, ignore=True)  # server_connect fails it
            return
        sni = client_hello_sni(data)
        if sni is UNSURE:
            return
        if self._pass_untouched(context.client, context.server, sni):  # type: ignore[arg-type]
            if not (self._fast_relay and relay.hand_off(nextlayer, data, self._relay_mode)):
                nextlayer.layer = mitm_layers.TCPLayer(context, ignore=True)

    def front_answered(self, peer: tuple, connect: tuple[str, int, bytes]) -> None:
        """The front answered this client's CONNECT and hands its tunnel to mitmproxy."""
        self._front_answered[tuple(peer[:2])] = connect

    def _answer_connect(self, nextlayer: mitm_layer.NextLayer) -> None:
        """The first bytes on the explicit port: a plain CONNECT to a web port is answered here
        (agent/proxy/fastconnect.py); anything else is left to mitmproxy's HTTP layer."""
        target = parse_connect(nextlayer.data_client())
        if target is None:
            return
        host, port, version = target
        if port not in self.engine.proxy_ports and not self._subject_of(nextlayer.context.client).system:
            return  # refused and reported by `http_connect`, on mitmproxy's path
        nextlayer.context.server.address = (host, port)
        nextlayer.layer = AnsweredConnect(nextlayer.context, version)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        if self._pass_untouched(data.context.client, data.context.server, data.client_hello.sni):
            data.ignore_connection = True

    def likely_passed(self, client: connection.Client, name: str | None) -> bool:
        """Whether a TLS connection to `name` (a CONNECT's host, or the name this seat resolved
        to the destination) will most likely be passed through: the front then dials before
        the ClientHello is decided (agent/proxy/front.py).  Before the connection's owner is
        looked up: passed through for some group.  No side effect, nothing recorded."""
        subject = self._subjects.get(client.id)
        if subject is not None and subject.system:
            return True
        if not name or is_ip(name):
            return False
        now = self.clock()
        if subject is None:  # the owner is not looked up yet: passed through for some group
            groups: Iterable[str] = self.engine.policy.groups
            user = None
        else:
            groups, user = (self._group(subject),), subject.name
        return any(self.engine.host_verdict(name, group=group, user=user, seat=self._seat, room=self._room,
                                            when=now).action == engine_mod.PASSTHROUGH for group in groups)

    def _pass_untouched(self, client: connection.Client, server: connection.Server, sni: str | None) -> bool:
        """Decide from the SNI (or the original destination) and record what the decision
        needs recorded; True when the TLS is not to be intercepted (passed through, or refused
        untouched: `server_connect` then fails the dial)."""
        dialled = server.address[0] if server.address else ""
        host = sni or dialled
        subject = self._subject_of(client)
        if subject.system:
            return True
        if sni:
            self._claims[client.id] = sni.lower().rstrip(".")  # server_connect checks where it leads
        elif is_ip(dialled):
            # No name in the hello: judge the address by the name this seat last resolved to it,
            # else as an IP literal (blocked for students by default: filters' `ip_literal`).
            known = self.dest.name_of(dialled)
            if known is not None:
                host = known
                self._claims[client.id] = known
        now = self.clock()
        group = self._group(subject)
        verdict = self.engine.host_verdict(host, group=group, user=subject.name, seat=self._seat,
                                           room=self._room, when=now)
        if sni and _names_differ(dialled, sni):
            # Domain fronting: a CONNECT to one name (whose address is dialled) carrying another
            # name in the SNI.  What is dialled must be allowed too: the stricter verdict wins.
            # (Browsers always send the CONNECT name as the SNI, so this costs them nothing.)
            other = self.engine.host_verdict(dialled, group=group, user=subject.name, seat=self._seat,
                                             room=self._room, when=now)
            if _STRICTNESS[other.action] > _STRICTNESS[verdict.action]:
                host, verdict = dialled, other
        if verdict.action == engine_mod.PASSTHROUGH:
            if self.engine.is_isuo(host):  # who and when only, never what (000 §6.8)
                user = subject.name or "?"
                self._isuo_conns[client.id] = (user, host)
                started = self.isuo.opened(user, host, now)
                if started is not None:
                    self._emit("isuo.session", started, subject.name)
                return True
            self.usage.count(host, now)
            if subject.name:
                self.history.add(subject.name, f"https://{host}/", now)
                self._lesson_open(subject, group, host, now, document=False)
            return True
        if verdict.action == engine_mod.BLOCK and not verdict.intercept_tls:
            # blocked, and never to be looked inside (ISUO, banks): refuse the connection
            self._refused.add(client.id)
            url = f"https://{host}/"
            self._record_block(subject, group, url, host, engine_mod.Verdict(
                allowed=False, categories=tuple(verdict.categories), rule=verdict.rule,
                clauses=tuple(verdict.clauses)), now)
            return True
        # intercept, and block with intercept_tls, go on to TLS interception: `request` decides
        # per URL and serves the block page.
        return False

    async def server_connect(self, data) -> None:
        """Before the proxy dials: a refused connection fails here; a TLS connection whose
        destination is an address must go to an address its claimed name resolves to through
        the school's resolvers (Squid's host_verify_strict), else it is refused and reported."""
        client = data.client
        if client.id in self._refused:
            data.server.error = "blocked by Kalkan"
            return
        name = self._claims.get(client.id)
        if name is None or not data.server.address:
            return
        address, port = data.server.address[0], data.server.address[1]
        if not is_ip(address):
            return  # a CONNECT by name: the proxy resolves and dials that name itself
        if is_ip(name):
            ok = _same_ip(name, address)
        else:
            ok = self.dest.leads_to_cached(name, address)
            if ok is None:
                ok = await self.dest.leads_to(name, address)
        if not ok:
            data.server.error = f"blocked by Kalkan: {name} does not lead to {address}"
            self._report_bypass(self._subject_of(client), "mismatch", address, port,
                                f"TLS name {name} does not resolve to the destination")

    def http_connect(self, flow: http.HTTPFlow) -> None:
        """The explicit proxy port: a CONNECT goes only to the web ports (network.proxy_ports);
        its host is then decided like any other connection (ClientHello, destination check)."""
        subject = self._subject_of(flow.client_conn)
        if subject.system:
            return
        if flow.request.port not in self.engine.proxy_ports:
            self._refuse_flow(flow, subject, "tunnel", flow.request.host, flow.request.port,
                              f"CONNECT to port {flow.request.port}")

    def _refuse_flow(self, flow: http.HTTPFlow, subject: ConnSubject, kind: str, host: str, port: int | None,
                     detail: str) -> None:
        flow.response = http.Response.make(403, f"Kalkan: refused ({detail})\n".encode(),
                                           {"Content-Type": "text/plain; charset=utf-8"})
        flow.metadata["kalkan"] = "page"
        self._report_bypass(subject, kind, host, port, detail)

    def _refuse_raw(self, context) -> None:
        """Neither HTTP nor TLS on a web port (SSH, OpenVPN over TCP, any raw tunnel)."""
        self._refused.add(context.client.id)
        address = context.server.address
        self._report_bypass(self._subject_of(context.client), "raw", address[0], address[1],
                            f"not HTTP or TLS on port {address[1]}")

    def _report_bypass(self, subject: ConnSubject, kind: str, host: str, port: int | None,
                       detail: str) -> None:
        """`net.bypass` (what, where, how often; never content), at most one a minute per
        user, kind and destination, the rest folded into `occurrences`."""
        data = {"kind": kind, "dst_ip": host, "dst_port": port, "detail": detail, "os_user": subject.name}
        key = ("net.bypass", subject.name, kind, host, port)
        for emission in self._bypass.offer(Finding("net.bypass", key, data), self.clock()):
            self._emit_bypass(emission.data)

    def _emit_bypass(self, data: dict) -> None:
        data = dict(data)
        user = data.pop("os_user", None)
        self._emit("net.bypass", NetBypass(**data), user, clauses=["000 §5.6", "001 §2.11"])

    def _flush_bypass(self, now: float, *, force: bool = False) -> None:
        for emission in self._bypass.flush(now, force=force):
            self._emit_bypass(emission.data)

    # ------------------------------------------------------------------ HTTP

    def request(self, flow: http.HTTPFlow) -> None:
        data = flow.request.data
        # one pass over the header fields for everything this hook reads from them
        host_field, dest, accept = _request_headers(data.headers.fields)
        client_id = flow.client_conn.id
        known = self._known.get(client_id)
        if (known is None or known.engine is not self.engine
                or known.shape != (host_field, data.authority, data.scheme, data.http_version, data.host,
                                   data.port)
                or known.subject is not self._subjects.get(client_id, UNKNOWN)
                or data.method == b"CONNECT" or data.path.startswith(_UNBLOCK_PATH)
                or (known.target is not None and self._agrees(known.host, known.target) is not True)):
            self._request_full(flow, host_field, dest, accept)
            return
        # A request shaped like the connection's previous one (same Host, authority, scheme,
        # version, destination; same subject and policy): everything `_request_full` worked out
        # from the shape holds — not the report host, not a system account, a web port, Host and
        # destination agree, not ISUO, no SafeSearch — so only the per-URL part is left, and not
        # even the verdict when the engine keeps it for this minute (`decide_for_minute`: it is
        # then the verdict of every URL with this authority).
        now = self.clock()
        minute = int(now // 60)
        into = now - minute * 60
        url = None
        if (known.minute == minute and _MINUTE_LO <= into <= _MINUTE_HI
                and known.seat is self._seat and known.room is self._room):
            verdict = known.verdict
        else:
            url = known.url(data.path)
            verdict, held = known.engine.decide_for_minute(url, group=known.group, user=known.subject.name,
                                                           seat=self._seat, room=self._room, when=now)
            known.minute, known.verdict, known.seat, known.room = held, verdict, self._seat, self._room
        if not verdict.allowed:
            self._block(flow, known.subject, known.group, verdict, now)
            return
        self.usage.count_normal(known.host, now)
        name = known.subject.name
        if name and (dest in _DOCUMENT_DESTS if dest else accept is not None and "text/html" in accept):
            self.history.add(name, url or known.url(data.path), now)
            self._lesson_open(known.subject, known.group, known.host, now, document=True)

    def _request_full(self, flow: http.HTTPFlow, host_field: str | None, dest: str | None,
                      accept: str | None) -> None:
        req = flow.request
        pretty_host, url, origin = _host_url_origin(req, host_field)
        host = pretty_host.lower().rstrip(".")
        if host == REPORT_HOST:
            self._serve_report(flow)
            return
        if req.data.path.startswith(_UNBLOCK_PATH):
            self._serve_unblock(flow)
            return
        client_id = flow.client_conn.id
        subject = self._subjects.get(client_id, UNKNOWN)
        if subject.system:
            return
        now = self.clock()
        engine = self.engine
        target, port = req.host, req.port
        if port not in engine.proxy_ports:
            self._refuse_flow(flow, subject, "tunnel", target, port, f"request to port {port}")
            return
        # One authority decides and is the one connected to: the name decided (Host) and the
        # destination (the absolute URI's host, the connection's address) must agree.
        target_name = target.lower().rstrip(".")
        agree = self._agrees(host, target_name)
        authority = req.data.authority
        if agree is not False and authority and req.data.http_version not in _HTTP2_OR_3:
            # an absolute URI (a transparent connection, or inside a tunnel) names where the
            # request is meant to go: it must be the Host decided on, else an upstream proxy at
            # the destination would fetch something the filter never judged
            written = authority.decode("utf-8", "surrogateescape")
            if written != host_field:  # (the usual absolute URI spells its Host alike: nothing to parse)
                uri_host = _origin(req.data.scheme or b"http", written)[0]
                if uri_host.lower().rstrip(".") != host:
                    agree = False
        if agree is False:
            self._refuse_flow(flow, subject, "mismatch", target, port,
                              f"Host {host} does not lead to the destination")
            return
        isuo, search_engine = engine.host_facts(host)
        if isuo:  # plain-HTTP ISUO: only the fact of use, never the content
            if agree is None:
                self._check_later(flow, subject, host, target, port)
            return
        group = engine.group_of(subject.name, subject.groups)
        user = subject.name
        verdict, held = engine.decide_for_minute(url, group=group, user=user, seat=self._seat,
                                                 room=self._room, when=now)
        safe_search = search_engine and engine.safe_search_on
        if agree is True and origin is not None and not safe_search:
            # the next request of this shape on this connection skips all of the above
            data = req.data
            self._known[client_id] = _KnownShape(
                shape=(host_field, data.authority, data.scheme, data.http_version, data.host, data.port),
                engine=engine, subject=subject, host=host, origin=origin, group=group,
                # only names equal to the destination agree whatever the resolver's cache holds
                target=None if host == target_name or is_ip(host) else target_name,
                minute=held, verdict=verdict, seat=self._seat, room=self._room,
                downloads=engine.may_block_downloads(group))
        if not verdict.allowed:
            self._block(flow, subject, group, verdict, now)
            return
        rewrite = engine.safe_search(url, host) if safe_search else None
        if rewrite is not None:
            if rewrite.url != url:
                req.url = rewrite.url
            for name, value in rewrite.headers.items():
                req.headers[name] = value
            if rewrite.query:
                self._check_query(rewrite, url, subject)
        self.usage.count(host, now)
        if subject.name and _is_document(dest, accept):
            self.history.add(subject.name, url, now)
            self._lesson_open(subject, group, host, now, document=True)
        if agree is None:
            self._check_later(flow, subject, host, target, port)

    def _agrees(self, claimed: str, target: str) -> bool | None:
        """Whether the request's claimed host and where it will be sent agree: True / False, or
        None when only a DNS lookup can tell (then `_check_later`)."""
        if claimed == target:
            return True
        claimed_ip, target_ip = is_ip(claimed), is_ip(target)
        if claimed_ip and target_ip:
            return _same_ip(claimed, target)
        if claimed_ip or not target_ip:
            # an address claimed for a name, or two different names: only names that share an
            # address (HTTP/2 coalescing) may, which is looked up
            if claimed_ip:
                return False
            mine, theirs = self.dest.addresses(claimed), self.dest.addresses(target)
            if mine is not None and theirs is not None and mine & theirs:
                return True
            return None
        return self.dest.leads_to_cached(claimed, target)

    def _check_later(self, flow: http.HTTPFlow, subject: ConnSubject, claimed: str, target: str,
                     port: int) -> None:
        """A cold name: hold the request (mitmproxy's intercept) until the resolver answers."""
        flow.intercept()
        asyncio.get_running_loop().create_task(self._finish_check(flow, subject, claimed, target, port))

    async def _finish_check(self, flow: http.HTTPFlow, subject: ConnSubject, claimed: str, target: str,
                            port: int) -> None:
        try:
            if is_ip(target):
                ok = await self.dest.leads_to(claimed, target)
            else:
                mine, theirs = await asyncio.gather(self.dest.resolve(claimed), self.dest.resolve(target))
                ok = bool(mine & theirs)
            if not ok:
                self._refuse_flow(flow, subject, "mismatch", target, port,
                                  f"Host {claimed} does not lead to the destination")
        except Exception:
            log.exception("kalkan destination check failed")
            self._refuse_flow(flow, subject, "mismatch", target, port, "destination check failed")
        finally:
            flow.resume()

    def response(self, flow: http.HTTPFlow) -> None:
        """A blocked download gets the same block page (decided on the response headers)."""
        if flow.response is None or flow.metadata.get("kalkan") == "page":
            return
        client_id = flow.client_conn.id
        subject = self._subjects.get(client_id, UNKNOWN)
        if subject.system:
            return
        known = self._known.get(client_id)
        if known is not None and known.engine is self.engine and known.subject is subject:
            if not known.downloads:  # teachers: nothing to look at
                return
            group = known.group
        else:
            group = self._group(subject)
            if not self.engine.may_block_downloads(group):
                return
        content_type, disposition = _header_values(flow.response.headers, b"content-type",
                                                   b"content-disposition")
        verdict = self.engine.download(flow.request.pretty_url, group=group, content_type=content_type or "",
                                       disposition=disposition or "")
        if verdict is not None and not verdict.allowed:
            self._block(flow, subject, group, verdict, self.clock(), download=True)

    # ------------------------------------------------------------------ pages

    def _lang(self, flow: http.HTTPFlow) -> str:
        return pick_language(flow.request.headers.get("accept-language"), ctx.options.kalkan_language)

    def _block(self, flow: http.HTTPFlow, subject: ConnSubject, group: str, verdict: engine_mod.Verdict,
               now: float, *, download: bool = False) -> None:
        url = flow.request.pretty_url
        info = BlockInfo(url=url, host=flow.request.pretty_host, categories=tuple(verdict.categories),
                         rule=verdict.rule, clauses=tuple(verdict.clauses), download=download,
                         detail=verdict.detail)
        flow.response = http.Response.make(403, self.pages.block_page(info, self._lang(flow)), HTML)
        flow.metadata["kalkan"] = "page"
        self._record_block(subject, group, url, info.host, verdict, now, download=download)

    def _record_block(self, subject: ConnSubject, group: str, url: str, host: str,
                      verdict: engine_mod.Verdict, now: float, *, download: bool = False) -> None:
        """`web.blocked` with the full URL, once a minute per user and URL (a page's many
        blocked parts must not flood the outbox; the server aggregates attempts)."""
        key = (subject.name, url)
        if now - self._recent_blocks.get(key, 0.0) < BLOCK_EVENT_DEDUP_S:
            return
        if len(self._recent_blocks) > 10000:
            self._recent_blocks.clear()
        self._recent_blocks[key] = now
        event = WebBlocked(url=url[:4096], host=host, categories=list(verdict.categories),
                           rule=verdict.rule, group=group, download=download)
        self._emit("web.blocked", event, subject.name, clauses=list(verdict.clauses) or None)

    def _serve_report(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        lang = self._lang(flow)
        subject = self._subject_of(flow.client_conn)
        flow.metadata["kalkan"] = "page"
        lesson = self._lesson_of(subject)
        if req.method == "POST" and req.path.startswith(REPORT_HAND_PATH):
            form = _form(req)
            lang = form.get("lang") if form.get("lang") in ("ky", "ru", "en") else lang
            if lesson is not None:
                self._emit("lesson.activity", LessonActivity(kind="hand", lesson_id=lesson.id[:32]),
                           subject.name)
            recent = self.history.recent(subject.name or "?", self.clock())
            flow.response = http.Response.make(200, self.pages.report_page(
                recent, lang, lesson=lesson is not None, hand_raised=lesson is not None), HTML)
            return
        if req.method == "POST" and req.path.startswith(REPORT_SEND_PATH):
            form = _form(req)
            lang = form.get("lang") if form.get("lang") in ("ky", "ru", "en") else lang
            url = (form.get("typed") or form.get("picked") or "").strip()
            if not url:
                recent = self.history.recent(subject.name or "?", self.clock())
                page = self.pages.report_page(recent, lang, error=t("report_missing_url", lang))
                flow.response = http.Response.make(400, page, HTML)
                return
            comment = (form.get("comment") or "").strip()[:2000] or None
            self._emit("web.report", WebReport(url=url[:4096], comment=comment), subject.name)
            self._sent_reports[report_key(url[:4096])] = url[:4096]  # for the status on the page
            while len(self._sent_reports) > 200:
                self._sent_reports.pop(next(iter(self._sent_reports)))
            flow.response = http.Response.make(200, self.pages.report_thanks(url, lang), HTML)
            return
        recent = self.history.recent(subject.name or "?", self.clock())
        state = getattr(self, "_state_dir", None)
        statuses = []
        for item in read_report_status(state) if state is not None else []:
            sent = self._sent_reports.get(str(item.get("key")))
            if sent is not None and isinstance(item, dict):
                statuses.append({**item, "url": sent})
        flow.response = http.Response.make(200, self.pages.report_page(
            recent, lang, statuses=statuses, lesson=lesson is not None), HTML)

    def _lesson_of(self, subject: ConnSubject):
        """The lesson running now in this room for a student, or None."""
        if subject.system or self._room is None:
            return None
        policy = self.engine.policy
        if not getattr(policy, "lessons", ()):
            return None
        group = self._group(subject)
        if policy.kind_of(group) != "student":
            return None
        return policy.active_lesson(room=self._room, group=group, at=engine_mod._at(self.clock()))

    def _serve_unblock(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        flow.metadata["kalkan"] = "page"
        if req.method != "POST":
            flow.response = http.Response.make(405, "POST only", {"Content-Type": "text/plain"})
            return
        form = _form(req)
        lang = form.get("lang") if form.get("lang") in ("ky", "ru", "en") else self._lang(flow)
        url = (form.get("url") or "").strip()[:4096] or req.pretty_url
        categories = [c for c in (form.get("categories") or "").split(",") if c]
        subject = self._subject_of(flow.client_conn)
        comment = (form.get("comment") or "").strip()[:2000] or None
        rule = form.get("rule", "")
        request = WebUnblockRequest(url=url, categories=categories, rule=rule, comment=comment)
        self._emit("web.unblock_request", request, subject.name)
        self._sent_reports[report_key(url)] = url
        info = BlockInfo(url=url, host=req.pretty_host, categories=tuple(categories), rule=rule)
        flow.response = http.Response.make(200, self.pages.block_page(info, lang, unblock_sent=True), HTML)

    # ------------------------------------------------------------------ search alerts

    def _check_query(self, rewrite: engine_mod.SearchRewrite, url: str, subject: ConnSubject) -> None:
        score = self.engine.score(rewrite.query)
        if score is not None and score.score >= self.engine.alert_threshold:
            alert = WebAlert(url=url[:4096], engine=rewrite.engine, query=rewrite.query[:2000],
                             score=score.score, threshold=self.engine.alert_threshold,
                             lists=list(score.lists), phrases=list(score.phrases))
            self._emit("web.alert", alert, subject.name)

    # ------------------------------------------------------------------ events

    def _lesson_open(self, subject: ConnSubject, group: str, host: str, now: float, *,
                     document: bool) -> None:
        """During a lesson in this room only: tell the lesson's teacher the site a student has
        open (`lesson.activity`, never stored as an event: 001 §2.15).  A page (intercepted
        document) always; a pass-through connection at most every `LESSON_OPEN_EVERY_S` per user
        (it may be a page's CDN, not the page)."""
        policy = self.engine.policy
        lessons = getattr(policy, "lessons", ())
        if not lessons or self._room is None:
            return
        if policy.kind_of(group) != "student":
            return
        lesson = policy.active_lesson(room=self._room, group=group, at=engine_mod._at(now))
        if lesson is None:
            return
        last = self._lesson_seen.get(subject.name or "")
        if last is not None and last[0] == host:
            return
        if not document and last is not None and now - last[1] < LESSON_OPEN_EVERY_S:
            return
        self._lesson_seen[subject.name or ""] = (host, now)
        self._emit("lesson.activity", LessonActivity(kind="open", host=host[:253], lesson_id=lesson.id[:32]),
                   subject.name)

    def _emit(self, event_type: str, data: Any, os_user: str | None, *,
              clauses: list[str] | None = None) -> None:
        if self._sink is None:
            log.warning("no outbox configured; %s not recorded", event_type)
            return
        subject = Subject(os_user=os_user, seat=self._seat)
        self._sink.emit(event_type, data, subject=subject, clauses=clauses)

    def _flush_usage(self, now: float, *, force: bool = False) -> None:
        if force or self.usage.due(now):
            usage = self.usage.flush(now)
            if usage is not None:
                self._emit("web.usage", usage, None)


_UNBLOCK_PATH = UNBLOCK_PATH.encode("ascii")
LESSON_OPEN_EVERY_S = 10.0
_STRICTNESS = {engine_mod.PASSTHROUGH: 0, engine_mod.INTERCEPT: 1, engine_mod.BLOCK: 2}


def _names_differ(dialled: str, sni: str) -> bool:
    """Whether a CONNECT name and the SNI name different hosts.  An address (transparent mode's
    original destination, or a CONNECT to an IP) is not a name to compare: the SNI decides."""
    if not dialled:
        return False
    dialled, sni = dialled.lower().rstrip("."), sni.lower().rstrip(".")
    if dialled == sni:
        return False
    try:
        ipaddress.ip_address(dialled)
    except ValueError:
        return True
    return False


_HTTP_START = re.compile(rb"[A-Z][A-Za-z-]{0,15} [^ \r\n]")
_METHOD_SO_FAR = re.compile(rb"[A-Z][A-Za-z-]{0,15}")


def _plain_kind(data: bytes) -> str:
    """"http" when the first client bytes start an HTTP request, "more" when they still might,
    "raw" otherwise (SSH's banner, OpenVPN, anything else: refused on the web ports)."""
    if _HTTP_START.match(data):
        return "http"
    if len(data) <= 16 and _METHOD_SO_FAR.fullmatch(data):
        return "more"
    return "raw"


def _same_ip(a: str, b: str) -> bool:
    try:
        return normal_ip(a) == normal_ip(b)
    except ValueError:
        return False


def _stop_this_process() -> None:
    """The agent that supervises us is gone: stop (mitmdump shuts down cleanly on SIGTERM)."""
    os.kill(os.getpid(), signal.SIGTERM)


@lru_cache(maxsize=1024)
def _origin(scheme: bytes, host_header: str) -> tuple[str, str]:
    """(`pretty_host`, ``scheme://host[:port]``) for one scheme and Host header value: mitmproxy's
    own parse (with IDNA) and `unparse`, remembered — a lab asks the same few hosts over and
    over, and the parse was a third of the addon's per-request time."""
    scheme_text = scheme.decode("utf-8", "surrogateescape")
    host, port = mitm_url.parse_authority(host_header, check=False)
    port = port or mitm_url.default_port(scheme_text) or 443
    # mitmproxy's unparse writes an IPv6 address bare ("https://fd00::1"), which no URL parser
    # reads as that address: the decision would judge a garbled name instead of the address
    return host, mitm_url.unparse(scheme_text, f"[{host}]" if ":" in host else host, port)


_READ_IT = object()
_HTTP2_OR_3 = (b"HTTP/2.0", b"HTTP/3")
# a verdict kept for a minute is used only this far inside it (engine.minute_reusable)
_MINUTE_LO, _MINUTE_HI = engine_mod._EDGE_S, 60 - engine_mod._EDGE_S


def _host_and_url(req: http.Request, host_field: Any = _READ_IT) -> tuple[str, str]:
    """`req.pretty_host` and `req.pretty_url` together: each parses the Host header on its own,
    and the addon needs both on every request (same results, one remembered parse; the raw
    request fields are read directly, not through properties that decode each one).
    `host_field`: the Host header's value if the caller already read it (None: there is none)."""
    return _host_url_origin(req, host_field)[:2]


def _host_url_origin(req: http.Request, host_field: Any = _READ_IT) -> tuple[str, str, str | None]:
    """`_host_and_url`, and the ``scheme://host[:port]`` the URL was made of when it is that
    origin followed by the request's path (`_url_of`); None when it was made otherwise."""
    data = req.data
    if host_field is _READ_IT:
        host_field = data.headers.get("Host", None)
    host_header = (req.authority or host_field) if data.http_version in _HTTP2_OR_3 else host_field
    if data.method == b"CONNECT":
        return (_origin(data.scheme, host_header)[0] if host_header else req.host), req.authority, None
    if not host_header:
        return req.host, req.url, None
    host, origin = _origin(data.scheme, host_header)
    return host, _url_of(origin, data.path), origin


def _url_of(origin: str, path: bytes) -> str:
    text = path.decode("utf-8", "surrogateescape")
    return origin + ("" if text == "*" else text)


@dataclass(slots=True, eq=False)
class _KnownShape:
    """What `request` worked out for one connection's last request from its shape alone:
    `shape` = (Host field, absolute URI's authority, scheme, HTTP version, destination host,
    destination port), valid for one Engine (policy version) and one subject object.  Kept
    only for a request that went on to the URL decision (allowed Host/destination, a web port,
    not ISUO, no SafeSearch), with an origin-form URL (`origin` + path)."""

    shape: tuple
    engine: engine_mod.Engine
    subject: ConnSubject
    host: str  # the decided host (lower case, no trailing dot)
    origin: str
    group: str
    target: str | None  # None: Host and destination agree whatever the DNS caches hold; else re-ask
    minute: int | None  # the minute `verdict` holds for every URL of this authority (None: none)
    verdict: engine_mod.Verdict
    seat: str | None  # the options `verdict` was decided with
    room: str | None
    downloads: bool  # whether the subject's group may be refused a download (`response`)

    def url(self, path: bytes) -> str:
        return _url_of(self.origin, path)


def _request_headers(fields: tuple) -> tuple[str | None, str | None, str | None]:
    """`_header_values(headers, b"host", b"sec-fetch-dest", b"accept")`, what `request` reads,
    without its general bookkeeping (the common request names each at most once)."""
    host = dest = accept = None
    for raw_name, raw_value in fields:
        lowered = raw_name.lower()
        if lowered == b"host":
            host = raw_value if host is None else host + b", " + raw_value
        elif lowered == b"accept":
            accept = raw_value if accept is None else accept + b", " + raw_value
        elif lowered == b"sec-fetch-dest":
            dest = raw_value if dest is None else dest + b", " + raw_value
    return (None if host is None else host.decode("utf-8", "surrogateescape"),
            None if dest is None else dest.decode("utf-8", "surrogateescape"),
            None if accept is None else accept.decode("utf-8", "surrogateescape"))


def _header_values(headers: http.Headers, *names: bytes) -> list[str | None]:
    """`headers.get(name)` for each name (lower case), in one pass over the raw fields:
    `headers.get` re-encodes and scans every field for each name asked.  Repeated headers
    are joined with ", " as `headers.get` does."""
    found: dict[bytes, list[bytes]] | None = None
    for raw_name, raw_value in headers.fields:
        lowered = raw_name.lower()
        if lowered in names:
            if found is None:
                found = {lowered: [raw_value]}
            elif lowered in found:
                found[lowered].append(raw_value)
            else:
                found[lowered] = [raw_value]
    if found is None:
        return [None] * len(names)
    return [b", ".join(found[name]).decode("utf-8", "surrogateescape") if name in found else None
            for name in names]


_DOCUMENT_DESTS = ("document", "iframe")


def _is_document(dest: str | None, accept: str | None) -> bool:
    """A page a person opened (for the report page's list), from Sec-Fetch-Dest, else Accept.
    (`request` has the same test written out.)"""
    if dest:
        return dest in _DOCUMENT_DESTS
    return "text/html" in (accept or "")


def _form(req: http.Request) -> dict[str, str]:
    try:
        parsed = parse_qs(req.get_text(strict=False) or "", keep_blank_values=True)
    except ValueError:
        return {}
    return {key: values[0] for key, values in parsed.items() if values}
