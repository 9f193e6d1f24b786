#!/usr/bin/env bash
# models/cvae-faces: the conv-VAE (64x64, latent 32) on scikit-image's sample photographs and
# 200 LFW faces (BSD); 80 epochs (9 minutes on 1 thread of a 2-core EPYC VM), fp16 weights.
set -euo pipefail
cd "$(dirname "$0")/../../.."
VJ="${VJBRIDGE:-vjbridge}"
$VJ dataset samples --out runs/cvae/faces_photos --kind all --size 64
$VJ train cvae --images runs/cvae/faces_photos --out runs/cvae/cvae-faces --size 64 --latent-dim 32 \
  --epochs 80 --batch-size 16 --lr 0.001 --kld-weight 0.0001 --threads 1
rm -rf models/cvae-faces && mkdir -p models/cvae-faces/samples
cp runs/cvae/cvae-faces/{config.json,weights.safetensors,card.md,loss.png} models/cvae-faces/
cp runs/cvae/cvae-faces/samples/final.png models/cvae-faces/samples/
