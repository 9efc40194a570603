"""deploygate: decide whether a fine-tuned model replaces the one in production, and ship it."""

__version__ = "0.1.0"
