#!/usr/bin/env bash
# Issue 15: the default U-Net learns to read the mini-CLIP's text tower (frozen, as Stable Diffusion
# reads CLIP), starting from the shipped U-Net so colour, shape and position come back quickly.
#
#   bash scripts/train_default_on_clip.sh [RUN] [extra crossattn-train flags]     (RUN: runs/default-clip)
#
# One `crossattn train` run, resumable: a stopped run continues from its last checkpoint when the
# script is run again (time-boxed machines: pass --time-limit MIN, the run's clock in all, kept across
# resumes: raise it by each session's minutes). Relation scenes are 60 % of the
# data (--scene-mix), the token grounding loss keeps word maps on their objects, and the LR is
# constant so the run can be stopped and continued at any step.
#   GPU (one H100/H200):  bash scripts/train_default_on_clip.sh runs/default-clip --batch-size 128 --num-workers 8
#   CPU (2 cores, background, 80 min at a time: --time-limit 80, then 160, ...):
#                         bash scripts/train_default_on_clip.sh runs/default-clip --threads 1 --time-limit 80
# Then: crossattn eval --model RUN/final --relation-guidance 0, and python scripts/ship_default_model.py RUN/final
# A CPU session that stops before the bars commits RUN/final as checkpoints/default-clip/ (fp16 EMA
# weights); the next run of this script (on a fresh machine, no RUN) starts from it.
# The shipped default model is this run's step 5,064 (two CPU sessions, 205 min). It started from the
# first default model, which is no longer shipped: to redo it, pass --init-from a folder of that model
# (git archive 588b596 src/crossattn/pretrained); without a RUN or checkpoint the script now continues
# from the shipped model.
set -euo pipefail
run=${1:-runs/default-clip}
shift || true
if [ -d "$run/checkpoints" ] && ls "$run/checkpoints" | grep -q '^step-'; then
  exec crossattn train --out "$run" --resume latest --no-progress "$@"
fi
# Start from the U-Net the last (CPU) session committed, if any, else from the shipped default model.
start=src/crossattn/pretrained
if [ -f checkpoints/default-clip/model_index.json ]; then start=checkpoints/default-clip; fi
exec crossattn train --out "$run" --init-from "$start" \
  --text-encoder src/crossattn/pretrained/clip --freeze-text-encoder \
  --steps 20000 --batch-size 32 --lr 3e-4 --lr-schedule constant_with_warmup --warmup-steps 50 \
  --grounding-loss 0.01 --scene-mix 0.1 0.2 0.6 0.1 --ema-decay 0.999 \
  --checkpoint-every 100 --keep-checkpoints 2 --sample-every 500 --fp16 --no-progress "$@"
