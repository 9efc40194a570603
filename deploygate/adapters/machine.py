"""This machine's free disk and available memory (what a deploy's preflight and doctor compare with).

Adapter: the only place that asks the operating system about its resources; reads, never writes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


class LocalMachine:
    """The Machine port on this host."""

    def free_disk(self, path: Path) -> int:
        """Bytes free on the file system holding `path` (its nearest existing parent)."""
        probe = Path(path)
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        return shutil.disk_usage(probe).free

    def available_memory(self) -> int | None:
        """MemAvailable (Linux: what can be allocated without swapping), else free physical pages;
        None when the system does not say."""
        try:
            with open("/proc/meminfo", encoding="ascii") as meminfo:
                for line in meminfo:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            return None
