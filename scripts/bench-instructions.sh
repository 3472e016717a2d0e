#!/usr/bin/env bash
# bench-instructions.sh -- instructions per event of `veil run --until-empty`, counted by valgrind's
# callgrind, side by side with a BASELINE veil binary on the same seeded input. Instruction counts
# repeat run to run whatever else the machine does, unlike CPU time (perf counters are not
# available on these machines). Start-up is included, so use enough EVENTS.
#   BASELINE=path/to/older/veil scripts/bench-instructions.sh
# Env: EVENTS (2000), PORT (4566), BASELINE (required)
# Needs: valgrind; scripts/services.sh up postgres modern (this script runs it). Release build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${BASELINE:?set BASELINE to an older veil binary}"
EVENTS="${EVENTS:-2000}"; PORT="${PORT:-4566}"
ADMIN="postgres://postgres:postgres@127.0.0.1:5432/postgres"
export VEIL_KEY_FILE="${VEIL_KEY_FILE:-/tmp/veil-bench/keyring.json}"
VEIL=target/release/veil
log=$(mktemp -d /tmp/veil-bench-instructions.XXXXXX)
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
scripts/services.sh up postgres modern >/dev/null
cargo build --release --quiet --bin veil
[[ -f "$VEIL_KEY_FILE" ]] || "$VEIL" keys new --out "$VEIL_KEY_FILE" >/dev/null

count() {  # count NAME BINARY: prints the instructions of one drain of EVENTS seeded events
  local q="http://localhost:$PORT/000000000000/bench-ir-$1-$$-$RANDOM" db="veil_bench_ir_$1"
  "$VEIL" seed --queue-url "$q" --count "$EVENTS" --bad-ratio 0.05 --rng-seed 7 >/dev/null 2>&1
  psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" 2>/dev/null
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$log/$1.out" "$2" run --until-empty \
    --quiet --show-rows 0 --queue-url "$q" \
    --database-url "postgres://postgres:postgres@127.0.0.1:5432/$db" > "$log/$1.log" 2>&1
  grep -q "^received $EVENTS," "$log/$1.log" || { cat "$log/$1.log" >&2; exit 1; }
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$log/$1.log"
}
veil=$(count veil "$VEIL"); base=$(count baseline "$BASELINE")
echo "instructions per event ($EVENTS events, start-up included): veil $((veil / EVENTS)), baseline $((base / EVENTS)), ratio $(awk -v a="$veil" -v b="$base" 'BEGIN {printf "%.3f", a / b}')"
echo "callgrind files: $log"
