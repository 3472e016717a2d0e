#!/usr/bin/env bash
# bench-memory.sh -- peak RSS of `veil run --until-empty` (default settings) draining COUNT
# bodies of BYTES bytes (default 400 x 250 KB: junk that is quarantined, sealed, as too_large),
# side by side with a BASELINE veil binary on the same input, in interleaved rounds.
#   BASELINE=path/to/older/veil scripts/bench-memory.sh
# Env: COUNT (400), BYTES (250000; above 262144 the queue is made with SQS's 1 MiB limit),
#      BODY (x: `x` repeated; escapes: a JSON object of `\u00e9\"` escapes; unicode: `é` repeated),
#      ROUNDS (3), PORT (4566), BASELINE (optional), RUN_FLAGS (extra `veil run` flags, e.g.
#      "--max-in-flight-bytes 12582912" for the bound in bytes)
# Needs: scripts/services.sh up postgres modern (this script runs it). Release build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
COUNT="${COUNT:-400}"; BYTES="${BYTES:-250000}"; ROUNDS="${ROUNDS:-3}"; PORT="${PORT:-4566}"
ADMIN="postgres://postgres:postgres@127.0.0.1:5432/postgres"
export VEIL_KEY_FILE="${VEIL_KEY_FILE:-/tmp/veil-bench/keyring.json}"
VEIL=target/release/veil
SEND=target/release/examples/send_large
log=$(mktemp -d /tmp/veil-bench-memory.XXXXXX)

scripts/services.sh up postgres modern >/dev/null
cargo build --release --quiet --bin veil --example send_large
[[ -f "$VEIL_KEY_FILE" ]] || "$VEIL" keys new --out "$VEIL_KEY_FILE" >/dev/null

fresh_db() { psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" 2>/dev/null
             echo "postgres://postgres:postgres@127.0.0.1:5432/$1"; }
# drain BINARY NAME: seeds a fresh queue, drains it into a fresh database, prints "peak_kib wall_s"
drain() {
  local q="http://localhost:$PORT/000000000000/bench-mem-$2-$$-$RANDOM" db
  "$SEND" "$q" "$COUNT" "$BYTES" >/dev/null
  db=$(fresh_db "veil_bench_mem_$2")
  # shellcheck disable=SC2086 # RUN_FLAGS is a list of flags
  RUST_LOG=warn /usr/bin/time -f "%M %e" -o "$log/$2.time" "$1" run --until-empty --quiet --show-rows 0 \
    --queue-url "$q" --database-url "$db" ${RUN_FLAGS:-} > "$log/$2.out"
  local recorded; recorded=$(psql "$db" -Atc "select count(*) from veil.quarantine")
  [[ "$recorded" == "$COUNT" ]] || { echo "$2 recorded $recorded of $COUNT" >&2; exit 1; }
  cat "$log/$2.time"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "machine: $(nproc) cores; drain $COUNT bodies of $BYTES bytes, settings: ${RUN_FLAGS:-defaults}, $ROUNDS interleaved rounds"
for round in $(seq 1 "$ROUNDS"); do
  read -r kib wall < <(drain "$VEIL" veil)
  echo "$kib" >> "$log/veil.kib"
  line="   round $round: veil peak RSS $((kib / 1024)) MiB (${wall} s)"
  if [[ -n "${BASELINE:-}" ]]; then
    read -r kib wall < <(drain "$BASELINE" baseline)
    echo "$kib" >> "$log/baseline.kib"
    line="$line; baseline $((kib / 1024)) MiB (${wall} s)"
  fi
  echo "$line"
done
veil_med=$(median < "$log/veil.kib")
echo "   median peak RSS: veil $((veil_med / 1024)) MiB"
if [[ -n "${BASELINE:-}" ]]; then
  base_med=$(median < "$log/baseline.kib")
  echo "   median peak RSS: baseline $((base_med / 1024)) MiB; ratio veil/baseline $(awk -v a="$veil_med" -v b="$base_med" 'BEGIN {printf "%.2f", a / b}')"
fi
echo "logs: $log"
