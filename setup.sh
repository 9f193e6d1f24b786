#!/usr/bin/env bash
# One-step setup for Debian/Ubuntu (as root, or with sudo available) and macOS (Homebrew),
# then run one job:
#   bash setup.sh demo   -> set up, then `vjbridge demo` (renders demo.mp4, prints stats)
#   bash setup.sh test   -> set up, then the test suite
#   bash setup.sh        -> set up only
set -euo pipefail
cd "$(dirname "$0")"
job="${1:-none}"
VENV="${VJBRIDGE_VENV:-.venv}"

if command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  # gcc builds PyAudio (no Linux wheel); g++ lets torch.compile build the optimized runtime.
  pkgs="python3 python3-venv python3-dev gcc g++ ffmpeg portaudio19-dev"
  # The tests drive real components: a PulseAudio null sink for line-in, JACK for MIDI,
  # and Debian's CC0 sonic-pi samples as real music.
  [ "$job" = "test" ] && pkgs="$pkgs pulseaudio pulseaudio-utils jackd2 sonic-pi-samples"
  missing=""
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends $missing
  fi
fi

if [ "$(uname -s)" = "Darwin" ] && command -v brew >/dev/null 2>&1; then
  # PortAudio for PyAudio; ffmpeg for the command-line tools the tests start.
  brew list portaudio >/dev/null 2>&1 || brew install portaudio
  brew list ffmpeg >/dev/null 2>&1 || brew install ffmpeg
fi

PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip >/dev/null
# torch first, pinned: a CPU wheel of this exact version is provided on Linux build machines;
# any other request would pull several GB of CUDA wheels.
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  if [ "$(uname -s)" = "Linux" ]; then $PIP install -q "torch==2.13.0"; else $PIP install -q torch; fi
fi
extras="ndi,preview"
[ "$(uname -s)" = "Darwin" ] && extras="ndi,preview,syphon"
[ "$job" = "test" ] && extras="$extras,train,export,test"
$PIP install -q -e ".[$extras]"

case "$job" in
  demo) exec "$VENV/bin/vjbridge" demo ;;
  test)
    set +e
    VJBRIDGE_STRICT_TESTS=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider -m "not soak" --durations=30 tests
    rc=$?
    # pytest exit 5 means no test ran: that is a failure, not a pass.
    [ $rc -eq 5 ] && echo "no tests were collected" >&2
    exit $rc ;;
  none) echo "set up in $VENV; try: $VENV/bin/vjbridge --help" ;;
  *) echo "unknown job '$job' (use demo or test)" >&2; exit 2 ;;
esac
