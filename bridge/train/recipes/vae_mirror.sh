#!/usr/bin/env bash
# models/vae-mirror: the cross-modal VAE with associators (seed 000) from nothing but CC0 audio and
# BSD pictures: eight 30 s audio-reactive videos (bridge/train/synth.py) made from Debian's sonic-pi
# loops at 112 px, 960 frame + 100 ms mel pairs (the strongest onset in every 0.25 s), then both
# training phases with early stopping (patience 8). VAE_LR=0.0001 EPOCHS=30 is the seed's
# learning rate; the bundled model used the values below.
set -euo pipefail
cd "$(dirname "$0")/../../.."
VJ="${VJBRIDGE:-vjbridge}"
S=/usr/share/sonic-pi/samples
RUN=runs/vae-mirror
VAE_LR="${VAE_LR:-0.0003}"
EPOCHS="${EPOCHS:-40}"
videos=""
for loop in amen breakbeat compus electric garzul industrial mika tabla; do
  $VJ dataset synth --audio "$S/loop_$loop.flac" --images skimage --out "$RUN/videos/$loop.mp4" \
    --seconds 30 --size 112 --fps 30 --seed 1 --quiet
  videos="$videos $RUN/videos/$loop.mp4"
done
# shellcheck disable=SC2086  # a list of paths without spaces
$VJ dataset build $videos --out "$RUN/data" --representation mel-pairs --size 112 --pairing onset \
  --segment 0.25 --start 0 --end 30 --quiet
$VJ train vae_associator --data "$RUN/data" --out "$RUN/vae-mirror" --epochs "$EPOCHS" \
  --associator-epochs 300 --vae-lr "$VAE_LR" --threads 2 --quiet
rm -rf models/vae-mirror && mkdir -p models/vae-mirror/samples
cp "$RUN/vae-mirror"/{config.json,weights.safetensors,card.md,loss.png} models/vae-mirror/
cp "$(ls "$RUN/vae-mirror/samples/"assoc_*.png | tail -n 1)" models/vae-mirror/samples/
