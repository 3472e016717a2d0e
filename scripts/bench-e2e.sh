#!/usr/bin/env bash
# bench-e2e.sh -- end-to-end throughput of veil against LocalStack 4.7 and Postgres, side by
# side with a bare receive+delete loop at the same concurrency, in one run. Prints ratios.
#   1. drain:   EVENTS seeded events (5% junk): veil run --until-empty vs examples/raw_drain
#   2. cpu/rss: the veil drain's user+sys CPU per event and peak RSS, from /usr/bin/time, beside
#               the bare loop's CPU per event (the floor: SQS calls alone, same client, same
#               runtime); then the same for BIG_EVENTS (default 100000) for the memory bound
#   3. scale:   two veil processes on one queue vs one, total rate and exactness
# Env: EVENTS (20000), BIG_EVENTS (100000), RECEIVERS (4), ROUNDS (3), PORT (4566),
#      SECTIONS (1,2,3: which sections to run),
#      BASELINE (optional: an older veil binary, drained in the same rounds in section 1, so a
#      change is judged by ratios from one run)
# Needs: scripts/services.sh up (this script runs it). Release build of veil + the example.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
EVENTS="${EVENTS:-20000}"; BIG_EVENTS="${BIG_EVENTS:-100000}"; RECEIVERS="${RECEIVERS:-4}"
ROUNDS="${ROUNDS:-3}"; PORT="${PORT:-4566}"
ADMIN="postgres://postgres:postgres@127.0.0.1:5432/postgres"
export VEIL_KEY_FILE="${VEIL_KEY_FILE:-/tmp/veil-bench/keyring.json}"
VEIL=target/release/veil
RAW=target/release/examples/raw_drain
log=$(mktemp -d /tmp/veil-bench.XXXXXX)

scripts/services.sh up postgres modern >/dev/null
cargo build --release --quiet --bin veil --example raw_drain
[[ -f "$VEIL_KEY_FILE" ]] || "$VEIL" keys new --out "$VEIL_KEY_FILE" >/dev/null

fresh_db() { psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" 2>/dev/null
             echo "postgres://postgres:postgres@127.0.0.1:5432/$1"; }
