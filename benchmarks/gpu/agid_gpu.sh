#!/usr/bin/env bash
# AGID training at seed scale on a lent GPU (issue 10): `nexus train speed` on a random-weight Qwen3-4B-shaped
# teacher (the AgentCPM-Explore class) in bf16: record the teacher's residual stream (NIWT shards, verified on
# read), collapse 25% of its layers, fit the bridges locally, train them end to end on the activation trajectory
# (+ logit KL), time prefill/decode of teacher vs student, then train a vision-width projector through the
# frozen LLM. Real seed weights cannot be downloaded there; speed and memory depend on shapes only, and the
# loss must still fall (a random teacher's states are a fixed function of its input). About a minute; hard
# limits add up to under 4. Run from the repository copy: `bash benchmarks/gpu/agid_gpu.sh`.
# Writes $OUT/agid-speed-<arch>-gpu.json and agid-gpu.log ($OUT defaults to benchmarks/results/agid).
set -u
source "$(dirname "$0")/env.sh" benchmarks/results/agid
status=0
# batch 4 x 512 (the CPU run's shape scaled up), then batch 8: does the step time scale with the tokens?
for run in "qwen3-4b 4 16 110" "qwen3-4b 8 32 110"; do
  set -- $run
  name="agid-speed-$1-b$2-gpu.json"
  timeout "$4" python3 -m nexus_engine.cli.main train speed --arch "$1" --device cuda --dtype bf16 --batch "$2" \
    --windows "$3" --seq 512 --steps 60 --json "$OUT/$name" > /dev/null 2>> "$OUT/agid-gpu.log"
  rc=$?
  echo "$1 batch $2: exit $rc" | tee -a "$OUT/agid-gpu.log"
  [ -f "$OUT/$name" ] && python3 -c "import json,sys; d=json.load(open(sys.argv[1])); g=2**30
for k in ('local', 'agid', 'projector'):
    s = d[k]; print(f\"  {k}: {s['seconds_per_step']*1000:.0f} ms/step, loss {s['loss_first5']:.4f} -> \"
                    f\"{s['loss_last5']:.4f}, peak {s.get('peak_gpu_bytes', 0)/g:.1f} GiB\"
                    + (f\", {s['tokens_per_second']:.0f} tok/s\" if 'tokens_per_second' in s else ''))
print(f\"  record {d['record_seconds']:.1f} s ({d['activation_bytes']/g:.2f} GiB), prefill speedup \"
      f\"{d['decode']['prefill_speedup']:.2f}x, decode {d['decode']['teacher']['decode_tok_s']:.0f} -> \"
      f\"{d['decode']['student']['decode_tok_s']:.0f} tok/s, peak {d.get('peak_gpu_bytes', 0)/g:.1f} GiB\")" \
      "$OUT/$name" | tee -a "$OUT/agid-gpu.log"
  [ "$rc" -eq 0 ] || status=1
done
tail -n 20 "$OUT/agid-gpu.log" | grep -i -E "error|traceback" && status=1
rm -rf "$WORK"
exit $status
