#!/usr/bin/env bash
# soak-least-privilege.sh -- `veil run` as the least-privilege pipeline role of sql/roles.sql,
# housekeeping every 2 s, for MINUTES minutes (default 3) while waves of events arrive; then
# SIGTERM. Passes when veil exits 0, logged one housekeeping WARN and no ERROR, and every message
# is in user_logins or the quarantine exactly once with the queue empty.
#   MINUTES=5 scripts/soak-least-privilege.sh
# Env: MINUTES (3), WAVE (200 events, 5% junk), VEIL (target/release/veil, else target/debug/veil)
# Needs: scripts/services.sh up postgres modern (this script runs it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MINUTES="${MINUTES:-3}"; WAVE="${WAVE:-200}"
VEIL="${VEIL:-$( [[ -x target/release/veil ]] && echo target/release/veil || echo target/debug/veil)}"
ADMIN="postgres://postgres:postgres@127.0.0.1:5432/postgres"
DB=veil_soak_lp; ROLE=veil_soak_pipe
QUEUE="http://localhost:4566/000000000000/veil-soak-$$"
log=$(mktemp -d /tmp/veil-soak.XXXXXX)
export VEIL_KEY_FILE="$log/keyring.json"

scripts/services.sh up postgres modern >/dev/null
psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
url="postgres://postgres:postgres@127.0.0.1:5432/$DB"
"$VEIL" keys new --out "$VEIL_KEY_FILE" >/dev/null
"$VEIL" migrate --database-url "$url" >/dev/null
psql "$url" -qc "DROP ROLE IF EXISTS $ROLE" 2>/dev/null || true
psql "$url" -q -v ON_ERROR_STOP=1 -f sql/roles.sql -v pipeline="$ROLE" -v analyst=veil_soak_analyst -v revealer=veil_soak_revealer
psql "$url" -qc "ALTER ROLE $ROLE LOGIN PASSWORD 'soak'"
RUST_LOG=warn "$VEIL" seed --count 0 --queue-url "$QUEUE" >/dev/null

RUST_LOG=info "$VEIL" run --queue-url "$QUEUE" --housekeeping-interval-secs 2 \
  --database-url "postgres://$ROLE:soak@127.0.0.1:5432/$DB" 2> "$log/veil.log" &
pid=$!
sent=0; valid=0
deadline=$(( $(date +%s) + MINUTES * 60 ))
while (( $(date +%s) < deadline )); do
  kill -0 "$pid" 2>/dev/null || { echo "veil exited during the soak:" >&2; tail -5 "$log/veil.log" >&2; exit 1; }
  out=$(RUST_LOG=warn "$VEIL" seed --count "$WAVE" --bad-ratio 0.05 --queue-url "$QUEUE")
  junk=$(sed -n 's/^sent [0-9]* messages (\([0-9]*\) junk).*/\1/p' <<< "$out")
  sent=$((sent + WAVE)); valid=$((valid + WAVE - junk))
  for _ in $(seq 1 600); do   # each wave recorded within 60 s
    [[ $(psql "$url" -Atc "select count(*) from veil.ledger") == "$sent" ]] && break
    sleep 0.1
  done
done
kill -TERM "$pid"; rc=0; wait "$pid" || rc=$?
rows=$(psql "$url" -Atc "select count(*) from user_logins")
quarantined=$(psql "$url" -Atc "select count(*) from veil.quarantine")
ledger=$(psql "$url" -Atc "select count(*) from veil.ledger")
warns=$(grep -c "housekeeping delegated" "$log/veil.log" || true)
errors=$(grep -c "ERROR" "$log/veil.log" || true)
echo "soak: $MINUTES min, $sent sent ($valid valid); exit $rc; rows $rows, quarantined $quarantined, ledger $ledger; delegated WARNs $warns, ERRORs $errors"
psql "$url" -qc "DROP OWNED BY $ROLE" >/dev/null
psql "$ADMIN" -qc "DROP DATABASE $DB WITH (FORCE)" -c "DROP ROLE $ROLE" -c "DROP ROLE veil_soak_analyst" -c "DROP ROLE veil_soak_revealer"
[[ $rc == 0 && $rows == "$valid" && $quarantined == $((sent - valid)) && $ledger == "$sent" && $warns == 1 && $errors == 0 ]] \
  || { echo "soak FAILED (log: $log/veil.log)" >&2; exit 1; }
echo "soak passed (log: $log/veil.log)"
