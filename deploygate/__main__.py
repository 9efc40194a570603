"""`python -m deploygate ...` is the `deploygate` command."""

from deploygate.shells.cli import entrypoint

entrypoint()
