"""Kernel packet filters (classic BPF) for the capture socket.

`compile_filter` turns a tcpdump-style expression into BPF instructions with
libpcap's own compiler (through ctypes: no interface, no root and no scapy needed;
libpcap0.8 comes with tcpdump).  `attach_filter` hands them to the kernel
(SO_ATTACH_FILTER), so that frames the checks do not need are dropped in the
kernel and never wake the agent.  Importing scapy for this cost ~33 MB of RSS.
"""

from __future__ import annotations

import array
import ctypes
import socket
import struct

DLT_EN10MB = 1  # Ethernet link type
SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
LIBPCAP_NAMES = ("libpcap.so.0.8", "libpcap.so.1", "libpcap.so")

Instruction = tuple[int, int, int, int]  # (code, jt, jf, k), as in struct sock_filter


class _BpfInsn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint32)]


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_BpfInsn))]


def _libpcap() -> ctypes.CDLL:
    for name in LIBPCAP_NAMES:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.pcap_open_dead.restype = ctypes.c_void_p
        lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_BpfProgram), ctypes.c_char_p,
                                     ctypes.c_int, ctypes.c_uint32]
        lib.pcap_geterr.restype = ctypes.c_char_p
        lib.pcap_geterr.argtypes = [ctypes.c_void_p]
        lib.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
        lib.pcap_close.argtypes = [ctypes.c_void_p]
        return lib
    raise OSError("libpcap is missing, so the capture filter cannot be compiled. "
                  "Fix: apt-get install libpcap0.8 (it comes with tcpdump).")


def compile_filter(expression: str, *, linktype: int = DLT_EN10MB,
                   snaplen: int = 262144) -> list[Instruction]:
    """BPF instructions for a tcpdump filter expression; ValueError names a bad expression."""
    lib = _libpcap()
    handle = lib.pcap_open_dead(linktype, snaplen)
    if not handle:
        raise OSError("libpcap could not open a dead capture handle (out of memory?)")
    program = _BpfProgram()
    try:
        if lib.pcap_compile(handle, ctypes.byref(program), expression.encode(), 1, PCAP_NETMASK_UNKNOWN) != 0:
            reason = (lib.pcap_geterr(handle) or b"unknown error").decode(errors="replace")
            raise ValueError(f"the capture filter {expression!r} does not compile: {reason}")
        try:
            return [(i.code, i.jt, i.jf, i.k) for i in program.bf_insns[:program.bf_len]]
        finally:
            lib.pcap_freecode(ctypes.byref(program))
    finally:
        lib.pcap_close(handle)


def attach_filter(sock: socket.socket, program: list[Instruction]) -> None:
    """Install `program` on `sock` in the kernel (the kernel copies it)."""
    if not program:
        raise ValueError("an empty BPF program would drop nothing; refusing to attach it")
    instructions = array.array("B", b"".join(struct.pack("HBBI", *insn) for insn in program))
    address, _ = instructions.buffer_info()
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; } (native layout and padding)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HP", len(program), address))

