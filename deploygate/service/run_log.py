"""The run's own log: everything logged under `deploygate` while a service runs, scrubbed of
secrets, for deployment_logs.txt and the rollback's report."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator

from deploygate.core.redact import RedactingFormatter


@contextlib.contextmanager
def capture_log() -> Iterator[io.StringIO]:
    """Everything logged under `deploygate` during the run, for deployment_logs.txt."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG)
    logger = logging.getLogger("deploygate")
    old_level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
