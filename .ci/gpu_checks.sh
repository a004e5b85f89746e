#!/usr/bin/env bash
# The checks of ../shared/GPU-CHECKS.md in one call on a lent CUDA machine, each step under its own timeout and all
# under one deadline; logs, JSON and a summary under $OUT. Prepared here first (see GPU-CHECKS.md): .gpu/wheels (what
# the machine lacks: datasets, pydantic, seqeval, deepspeed and their needs, cp312) and .gpu/minilm (MiniLM, its
# weights in bf16 to fit the carry limit: ptrain loads them in float32). Run through the device tool:
#   run(command="bash .ci/gpu_checks.sh", carry=[".gpu"], timeout_s=560)
set -u
OUT=${OUT:-/tmp/gpu-checks}
PY=${PYTHON:-/opt/torch/.venv/bin/python}
DEADLINE=$(($(date +%s) + ${BUDGET_S:-540}))
SHARED=${SHARED:-$PWD/.gpu/shared}  # ../shared/data/emotion, carried
mkdir -p "$OUT" .gpu/site
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD:$PWD/.gpu/site" PTRAIN_DATA_DIR="$SHARED/data"
MODEL=model.name_or_path=$PWD/.gpu/minilm
TINY="configs/tiny.yaml data.data_dir=$SHARED/data model.tokenizer=$PWD/.gpu/minilm"

step() {  # step NAME SECONDS COMMAND...: runs it unless the deadline is too close; one summary line
  local name=$1 limit=$2 left=$((DEADLINE - $(date +%s)))
  shift 2
  case " ${SKIP:-} " in *" $name "*) echo "$name: skipped (SKIP)" >>"$OUT/summary.txt"; return ;; esac
  if [ "$left" -lt 30 ]; then echo "$name: not run (deadline)" >>"$OUT/summary.txt"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  local started=$(date +%s)
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  echo "$name: exit $? in $(($(date +%s) - started)) s" >>"$OUT/summary.txt"
}
PTRAIN="$PY -m ptrain"
LAUNCH="$PY -m accelerate.commands.launch --num_processes 1"

step setup 90 "$PY" -m pip install --no-index --no-deps --target .gpu/site .gpu/wheels/*.whl
step versions 30 bash -c "nvidia-smi -L; $PY -c 'import torch, transformers, accelerate, deepspeed; print(torch.__version__, transformers.__version__, accelerate.__version__, deepspeed.__version__, torch.cuda.get_device_name())'"
step emotion 150 $PTRAIN train configs/emotion.yaml "$MODEL" output_dir="$OUT/runs" train.max_steps=300 \
  train.eval_every_steps=150 data.data_dir="$SHARED/data"
step bench 150 $PTRAIN bench configs/emotion.yaml "$MODEL" data.data_dir="$SHARED/data" --steps 200 \
  --warmup-steps 20 --compare-hf --json "$OUT/bench.json"
export PTRAIN_TEST_INF_AT_CALL=6  # the sixth micro-batch's loss is infinite: that step is dropped, the next trains
step fp16_skip 60 $PTRAIN train $TINY output_dir="$OUT/fp16" train.mixed_precision=fp16 train.epochs=1 \
  train.loss=tests/nonfinite_loss.py:InfiniteOnce train.log_every_steps=1
step bf16_skip 60 $PTRAIN train $TINY output_dir="$OUT/bf16" train.mixed_precision=bf16 train.epochs=1 \
  train.loss=tests/nonfinite_loss.py:InfiniteOnce train.log_every_steps=1
unset PTRAIN_TEST_INF_AT_CALL
RESUMABLE="train.ema_decay=0.9 train.checkpoint_every_steps=10 train.callbacks=tests/kill_at_step.py:KillAtStep"
for engine in single fsdp deepspeed_zero2 deepspeed_zero3; do
  case $engine in single) run=$PTRAIN ;; *) run="$LAUNCH --config_file configs/accelerate/$engine.yaml -m ptrain" ;; esac
  ema=$RESUMABLE
  [ "$engine" = deepspeed_zero3 ] && ema="train.checkpoint_every_steps=10 train.callbacks=tests/kill_at_step.py:KillAtStep"
  PTRAIN_TEST_KILL_AT_STEP=30 PTRAIN_TEST_KILL_SIGNAL=TERM step "${engine}_stopped" 90 $run train $TINY \
    output_dir="$OUT/$engine" $ema
  step "${engine}_resumed" 90 $run train $TINY output_dir="$OUT/$engine" $ema train.resume=auto
done
step compile 120 $PTRAIN train $TINY output_dir="$OUT/compile" train.compile=true train.epochs=1
cat "$OUT/summary.txt"
