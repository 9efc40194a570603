"""One adapter per outside system (MLflow, the Hub, the LoRA merge, the GitHub runner, the user's files),
each translating its SDK's errors into deploygate's. Adapters never import each other."""
