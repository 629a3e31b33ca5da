# charrnn in a container: the whole workflow against a mounted data folder.
#
#   docker build -t charrnn .
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/data:/data" charrnn preprocess --input-txt /data/speeches.txt
#   docker run -p 8080:8080 -v "$PWD/data:/data" charrnn serve --checkpoint /data/cv --host 0.0.0.0
#
# CPU-only PyTorch by default. For NVIDIA GPUs build with
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124
# and run with --gpus all.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    NUMBA_CACHE_DIR=/opt/charrnn/numba-cache \
    MPLCONFIGDIR=/tmp/matplotlib

# torch first, in its own layer: from a wheel in docker/wheels/ when one is there, else from the index
COPY docker/wheels/ /tmp/wheels/
RUN if ls /tmp/wheels/torch-*.whl >/dev/null 2>&1; then \
        pip install /tmp/wheels/torch-*.whl; \
    else \
        pip install --index-url "${TORCH_INDEX_URL}" --extra-index-url https://pypi.org/simple torch; \
    fi && rm -rf /tmp/wheels

WORKDIR /opt/charrnn
COPY pyproject.toml README.md ./
COPY charrnn/ charrnn/
RUN pip install '.[serve]' && rm -rf build *.egg-info
# compile the sampling kernels now, into the image: every container's first sample is as fast as its
# second (numba keys its cache by CPU; on a different CPU a container compiles once, into this
# world-writable directory, for its own lifetime)
# (from /, not this source tree: the cache is keyed by the path of the installed package)
RUN cd / && python -m charrnn.sampling.warm && chmod -R a+rwX "$NUMBA_CACHE_DIR"

# an unprivileged user; pass --user "$(id -u):$(id -g)" so files in /data belong to you
RUN useradd --uid 1000 --no-create-home --shell /usr/sbin/nologin charrnn
USER charrnn
WORKDIR /data
VOLUME /data
# exec form: charrnn is PID 1's only child-free process and receives SIGINT/SIGTERM itself,
# so `docker stop` or Ctrl-C saves a checkpoint before the container exits
# charrnn serve listens on 8080: docker run -p 8080:8080 ... serve --checkpoint /data/cv --host 0.0.0.0
EXPOSE 8080
ENTRYPOINT ["charrnn"]
CMD ["--help"]
