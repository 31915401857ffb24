# Sourced by the GPU scripts: run the engine from this tree on the lent machine's image python3 (torch,
# transformers), with nothing installed and nothing downloaded. Sets OUT (default: $1), WORK, NEXUS_HOME,
# PYTHONPATH. platformdirs is the one pure-Python dependency the image lacks; with NEXUS_HOME set it is only
# imported, never called, so a stub stands in for it when it is missing.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-$PWD/$1}"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
export NEXUS_HOME="$WORK/home" HF_HUB_OFFLINE=1 PYTHONPATH="$PWD:$WORK/shim${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import platformdirs" 2>/dev/null; then
  mkdir -p "$WORK/shim"
  cat > "$WORK/shim/platformdirs.py" <<'PY'
def _unused(*args, **kwargs):
    raise RuntimeError("platformdirs stub: NEXUS_HOME should have been used")


user_config_dir = user_data_dir = user_cache_dir = _unused
PY
fi
