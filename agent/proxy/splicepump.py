"""The splice pump: moves the bytes of passed-through connections between two sockets with
`os.splice` (socket → pipe → socket, never through Python), one `epoll` loop for all of them.

Standard library only, so that it also runs as its own small process
(`python3 splicepump.py FD`): the proxy then sends each pair of sockets over a Unix socket
(SCM_RIGHTS) and hears back, by id, when a pair is over.  Used by `agent/proxy/relay.py`.
"""

from __future__ import annotations

import collections
import fcntl
import os
import resource
import select
import signal
import socket
import struct
import sys
import termios
import threading
import time

_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
_BAD = select.EPOLLHUP | select.EPOLLERR
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
CHUNK = 1 << 16  # a pipe holds 64 KiB by default


class Pair:
    """One relayed connection in the pump: fds[0] the client, fds[1] the server.  Direction d
    moves bytes from fds[d] through pipe d to fds[1 - d]."""

    __slots__ = ("fds", "pipes", "held", "eof", "gone", "masks", "on_done", "watchdog", "closed")

    def __init__(self, client_fd: int, server_fd: int, on_done, watchdog) -> None:
        self.fds = (client_fd, server_fd)
        self.pipes = (_pipe(), _pipe())
        self.held = [0, 0]  # bytes waiting in pipe d
        self.eof = [False, False]  # fds[d] has ended its sending
        self.gone = [False, False]  # fds[d] hung up while its bytes still wait in pipe d
        self.masks = [0, 0]
        self.on_done, self.watchdog = on_done, watchdog
        self.closed = False

    def wanted(self, i: int) -> int:
        mask = 0
        if not self.eof[i] and not self.held[i]:
            mask |= _IN
        if self.held[1 - i]:
            mask |= _OUT
        return mask


