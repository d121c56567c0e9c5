"""The kernel relay (agent/proxy/kernel_relay.py) on this machine's real kernel: a pair of TCP
connections handed to the BPF sockhash carries bytes both ways without user space, ends exactly
(the last bytes before a FIN are never overtaken), passes a reset on, leaves nothing in the maps;
the client's sends take the direct path (straight into the server's socket) where its port is
watched; a side that does not read stops the sender after the kernel's budget instead of the
kernel queueing without end; and a real mitmdump relays passed-through TLS this way by default."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import socket
import struct
import threading
import time

import pytest
import uvloop

from agent.proxy import kernel_maps, kernel_relay

try:
    MAPS = kernel_maps.create_maps()
except OSError as exc:  # pragma: no cover - the CI machine has BPF (root, kernel ≥ 5.13)
    MAPS = None
    WHY = str(exc)

pytestmark = pytest.mark.skipif(MAPS is None, reason="no BPF sockhash on this machine")


class Ended:
    def __init__(self) -> None:
        self.event = threading.Event()

    def close(self) -> None:
        self.event.set()


class Loop:
    """An event loop in a thread, as mitmproxy's, with one KernelRelay: asyncio's own, or uvloop
    (what the agent runs mitmdump on)."""

    def __init__(self, kind: str = "asyncio") -> None:
        self.loop = uvloop.new_event_loop() if kind == "uvloop" else asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.relay = kernel_relay.KernelRelay(self.loop, MAPS)

    def call(self, fn, *args):
        done = threading.Event()
        box = {}

        def run():
            box["value"] = fn(*args)
            done.set()
        self.loop.call_soon_threadsafe(run)
        assert done.wait(5)
        return box["value"]

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
        gc.collect()  # the loop's cycles go now, not inside a later test that counts garbage


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def loop(request):
    made = Loop(request.param)
    yield made
    made.stop()


# The direct path's listeners: their ports are watched (the client's sends go direct), and they
# stay open for the whole module so that no other test's listener gets a watched port.
WATCHED: dict[str, socket.socket] = {}


def watched_listener(host: str) -> socket.socket:
    if host not in WATCHED:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        WATCHED[host] = socket.create_server((host, 0), family=family)
        MAPS.direct.watch(WATCHED[host].getsockname()[1])
    return WATCHED[host]


def four_sockets(direct: str | None = None):
    """client ⇄ front … upstream ⇄ origin: two TCP connections; the middle two are the relay's.
    `direct`: the host of a watched listener (the client's sends may go direct)."""
    lsock = watched_listener(direct) if direct else socket.create_server(("127.0.0.1", 0))
    osock = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(lsock.getsockname()[:2])
    front, _ = lsock.accept()
    upstream = socket.create_connection(osock.getsockname())
    origin, _ = osock.accept()
    if not direct:
        lsock.close()
    osock.close()
    for sock in (client, origin):
        sock.settimeout(10)
    return client, front, upstream, origin


def relayed_pair(loop: Loop, first: bytes = b"", direct: str | None = None):
    """client ⇄ [front socket … upstream socket] ⇄ origin, the middle handed to the kernel."""
    client, front, upstream, origin = four_sockets(direct)
    ended = Ended()
    assert loop.call(loop.relay.add, ended, front.detach(), upstream.detach(), first)
    return client, origin, ended


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(min(1 << 20, n - len(data)))
        assert chunk, f"closed after {len(data)} of {n} bytes"
        data += chunk
    return bytes(data)


def exchange(client: socket.socket, origin: socket.socket) -> int:
    """The hello first, then requests and answers of growing sizes; how many bytes each way."""
    assert read_exactly(origin, 5) == b"HELLO"
    for size in (1, 100, 70_000):
        client.sendall(b"c" * size)
        assert read_exactly(origin, size) == b"c" * size
        origin.sendall(b"o" * size)
        assert read_exactly(client, size) == b"o" * size
    return 70_101


def test_bytes_both_ways_and_the_first_bytes_go_first(loop):
    client, origin, ended = relayed_pair(loop, first=b"HELLO")
    exchange(client, origin)
    client.close()
    origin.close()
    assert ended.event.wait(10)


def test_a_large_answer_then_close_arrives_whole(loop):
    """The origin writes 8 MB and closes at once: its FIN must not overtake the bytes the kernel
    still moves on its work queue."""
    client, origin, ended = relayed_pair(loop)
    body = os.urandom(1 << 20) * 8

    def answer():
        origin.sendall(body)
        origin.close()
    writer = threading.Thread(target=answer)
    writer.start()
    got = bytearray()
    while True:
        chunk = client.recv(1 << 20)
        if not chunk:
            break
        got += chunk
    writer.join()
    assert len(got) == len(body) and bytes(got) == body
    client.close()
    assert ended.event.wait(10)
    assert not loop.call(lambda: len(loop.relay.pairs))


def test_half_close_the_answer_still_comes(loop):
    """The client says it will send no more; the origin still answers, then closes."""
    client, origin, ended = relayed_pair(loop)
    client.sendall(b"question")
    client.shutdown(socket.SHUT_WR)
    assert read_exactly(origin, 8) == b"question"
    assert origin.recv(10) == b""  # the client's FIN passed on, after the bytes
    origin.sendall(b"answer" * 10_000)
    origin.close()
    got = bytearray()
    while chunk := client.recv(65536):
        got += chunk
    assert bytes(got) == b"answer" * 10_000
    client.close()
    assert ended.event.wait(10)


def test_a_reset_ends_the_pair_and_the_maps_forget_it(loop):
    client, origin, ended = relayed_pair(loop)
    client.sendall(b"x")
    assert read_exactly(origin, 1) == b"x"
    cookies = loop.call(lambda: [(p.client.cookie, p.server.cookie) for p in loop.relay.pairs])[0]
    origin.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    origin.close()  # RST
    assert ended.event.wait(10)
    with pytest.raises(OSError):
        client.sendall(b"y" * 100_000)
        client.recv(1)  # the reset reached the client: its connection is gone
    found = ctypes.create_string_buffer(8)
    for cookie in cookies:
        with pytest.raises(OSError):
            loop.relay.redirected(cookie)  # the count is gone from the map
        with pytest.raises(OSError):  # and the peer socket from `pairs` (closing it unlinked it)
            kernel_maps.elem(MAPS.pairs_fd, kernel_maps.MAP_LOOKUP, cookie, found)
    client.close()


def test_bytes_never_reach_user_space(loop):
    """What the kernel moved is counted by the program: 1 MB each way, none of it read by us."""
    client, origin, ended = relayed_pair(loop)
    pair = loop.call(lambda: next(iter(loop.relay.pairs)))
    client.sendall(b"a" * 1_000_000)
    read_exactly(origin, 1_000_000)
    origin.sendall(b"b" * 1_000_000)
    read_exactly(client, 1_000_000)
    assert loop.relay.redirected(pair.client.cookie) == 1_000_000
    assert loop.relay.redirected(pair.server.cookie) == 1_000_000
    client.close()
    origin.close()
    assert ended.event.wait(10)


def test_bytes_from_before_the_pair_was_complete_are_sent_on(loop):
    """A server that speaks before the decision (the early dial is staged, the client's hello not
    yet sent): the program leaves those bytes to user space, which passes them on once started;
    then the kernel relays as usual."""
    client, front, upstream, origin = four_sockets()
    pair = loop.call(loop.relay.stage, front.detach(), upstream.detach())
    assert pair is not None
    origin.sendall(b"server speaks first")
    time.sleep(0.1)
    ended = Ended()
    assert loop.call(loop.relay.start, pair, ended, b"HELLO")
    assert read_exactly(origin, 5) == b"HELLO"
    assert read_exactly(client, 19) == b"server speaks first"
    client.sendall(b"abc")
    assert read_exactly(origin, 3) == b"abc"
    origin.sendall(b"xyz")
    assert read_exactly(client, 3) == b"xyz"
    client.close()
    origin.close()
    assert ended.event.wait(10)


def test_the_proxy_can_add_pairs_without_any_privilege(loop):
    """The agent (root) makes the maps; the proxy's account, with no capability, only adds its
    own sockets to them (the descriptors it was given)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            relay = kernel_relay.KernelRelay(asyncio.new_event_loop(), MAPS)
            lsock = socket.create_server(("127.0.0.1", 0))
            a = socket.create_connection(lsock.getsockname())
            b, _ = lsock.accept()
            c = socket.create_connection(lsock.getsockname())
            d, _ = lsock.accept()
            code = 0 if relay.add(Ended(), b.detach(), c.detach(), b"") else 2
            a.sendall(b"ping")
            d.settimeout(5)
            code = code or (0 if d.recv(4) == b"ping" else 3)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# --- the kernel's queue is bounded: past its budget, user space relays at the receiver's pace ---

def numbered(megabytes: int) -> bytes:
    """Records that show any loss, repetition or reordering."""
    return b"".join(struct.pack("!I", i) * 256 for i in range(megabytes * 1024))


class Sender(threading.Thread):
    """Sends `data` on a blocking socket as fast as the other side lets it; `sent` so far."""

    def __init__(self, sock: socket.socket, data: bytes) -> None:
        super().__init__(daemon=True)
        self.sock, self.data, self.sent = sock, data, 0

    def run(self) -> None:
        view = memoryview(self.data)
        try:
            while self.sent < len(self.data):
                self.sent += self.sock.send(view[self.sent:self.sent + 65536])
        except OSError:
            pass


# What a sender may have written while the other side reads nothing: the kernel's budget, both
# sockets' buffers and the relay's own (a fixed figure: the test must fail if the budget grows).
BOUNDED = 48 << 20


@pytest.mark.parametrize("direction", ["download", "upload", "upload-direct"])
def test_a_side_that_does_not_read_stops_the_sender(loop, direction):
    """The origin sends 128 MB that the client does not read for a while (or the client uploads
    128 MB that the origin does not read): the sender is stopped after the kernel's budget and the
    socket buffers, instead of the kernel queueing everything (before the budget, 650 MB a
    second went into kernel memory here); then every byte arrives once, in order.  On the direct
    path the sender waits for the server's socket itself, then leaves it past its limit."""
    if direction == "upload-direct" and (MAPS.direct is None):
        pytest.skip(f"no direct path here: {MAPS.why_not_direct}")
    client, origin, ended = relayed_pair(loop, direct="127.0.0.1" if direction == "upload-direct" else None)
    pair = _the_pair(loop)
    data = numbered(128)
    sender_sock, reader_sock, sending_side = ((origin, client, pair.server) if direction == "download"
                                              else (client, origin, pair.client))
    sender = Sender(sender_sock, data)
    sender.start()
    time.sleep(1.5)
    assert kernel_maps.KERNEL_BUDGET < BOUNDED / 4
    assert sender.sent < BOUNDED, "the kernel queued without a bound"
    assert loop.relay.moved(sending_side) <= kernel_maps.KERNEL_BUDGET + 65536
    state = (f"sent {sender.sent}, moved {loop.relay.moved(sending_side)}, quiet {sending_side.quiet}, "
             f"held {sending_side.held}, pending {len(pair.peer(sending_side).pending)}")
    try:
        got = read_exactly(reader_sock, len(data))
    except (TimeoutError, AssertionError) as exc:  # (what the relay was doing, for a rare failure)
        raise AssertionError(f"{exc}; after 1.5 s: {state}; now: quiet {sending_side.quiet}, "
                             f"held {sending_side.held}, done {pair.done}") from exc
    assert got == data
    sender.join(10)
    client.close()
    origin.close()
    assert ended.event.wait(10)


# --- the direct path: the client's sends go straight into the server's socket -----------------

needs_direct = pytest.mark.skipif(MAPS is None or MAPS.direct is None,
                                  reason=f"no direct path here: {MAPS and MAPS.why_not_direct}")


def _the_pair(loop):
    return loop.call(lambda: next(iter(loop.relay.pairs)))


@needs_direct
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_the_clients_bytes_after_the_hello_go_direct(loop, host):
    """After the hello, what the client sends is counted on the direct path and never crosses
    the front's socket (its stream-verdict count stays 0); the answers still come back; the
    client's end passes on after its last bytes; and the flow leaves the map at the end."""
    client, origin, ended = relayed_pair(loop, first=b"HELLO", direct=host)
    pair = _the_pair(loop)
    each_way = exchange(client, origin)
    assert loop.relay.sent_direct(pair) == each_way
    assert loop.relay.redirected(pair.client.cookie) == 0
    assert loop.relay.redirected(pair.server.cookie) == each_way
    client.sendall(b"last")
    client.shutdown(socket.SHUT_WR)
    assert read_exactly(origin, 4) == b"last"
    assert origin.recv(10) == b""
    flow = pair.flow
    assert flow is None  # the client's end took its flow out at once
    origin.close()
    assert client.recv(10) == b""
    client.close()
    assert ended.event.wait(10)


@needs_direct
def test_a_flow_leaves_the_maps_at_the_end(loop):
    client, origin, ended = relayed_pair(loop, direct="127.0.0.1")
    pair = _the_pair(loop)
    flow = pair.flow
    assert flow is not None
    client.sendall(b"x")
    assert read_exactly(origin, 1) == b"x"
    origin.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    origin.close()  # RST
    assert ended.event.wait(10)
    value = ctypes.create_string_buffer(8)
    with pytest.raises(OSError):
        kernel_maps.flow_elem(MAPS.direct.direct_fd, kernel_maps.MAP_LOOKUP, flow, value)
    with pytest.raises(OSError):  # (the direct path's target, the server's socket, left with the pair)
        kernel_maps.elem(MAPS.pairs_fd, kernel_maps.MAP_LOOKUP, pair.client.cookie, value)
    client.close()


def _same_four_tuple_in_another_namespace(local: tuple, remote_port: int) -> int:
    """A child in a network namespace of its own (as a student's unprivileged user namespace
    could make) connects with exactly `local` → 127.0.0.1:`remote_port` and sends "INJECT".
    The exit code: 0 sent, else where it failed."""
    import ctypes
    import subprocess
    pid = os.fork()
    if pid == 0:  # pragma: no cover - reports through its exit code
        code = 1
        try:
            if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) != 0:  # CLONE_NEWNET
                os._exit(2)
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            listener = socket.create_server(("127.0.0.1", remote_port))
            sock = socket.socket()
            sock.bind(local)
            sock.connect(("127.0.0.1", remote_port))
            listener.accept()
            sock.sendall(b"INJECT")
            time.sleep(0.2)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@needs_direct
