#!/usr/bin/env bash
# Residency on a lent GPU (issue 4): `nexus bench swap` and the GPU residency tests, in about a minute (hard
# limits add up to under 4). Run from the repository copy: `bash benchmarks/gpu/residency_gpu.sh`.
# Writes $OUT/swap-gpu.json, swap-gpu.log and residency-gpu-pytest.txt ($OUT defaults to benchmarks/results).
# Nothing is installed there and nothing can be downloaded: the engine runs from this tree (PYTHONPATH) on the
# image's python3 (torch, transformers). platformdirs is the one pure-Python dependency the image lacks; with
# NEXUS_HOME set it is only imported, never called, so a stub stands in for it when it is missing.
set -u
source "$(dirname "$0")/env.sh" benchmarks/results
python3 -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(), '|',
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"

timeout 150 python3 -m nexus_engine.cli.main bench swap --out "$OUT/swap-gpu.json" > "$OUT/swap-gpu.log" 2>&1
bench=$?
tail -n 60 "$OUT/swap-gpu.log"

timeout 90 python3 -m pytest tests/gpu/test_residency_gpu.py -q -rs -s -p no:cacheprovider 2>&1 \
  | tee "$OUT/residency-gpu-pytest.txt"
tests=${PIPESTATUS[0]}

echo "bench exit $bench, tests exit $tests"
rm -rf "$WORK"
exit $(( bench != 0 || tests != 0 ))
