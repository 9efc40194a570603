"""`python -m deploygate ...` is the `deploygate` command."""

from deploygate.cli import entrypoint

entrypoint()