def test_a_socket_with_the_same_addresses_in_another_namespace_is_not_redirected(loop):
    """The cgroup program sees every network namespace: a student's own namespace can hold a
    socket with exactly the four addresses and ports of someone's live flow.  The flow's key
    holds its namespace, so that socket's bytes stay its own; the real client's still go."""
    client, origin, ended = relayed_pair(loop, first=b"HELLO", direct="127.0.0.1")
    pair = _the_pair(loop)
    assert read_exactly(origin, 5) == b"HELLO"
    assert _same_four_tuple_in_another_namespace(client.getsockname(), client.getpeername()[1]) == 0
    origin.settimeout(0.5)
    with pytest.raises(TimeoutError):
        origin.recv(10)  # nothing injected into the server's socket
    origin.settimeout(10)
    client.sendall(b"mine")
    assert read_exactly(origin, 4) == b"mine"
    assert loop.relay.sent_direct(pair) == 4
    client.close()
    origin.close()
    assert ended.event.wait(10)


@needs_direct
def test_an_unwatched_port_keeps_the_kernels_other_way(loop):
    """A client on a port the cgroup program does not watch is not in `clients`: its flow is in
    the map but unused, and the stream verdict relays its bytes as before."""
    client, origin, ended = relayed_pair(loop)
    pair = _the_pair(loop)
    client.sendall(b"abc")
    assert read_exactly(origin, 3) == b"abc"
    assert loop.relay.sent_direct(pair) == 0
    assert loop.relay.redirected(pair.client.cookie) == 3
    client.close()
    origin.close()
    assert ended.event.wait(10)


