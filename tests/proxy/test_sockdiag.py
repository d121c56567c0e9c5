"""The exact socket-owner lookup (NETLINK_SOCK_DIAG) against real sockets of another uid."""

from __future__ import annotations

import socket
import struct
import subprocess
import time

import pytest

from agent.proxy import subject
from agent.proxy.sockdiag import NLMSG_ERROR, SOCK_DIAG_BY_FAMILY, SockDiag, build_request, parse_reply

pytestmark = pytest.mark.root

CLIENT = """
import socket, sys, time
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM)
s.connect((sys.argv[1], int(sys.argv[2])))
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""


def test_request_layout_is_the_kernels():
    request = build_request(("127.0.0.1", 40000), ("127.0.0.1", 3128), seq=7)
    length, msg_type, flags, seq, _ = struct.unpack_from("=IHHII", request)
    assert len(request) == length == 16 + 56 and msg_type == SOCK_DIAG_BY_FAMILY and flags == 1 and seq == 7
    family, proto = request[16], request[17]
    assert family == socket.AF_INET and proto == socket.IPPROTO_TCP
    sport, dport = struct.unpack_from("!HH", request, 24)
    assert (sport, dport) == (40000, 3128)
    assert request[28:32] == socket.inet_aton("127.0.0.1") and request[44:48] == socket.inet_aton("127.0.0.1")
    v6 = build_request(("::ffff:10.0.0.5", 1), ("10.0.0.1", 2), seq=1)  # a mapped peer is looked up as v4
    assert v6[16] == socket.AF_INET and v6[28:32] == socket.inet_aton("10.0.0.5")


def test_error_reply_means_no_such_socket():
    reply = struct.pack("=IHHII", 36, NLMSG_ERROR, 0, 5, 0) + struct.pack("=i", -2) + bytes(16)
    assert parse_reply(reply, 5) is None
    with pytest.raises(OSError, match="sock_diag"):
        parse_reply(struct.pack("=IHHII", 36, NLMSG_ERROR, 0, 5, 0) + struct.pack("=i", -13) + bytes(16), 5)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_owner_of_another_users_socket(host, accounts):
    student = accounts["student"]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.bind((host, 0))
        listener.listen()
        port = listener.getsockname()[1]
        child = subprocess.Popen(["setpriv", f"--reuid={student.uid}", f"--regid={student.gid}",
                                  "--clear-groups", "/usr/bin/python3", "-c", CLIENT, host, str(port)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            client_port = int(child.stdout.readline())
            accepted, peer = listener.accept()
            with accepted:
                diag = SockDiag()
                try:
                    assert diag.owner_uid((peer[0], peer[1]), (host, port)) == student.uid
                    # the proxy's own end of the same connection belongs to us, not the student
                    assert diag.owner_uid((host, port), (peer[0], peer[1])) == 0
                    # a 4-tuple with no socket: None, not a guess
                    assert diag.owner_uid((host, client_port), (host, port + 1 or 1)) is None
                finally:
                    diag.close()
                # the public entry point agrees with the /proc scan
                found = subject.connection_owner(peer[0], peer[1], (host, port))
                assert found is not None and found.uid == student.uid and found.name == student.name
                assert subject.socket_owner_uid(peer[0], peer[1]) == student.uid
        finally:
            child.stdin.close()
            child.wait(10)


def test_dual_stack_listener_sees_a_mapped_v4_peer(accounts):
    """A proxy listening on :: sees an IPv4 client as ::ffff:127.0.0.1; the lookup still finds it."""
    student = accounts["student"]
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind(("::", 0))
        listener.listen()
        port = listener.getsockname()[1]
        child = subprocess.Popen(["setpriv", f"--reuid={student.uid}", f"--regid={student.gid}",
                                  "--clear-groups", "/usr/bin/python3", "-c", CLIENT, "127.0.0.1", str(port)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            child.stdout.readline()
            accepted, peer = listener.accept()
            with accepted:
                assert peer[0] == "::ffff:127.0.0.1"
                sockname = accepted.getsockname()
                found = subject.connection_owner(peer[0], peer[1], (sockname[0], sockname[1]))
                assert found is not None and found.uid == student.uid
        finally:
            child.stdin.close()
            child.wait(10)


SEND_AND_CLOSE = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print(s.getsockname()[1], flush=True)
s.sendall(b"SSH-2.0-x\\r\\n")
s.close()
"""


def test_a_closed_clients_remnant_is_nobodys_not_roots(accounts):
    """Once a client has sent, closed and had its FIN acknowledged, the kernel keeps a time-wait
    remnant of its socket that reports uid 0.  Taken at its word, a student's send-and-close
    connection would be root's (a system account: unfiltered); it is nobody's instead."""
    student = accounts["student"]
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        child = subprocess.run(["setpriv", f"--reuid={student.uid}", f"--regid={student.gid}",
                                "--clear-groups", "/usr/bin/python3", "-c", SEND_AND_CLOSE, str(port)],
                               capture_output=True, text=True, check=True)
        accepted, peer = listener.accept()
        with accepted:
            assert accepted.recv(100) == b"SSH-2.0-x\r\n"
            assert peer[1] == int(child.stdout)
            deadline = time.monotonic() + 5  # the remnant appears once the FIN is acknowledged
            while time.monotonic() < deadline and b"TIME-WAIT" not in _ss_state(peer[1]) \
                    and b"FIN-WAIT-2" not in _ss_state(peer[1]):
                time.sleep(0.01)
            time.sleep(0.1)
            assert subject.connection_owner(peer[0], peer[1], ("127.0.0.1", port)) is None
            assert subject.socket_owner_uid(peer[0], peer[1]) is None


def _ss_state(port: int) -> bytes:
    return subprocess.run(["ss", "-tanH", f"sport = :{port}"], capture_output=True).stdout


def test_a_remnant_reply_names_no_owner():
    def reply(uid: int, inode: int) -> bytes:
        msg = bytes(4 + 48 + 12) + struct.pack("=II", uid, inode)
        return struct.pack("=IHHII", 16 + len(msg), SOCK_DIAG_BY_FAMILY, 0, 9, 0) + msg

    assert parse_reply(reply(0, 0), 9) is None  # a time-wait remnant
    assert parse_reply(reply(0, 4711), 9) == 0  # root's live socket
    assert parse_reply(reply(1001, 0), 9) == 1001  # a closed socket of a user still names that user
