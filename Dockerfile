# deploygate as a GitHub container action. The runner builds this file from the action's folder,
# mounts the workspace at /github/workspace and sets the working directory itself: no WORKDIR,
# and no USER (the runner's mounted files belong to root).
FROM python:3.11-slim

# The merge needs no GPU: torch comes from the CPU-only index (~750 MB instead of ~5 GB of CUDA).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false

# Dependencies first (their own layers, cached until requirements.txt changes). torch alone from
# the CPU index, then everything from PyPI with torch pinned again: pip keeps the CPU build and
# resolves its dependencies (sympy, networkx, ...) from PyPI, and peft / accelerate never pull CUDA.
COPY requirements.txt /app/requirements.txt
# In the same layer, what no code path of the gate loads: torch's C++ headers (for building
# extensions), its C++ test programs and test libraries, and protoc (~110 MB in all).
RUN pip install --no-cache-dir --no-deps --index-url "${TORCH_INDEX_URL}" "torch==2.13.0" \
 && pip install --no-cache-dir -r /app/requirements.txt "torch==2.13.0" \
 && site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && rm -rf "${site}/torch/include" "${site}"/torch/bin/test_* "${site}"/torch/bin/*StoreTest \
           "${site}"/torch/bin/protoc* "${site}"/torch/lib/*_test.so \
 && python -c "import torch, mlflow, huggingface_hub, safetensors, peft, transformers, jinja2, yaml; assert not torch.cuda.is_available()"

# The package is imported from /app (the entrypoint's folder), not installed: no build step.
COPY deploygate /app/deploygate
COPY entrypoint.py /app/entrypoint.py
RUN python -m compileall -q /app/deploygate && python -c "import sys; sys.path.insert(0, '/app'); import deploygate.shells.action"

ENTRYPOINT ["python", "/app/entrypoint.py"]
