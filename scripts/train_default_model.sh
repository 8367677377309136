#!/usr/bin/env bash
# The shipped default model's recipe: three `crossattn train` stages, each starting from the last.
#
#   bash scripts/train_default_model.sh [RUN]        (RUN defaults to runs/default)
#
# 1-layout     3,500 steps, lr 8e-4 constant: what, where (one-object positions) and clean backgrounds
# 2-grounding  2,649 steps, lr 5e-4 constant, token grounding loss 0.01: word maps onto their objects
# 3-anneal     2,900 steps, lr 5e-4 cosine to 0, grounding loss 0.01
#
# All at batch 128 with EMA 0.9995. The shipped model ran these stages on one H100 (each stage sharing
# the GPU with one or two other experiments): about 21 minutes in all. A stopped stage continues
# from its last checkpoint when the script is run again; a finished stage is skipped.
# Extra flags go to every stage, e.g. `--threads 2` on a CPU or `--num-workers 8` on a GPU machine.
set -euo pipefail
run=${1:-runs/default}
shift || true
common=(--batch-size 128 --ema-decay 0.9995 --checkpoint-every 250 --sample-every 1000 --fp16 --no-progress "$@")

stage() {  # stage NAME [flags...]: train RUN/NAME, resuming or skipping as its folder says
  local out=$run/$1
  shift
  if [ -f "$out/final/model_index.json" ]; then
    echo "$out: finished, skipped"
  elif [ -d "$out/checkpoints" ] && ls "$out/checkpoints" | grep -q '^step-'; then
    crossattn train --out "$out" --resume latest
  else
    crossattn train --out "$out" "$@" "${common[@]}"
  fi
}

stage 1-layout --steps 3500 --lr 8e-4 --warmup-steps 500 --lr-schedule constant_with_warmup
stage 2-grounding --init-from "$run/1-layout/final" --steps 2649 --lr 5e-4 --warmup-steps 200 \
  --lr-schedule constant_with_warmup --grounding-loss 0.01
stage 3-anneal --init-from "$run/2-grounding/final" --steps 2900 --lr 5e-4 --warmup-steps 100 \
  --lr-schedule cosine --grounding-loss 0.01
echo "done: $run/3-anneal/final  (install it as the default: python scripts/ship_default_model.py $run/3-anneal/final)"
