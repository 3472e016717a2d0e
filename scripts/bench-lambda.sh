#!/usr/bin/env bash
# bench-lambda.sh -- veil lambda's cold start and warm CPU, beside the poller's CPU per event, in
# one run. The Lambda side is driven through a Runtime API of scripts/bench_lambda.py's own (the
# real binary, real Postgres; events built as the SQS event source mapping builds them):
#   cold start  process start -> first answer (a 10-record batch), median of COLD_ROUNDS, on plain
#               TCP and on the TLS-only cluster (verify-full, scram): the TLS handshake's share
#   warm        user+sys CPU per invocation and per event, batches of 10 and of 100 records
#   poller      veil run --until-empty on EVENTS seeded events (LocalStack 4.7): user+sys CPU per
#               event, from /usr/bin/time. It includes the SQS calls' CPU, which on Lambda is the
#               event source mapping's (not billed to the function)
# Env: EVENTS (20000), COLD_ROUNDS (5), WARM_10 (1000), WARM_100 (200), PORT (4566)
# Needs: scripts/services.sh up and scripts/postgres-tls.sh (this script runs both); release build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
EVENTS="${EVENTS:-20000}"; PORT="${PORT:-4566}"
ADMIN="postgres://postgres:postgres@127.0.0.1:5432/postgres"
TLS_ADMIN="postgres://postgres:veil-tls@localhost:5439/postgres?sslmode=verify-full&sslrootcert=/tmp/veil-pg-tls/ca.pem"
VEIL=target/release/veil
log=$(mktemp -d /tmp/veil-bench-lambda.XXXXXX)
PY="${PYTHON:-python3}"

scripts/services.sh up postgres modern tls >/dev/null
cargo build --release --quiet --locked --bin veil
"$VEIL" keys new --out "$log/keyring.json" >/dev/null

fresh_db() { psql "$1" -qc "DROP DATABASE IF EXISTS $2 WITH (FORCE)" -c "CREATE DATABASE $2" 2>/dev/null; }
fresh_db "$ADMIN" veil_bench_lambda
fresh_db "$TLS_ADMIN" veil_bench_lambda
plain="postgres://postgres:postgres@127.0.0.1:5432/veil_bench_lambda"
tls="postgres://postgres:veil-tls@localhost:5439/veil_bench_lambda?sslmode=verify-full&sslrootcert=/tmp/veil-pg-tls/ca.pem"
"$VEIL" migrate --database-url "$plain" >/dev/null
"$VEIL" migrate --database-url "$tls" >/dev/null

echo "machine: $(nproc) cores; $(psql "$ADMIN" -Atc 'show server_version'); logs in $log"
echo "== veil lambda (Runtime API of scripts/bench_lambda.py)"
VEIL="$VEIL" "$PY" scripts/bench_lambda.py "$plain" "$tls" "$log/keyring.json" "$log/lambda.log" | tee "$log/lambda.json"

echo "== poller: veil run --until-empty, $EVENTS events (5% junk)"
q="http://localhost:$PORT/000000000000/bench-lambda-poller-$$-$RANDOM"
RUST_LOG=warn "$VEIL" seed --queue-url "$q" --count "$EVENTS" --bad-ratio 0.05 --rng-seed 7 >/dev/null
fresh_db "$ADMIN" veil_bench_lambda_poller
VEIL_KEY_FILE="$log/keyring.json" RUST_LOG=warn /usr/bin/time -f "%e %U %S %M" -o "$log/poller.time" \
  "$VEIL" run --until-empty --quiet --show-rows 0 --queue-url "$q" \
  --database-url "postgres://postgres:postgres@127.0.0.1:5432/veil_bench_lambda_poller" > "$log/poller.out"
read -r _ user sys _ < "$log/poller.time"
poller_us=$(awk -v u="$user" -v s="$sys" -v n="$EVENTS" 'BEGIN {printf "%.1f", (u + s) / n * 1e6}')
echo "poller CPU per event: ${poller_us} us"

"$PY" - "$log/lambda.json" "$poller_us" <<'PY'
import json, sys
result = json.load(open(sys.argv[1])); poller = float(sys.argv[2])
cold = result["cold_start_ms"]
print("== ratios (one run)")
print("cold start, TLS verify-full / plain: %.2f (%.1f vs %.1f ms, medians)"
      % (cold["tls_verify_full"]["median"] / cold["plain"]["median"],
         cold["tls_verify_full"]["median"], cold["plain"]["median"]))
for warm in result["warm"]:
    print("warm, %3d records: %.1f us CPU per event = %.2f x the poller's %.1f us (%.3f ms CPU per invocation)"
          % (warm["records"], warm["cpu_us_per_event"], warm["cpu_us_per_event"] / poller, poller,
             warm["cpu_ms_per_invocation"]))
PY