def _switches(tid: int) -> int:
    """How many times this thread of ours has gone to sleep (and been woken)."""
    status = open(f"/proc/self/task/{tid}/status").read()
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


def test_the_relay_sleeps_while_the_kernel_carries_the_bytes(loop):
    """The kernel wakes whoever polls a socket for input after each segment it redirects, with
    nothing to read.  The relay watches its sockets for their end only (the program tells it
    through the ring when bytes come its way), so 200 requests and 200 answers, all by the stream
    verdict, do not wake its thread: polled for input, as before, it woke about twice a round."""
    client, origin, ended = relayed_pair(loop, first=b"HELLO")
    assert read_exactly(origin, 5) == b"HELLO"
    tid = loop.call(threading.get_native_id)
    before = _switches(tid)
    for _ in range(200):
        client.sendall(b"q" * 100)
        assert read_exactly(origin, 100) == b"q" * 100
        origin.sendall(b"a" * 1000)
        assert read_exactly(client, 1000) == b"a" * 1000
    woken = _switches(tid) - before
    assert woken < 20, f"the relay's thread woke {woken} times in 200 rounds"
    client.close()  # and the ends still wake it
    origin.close()
    assert ended.event.wait(10)


@needs_direct
def test_an_upload_to_a_slow_server_leaves_the_direct_path_in_order(loop):
    """A non-blocking client sends 4 MB to an origin that does not read yet: past
    `DIRECT_LIMIT` (every refused try counts) its bytes take the stream verdict's way, and the
    origin still reads every byte once, in order."""
    client, origin, ended = relayed_pair(loop, direct="127.0.0.1")
    pair = _the_pair(loop)
    data = b"".join(struct.pack("!I", i) * 256 for i in range(4000))
    client.setblocking(False)
    sent, refused = 0, 0
    deadline = time.monotonic() + 2
    while sent < len(data) and time.monotonic() < deadline:
        try:
            sent += client.send(data[sent:sent + 65536])
        except BlockingIOError:
            refused += 1
    # it left the direct path: the program told the relay (the ring), which took the flow out and
    # reads the client's socket from now on
    deadline = time.monotonic() + 5
    while pair.flow is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pair.flow is None and not pair.client.quiet
    assert refused < 100  # and did not spin on it
    client.setblocking(True)
    client.sendall(data[sent:])
    assert read_exactly(origin, len(data)) == data
    client.close()
    origin.close()
    assert ended.event.wait(10)


