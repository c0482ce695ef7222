"""Communication accounting from a compiled program's HLO.

Counts the collectives of one compiled step (all-reduce, all-gather, reduce-scatter,
collective-permute, all-to-all) and the bytes each device sends for them under the
bandwidth-optimal (ring) algorithms, so schemes can be compared with their ideal:

=====================  ==========================================  ==========================
collective             result of one op, group of n devices        bytes sent per device
=====================  ==========================================  ==========================
all-reduce             S (same as the input)                       2 (n-1)/n * S
all-gather             S (the gathered array)                      (n-1)/n * S
reduce-scatter         S/n (input S)                               (n-1)/n * S
all-to-all             S                                           (n-1)/n * S
collective-permute     S                                           S
=====================  ==========================================  ==========================

Bytes are read from the result shapes, not from op names: XLA:CPU merges many all-reduces
into one tuple-shaped op (and may widen bf16 to f32), so counting ops says little. Ops in a
``while`` body are counted once per iteration when XLA knows the trip count.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from typing import Any

KINDS = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
               "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_OP = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(?P<shape>.*?)\s+"
                 r"(?P<kind>" + "|".join(KINDS) + r")(?P<start>-start)?\(")
_ARRAY = re.compile(r"\b(" + "|".join(DTYPE_BYTES) + r"|f8\w*)\[([\d,]*)\]")
_HEADER = re.compile(r"^\s*(?:ENTRY\s+)?%?(?P<name>[\w.\-]+)\s.*\{\s*$")
_ASSIGN = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s")
_WHILE = re.compile(r"\swhile\(.*body=%?(?P<body>[\w.\-]+)")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_CALLS = re.compile(r"(?:to_apply|calls|branch_computations|true_computation|"
                    r"false_computation)=\{?(?P<names>%?[\w.\-]+(?:,\s*%?[\w.\-]+)*)\}?")


@dataclasses.dataclass(frozen=True)
class Collective:
    """One collective op of a compiled program.

    Attributes:
      kind: one of :data:`KINDS`.
      result_bytes: bytes of its result on one device (all tuple elements).
      group_size: devices taking part in each of its groups (n).
      executions: how often one run of the program executes it (loop trip counts).
    """

    kind: str
    result_bytes: int
    group_size: int
    executions: int = 1

    @property
    def bytes_per_device(self) -> float:
        """Bytes one device sends per run of the program (ring algorithms; see module doc)."""
        n, s = self.group_size, self.result_bytes
        if n <= 1:
            return 0.0
        per_op = {"all-reduce": 2 * (n - 1) / n * s, "all-gather": (n - 1) / n * s,
                  "reduce-scatter": (n - 1) * s, "all-to-all": (n - 1) / n * s,
                  "collective-permute": float(s)}[self.kind]
        return per_op * self.executions


def array_bytes(shape_text: str) -> int:
    """Total bytes of the arrays written in an HLO shape, e.g. ``(f32[10,32]{1,0}, f32[])``."""
    total = 0
    for dtype, dims in _ARRAY.findall(shape_text):
        size = 1
        for d in filter(None, dims.split(",")):
            size *= int(d)
        total += size * DTYPE_BYTES.get(dtype, 1)
    return total


def group_size(line: str, num_devices: int) -> int:
    """Devices per replica group of a collective's HLO line (all devices if unstated)."""
    mesh = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", line)
    if mesh:
        sizes = dict(re.findall(r"'([^']+)'=(\d+)", mesh.group(1)))
        axes = re.findall(r"'([^']+)'", mesh.group(2))
        n = 1
        for a in axes:
            n *= int(sizes[a])
        return n
    iota = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", line)
    if iota:
        return int(iota.group(2))
    listed = re.search(r"replica_groups=\{\{([\d,]*)\}", line)
    if listed:
        return len(listed.group(1).split(","))
    return num_devices


def _result_shape(shape: str, kind: str, is_start: bool) -> str:
    """The part of an op's shape that is its result (async ``-start`` ops carry more)."""
    if not is_start or kind == "all-reduce":
        return shape
    parts = _top_level_elements(shape)
    # all-gather-start: (operands, results); collective-permute-start: (operand, result, ...)
    return parts[1] if len(parts) >= 2 else shape


