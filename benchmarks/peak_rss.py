"""Peak resident memory of this process, for the benchmarks' fresh-process memory probes.

``reset_peak_rss()`` resets the kernel's high-water mark (Linux ≥ 4.0, ``/proc/self/clear_refs``);
``proc_status_kib("VmRSS" | "VmHWM")`` reads the current / peak RSS; ``ru_maxrss_kib()`` is the
fallback peak (since process start) where the mark cannot be reset.
"""

from __future__ import annotations

import re
import resource
import sys
from pathlib import Path


def proc_status_kib(key: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (None where there is no /proc)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water RSS mark (Linux ≥ 4.0); False where that is impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def ru_maxrss_kib() -> int:
    """Peak RSS since the process started, in KiB."""
    scale = 1024 if sys.platform == "darwin" else 1  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // scale