@needs_direct
def test_a_new_proxy_clears_what_a_dead_one_left():
    """A proxy killed with pairs open leaves their counts and flows in the agent's maps; the next
    proxy clears them before its first pair (a stale flow would send a later connection with the
    same addresses nowhere)."""
    maps = kernel_maps.create_maps()
    try:
        key = kernel_maps.flow_key(("10.0.0.5", 40000), ("93.184.216.34", 443), 1)
        kernel_maps.flow_elem(maps.direct.direct_fd, kernel_maps.MAP_UPDATE, key, bytes(16))
        kernel_maps.elem(maps.counts_fd, kernel_maps.MAP_UPDATE, 12345, 9)
        given = kernel_maps.Maps.from_option(maps.option())
        assert given.clear_leftovers() == 2
        assert given.clear_leftovers() == 0
    finally:
        for fd in (maps.pairs_fd, maps.counts_fd, maps.direct.direct_fd, maps.direct.ports_fd,
                   *maps.direct.keep):
            os.close(fd)


def test_flow_keys_are_what_the_message_program_builds():
    """The key for a student's socket as the program reads it: family, local port as is, remote
    port in network order in the high half (little-endian), the network namespace, addresses; an
    IPv4 peer seen by a dual-stack socket gets the IPv4 key."""
    key = kernel_maps.flow_key(("10.0.0.5", 40000), ("93.184.216.34", 443), 7)
    assert len(key) == kernel_maps.FLOW_KEY_LEN
    assert key[:4] == struct.pack("I", socket.AF_INET)
    assert struct.unpack_from("I", key, 4)[0] == 40000
    assert struct.unpack_from("Q", key, 16)[0] == 7
    assert key[24:28] == socket.inet_aton("10.0.0.5") and key[28:40] == bytes(12)
    assert key[40:44] == socket.inet_aton("93.184.216.34")
    assert kernel_maps.flow_key(("::ffff:10.0.0.5", 40000), ("::ffff:93.184.216.34", 443), 7) == key
    assert kernel_maps.flow_key(("10.0.0.5", 40000), ("93.184.216.34", 443), 8) != key
    v6 = kernel_maps.flow_key(("fd00::5", 40000), ("2001:db8::1", 443), 7)
    assert v6[:4] == struct.pack("I", 10) and v6[24:40] == socket.inet_pton(socket.AF_INET6, "fd00::5")
    with pytest.raises(ValueError):
        kernel_maps.Maps.from_option("3,4,5,6,7,8")


