#!/usr/bin/env bash
# One resumable piece (default 8 minutes) of a paper-size training on one CUDA GPU, from the data pack
# of training/gpu/pack.py. Run it again to continue: it resumes from the weights of the last piece.
#
#   bash training/gpu/train.sh cst|mulsr|hsrdiff [MINUTES]
#
# Inputs (paths relative to the checkout): .gpu_pack/cave (the pack), .gpu_runs/MODEL/ (the last piece's
# weights, whole or as MODEL.safetensors.part-NN pieces). With $OUT set (the device machine), the new
# weights go back in <= 15 MiB pieces with the log. DEVICE=cpu and EXTRA="--iters 2 ..." (options that
# override the ones below) make a smoke test on a machine without a GPU. See training/gpu/README.md.
set -euo pipefail
model=${1:?usage: training/gpu/train.sh cst|mulsr|hsrdiff [MINUTES]}
minutes=${2:-8}
py=${PYTHON:-python3}
pack=${PACK:-.gpu_pack/cave}
run=.gpu_runs/$model
out=$run/$model.safetensors

case $model in
  # paper configs (CST 10.6M, MulSR 4.6M parameters); HSR-Diff's paper config (31M, 59 MiB in fp16)
  # cannot travel with the pack, so its 'gpu' config: full resolution, 5.4M parameters
  cst)     args=(--config paper --protocol bicubic-x4 --iters 60000 --batch 16 --patch 64 --lr-rate 2e-4) ;;
  mulsr)   args=(--config paper --protocol mulsr-x8 --iters 40000 --batch 16 --patch 96 --lr-rate 1e-4) ;;
  hsrdiff) args=(--config gpu --protocol gauss-x32 --iters 60000 --batch 8 --patch 128 --lr-rate 1e-4) ;;
  umsft)   echo "umsft is fitted per image (unsupervised): nothing to train; run it with" \
                "'main.py sr --model umsft --device cuda ...'" >&2; exit 2 ;;
  *)       echo "unknown model '$model' (cst, mulsr or hsrdiff)" >&2; exit 2 ;;
esac
[ -d "$pack" ] || { echo "no data pack at $pack: build it with training/gpu/pack.py" >&2; exit 2; }

# packages the device image lacks travel as wheels in .whl (training/gpu/README.md)
if ! "$py" -c "import spectral" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

mkdir -p "$run"
if compgen -G "$out.part-*" >/dev/null; then   # the last piece's weights, returned in pieces
  cat "$out".part-* > "$out.tmp" && mv "$out.tmp" "$out" && rm -f "$out".part-*
fi

# no checkpoint travels (the optimizer state of CST's paper config is 127 MiB): every piece resumes
# from the weights with a fresh optimizer; the schedule follows the step stored in them
"$py" main.py train --model "$model" "${args[@]}" --data "$pack" --split cave --device "${DEVICE:-cuda}" --threads 8 \
  --val-every 500 --val-crop 128 --ckpt-every 1000000000 --time-limit "$minutes" --seed 3000 \
  --run-dir "$run" --out "$out" --resume ${EXTRA:-} 2>&1 | tee "$run/train.log"

if [ -n "${OUT:-}" ]; then
  split -b 15M -d "$out" "$OUT/$model.safetensors.part-"
  cp "$run/train.log" "$OUT/$model.train.log"
  [ -f "$run/best.safetensors" ] && [ "$(stat -c %s "$run/best.safetensors")" -le 15728640 ] \
    && cp "$run/best.safetensors" "$OUT/$model.best.safetensors" || true
  ls -l "$OUT"
fi
