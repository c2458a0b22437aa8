#!/usr/bin/env python3
"""Writes the hand-made seed inputs of the device fuzz targets into
tests/fuzz/corpus/<device>/seed-*: each programs its device the way a
guest driver does (so libFuzzer starts from inputs that reach the timers,
interrupts and state machines, not from noise). The input format is in
device_fuzz.h. Run again after changing it; libFuzzer's grown inputs sit
beside these and are merged with `tools/fuzz --merge`."""
import os
import struct
import sys

WIDTH_LOG2 = {1: 0, 2: 1, 4: 2, 8: 3}


class Input:
    def __init__(self):
        self.data = bytearray()

    def access(self, kind, window, offset, width, value=0):
        self.data.append(kind | WIDTH_LOG2[width] << 3 | window << 5)
        self.data += struct.pack("<H", offset)
        # reads carry value bytes too (ignored), so every access is one shape
        self.data += (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
        return self

    def w(self, window, offset, value, width=1):
        return self.access(0, window, offset, width, value)

    def r(self, window, offset, width=1):
        return self.access(2, window, offset, width)

    def step_ns(self, ns):
        # (b & 63) << (6 * (b >> 6)): the largest encodable step not above ns.
        while ns > 0:
            for shift in (3, 2, 1, 0):
                m = min(63, ns >> (6 * shift))
                if m:
                    self.data += bytes([3, m | shift << 6])
                    ns -= m << (6 * shift)
                    break
        return self

    def ms(self, n):
        return self.step_ns(int(n * 1_000_000))

    def event(self, a, b=0):
        self.data += bytes([4, a & 0xFF, b & 0xFF])
        return self

    def life(self, what):  # 0 drain+reset, 1 pause, 2 resume, 3 rebind
        self.data += bytes([5, what, 0])
        return self


def pit():
    seeds = []
    # Linux's tick: channel 0, LSB/MSB, mode 2, 1 ms; latch reads while it runs.
    s = Input().w(0, 3, 0x34).w(0, 0, 1193 & 0xFF).w(0, 0, 1193 >> 8)
    for _ in range(5):
        s.ms(0.7).w(0, 3, 0x00).r(0, 0).r(0, 0)
    s.life(1).ms(3).life(2).ms(2).life(0).ms(2)
    seeds.append(s)
    # Square wave with the smallest count (thinned to the floor), then one-shot.
    s = Input().w(0, 3, 0x36).w(0, 0, 2).w(0, 0, 0).ms(1).w(0, 3, 0x30).w(0, 0, 0x10).w(0, 0, 0x00).ms(1)
    s.w(0, 3, 0xE2).r(0, 0).event(0).ms(2).event(1).ms(1)
    seeds.append(s)
    # Channel 2 gated through port 0x61, as TSC calibration does.
    s = Input().w(1, 0, 0x01).w(0, 3, 0xB0).w(0, 2, 0xFF).w(0, 2, 0xFF).ms(5).r(1, 0).w(1, 0, 0x00).r(1, 0)
    s.w(0, 3, 0xB6).w(0, 2, 0x34).w(0, 2, 0x12).w(1, 0, 0x03).ms(1).r(1, 0).w(0, 3, 0x80).r(0, 2).r(0, 2)
    seeds.append(s)
    return seeds


def rtc():
    seeds = []
    def reg(s, index, value):
        return s.w(0, 0, index).w(0, 1, value)
    def rd(s, index):
        return s.w(0, 0, index).r(0, 1)
    s = Input()
    reg(s, 0x0A, 0x26); reg(s, 0x0B, 0x42)
    for _ in range(6):
        s.ms(1); rd(s, 0x0C)
    reg(s, 0x0A, 0x23); s.ms(1); rd(s, 0x0C)  # 8192 Hz, the fastest
    s.life(1).ms(5).life(2).ms(1).life(0); rd(s, 0x0D)
    seeds.append(s)
    s = Input()
    reg(s, 0x0B, 0x86)  # SET, binary, 24 h
    for index, value in ((0, 5), (2, 30), (4, 12), (7, 1), (8, 1), (9, 26), (1, 10), (3, 30), (5, 12)):
        reg(s, index, value)
    reg(s, 0x0B, 0x36)  # alarm and update-ended interrupts
    for _ in range(4):
        s.ms(400); rd(s, 0x0C); rd(s, 0x0A); rd(s, 0x00)
    reg(s, 0x0A, 0x70); s.ms(10); reg(s, 0x0A, 0x20); s.ms(600); rd(s, 0x0C)
    s.w(0, 0, 0x8F).r(0, 1).w(0, 0, 0x32).w(0, 1, 0x20).w(0, 0, 0x7F).r(0, 1)
    seeds.append(s)
    return seeds


def hpet():
    seeds = []
    # Linux: periodic comparator 0 at 1 ms, legacy replacement on.
    s = Input().w(0, 0x10, 0, 4).w(0, 0xF0, 0, 8).w(0, 0x100, 0x4C, 4).w(0, 0x108, 100_000, 8).w(0, 0x108, 100_000, 8)
    s.w(0, 0x10, 3, 4)
    for _ in range(4):
        s.ms(1.1).r(0, 0xF0, 8).r(0, 0x20, 4)
    s.life(1).ms(4).life(2).ms(1).life(0).r(0, 0x10, 4)
    seeds.append(s)
    # One-shot, level-triggered on comparator 1 in 32-bit mode; FSB on 2;
    # a period of one tick (coalesced at the floor).
    s = Input().w(0, 0x120, 0x10A, 4).w(0, 0x128, 5000, 4).w(0, 0x10, 1, 4).ms(1).r(0, 0x20, 4).w(0, 0x20, 2, 4)
    s.w(0, 0x150, 0xFEE0_0000, 4).w(0, 0x154, 0x4041, 4).w(0, 0x140, 0x4004, 4).w(0, 0x148, 3000, 8).ms(1)
    s.w(0, 0x100, 0x4C, 4).w(0, 0x108, 1, 8).ms(2).w(0, 0x10, 0, 4).w(0, 0xF0, 0xFFFF_FFF0, 4).w(0, 0x10, 1, 4).ms(1)
    seeds.append(s)
    # Linux's periodic sequence with a period of two ticks: coalesced at the floor.
    s = Input().w(0, 0x100, 0x4C, 4).w(0, 0x108, 0x10, 8).w(0, 0x108, 0x2, 8).w(0, 0x10, 1, 4)
    s.ms(3).r(0, 0xF0, 8).w(0, 0x10, 0, 4).ms(1)
    seeds.append(s)
    return seeds


def ioapic():
    seeds = []
    s = Input()
    for pin in range(0, 24, 3):
        s.w(0, 0, 0x10 + 2 * pin).w(0, 0x10, 0x30 + pin | (0x8000 if pin % 2 else 0), 4)
        s.w(0, 0, 0x11 + 2 * pin).w(0, 0x10, 0x0100_0000, 4)
    for pin in range(0, 24, 3):
        s.event(pin, 1).event(0x80, 0x30 + pin).event(pin, 0)
    s.w(0, 0, 0).r(0, 0x10, 4).w(0, 0, 1).r(0, 0x10, 4).w(0, 0x40, 0x33, 4).life(0)
    seeds.append(s)
    return seeds


def pic():
    s = Input()
    for win, base, icw3 in ((0, 0x20, 0x04), (1, 0x28, 0x02)):
        s.w(win, 0, 0x11).w(win, 1, base).w(win, 1, icw3).w(win, 1, 0x01).w(win, 1, 0x00)
    s.w(2, 0, 0x20).w(2, 1, 0x0C)
    for irq in (0, 1, 4, 8, 12, 14):
        s.event(irq, 1).event(0x80).event(irq, 0)
    s.w(0, 0, 0x0B).r(0, 0).w(0, 0, 0x20).w(1, 0, 0x60).w(0, 0, 0x62).w(0, 0, 0x68).event(7, 1).event(0x80)
    s.w(0, 0, 0x0C).r(0, 0).w(0, 0, 0x11).w(0, 1, 0x08).w(0, 1, 0x04).w(0, 1, 0x03).event(3, 1).event(0x80).life(0)
    return [s]


def serial():
    s = Input().w(0, 3, 0x80).w(0, 0, 1).w(0, 1, 0).w(0, 3, 0x03).w(0, 2, 0xC7).w(0, 1, 0x0F).w(0, 4, 0x0B)
    for c in b"hello\n":
        s.w(0, 0, c).r(0, 5).r(0, 2)
    s.event(ord("x"), 3).r(0, 2).r(0, 5).r(0, 0).r(0, 0).r(0, 6)
    s.w(0, 4, 0x1B)
    for c in b"loop":
        s.w(0, 0, c).r(0, 0)
    s.w(0, 7, 0x5A).r(0, 7).life(0)
    return [s]


def i8042():
    s = Input().w(1, 0, 0xAA).r(0, 0).w(1, 0, 0x20).r(0, 0).w(1, 0, 0x60).w(0, 0, 0x47)
    s.w(0, 0, 0xFF).r(0, 0).r(0, 0).w(0, 0, 0xF4).r(0, 0).w(1, 0, 0xD4).w(0, 0, 0xFF).r(0, 0).r(1, 0)
    s.w(1, 0, 0xA8).w(1, 0, 0xAB).r(0, 0).w(1, 0, 0xD0).r(0, 0).w(1, 0, 0xD1).w(0, 0, 0xDF).w(1, 0, 0xFE).life(0)
    return [s]


def acpi_pm():
    s = Input().w(1, 0, 0x0001, 2).w(0, 2, 0x0100, 2).event(0).r(0, 0, 2).w(0, 0, 0x0100, 2).r(3, 0, 4).ms(5)
    s.r(3, 0, 4).w(0, 0, 0x8001, 2).w(1, 0, 0x3400 | 0x2000, 2).w(2, 0, 0x06).life(0).r(3, 0, 4)
    return [s]


def lapic():
    seeds = []
    # xAPIC: enable, periodic timer at a few counts, deliver and EOI.
    s = Input().w(0, 0xF0, 0x1FF, 4).w(0, 0x3E0, 0x0B, 4).w(0, 0x320, 0x20030, 4).w(0, 0x380, 100_000, 4)
    for _ in range(3):
        s.ms(0.5).event(0, 0).w(0, 0xB0, 0, 4).r(0, 0x390, 4)
    s.w(0, 0x380, 1, 4).ms(1).event(0, 0).w(0, 0xB0, 0, 4)
    s.w(0, 0x320, 0x40031, 4).w(2, 0x200, 0, 8).event(0, 0).ms(1).life(1).ms(1).life(2).life(0)
    seeds.append(s)
    # x2APIC through the MSRs: self IPI, IPIs to the other APIC, INIT/SIPI.
    s = Input().w(2, 0x100, 0xFEE0_0D00, 8).w(2, 0x80F, 0x1FF, 8).w(2, 0x83F & 0x3FF, 0x40, 8)
    s.event(0, 0).w(2, 0x0B, 0, 8).w(1, 0xF0, 0x1FF, 4).w(2, 0x30, (1 << 32) | 0x4041, 8).event(0, 1)
    s.w(2, 0x30, (1 << 32) | 0x4500, 8).w(2, 0x30, (1 << 32) | 0x4608, 8).event(3, 1)
    s.w(2, 0x32, 0x30031, 8).w(2, 0x3E, 0, 8).w(2, 0x38, 50, 8).ms(1).event(0, 0).event(1, 0x30).event(5, 0x31)
    s.w(0, 0x350, 0x700, 4).event(2 | 8 | 16, 0).event(4, 0).w(0, 0x360, 0x400, 4).event(2 | 16, 0).event(3, 0)
    seeds.append(s)
    return seeds


def board_ports():
    s = Input().w(1, 0, 0x1234, 4).w(1, 0, 0x5678, 4).r(1, 0, 4).w(2, 0, 1).r(2, 0).w(0, 0, 0x31)
    return [s]


def pci():
    # Window 0: CONFIG_ADDRESS (0) / CONFIG_DATA (4); window 1: BAR 0 of the
    # virtio-blk function in slot 1, at the start of the MMIO window.
    def cfg(inp, slot, reg, value=None, width=4):
        inp.w(0, 0, 0x80000000 | slot << 11 | (reg & 0xFC), 4)
        if value is None:
            return inp.r(0, 4 + (reg & 3), width)
        return inp.w(0, 4 + (reg & 3), value, width)

    def ram(inp, address, data):
        inp.event(0, address >> 8).event(0, address & 0xFF)
        for byte in data:
            inp.event(0x40, byte)
        return inp

    def desc(address, length, flags, nxt):
        return struct.pack("<QIHH", address, length, flags, nxt)

    def driver_up(inp, msix=True):
        cfg(inp, 1, 0x04, 0x0006, 2)                 # memory decode, bus master
        if msix:
            cfg(inp, 1, 0x42, 0x8000, 2)             # MSI-X enable (first capability)
            inp.w(1, 0x4000, 0xFEE00000, 4).w(1, 0x4004, 0, 4).w(1, 0x4008, 0x31, 4).w(1, 0x400C, 0, 4)
            inp.w(1, 0x10, 0, 2)                     # config vector 0
        inp.w(1, 0x14, 0).w(1, 0x14, 1).w(1, 0x14, 3)  # reset, ACKNOWLEDGE, DRIVER
        inp.w(1, 0x00, 0, 4).r(1, 0x04, 4).w(1, 0x00, 1, 4).r(1, 0x04, 4)
        inp.w(1, 0x08, 0, 4).w(1, 0x0C, 1 << 9 | 1 << 13 | 1 << 14, 4)
        inp.w(1, 0x08, 1, 4).w(1, 0x0C, 1, 4)         # VERSION_1
        inp.w(1, 0x14, 0x0B).r(1, 0x14)               # FEATURES_OK
        inp.w(1, 0x16, 0, 2).r(1, 0x18, 2).w(1, 0x18, 16, 2)
        inp.w(1, 0x1A, 0 if msix else 0xFFFF, 2)
        inp.w(1, 0x20, 0x1000, 8).w(1, 0x28, 0x2000, 8).w(1, 0x30, 0x3000, 8)
        inp.w(1, 0x1C, 1, 2).w(1, 0x14, 0x0F)         # queue enable, DRIVER_OK
        return inp

    def request(inp, kind, flags_data, sector=0, index=0, head=0):
        ram(inp, 0x4000 + 0x100 * index, struct.pack("<IIQ", kind, 0, sector))
        chain = desc(0x4000 + 0x100 * index, 16, 1, head + 1)
        chain += desc(0x5000 + 0x200 * index, 512, 1 | flags_data, head + 2)
        chain += desc(0x6000 + index, 1, 2, 0)
        ram(inp, 0x1000 + 16 * head, chain)
        ram(inp, 0x2004 + 2 * index, struct.pack("<H", head))
        ram(inp, 0x2000, struct.pack("<HH", 0, index + 1))
        return inp.w(1, 0x3000, 0, 2)                # notify queue 0

    seeds = []
    enumerate_ = Input()
    for slot in (0, 1, 2):
        for reg in (0x00, 0x08, 0x0C, 0x2C, 0x34, 0x3C):
            cfg(enumerate_, slot, reg)
    for reg in range(0x40, 0xA0, 4):
        cfg(enumerate_, 1, reg)
    cfg(enumerate_, 1, 0x10, 0xFFFFFFFF).r(0, 4, 4)
    cfg(enumerate_, 1, 0x10, 0xC0000000)
    enumerate_.w(0, 1, 0x06).w(0, 0, 0x12345678, 4).r(0, 4, 4)
    seeds.append(enumerate_)

    read = driver_up(Input())
    request(read, 0, 2).event(0xC0, 0).r(1, 0x1000).r(1, 0x2000, 8).r(1, 0x2008, 4)
    seeds.append(read)

    write = driver_up(Input(), msix=False)
    request(write, 1, 0).event(0x80, 0)
    request(write, 4, 0, index=1, head=3).event(0x80, 5).r(1, 0x1000)
    seeds.append(write)

    reset = driver_up(Input())
    request(reset, 0, 2, sector=7)
    reset.life(0).event(0xC0, 0)
    driver_up(reset)
    request(reset, 8, 2).event(0xC0, 0)
    seeds.append(reset)

    moved = driver_up(Input())
    cfg(moved, 1, 0x10, 0xC0010000)
    request(moved, 0, 2).w(1, 0x3000, 0, 2)
    cfg(moved, 1, 0x10, 0xC0000000)
    moved.w(1, 0x14, 0).event(0xC0, 0)
    seeds.append(moved)
    return seeds


def main():
    corpus = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")
    for device in (pit, rtc, hpet, ioapic, pic, serial, i8042, acpi_pm, lapic, board_ports, pci):
        folder = os.path.join(corpus, device.__name__)
        os.makedirs(folder, exist_ok=True)
        for number, seed in enumerate(device(), 1):
            with open(os.path.join(folder, f"seed-{number}"), "wb") as out:
                out.write(seed.data)


if __name__ == "__main__":
    main()