# --- a real mitmdump relays passed-through TLS in the kernel ----------------------------------

def _bpf_attr(cmd: int, attr: bytes) -> bytes:
    """bpf(2) returning the attribute block as the kernel left it (for the commands that answer
    in it)."""
    import ctypes
    buf = ctypes.create_string_buffer(attr, 128)
    if kernel_maps._libc.syscall(kernel_maps._SYS_BPF, cmd, buf, 128) < 0:
        raise OSError(ctypes.get_errno(), "bpf")
    return buf.raw


def _counts_in_kernel(name: bytes = kernel_maps.COUNTS_NAME) -> list[int]:
    """Every value of every map of this name on this machine (BPF map ids walked as `bpftool map`
    does): for `kalkan_counts`, bytes each relayed socket has had redirected so far; for
    `kalkan_direct`, bytes each client sent by the direct path."""
    import ctypes
    values, map_id = [], 0
    while True:
        try:  # BPF_MAP_GET_NEXT_ID: {start_id, next_id, open_flags}
            map_id = struct.unpack_from("I", _bpf_attr(12, struct.pack("III", map_id, 0, 0)), 4)[0]
        except OSError:
            return values
        try:
            fd = kernel_maps._bpf(14, struct.pack("III", map_id, 0, 0))  # BPF_MAP_GET_FD_BY_ID
        except OSError:
            continue
        try:
            info = ctypes.create_string_buffer(88)  # struct bpf_map_info: name at 24
            kernel_maps._bpf(15, struct.pack("IIQ", fd, len(info), ctypes.addressof(info)))
            if info.raw[24:40].rstrip(b"\0") != name:
                continue
            key_size, value_size = struct.unpack_from("II", info.raw, 8)
            key, nxt = (ctypes.create_string_buffer(key_size) for _ in range(2))
            value = ctypes.create_string_buffer(value_size)
            first = True
            while True:
                try:  # BPF_MAP_GET_NEXT_KEY
                    kernel_maps._bpf(4, struct.pack("IIQQ", fd, 0, 0 if first else ctypes.addressof(key),
                                                     ctypes.addressof(nxt)))
                except OSError:
                    break
                first = False
                ctypes.memmove(key, nxt, key_size)
                try:
                    kernel_maps.flow_elem(fd, kernel_maps.MAP_LOOKUP, key.raw, value)
                except OSError:
                    continue
                values.append(struct.unpack_from("Q", value.raw)[0])
        finally:
            os.close(fd)


