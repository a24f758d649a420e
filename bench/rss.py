"""A process's resident memory, read from /proc (Linux): what `make bench` prints for the server
it loads, and what tests/test_memory.py holds a started server to.

``python -m bench.rss PID...`` prints it for running processes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

_FIELDS = {"VmRSS": "rss_mb", "VmHWM": "peak_mb"}


@dataclass(frozen=True, slots=True)
class Memory:
    """Resident memory now (VmRSS) and its peak so far (VmHWM), in MB (2**20 bytes)."""

    rss_mb: float
    peak_mb: float

    def __str__(self) -> str:
        return f"RSS {self.rss_mb:.1f} MB (peak {self.peak_mb:.1f} MB)"


def memory(pid: int) -> Memory:
    """``pid``'s resident memory; OSError when the process is gone."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in _FIELDS:
            values[_FIELDS[name]] = round(int(rest.split()[0]) / 1024, 1)  # kB
    return Memory(**values)


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        print(f"{argument}: {memory(int(argument))}")
