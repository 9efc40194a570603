"""The three result files, written atomically (temp file in the same folder, then rename), so a
reader never sees half a file. What they say is core/render/result_documents.py."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from deploygate.core.model import GateResult
from deploygate.core.render.result_documents import (
    COMPARISON_FILE,
    INFO_FILE,
    LOG_FILE,
    comparison_text,
    info_text,
)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_outputs(result: GateResult, log_text: str) -> dict[str, Path]:
    """Write the three files into the configured output folder; return their paths."""
    out = result.config.output_dir
    paths = {"info": out / INFO_FILE, "comparison": out / COMPARISON_FILE, "log": out / LOG_FILE}
    write_atomic(paths["comparison"], comparison_text(result))
    write_atomic(paths["log"], log_text)
    write_atomic(paths["info"], info_text(result))
    return paths


class ResultFiles:
    """The ResultWriter port on the local disk: the folder is the run's `output-dir`."""

    def write(self, result: GateResult, log_text: str) -> dict[str, Path]:
        return write_outputs(result, log_text)
