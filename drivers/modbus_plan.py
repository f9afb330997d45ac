"""Request coalescing: the fewest reads that cover a device's points.

Points of one table are sorted by address and merged into a block while the gap
to the next point is at most ``max_gap`` registers and the block stays within
the protocol's limit (125 registers, 2000 bits). A device that refuses a merged
block with "illegal data address" (a gap covers registers it does not have) gets
that block split into one read per point, remembered for the rest of the run.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.modbus_decode import BIT_TABLES, Table

MAX_REGISTERS = 125
MAX_BITS = 2000


@dataclass(frozen=True)
class Span:
    """Where one point's value lives: ``count`` registers (or bits) from ``address``."""

    key: int  # index of the point in the device's list (status registers follow the points)
    table: Table
    address: int
    count: int

    @property
    def end(self) -> int:
        return self.address + self.count


@dataclass(frozen=True)
class Block:
    table: Table
    address: int
    count: int
    spans: tuple[Span, ...]

    def slice(self, values: list[int], span: Span) -> list[int]:
        offset = span.address - self.address
        return values[offset : offset + span.count]

    def split(self) -> list[Block]:
        """One block per distinct span, for a device that refuses the merged read."""
        out: dict[tuple[int, int], list[Span]] = {}
        for span in self.spans:
            out.setdefault((span.address, span.count), []).append(span)
        return [Block(self.table, a, c, tuple(s)) for (a, c), s in sorted(out.items())]


def plan(spans: list[Span], max_gap: int = 8, max_registers: int = MAX_REGISTERS) -> list[Block]:
    blocks: list[Block] = []
    for table in sorted({s.table for s in spans}):
        limit = MAX_BITS if table in BIT_TABLES else max_registers
        gap = max_gap * 16 if table in BIT_TABLES else max_gap
        ordered = sorted((s for s in spans if s.table == table), key=lambda s: (s.address, -s.count))
        current: list[Span] = []
        start = end = 0
        for span in ordered:
            if current and span.address - end <= gap and max(end, span.end) - start <= limit:
                current.append(span)
                end = max(end, span.end)
                continue
            if current:
                blocks.append(Block(table, start, end - start, tuple(current)))
            current, start, end = [span], span.address, span.end
        if current:
            blocks.append(Block(table, start, end - start, tuple(current)))
    return blocks
