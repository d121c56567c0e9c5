"""A classic-BPF interpreter in Python, to check compiled capture filters without root:
it runs a program over one frame the way the kernel's SO_ATTACH_FILTER does."""

from __future__ import annotations

from agent.network.bpf import Instruction


def run_filter(program: list[Instruction], frame: bytes) -> bool:
    """Run a program over one frame in Python, as the kernel would.

    Only the instructions libpcap emits for Ethernet filters are supported.
    """
    a = x = 0
    memory = [0] * 16
    pc = 0

    def load(offset: int, size: int) -> int | None:
        if offset < 0 or offset + size > len(frame):
            return None
        return int.from_bytes(frame[offset:offset + size], "big")

    while pc < len(program):
        code, jt, jf, k = program[pc]
        cls = code & 0x07
        pc += 1
        if cls in (0x00, 0x01):  # BPF_LD / BPF_LDX
            mode, size = code & 0xE0, {0x00: 4, 0x08: 2, 0x10: 1}[code & 0x18]
            if mode == 0x00:  # BPF_IMM
                value = k
            elif mode == 0x20:  # BPF_ABS
                value = load(k, size)
            elif mode == 0x40:  # BPF_IND
                value = load(x + k, size)
            elif mode == 0x60:  # BPF_MEM
                value = memory[k]
            elif mode == 0x80:  # BPF_LEN
                value = len(frame)
            elif mode == 0xA0:  # BPF_MSH: 4 * (frame[k] & 0xf)
                byte = load(k, 1)
                value = None if byte is None else 4 * (byte & 0x0F)
            else:
                raise ValueError(f"unsupported BPF load {code:#x}")
            if value is None:
                return False  # out-of-bounds read: the kernel drops the frame
            if cls == 0x00:
                a = value
            else:
                x = value
        elif cls == 0x02:  # BPF_ST
            memory[k] = a
        elif cls == 0x03:  # BPF_STX
            memory[k] = x
        elif cls == 0x04:  # BPF_ALU
            operand = x if code & 0x08 else k
            op = code & 0xF0
            a = _alu(code & 0xF0, a, operand)
        elif cls == 0x05:  # BPF_JMP
            op, operand = code & 0xF0, (x if code & 0x08 else k)
            if op == 0x00:  # BPF_JA
                pc += k
                continue
            taken = {0x10: a == operand, 0x20: a > operand, 0x30: a >= operand, 0x40: bool(a & operand)}[op]
            pc += jt if taken else jf
        elif cls == 0x06:  # BPF_RET
            return (a if code & 0x18 == 0x10 else k) != 0
        elif cls == 0x07:  # BPF_MISC: TAX / TXA
            if code & 0xF8 == 0x00:
                x = a
            else:
                a = x
    return False


_ALU = {
    0x00: lambda a, b: a + b, 0x10: lambda a, b: a - b, 0x20: lambda a, b: a * b,
    0x30: lambda a, b: a // b if b else 0, 0x40: lambda a, b: a | b, 0x50: lambda a, b: a & b,
    0x60: lambda a, b: a << b, 0x70: lambda a, b: a >> b, 0x80: lambda a, b: -a,
    0x90: lambda a, b: a % b if b else 0, 0xA0: lambda a, b: a ^ b,
}


def _alu(op: int, a: int, operand: int) -> int:
    return _ALU[op](a, operand) & 0xFFFFFFFF
