#!/usr/bin/env bash
# Everything a lent GPU machine should run for this project, in one call (about 8 minutes on an
# H200, compile caches cold), most important first; each part writes under $OUT as it goes:
#   1. the CUDA tests (tests/test_runtime_cuda.py, marked gpu: they skip where CI runs), a live
#      set on the GPU among them (play while compiling, the compiler set up, a cold switch),
#   2. the bench on every family, four 512² models at once, the upscaling and whole bands ticks
#      with the picture drawn on the host or inside the graph (bench-cuda.json/png),
#   3. the kernel probe: the U-Net's transposed convolutions against SubPixelDeconv, RealNVP in
#      bf16 (kernels.jsonl),
#   4. whole ticks of waveform, history and bands_history models at 512², drawn on the host or in
#      the graph (tick-arrays.json),
#   5. the bundled models as a user times their own (bench --models: holds_fps, precision),
#      last, so a session that runs out loses only these.
# Device call:  bash benchmarks/gpu_session.sh   (with timeout_s 600)
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-.}
nvidia-smi -L
timeout 240 python3 -m pytest --noconftest -p no:cacheprovider -q -s tests/test_runtime_cuda.py 2>&1 | tee "$OUT/tests.log" | tail -5
timeout 200 python3 benchmarks/gpu_probe.py --iterations 200 --budget-s 0 2>&1 | grep -v "^bench:\|budget spent" | tee "$OUT/bench.log" | tail -40
timeout 120 python3 benchmarks/gpu_kernels.py --sizes 512 2>&1 | grep -v "Warn\|warn(\|USDT" | tee "$OUT/kernels.log" | tail -6
timeout 100 python3 -m bridge bench --device cuda --families tick --tick-inputs waveform,history,bands_history \
  --sizes 512 --iterations 100 --out "$OUT/tick-arrays.json" 2>&1 | grep -v "^bench:" | tee "$OUT/tick-arrays.log" | tail -12
timeout 80 python3 -m bridge bench --device cuda --models pix2pix-pulse,realnvp-faces,vae-mirror,cvae-faces \
  --iterations 100 --out "$OUT/bundles-cuda.json" 2>&1 | grep -v "^bench:" | tee "$OUT/bundles.log" | tail -16
