#!/usr/bin/env bash
# The speedrun recipe on a CUDA GPU, in one short lease: train, then evaluate the snapshots there.
#
#   CLOCK=4 SNAPS="0.5 1 1.5 2 3 4" OUT=runs/gpu-out bash benchmarks/speedrun_gpu.sh
#
# `crossattn train --recipe speedrun` unchanged (accelerate picks the GPU; the recipe's
# mixed_precision "auto" is bf16 there) on a CLOCK-minute training clock with EMA snapshots at SNAPS
# minutes (CLOCK whole minutes), then `benchmarks/speedrun.py --eval-only --device cuda` (eval --n 100
# per snapshot, relation guidance off at the last) and `crossattn eval --n 300` of the last snapshot,
# both guidance settings. Everything a later look needs lands in $OUT as it is made (at most 8 files, for the
# device tool's return): the training log, the eval reports, the snapshots' U-Net weights (tar), so
# a phase cut short by its timeout loses only its own results. The text encoder is the shipped
# mini-CLIP's text tower, frozen, so a snapshot is rebuilt from its U-Net and any speedrun run folder.
set -u
OUT=${OUT:-runs/gpu-out}
CLOCK=${CLOCK:-4}
SNAPS=${SNAPS:-"0.5 1 1.5 2 3 4"}
RUN=${RUN:-/tmp/gpu-speedrun}
DEADLINE=${DEADLINE:-560}  # seconds after start by which everything is in $OUT (the lease's call limit)
DEVICE=${DEVICE:-cuda}
N=${N:-100}
N_LAST=${N_LAST:-300}
mkdir -p "$OUT"
T0=$(date +%s)
cap() {  # seconds a phase may take: $1, or what is left before the deadline (less 15 s to pack)
    local left=$((DEADLINE - ($(date +%s) - T0) - 15))
    echo $((left < $1 ? (left > 1 ? left : 1) : $1))
}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
    python3 -c "import torch, diffusers, transformers, accelerate; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"
} >"$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

# 1. training, on the clock
start=$(date +%s)
# shellcheck disable=SC2086
timeout "$(cap $((CLOCK * 60 + 150)))" python3 -m crossattn train --recipe speedrun --out "$RUN" --seed 0 --data-seed 0 \
    --no-progress --time-limit "$CLOCK" --snapshot-minutes $SNAPS >"$OUT/train.log" 2>&1
echo "train rc $? wall $(($(date +%s) - start)) s" | tee -a "$OUT/device.txt"
tail -3 "$OUT/train.log"
cp "$RUN/log.jsonl" "$OUT/log.jsonl"
(cd "$RUN" && tar cf - config.json snapshots/*/unet | split -b 16000000 - "$OUT/unets.tar.part-")
ls -la "$OUT"

# 2. evaluation, off the clock
start=$(date +%s)
timeout "$(cap 200)" python3 benchmarks/speedrun.py --out "$RUN" --eval-only --n "$N" --device "$DEVICE" \
    --threads 8 --unguided last >"$OUT/eval.log" 2>&1
echo "eval rc $? wall $(($(date +%s) - start)) s" | tee -a "$OUT/device.txt"
pack() { (cd "$RUN" && tar cf "$OUT/reports.tar" speedrun.md speedrun.png snapshots/*/eval*/report.json) 2>/dev/null; }
pack
last=$(ls -d "$RUN"/snapshots/minute-* | tail -1)
for guidance in 50 0; do
    timeout "$(cap 90)" python3 -m crossattn eval --model "$last" --n "$N_LAST" --device "$DEVICE" --threads 8 \
        --relation-guidance $guidance --out "$last/eval-last-g$guidance" >>"$OUT/eval.log" 2>&1
    echo "eval --n $N_LAST guidance $guidance rc $?" | tee -a "$OUT/device.txt"
done
pack
tail -20 "$OUT/eval.log"
ls -la "$OUT"
