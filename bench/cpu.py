"""CPU use during a benchmark arm: each core's busy share (/proc/stat, every process on
the machine, the other users' load included) and the CPU seconds of one process tree."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from bench.common import children

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _core_times() -> dict[str, tuple[int, int]]:
    """core -> (busy ticks, total ticks)."""
    out = {}
    with open("/proc/stat") as fh:
        for line in fh:
            name, *values = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            ticks = [int(v) for v in values]
            idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
            out[name] = (sum(ticks[:8]) - idle, sum(ticks[:8]))
    return out


@dataclass
class CoreUsage:
    """Busy share of each core between start() and stop()."""

    _start: dict[str, tuple[int, int]] = field(default_factory=dict)
    busy: dict[str, float] = field(default_factory=dict)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def start(self) -> CoreUsage:
        self._start = _core_times()
        self.load_before = os.getloadavg()
        return self

    def stop(self) -> dict[str, object]:
        end = _core_times()
        self.load_after = os.getloadavg()
        for core, (busy, total) in end.items():
            b0, t0 = self._start.get(core, (0, 0))
            self.busy[core] = round((busy - b0) / max(1, total - t0), 3)
        return {"core_busy": self.busy, "load_avg_before": self.load_before, "load_avg_after": self.load_after}


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children, while they are alive."""
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the ")": state is field 0, so utime/stime are 11/12.
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total
