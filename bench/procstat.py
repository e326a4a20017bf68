"""CPU time of a process (all its threads) from /proc, and percentiles."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` so far, in seconds."""
    user, system = process_cpu_split(pid)
    return user + system


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def process_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of every thread of ``pid`` so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        text = handle.read()
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) / _TICKS, int(fields[12]) / _TICKS


def context_switches(pid: int) -> int:
    """Voluntary plus involuntary context switches of the live threads of ``pid``."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status", encoding="ascii") as handle:
                for line in handle:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live descendant (the workers of a supervisor)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                text = handle.read()
        except OSError:
            continue
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, ()))
    return tree


def tree_cpu_split(pids: Sequence[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of `pids`, added up (those that exited count 0)."""
    user = system = 0.0
    for pid in pids:
        try:
            one = process_cpu_split(pid)
        except OSError:
            continue
        user += one[0]
        system += one[1]
    return user, system
