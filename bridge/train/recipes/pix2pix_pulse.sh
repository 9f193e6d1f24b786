#!/usr/bin/env bash
# The default model, models/pix2pix-pulse, made from nothing but CC0 audio and BSD pictures:
#   1. eight audio-reactive "music videos" (bridge/train/synth.py) from Debian's sonic-pi loops,
#      each looped to 30 s, cutting between scikit-image's sample pictures;
#   2. pairs (bands picture at 256 px from the live analyzer | frame), every 4th frame at 30 fps;
#   3. pix2pix, ngf 16, batch 4, 10 epochs on 2 CPU threads (23 minutes on a 2-core EPYC VM),
#      fp16 weights; run it again and it resumes from the checkpoint instead of starting over;
#   4. the bundle copied into models/ (without the checkpoint), then checked on held-out loops.
# Run from anywhere: bash bridge/train/recipes/pix2pix_pulse.sh   (needs ffmpeg, sonic-pi-samples
# and the train extras; VJBRIDGE=path/to/vjbridge and PYTHON=... pick other executables).
set -euo pipefail
cd "$(dirname "$0")/../../.."
VJ="${VJBRIDGE:-vjbridge}"
PY="${PYTHON:-python3}"
S=/usr/share/sonic-pi/samples
RUN=runs/pix2pix-pulse
MODEL=models/pix2pix-pulse
LOOPS="amen breakbeat compus electric garzul industrial mika tabla"

seed=0
videos=""
for loop in $LOOPS; do
  seed=$((seed + 1))
  $VJ dataset synth --audio "$S/loop_$loop.flac" --images skimage --out "$RUN/videos/$loop.mp4" \
    --seconds 30 --size 256 --fps 30 --seed "$seed" --quiet
  videos="$videos $RUN/videos/$loop.mp4"
done

# shellcheck disable=SC2086  # $videos is a list of paths without spaces
$VJ dataset build $videos --out "$RUN/data" --representation bands --size 256 \
  --pairing every-nth --every 4 --start 0 --end 30 --tick-fps 30 --quiet

$VJ train pix2pix --data "$RUN/data" --out "$RUN/pix2pix-pulse" --epochs 10 --batch-size 4 --ngf 16 \
  --lr 0.0002 --threads 2 --fp16-weights

rm -rf "$MODEL"
mkdir -p "$MODEL/samples"
cp "$RUN/pix2pix-pulse/config.json" "$RUN/pix2pix-pulse/weights.safetensors" "$RUN/pix2pix-pulse/card.md" \
  "$RUN/pix2pix-pulse/loss.png" "$MODEL/"
last_grid=$(ls "$RUN/pix2pix-pulse/samples/"epoch_*.png | tail -n 1)
cp "$last_grid" "$MODEL/samples/"

# Held-out loops (never seen in training): frame change vs onset strength, Pearson r; the
# table also goes into the card.
check=$($PY -m bridge.train.evaluate --model "$MODEL" --seconds 20 \
  "$S/loop_perc1.flac" "$S/loop_safari.flac" "$S/loop_weirdo.flac" "$S/loop_mehackit1.flac")
echo "$check"
{
  echo
  echo "## Held-out check"
  echo "Pearson r between the mean absolute frame-to-frame change of the frames this model makes"
  echo "and the onset strength, per 30 fps tick, on sonic-pi loops it never saw (looped to 20 s;"
  echo "'teacher r' is the same for the synthetic videos it learned from):"
  echo '```'
  echo "$check"
  echo '```'
  echo
  echo "The whole recipe: \`bridge/train/recipes/pix2pix_pulse.sh\`."
} >> "$MODEL/card.md"
