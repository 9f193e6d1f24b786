#!/usr/bin/env bash
# models/realnvp-faces: RealNVP lite-32 on scikit-image's 16 sample photographs and 200 LFW faces
# (BSD), anchored on 8 of the photographs; 139 epochs (12 minutes on 1 thread of a 2-core EPYC VM).
set -euo pipefail
cd "$(dirname "$0")/../../.."
VJ="${VJBRIDGE:-vjbridge}"
$VJ dataset samples --out runs/samples --kind all
mkdir -p runs/realnvp/anchors
for n in astronaut coffee chelsea rocket immunohistochemistry retina hubble_deep_field colorwheel; do
  cp "runs/samples/$n.png" runs/realnvp/anchors/
done
$VJ train realnvp --images runs/samples --out runs/realnvp/realnvp-faces --preset lite-32 --epochs 139 \
  --batch-size 64 --lr 0.001 --anchors runs/realnvp/anchors --threads 1
rm -rf models/realnvp-faces && mkdir -p models/realnvp-faces/samples
cp runs/realnvp/realnvp-faces/{config.json,weights.safetensors,card.md,loss.png} models/realnvp-faces/
cp "$(ls runs/realnvp/realnvp-faces/samples/epoch_*.png | tail -n 1)" models/realnvp-faces/samples/
