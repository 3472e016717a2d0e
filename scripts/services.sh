#!/usr/bin/env bash
# services.sh -- start (or stop) what veil's demo and tests need, natively, without Docker:
#   postgres  PostgreSQL on 127.0.0.1:5432 (started if not running; installed from Debian's
#             packages when missing and we are root). The reference credentials
#             postgres/postgres must work: the password is set if password auth is on.
#   modern    LocalStack 4.7 (SQS with JSON + query protocols, and KMS) on 127.0.0.1:${MODERN_PORT:-4566}
#   legacy    LocalStack 0.14.3 (SQS, query protocol only, like the reference image)
#             on 127.0.0.1:${LEGACY_PORT:-4510}
# Usage: scripts/services.sh up|down|status [postgres] [modern] [legacy]   (default: all three)
# The LocalStack installs (Python venvs under /tmp, ~1 min each the first time) are done by
# scripts/localstack-{modern,legacy}.sh, which carry the exact pins that work.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODERN_PORT="${MODERN_PORT:-4566}"
LEGACY_PORT="${LEGACY_PORT:-4510}"
TAG="[services]"

pg_ready() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }

postgres_up() {
  if ! command -v pg_isready >/dev/null || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      echo "$TAG installing PostgreSQL from Debian's packages ..."
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    elif ! pg_ready; then
      echo "$TAG ERROR: PostgreSQL is not installed or running on 127.0.0.1:5432; install it" >&2
      exit 1
    fi
  fi
  if ! pg_ready; then
    local version; version=$(ls /etc/postgresql | sort -V | tail -n 1)
    echo "$TAG starting PostgreSQL $version ..."
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 150); do pg_ready && break; sleep 0.2; done
    pg_ready || { echo "$TAG ERROR: PostgreSQL did not become ready" >&2; exit 1; }
  fi
  # The reference credentials (postgres/postgres over TCP) must work for the demo and tests.
  if ! PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v runuser >/dev/null; then
      runuser -u postgres -- psql -qc "ALTER USER postgres PASSWORD 'postgres'" >/dev/null
    fi
    PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null \
      || { echo "$TAG ERROR: cannot log in as postgres/postgres on 127.0.0.1:5432" >&2; exit 1; }
  fi
  echo "$TAG PostgreSQL ready on 127.0.0.1:5432"
}

up() {
  for service in "$@"; do
    case "$service" in
      postgres) postgres_up ;;
      modern) PORT="$MODERN_PORT" SERVICES="${SERVICES:-sqs,kms}" "$here/localstack-modern.sh" start ;;
      legacy) PORT="$LEGACY_PORT" "$here/localstack-legacy.sh" start ;;
      *) echo "$TAG unknown service $service" >&2; exit 2 ;;
    esac
  done
}

down() {
  for service in "$@"; do
    case "$service" in
      postgres) echo "$TAG leaving PostgreSQL running (it is the machine's)" ;;
      modern) PORT="$MODERN_PORT" "$here/localstack-modern.sh" stop ;;
      legacy) PORT="$LEGACY_PORT" "$here/localstack-legacy.sh" stop ;;
    esac
  done
}

status() {
  local rc=0
  pg_ready && echo "$TAG PostgreSQL ready" || { echo "$TAG PostgreSQL not ready"; rc=1; }
  PORT="$MODERN_PORT" "$here/localstack-modern.sh" status || rc=1
  PORT="$LEGACY_PORT" "$here/localstack-legacy.sh" status || rc=1
  return $rc
}

command="${1:-up}"; shift || true
[[ $# -gt 0 ]] || set -- postgres modern legacy
case "$command" in
  up) up "$@" ;;
  down) down "$@" ;;
  status) status ;;
  *) echo "usage: $0 up|down|status [postgres] [modern] [legacy]" >&2; exit 2 ;;
esac