class Pump(threading.Thread):
    """The one thread per proxy process that moves passed-through bytes with `splice`."""

    def __init__(self, control: socket.socket | None = None) -> None:
        super().__init__(name="kalkan-splice-relay", daemon=True)
        self.control = control  # process mode: pairs arrive here as file descriptors
        self.ep = select.epoll()
        self.where: dict[int, tuple[Pair, int]] = {}  # fd → (pair, index); only this thread
        self.incoming: collections.deque[Pair] = collections.deque()
        self.wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.ep.register(self.wake, _IN)
        if control is not None:
            self.ep.register(control.fileno(), _IN)

    def add(self, pair: Pair) -> None:
        """Hand a pair to the pump (any thread).  The pump registers it itself, between two
        batches of events: an event still queued for a number that a just-closed pair used
        must never reach the new pair that reuses the number."""
        self.incoming.append(pair)
        os.eventfd_write(self.wake, 1)

    def _register(self) -> None:
        try:
            os.eventfd_read(self.wake)
        except BlockingIOError:
            pass
        while self.incoming:
            pair = self.incoming.popleft()
            for i, fd in enumerate(pair.fds):
                self.where[fd] = (pair, i)
                pair.masks[i] = pair.wanted(i)
                self.ep.register(fd, pair.masks[i])

    def run(self) -> None:  # pragma: no cover - exercised through the proxy tests
        poll, where, wake = self.ep.poll, self.where, self.wake
        control = self.control.fileno() if self.control is not None else -1
        while True:
            try:
                ready = poll()
            except InterruptedError:
                continue
            now = time.time()
            woken = False
            for fd, ev in ready:
                if fd == wake:
                    woken = True
                    continue
                if fd == control:
                    woken = self._received() or woken
                    continue
                found = where.get(fd)
                if found is None:
                    continue
                pair, i = found
                if pair.closed:
                    continue
                try:
                    self._event(pair, i, ev)
                except OSError:  # a reset, a broken pipe: the connection is over both ways
                    self._close(pair)
                    continue
                if not pair.closed:
                    if pair.watchdog is not None:
                        pair.watchdog.last_activity = now  # mitmproxy's idle timeout sees the traffic
                    self._rearm(pair)
            if woken:
                self._register()

    def _received(self) -> bool:
        """Process mode: one pair from the proxy (its id, the client's and the server's socket);
        its end is told back by id.  The proxy gone: this process ends."""
        assert self.control is not None
        try:
            message, fds, _flags, _address = socket.recv_fds(self.control, 16, 2)
        except BlockingIOError:
            return False
        if not message:
            os._exit(0)
        if len(fds) != 2 or len(message) != 8:
            for fd in fds:
                os.close(fd)
            return False
        control = self.control

        def told() -> None:
            try:
                control.send(message)
            except OSError:
                os._exit(0)

        try:
            pair = Pair(fds[0], fds[1], told, None)
        except OSError:  # out of descriptors for its pipes: this connection ends, the others go on
            for fd in fds:
                os.close(fd)
            told()
            return False
        self.incoming.append(pair)
        return True

    def _event(self, pair: Pair, i: int, ev: int) -> None:
        if ev & (_IN | _BAD) and not pair.eof[i] and not pair.held[i]:
            self._pull(pair, i)
        if ev & (_OUT | _BAD) and pair.held[1 - i]:
            self._push(pair, 1 - i)
        if ev & select.EPOLLERR:
            raise ConnectionResetError
        if ev & select.EPOLLHUP and pair.eof[i]:
            if pair.held[i]:  # its last bytes still wait for the other side: stop watching it
                pair.gone[i] = True
            else:
                self._close(pair)
        if not pair.closed and pair.eof[0] and pair.eof[1] and not pair.held[0] and not pair.held[1]:
            self._close(pair)

    def _pull(self, pair: Pair, d: int) -> None:
        try:
            n = os.splice(pair.fds[d], pair.pipes[d][1], CHUNK, flags=_FLAGS)
        except BlockingIOError:
            return
        if n == 0:  # fds[d] is done sending: half-close towards the other side
            pair.eof[d] = True
            socket_shutdown(pair.fds[1 - d])
            return
        pair.held[d] = n
        self._push(pair, d)

    def _push(self, pair: Pair, d: int) -> None:
        while pair.held[d]:
            try:
                n = os.splice(pair.pipes[d][0], pair.fds[1 - d], pair.held[d], flags=_FLAGS)
            except BlockingIOError:
                return
            pair.held[d] -= n
        if pair.gone[d]:
            self._close(pair)

    def _rearm(self, pair: Pair) -> None:
        for i, fd in enumerate(pair.fds):
            if pair.gone[i]:
                if pair.masks[i] is not None:
                    self.ep.unregister(fd)
                    pair.masks[i] = None  # type: ignore[call-overload]
                continue
            mask = pair.wanted(i)
            if mask != pair.masks[i]:
                self.ep.modify(fd, mask)
                pair.masks[i] = mask

    def _close(self, pair: Pair) -> None:
        if pair.closed:
            return
        pair.closed = True
        for i, fd in enumerate(pair.fds):
            self.where.pop(fd, None)
            if pair.masks[i] is not None:
                try:
                    self.ep.unregister(fd)
                except OSError:
                    pass
            os.close(fd)
        for d, (r, w) in enumerate(pair.pipes):
            _spare_pipe(r, w, pair.held[d])
        pair.on_done()


_SPARE: list[tuple[int, int]] = []  # empty pipes of ended pairs, used again (two syscalls less each)
MAX_SPARE = 64


def _pipe() -> tuple[int, int]:
    try:
        return _SPARE.pop()
    except IndexError:
        return os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)


def _spare_pipe(r: int, w: int, held: int) -> None:
    """Keep an ended pair's pipe for the next pair only when it is empty (checked with the
    kernel too: no byte of one connection may ever reach another)."""
    if not held and len(_SPARE) < MAX_SPARE:
        try:
            if struct.unpack("i", fcntl.ioctl(r, termios.FIONREAD, b"\0\0\0\0"))[0] == 0:
                _SPARE.append((r, w))
                return
        except OSError:
            pass
    os.close(r)
    os.close(w)


def socket_shutdown(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        sock.detach()


_PUMP: Pump | None = None
_PUMP_LOCK = threading.Lock()


def thread_pump() -> Pump:
    """The pump thread of this process (started on first use)."""
    global _PUMP
    with _PUMP_LOCK:
        if _PUMP is None or not _PUMP.is_alive():
            _PUMP = Pump()
            _PUMP.start()
        return _PUMP


AVAILABLE = hasattr(os, "splice") and hasattr(select, "epoll") and hasattr(os, "eventfd")


def serve(control_fd: int) -> None:
    """The pump as a process: pairs come over `control_fd`; ends when the proxy goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the proxy's Ctrl-C is the proxy's business
    # six descriptors per connection (two sockets, two pipes): take all the hard limit allows
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    control = socket.socket(fileno=control_fd)
    control.setblocking(False)
    Pump(control).run()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