seed() { RUST_LOG=warn "$VEIL" seed --queue-url "$1" --count "$2" --bad-ratio 0.05 --rng-seed 7 >/dev/null; }
queue() { echo "http://localhost:$PORT/000000000000/bench-$1-$$-$RANDOM"; }
# veil's own figure: messages / time until the last batch was deleted (excludes start-up and the
# final empty poll), parsed from its summary line "... (last batch done at S s: R msg/s)".
veil_rate() { sed -n 's/.*last batch done at \([0-9.]*\) s: \([0-9]*\) msg\/s.*/\2/p' "$1"; }
# run_veil QUEUE DB OUT: drain with /usr/bin/time; OUT gets the summary, OUT.time "wall user sys maxrss_kb"
run_veil() { RUST_LOG=warn /usr/bin/time -f "%e %U %S %M" -o "$3.time" \
             "${VEIL}" run --until-empty --quiet --show-rows 0 --receivers "$RECEIVERS" \
             --queue-url "$1" --database-url "$2" > "$3"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB; LocalStack 4.7 on :$PORT; $(psql "$ADMIN" -Atc 'show server_version')"
echo "== 1. drain $EVENTS events (5% junk), $RECEIVERS receivers, $ROUNDS interleaved rounds"
for round in $(seq 1 "$ROUNDS"); do
  q=$(queue veil); seed "$q" "$EVENTS"; db=$(fresh_db veil_bench_e2e)
  run_veil "$q" "$db" "$log/veil-$round"
  veil_rate "$log/veil-$round" >> "$log/veil.rates"
  if [[ -n "${BASELINE:-}" ]]; then
    q=$(queue base); seed "$q" "$EVENTS"; db=$(fresh_db veil_bench_base)
    VEIL="$BASELINE" run_veil "$q" "$db" "$log/base-$round"
    veil_rate "$log/base-$round" >> "$log/base.rates"
    read -r _ user sys _ < "$log/base-$round.time"
    awk -v u="$user" -v s="$sys" -v n="$EVENTS" 'BEGIN {printf "%.1f\n", (u + s) / n * 1e6}' >> "$log/base-cpu.us"
  fi
  q=$(queue raw); seed "$q" "$EVENTS"
  /usr/bin/time -f "%e %U %S %M" -o "$log/raw-$round.time" "$RAW" "$q" "$RECEIVERS" "$EVENTS" \
    | sed -n 's/.*rate=\([0-9.]*\).*/\1/p' >> "$log/raw.rates"
  read -r _ user sys rss < "$log/veil-$round.time"
  awk -v u="$user" -v s="$sys" -v n="$EVENTS" 'BEGIN {printf "%.1f\n", (u + s) / n * 1e6}' >> "$log/cpu.us"
  read -r _ user sys _ < "$log/raw-$round.time"
  awk -v u="$user" -v s="$sys" -v n="$EVENTS" 'BEGIN {printf "%.1f\n", (u + s) / n * 1e6}' >> "$log/raw-cpu.us"
  echo "$rss" >> "$log/rss.kb"
  echo "   round $round: veil $(tail -n1 "$log/veil.rates") msg/s, raw $(tail -n1 "$log/raw.rates") msg/s; CPU per event: veil $(tail -n1 "$log/cpu.us") us, raw $(tail -n1 "$log/raw-cpu.us") us"
  if [[ -n "${BASELINE:-}" ]]; then
    echo "            baseline $(tail -n1 "$log/base.rates") msg/s, CPU per event $(tail -n1 "$log/base-cpu.us") us"
  fi
done
veil_med=$(median < "$log/veil.rates"); raw_med=$(median < "$log/raw.rates")
echo "   median: veil $veil_med msg/s, raw receive+delete $raw_med msg/s, ratio $(awk -v a="$veil_med" -v b="$raw_med" 'BEGIN {printf "%.2f", a / b}')"
cpu_med=$(median < "$log/cpu.us"); raw_cpu_med=$(median < "$log/raw-cpu.us")
echo "   CPU per event (user+sys): veil median $cpu_med us, bare loop median $raw_cpu_med us, ratio $(awk -v a="$cpu_med" -v b="$raw_cpu_med" 'BEGIN {printf "%.2f", a / b}')"
echo "   veil peak RSS median $(( $(median < "$log/rss.kb") / 1024 )) MiB"
if [[ -n "${BASELINE:-}" ]]; then
  base_med=$(median < "$log/base.rates"); base_cpu=$(median < "$log/base-cpu.us")
  echo "   baseline: $base_med msg/s (ratio to raw $(awk -v a="$base_med" -v b="$raw_med" 'BEGIN {printf "%.2f", a / b}')), CPU per event $base_cpu us (ratio to raw $(awk -v a="$base_cpu" -v b="$raw_cpu_med" 'BEGIN {printf "%.2f", a / b}'))"
  echo "   veil vs baseline: rate $(awk -v a="$veil_med" -v b="$base_med" 'BEGIN {printf "%.2f", a / b}'), CPU per event $(awk -v a="$cpu_med" -v b="$base_cpu" 'BEGIN {printf "%.2f", a / b}')"
fi

SECTIONS="${SECTIONS:-1,2,3}"
[[ ",$SECTIONS," == *,2,* || ",$SECTIONS," == *,3,* ]] || { echo "logs: $log"; exit 0; }
if [[ ",$SECTIONS," == *,2,* ]]; then
echo "== 2. memory bound: drain $BIG_EVENTS events"
q=$(queue big); seed "$q" "$BIG_EVENTS"; db=$(fresh_db veil_bench_big)
run_veil "$q" "$db" "$log/big"
read -r wall user sys rss < "$log/big.time"
echo "   $(veil_rate "$log/big") msg/s; CPU $(awk -v u="$user" -v s="$sys" -v n="$BIG_EVENTS" 'BEGIN {printf "%.1f", (u + s) / n * 1e6}') us/event; peak RSS $((rss / 1024)) MiB; wall ${wall} s"
rows=$(psql "$db" -Atc "select (select count(*) from user_logins) + (select count(*) from veil.quarantine)")
echo "   recorded $rows of $BIG_EVENTS"
fi
[[ ",$SECTIONS," == *,3,* ]] || { echo "logs: $log"; exit 0; }

echo "== 3. two processes vs one on one queue ($EVENTS events)"
q=$(queue two); seed "$q" "$EVENTS"; db=$(fresh_db veil_bench_two)
start=$(date +%s.%N)
run_veil "$q" "$db" "$log/two-a" & a=$!
run_veil "$q" "$db" "$log/two-b" & b=$!
wait "$a" "$b"
end=$(date +%s.%N)
recorded=$(psql "$db" -Atc "select (select count(*) from user_logins) + (select count(*) from veil.quarantine)")
ledger=$(psql "$db" -Atc "select count(*) from veil.ledger")
two_rate=$(awk -v n="$EVENTS" -v a="$start" -v b="$end" 'BEGIN {printf "%.0f", n / (b - a)}')
q=$(queue one); seed "$q" "$EVENTS"; db=$(fresh_db veil_bench_one)
start=$(date +%s.%N); run_veil "$q" "$db" "$log/one"; end=$(date +%s.%N)
one_rate=$(awk -v n="$EVENTS" -v a="$start" -v b="$end" 'BEGIN {printf "%.0f", n / (b - a)}')
echo "   wall-clock rate: two processes $two_rate msg/s, one process $one_rate msg/s, ratio $(awk -v a="$two_rate" -v b="$one_rate" 'BEGIN {printf "%.2f", a / b}')"
echo "   two processes recorded $recorded rows+quarantine, ledger $ledger, for $EVENTS events (duplicates: $((recorded - EVENTS)))"
echo "logs: $log"
