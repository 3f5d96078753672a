# syntax=docker/dockerfile:1
# Two images from one source tree:
#   docker build --target controller -t training-controller:0.1.0 .   the NATS service (no PyTorch)
#   docker build --target trainer    -t nulog-train:0.1.0 .           the training Job (PyTorch with CUDA)
# Both run as uid 10001, the user the kubernetes launcher's Job and training_controller.yaml expect.

# -- the project as a wheel, built once for both images -------------------------------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY training_controller ./training_controller
COPY nulog ./nulog
RUN pip wheel --no-deps --wheel-dir /wheels .

# -- the controller: `training-controller serve` --------------------------------------------------------
FROM python:3.11-slim AS controller
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The base dependencies only: the `nulog` extra (the model's deep-learning stack) stays out of this image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install /wheels/training_controller-*.whl \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin controller
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["training-controller"]
CMD ["serve"]

# -- the trainer: `python -m nulog.job ...`, the command of every training Job ---------------------------
# PyTorch's Linux x86_64 wheels on PyPI bundle the CUDA runtime libraries (as nvidia-* wheels), so a slim
# Python base is CUDA-capable: the node's NVIDIA driver is all it needs, mounted by the NVIDIA container
# toolkit / device plugin that serves the nvidia.com/gpu resource.
FROM python:3.11-slim AS trainer
ARG TORCH_VERSION=2.13.0
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install "torch==${TORCH_VERSION}" \
 && pip install "$(ls /wheels/training_controller-*.whl)[nulog]" \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin trainer
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["python", "-m", "nulog.job"]
