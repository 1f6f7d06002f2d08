# Train / ETL / evaluate image: JAX with CUDA 12 (its CUDA libraries come as
# wheels; the node needs only the NVIDIA driver, installed by GKE), the
# project at the pinned versions. No TensorFlow.
#   docker build -f infra/docker/train.Dockerfile -t REGISTRY/chameleon-train:TAG .
#   (TPU pools: --build-arg ACCELERATOR=tpu)
FROM python:3.11.11-slim-bookworm

ARG ACCELERATOR=cuda12
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Dependencies first (cached while only the code changes).
COPY pyproject.toml requirements.lock README.md ./
COPY chameleon_jax/__init__.py chameleon_jax/__init__.py
RUN pip install -c requirements.lock -e ".[${ACCELERATOR}]"

COPY main.py ./
COPY chameleon_jax/ chameleon_jax/
COPY configs/ configs/
COPY experiments/ experiments/
COPY infra/ infra/

RUN useradd --uid 1000 --create-home chameleon
USER 1000
# The rendered JobSets give the command: python main.py --config=... --mode=...
CMD ["python", "main.py", "--help"]
