# megatron_lite on GPU clusters: CUDA PyTorch, DeepSpeed with its ops, pdsh + ssh for multi-node.
#   docker build -t megatron_lite .
#   docker run --gpus all --ipc=host --network=host -v $PWD/data:/workspace/megatron_lite/data \
#       megatron_lite ./deepy.py train.py -d configs 125M.yml local_setup.yml
# The base image's torch must satisfy requirements/requirements.txt (torch>=2.4,<2.15), so pip
# keeps it and never pulls another build.
ARG BASE_IMAGE=pytorch/pytorch:2.9.1-cuda12.8-cudnn9-devel
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PDSH_RCMD_TYPE=ssh \
    HF_HUB_OFFLINE=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        pdsh openssh-client openssh-server git build-essential ninja-build libaio-dev \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /run/sshd

WORKDIR /workspace/megatron_lite

# The same requirement files as `make install`, installed the same way (DeepSpeed needs the
# image's torch at build time: no build isolation). Its fused Adam and utils ops are
# prebuilt for the listed GPU architectures (A100 8.0, H100 9.0) so no node compiles at start.
ARG TORCH_CUDA_ARCH_LIST="8.0;9.0"
ENV TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST}
COPY requirements/ requirements/
RUN DS_BUILD_FUSED_ADAM=1 DS_BUILD_UTILS=1 \
    pip install --no-build-isolation -r requirements/requirements.txt -r requirements/requirements-dev.txt

# pyproject.toml declares the same ranges as requirements.txt, all satisfied by now: this
# installs only the package (editable, so the scripts import it from /workspace/megatron_lite).
COPY . .
RUN pip install --no-build-isolation -e .

CMD ["bash"]
