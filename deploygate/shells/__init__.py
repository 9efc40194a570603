"""The shells: argv / environment in, exit code out (CLI, GitHub Action, doctor, demo, docs)."""
