#!/usr/bin/env bash
# The prepared GPU check (issue 14): on a machine with a CUDA GPU, the adapter and whole-model benchmarks at the
# paper's width (4096; one layer in fp32 and in bf16-mixed) and benchmarks/full_size_step.py (configs/rode.yaml at
# full size, random weights), in at most 10 minutes (part budgets 80 + 80 + 50 + 210 + 150 s). Each writes its
# printed table to <out>/<name>.txt and its last line, one JSON object, to <out>/<name>.json; a part that fails or runs out of its time is recorded as such and the next one still runs.
#
#     bash benchmarks/gpu_check.sh [out]        (default out: results/gpu)
#     bash benchmarks/gpu_check.sh --cpu [out]  (a check of the script itself at tiny shapes on the CPU)
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--cpu" ]]; then
  shift
  device=cpu
  speed=(--dim 32 --tokens 64 --rounds 1 --min-sample-seconds 0)
  step=(--shape tiny --rounds 1 --batch 2 --length 16 --generate-batch 2 --prompt-length 8 --new-tokens 2
        --min-sample-seconds 0)
  full=(--tiny --steps 2)
else
  device=cuda
  speed=(--dim 4096 --tokens 8192 --rounds 10)
  step=(--shape paper wide --rounds 5 --batch 4 --length 512 --generate-batch 16 --prompt-length 256 --new-tokens 32
        --min-sample-seconds 0.2)
  full=(--steps 6)
fi
out="${1:-results/gpu}"
mkdir -p "$out"
python=${PYTHON:-python}

run_part() {  # name, time limit in seconds, command...
  local name=$1 limit=$2
  shift 2
  echo "== $name (at most ${limit} s): $*"
  timeout "$limit" "$@" > "$out/$name.txt" 2> "$out/$name.err"
  local status=$?
  if [[ $status -eq 0 ]]; then
    tail -n 1 "$out/$name.txt" > "$out/$name.json"
  else
    echo "{\"part\": \"$name\", \"failed\": true, \"exit_status\": $status}" > "$out/$name.json"
  fi
  echo "   exit $status; $(wc -c < "$out/$name.json") bytes of JSON"
}

run_part adapter_speed 80 "$python" benchmarks/adapter_speed.py --device "$device" "${speed[@]}"
# bf16-mixed, as the paper's model trains: where top-1 over equal ranks runs grouped by expert (grouped GEMM kernel).
run_part adapter_speed_bf16 80 "$python" benchmarks/adapter_speed.py --device "$device" --dtype bfloat16 "${speed[@]}"
run_part adapter_memory 50 "$python" benchmarks/adapter_memory.py "${speed[@]:0:4}"
run_part model_step 210 "$python" benchmarks/model_step.py --device "$device" "${step[@]}"
run_part full_size_step 150 "$python" benchmarks/full_size_step.py "${full[@]}" --workdir "$out/full_size_step"
"$python" - "$out" <<'PYEOF'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
summary = {path.stem: json.loads(path.read_text() or "{}") for path in sorted(out.glob("*.json")) if path.stem != "summary"}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps({name: not value.get("failed", False) for name, value in summary.items()}))
PYEOF