@pytest.fixture(scope="module")
def proxies(tmp_path_factory, pki, origin, origin_ca_file):
    from tests.proxy.conftest import base_bundle, upstream_for
    from tests.support.proxy_rig import start_proxy
    made = {}
    for name, front in (("mitmproxy", "false"), ("front", "true")):
        made[name] = start_proxy(tmp_path_factory.mktemp(f"kernel-{name}"), school_ca=pki["school"],
                                 upstream=upstream_for(origin), bundle=base_bundle(),
                                 upstream_ca=origin_ca_file, extra=["--set", f"kalkan_front={front}"])
    yield made
    for proc in made.values():
        proc.stop()


@pytest.mark.parametrize("listener", ["mitmproxy", "front"])
def test_mitmdump_relays_a_passed_through_tunnel_in_the_kernel(proxies, origin_ca_file, listener):
    """A CONNECT passed through (root is a system account: never intercepted): 300 kB sent inside
    the TLS tunnel are counted by the kernel program, i.e. never read by the proxy.  Through the
    front, whose listening port the cgroup program watches, they go by the direct path."""
    import ssl
    sock = socket.create_connection(("127.0.0.1", proxies[listener].port), timeout=10)
    sock.sendall(b"CONNECT news.test:443 HTTP/1.1\r\nHost: news.test:443\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.split(b" ")[1] == b"200", head
    ctx = ssl.create_default_context(cafile=str(origin_ca_file))
    tls = ctx.wrap_socket(sock, server_hostname="news.test")
    body = b"k" * 300_000
    tls.sendall(b"POST /upload HTTP/1.1\r\nHost: news.test\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert tls.recv(4096).startswith(b"HTTP/1.1 ")
    if listener == "front" and MAPS.direct is not None:
        assert max(_counts_in_kernel(b"kalkan_direct"), default=0) >= len(body), "not by the direct path"
    else:
        assert max(_counts_in_kernel(), default=0) >= len(body), "the tunnel was not relayed by the kernel"
    tls.close()
