"""The pure core: values and rules. No environment, clock, network or files except through arguments;
imports only the standard library, jinja2, yaml (and numpy, lazily). tests/unit/test_layers.py checks it."""
