#!/usr/bin/env bash
# Wheels for a GPU machine that has Python and a CUDA PyTorch but no internet (an air-gapped
# cluster node, or a lent test machine): what training, generation and the GPU checks import
# beyond PyTorch, transformers, tokenizers, numpy, pyyaml, tqdm, psutil, einops and msgpack.
#
#   bash tools/gpu/offline_kit.sh [DIR] [PYTHON_VERSION]   # here, with package-registry access
#   bash tools/gpu/check.sh                                # there, installs DIR and runs the checks
#
# DIR defaults to .whl (git-ignored); PYTHON_VERSION (the target's, e.g. 3.12) to 3.12.
# The versions are this checkout's .venv's, so both machines run what the tests here ran.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:-.whl}
PYVER=${2:-3.12}
PY=${PY:-.venv/bin/python}
test -x "$PY" || { echo "offline_kit.sh: $PY not found: run 'make install' first" >&2; exit 2; }
mkdir -p "$DIR"
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }

# DeepSpeed is a source package: build its (pure-Python) wheel here, against our torch, with
# no ops compiled in; on the GPU machine it JIT-builds what it needs from that torch.
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DIR" "deepspeed==$(version deepspeed)"

# Binary wheels for the target's Python, pure ones as they are.
PKGS=()
for name in hjson pydantic pydantic_core annotated-types typing-inspection typing_extensions \
            zstandard py-cpuinfo; do
  PKGS+=("$name==$(version "$name")")
done
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  PLATFORMS+=(--platform "$p")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
  --implementation cp "${PLATFORMS[@]}" -d "$DIR" "${PKGS[@]}"
ls -l "$DIR"
du -sh "$DIR"