def _top_level_elements(shape: str) -> list[str]:
    """Elements of an HLO tuple shape ``(a, (b, c), d)`` at nesting depth one."""
    s = shape.strip()
    if not s.startswith("("):
        return [s]
    parts, depth, cur = [], 0, ""
    for ch in s[1:-1]:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return parts + [cur.strip()] if cur.strip() else parts


def _computations(hlo: str) -> dict[str, list[str]]:
    """HLO text split into ``{computation name: its lines}``; the entry one is named ENTRY."""
    comps: dict[str, list[str]] = {}
    name = None
    for line in hlo.splitlines():
        head = _HEADER.match(line)
        if head and not _ASSIGN.match(line):
            name = "ENTRY" if line.lstrip().startswith("ENTRY") else head.group("name")
            comps[name] = []
        elif name is not None:
            comps[name].append(line)
    return comps


def _executions(comps: dict[str, list[str]]) -> dict[str, int]:
    """How often each computation runs per program run (while bodies x known trip count)."""
    runs: dict[str, int] = defaultdict(int)

    def visit(name: str, times: int, depth: int = 0) -> None:
        if name not in comps or depth > 50:
            return
        runs[name] += times
        for line in comps[name]:
            loop = _WHILE.search(line)
            if loop:
                trip = _TRIP.search(line)
                visit(loop.group("body"), times * (int(trip.group(1)) if trip else 1), depth + 1)
            for called in _CALLS.finditer(line):
                for sub in called.group("names").split(","):
                    visit(sub.strip().lstrip("%"), times, depth + 1)

    visit("ENTRY", 1)
    return runs


def hlo_text(compiled_or_text: Any) -> str:
    """The optimised HLO text of a compiled program (``jit(f).lower(...).compile()``)."""
    return compiled_or_text if isinstance(compiled_or_text, str) else compiled_or_text.as_text()


def find_collectives(compiled_or_text: Any, num_devices: int) -> list[Collective]:
    """Every collective of a compiled program (or its HLO text).

    Args:
      compiled_or_text: a ``jax.stages.Compiled`` or its ``as_text()``.
      num_devices: devices the program runs on (the group size when the HLO states none).
    Returns:
      the collectives in program order, with how often each runs.
    """
    comps = _computations(hlo_text(compiled_or_text))
    runs = _executions(comps)
    found = []
    for name, lines in comps.items():
        for line in lines:
            m = _OP.match(line)
            if m and runs.get(name, 0):
                shape = _result_shape(m.group("shape"), m.group("kind"), bool(m.group("start")))
                found.append(Collective(m.group("kind"), array_bytes(shape),
                                        group_size(line, num_devices), runs[name]))
    return found


def summarize(collectives: list[Collective]) -> dict[str, dict]:
    """Per kind: ``ops`` (executions per run), ``result_bytes`` and ``bytes_per_device``;
    plus ``total`` over all kinds."""
    out: dict[str, dict] = {}
    for c in collectives:
        row = out.setdefault(c.kind, dict(ops=0, result_bytes=0, bytes_per_device=0.0))
        row["ops"] += c.executions
        row["result_bytes"] += c.result_bytes * c.executions
        row["bytes_per_device"] += c.bytes_per_device
    out["total"] = dict(ops=sum(r["ops"] for r in out.values()),
                        result_bytes=sum(r["result_bytes"] for r in out.values()),
                        bytes_per_device=sum(r["bytes_per_device"] for r in out.values()))
    return out


def ring_allreduce_bytes(nbytes: float, n: int) -> float:
    """Bytes each of ``n`` devices sends to all-reduce ``nbytes``: 2 (n-1)/n * nbytes."""
    return 2 * (n - 1) / n * nbytes if n > 1 else 0.0


def tree_bytes(tree: Any) -> int:
    """Total bytes of the arrays (or shape/dtype structs) in a pytree (the global sizes)."""
    import jax

    return sum(int(x.size) * x.dtype.itemsize for x in jax.tree.leaves(tree))
