# syntax=docker/dockerfile:1
# The segmentation service (`bentoml serve serving.service:Segmenter`) with the Gradio demo at /ui.
#
# CPU (default):
#   docker build -t cluda-serve .
# CUDA (PyPI's torch wheels bundle their CUDA libraries; the base image brings the NVIDIA
# container settings; Ubuntu 24.04's Python 3.12 is installed below):
#   docker build -t cluda-serve:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX_URL=https://pypi.org/simple .
# Run with a model mounted read-only (a checkpoint, or an export folder of `python -m export`):
#   docker run -p 3000:3000 \
#     -v "$PWD/work_dirs/toy_hrda/latest.safetensors:/models/model.safetensors:ro" cluda-serve
#   (GPU: add --gpus all; another model: -e CLUDA_MODEL=/models/onnx -v "$PWD/exports/onnx:/models/onnx:ro")

ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# CPU wheels of torch by default (~200 MB instead of the ~2.5 GB CUDA build).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    BENTOML_DO_NOT_TRACK=True \
    CLUDA_MODEL=/models/model.safetensors \
    CLUDA_DEVICE=auto \
    PATH=/opt/venv/bin:$PATH

# CUDA base images have no Python; python:* images have it and skip this step.
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv

# Dependencies first, in their own layer: code changes do not reinstall torch.
RUN pip install --index-url "${TORCH_INDEX_URL}" \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
# Only what serving imports (models <- export <- serving <- app); the training code stays out.
COPY pyproject.toml README.md /tmp/src/
COPY models /tmp/src/models
COPY export /tmp/src/export
COPY serving /tmp/src/serving
COPY app /tmp/src/app
RUN pip install "/tmp/src[serve]" && rm -rf /tmp/src

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin cluda \
    && mkdir -p /models && chown cluda /models
USER cluda
WORKDIR /home/cluda

EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/healthz', timeout=4)"
CMD ["bentoml", "serve", "serving.service:Segmenter", "--host", "0.0.0.0", "--port", "3000"]
