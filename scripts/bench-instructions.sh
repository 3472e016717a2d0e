#!/usr/bin/env bash
# bench-instructions.sh -- instructions per event of `veil run --until-empty`, counted by valgrind's
# callgrind, side by side with a BASELINE veil binary on the same seeded input. Instruction counts
# repeat run to run whatever else the machine does, unlike CPU time (perf counters are not
# available on these machines). Each binary drains EVENTS and then 2 x EVENTS events; the
# difference divided by EVENTS is the cost of one more event, without start-up (which includes
# one-time work such as seeding the TLS library's random generator: large under valgrind).
#   BASELINE=path/to/older/veil scripts/bench-instructions.sh
#   VEIL_ARGS="--contract examples/contracts/login.yaml" BASELINE=... scripts/bench-instructions.sh
#     (extra `veil run` flags for this build only; the zero-flag path is the built-in login
#     contract, so this is the same path, read from the file)
# Env: EVENTS (2000), PORT (4566), BASELINE (required), VEIL_ARGS (extra `veil run` flags, this
#      build only)
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

count() {  # count NAME BINARY [FLAGS...]: prints the instructions of one drain of EVENTS seeded events
  local q="http://localhost:$PORT/000000000000/bench-ir-$1-$$-$RANDOM" db="veil_bench_ir_$1"
  local out="$1-$EVENTS"
  "$VEIL" seed --queue-url "$q" --count "$EVENTS" --bad-ratio 0.05 --rng-seed 7 >/dev/null 2>&1
  psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" 2>/dev/null
  local binary=$2; shift 2
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$log/$out.out" "$binary" run --until-empty \
    --quiet --show-rows 0 --queue-url "$q" "$@" \
    --database-url "postgres://postgres:postgres@127.0.0.1:5432/$db" > "$log/$out.log" 2>&1
  grep -q "^received $EVENTS," "$log/$out.log" || { cat "$log/$out.log" >&2; exit 1; }
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$log/$out.log"
}
read -r -a veil_args <<< "${VEIL_ARGS:-}"
veil1=$(count veil "$VEIL" "${veil_args[@]}"); base1=$(count baseline "$BASELINE")
EVENTS=$((EVENTS * 2))
veil2=$(count veil "$VEIL" "${veil_args[@]}"); base2=$(count baseline "$BASELINE")
EVENTS=$((EVENTS / 2))
veil=$(((veil2 - veil1) / EVENTS)); base=$(((base2 - base1) / EVENTS))
echo "instructions per event (marginal, $EVENTS then $((EVENTS * 2)) events): veil $veil, baseline $base, ratio $(awk -v a="$veil" -v b="$base" 'BEGIN {printf "%.3f", a / b}')"
echo "start-up and fixed costs: veil $(((2 * veil1 - veil2) / 1000000)) M, baseline $(((2 * base1 - base2) / 1000000)) M instructions"
echo "callgrind files: $log"
