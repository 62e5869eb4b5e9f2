# User-code image for the churn code location (CPU by default).
#
#   docker build --build-arg CHURN_CODE_VERSION=$(git rev-parse --short=12 HEAD) -t registry.example.com/churn:1.0 .
#
# CUDA variant (for the torch_model step on GPU nodes): start from an image
# with the CUDA runtime and install a CUDA build of torch instead of the CPU
# wheel, e.g.
#   docker build --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#                --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t registry.example.com/churn:1.0-cuda .
# (the CUDA base needs python3.11 installed; see README "Kubernetes").
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# The project's extras in the image: object storage always; add mlflow for experiment tracking (--build-arg CHURN_EXTRAS=s3,mlflow).
ARG CHURN_EXTRAS=s3
# The commit this image is built from, recorded with every model version it trains
# (kubernetes mode refuses to start without it):
#   docker build --build-arg CHURN_CODE_VERSION=$(git rev-parse --short=12 HEAD) ...
ARG CHURN_CODE_VERSION=""
RUN test -n "${CHURN_CODE_VERSION}" || (echo "build with --build-arg CHURN_CODE_VERSION=\$(git rev-parse --short=12 HEAD)" >&2; exit 1)
ENV CHURN_CODE_VERSION=${CHURN_CODE_VERSION} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    CHURN_DATA_DIR=/tmp/churn \
    CHURN_DEPLOYMENT=kubernetes

WORKDIR /opt/dagster/app
COPY pyproject.toml README.md ./
COPY lib ./lib
COPY ml_assets ./ml_assets
COPY resources ./resources
COPY sensors ./sensors
COPY feature_repo ./feature_repo
COPY workspace.yaml ./

# torch first from the chosen index (CPU wheels by default: no multi-GB CUDA
# download in the CPU image), then the project with everything else pinned in pyproject.
RUN pip install --index-url "${TORCH_INDEX}" "torch==2.13.0" \
 && pip install ".[${CHURN_EXTRAS}]" \
 && groupadd --gid 10001 churn && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin churn \
 && mkdir -p "${DAGSTER_HOME}" && chown -R 10001:10001 "${DAGSTER_HOME}"

# Non-root; pods run with a read-only root filesystem and an emptyDir on /tmp.
USER 10001:10001
EXPOSE 4000
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "4000", "-m", "ml_assets.definitions"]
