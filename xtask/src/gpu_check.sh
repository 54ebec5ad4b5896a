#!/usr/bin/env bash
# calmflow GPU check: run from anywhere; writes its outputs under $OUT (default ./gpu-check-out).
# Each part is timed and logged; a failing part is reported and the others still run.
set -uo pipefail
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
# The binaries travel packed (payload.tar.xz, next to this script); unpack them to scratch.
HERE="$(mktemp -d "${TMPDIR:-/tmp}/calmflow-gpu-check.XXXXXX")"
tar -C "$HERE" --strip-components=1 -xJf "$(dirname "$0")/payload.tar.xz" || {
  echo "gpu-check: cannot unpack $(dirname "$0")/payload.tar.xz"; exit 1; }
BIN="$HERE/calmflow"
FAILED=()
part() { # part NAME LOG COMMAND...: runs COMMAND, timed, into $OUT/LOG
  local name="$1" log="$OUT/$2"; shift 2
  echo "== $name"
  if ! ( time "$@" ) > "$log" 2>&1; then FAILED+=("$name"); echo "   FAILED (see $log)"; fi
  tail -n 3 "$log"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
for t in "$HERE"/tests/*; do
  part "tests on cuda: $(basename "$t")" "test-$(basename "$t").txt" "$t"
done
part "matmul parity and rate (cuda:0 against the host)" devices.txt \
  bash -c 'for n in 256 2048 8192; do "$0" devices --check cuda:0 --size "$n"; done' "$BIN"
part "speed suite (model benches) on cuda:0" bench-model.txt \
  env CRITERION_HOME="$OUT/criterion" "$HERE/bench-model" --bench
# The PyTorch twin of the training step on the same GPU (the speed suite's two shapes),
# where the machine's python3 has torch with CUDA.
if python3 -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
  part "PyTorch twin on cuda (speed-suite shapes)" twin.txt bash -c \
    'python3 "$0" 64 2 4 16 1 1 2 128 2 40 cuda && python3 "$0" 128 4 4 16 2 2 2 64 2 15 cuda' \
    "$HERE/torch_twin.py"
else
  echo "== PyTorch twin skipped: python3 has no torch with CUDA"
fi
part "demo on cuda:0 (reduced: 300 CaLMFlow steps, 1000 CFM steps)" demo.txt \
  "$BIN" demo --device cuda:0 --steps 300 --cfm-steps 1000 --out "$OUT/demo" --quiet
# Data-parallel training (docs/scaling.md): one GPU, then every GPU (two replicas on
# cuda:0 when there is only one, which checks the machinery but cannot speed up).
N_GPU=$(nvidia-smi --list-gpus | wc -l)
DEVS=$(seq -s, -f 'cuda:%g' 0 $((N_GPU - 1)))
[ "$N_GPU" -lt 2 ] && DEVS="cuda:0,cuda:0"
cat > "$OUT/data-parallel.toml" <<'TOML'
[model]
hidden = 128
layers = 4
heads = 4
dropout = 0.0
[flow]
n_times = 16
[train]
steps = 300
batch_size = 256
log_every = 50
validate_every = 0
checkpoint_every = 0
[temperature]
sweep = false
TOML
part "training on cuda:0 (H 128, 4 layers, batch 256, 300 steps)" train-one.txt \
  "$BIN" train --config "$OUT/data-parallel.toml" --out "$OUT/train-one" --device cuda:0 --quiet
part "data-parallel training on $DEVS (same run)" train-data-parallel.txt \
  "$BIN" train --config "$OUT/data-parallel.toml" --out "$OUT/train-data-parallel" \
  --devices "$DEVS" --quiet
part "held-out single-cell experiment on cuda:0 (reduced: 300 + 1000 steps)" heldout.txt \
  "$BIN" heldout --device cuda:0 --steps 300 --cfm-steps 1000 --out "$OUT/heldout" --quiet
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "gpu-check: ${#FAILED[@]} part(s) failed: ${FAILED[*]}; outputs in $OUT"; exit 1
fi
echo "gpu-check: done; outputs in $OUT"
