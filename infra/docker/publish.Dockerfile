# Model-publishing image: --mode=export (jax2tf SavedModel, verified against
# the JAX model, published in TF Serving layout with warmup records and
# version labels) and label changes (python -m export.publish). JAX on CPU
# plus TensorFlow 2.21 / tensorflow-serving-api 2.21, which read the
# XlaCallModule version that jax 0.10.2 writes.
#   docker build -f infra/docker/publish.Dockerfile -t REGISTRY/chameleon-publish:TAG .
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 JAX_PLATFORMS=cpu
WORKDIR /app

COPY pyproject.toml requirements.lock README.md ./
COPY chameleon_jax/__init__.py chameleon_jax/__init__.py
RUN pip install -c requirements.lock -e ".[export]"

COPY main.py ./
COPY chameleon_jax/ chameleon_jax/
COPY configs/ configs/
COPY experiments/ experiments/
COPY export/ export/
COPY infra/ infra/

RUN useradd --uid 1000 --create-home chameleon
USER 1000
CMD ["python", "main.py", "--help"]
