#!/usr/bin/env bash
# NIWT sweep speed on a lent GPU (issue 9): the full perturbation sweep (every layer and block of 2-4 layers
# skipped, every attention and MLP zeroed) timed with the prefix-activation cache and naively, on random-weight
# models with seed-architecture shapes in bf16 (real seed weights cannot be downloaded there; speed depends on
# shapes only). About a minute; hard limits add up to under 3. Run from the repository copy:
#   bash benchmarks/gpu/niwt_gpu.sh
# Writes $OUT/niwt-speed-<arch>-gpu.json and niwt-gpu.log ($OUT defaults to benchmarks/results/niwt).
# Nothing is installed and nothing is downloaded: the engine runs from this tree (PYTHONPATH) on the image's
# python3 (torch, transformers). platformdirs is stubbed when missing, as in residency_gpu.sh (NEXUS_HOME is set,
# so it is imported but never called).
set -u
source "$(dirname "$0")/env.sh" benchmarks/results/niwt
python3 -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__,
'| cuda', torch.cuda.is_available(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')" \
  | tee "$OUT/niwt-gpu.log"

status=0
# qwen3-4b: the AgentCPM-Explore class (36 layers, hidden 2560, 151k vocabulary), 174 variants, 4 x 512 tokens
# llama-4b: a Llama-shaped 4B (32 layers, hidden 3072), single-layer skips and zeroed sub-blocks only (96 variants)
for run in "qwen3-4b 1,2,3,4 100" "llama-4b 1 70"; do
  set -- $run
  timeout "$3" python3 -m nexus_engine.cli.main profile speed --arch "$1" --device cuda --dtype bf16 \
    --batch 4 --seq 512 --widths "$2" --out "$OUT/niwt-speed-$1-gpu.json" >> "$OUT/niwt-gpu.log" 2>&1
  rc=$?
  echo "$1: exit $rc" | tee -a "$OUT/niwt-gpu.log"
  [ -f "$OUT/niwt-speed-$1-gpu.json" ] && python3 -c "import json,sys; d=json.load(open(sys.argv[1]));
print(f\"  {d['arch']} on {d['device']}: {d['variants']} variants, naive {d['seconds_naive']:.2f} s, prefix \"
      f\"{d['seconds_prefix']:.2f} s -> {d['ratio_seconds']:.2f}x (layer forwards {d['ratio_layer_calls']:.2f}x), \"
      f\"max |dnll| {d['max_abs_nll_difference']:.1e}, peak {d.get('peak_gpu_bytes', 0) / 2**30:.1f} GiB\")" \
      "$OUT/niwt-speed-$1-gpu.json" | tee -a "$OUT/niwt-gpu.log"
  [ "$rc" -eq 0 ] || status=1
done
tail -n 20 "$OUT/niwt-gpu.log" | grep -i -E "error|traceback" && status=1
rm -rf "$WORK"
exit $status
