"""The Hub's `main` follows the champion alias: after a failed push, a failed promotion, a
concurrent deploy or a rollback, main is made to hold the files of whoever holds the alias."""

from __future__ import annotations

import logging

from deploygate.core.errors import first_line
from deploygate.core.settings import GateConfig
from deploygate.ports import HubSync, Registry

log = logging.getLogger("deploygate")


def main_follows_champion(
    cfg: GateConfig, registry: Registry, shipper: HubSync | None, *, fallback: str | None, why: str
) -> None:
    """Make the Hub's main hold the files of the version holding the champion alias; re-read the
    holder after each sync until it stops changing (bounded). Never raises: a failure here is
    logged and repaired by the next run of the same command. `fallback` is the version to restore
    when the registry cannot even say who holds the alias."""
    if shipper is None:
        return
    synced: str | None = None
    for _ in range(3):
        try:
            holder = registry.holder(cfg.registry_name, cfg.champion_alias, by_stage=cfg.promotion == "stage")
            version = holder.version if holder is not None else None
        except Exception:
            version = fallback
        if version is None or version == synced:
            return
        try:
            shipper.sync(cfg, version, why)
        except Exception as exc:
            log.warning(
                "could not make the Hub's main hold v%s (%s); re-run the same command to repair it",
                version,
                first_line(exc),
            )
            return
        synced = version
