"""Peak disk used under some folders, sampled on a thread: allocated blocks, so a sparse file counts
what it holds. Used by the streamed-push tests and by bench/scale.py."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path


class DiskSampler:
    """`peak`: the most bytes used under `roots` at once; `weights_peak`: of the model's own shards
    alone (files named model*.safetensors, base and merged), side files left out."""

    def __init__(self, *roots: Path, interval: float = 0.001) -> None:
        self.roots = roots
        self.interval = interval
        self.peak = 0
        self.weights_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _used(self) -> tuple[int, int]:
        total = weights = 0
        for root in self.roots:
            for path in root.rglob("*"):
                with contextlib.suppress(OSError):  # removed while walking
                    if path.is_file() and not path.is_symlink():
                        used = path.stat().st_blocks * 512
                        total += used
                        if path.name.startswith("model") and path.suffix == ".safetensors":
                            weights += used
        return total, weights

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):  # a folder removed while walking: the next sample counts
                total, weights = self._used()
                self.peak, self.weights_peak = max(self.peak, total), max(self.weights_peak, weights)
            self._stop.wait(self.interval)

    def __enter__(self) -> DiskSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
