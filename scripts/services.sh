#!/usr/bin/env bash
# services.sh -- start (or stop) what veil's demo and tests need, natively, without Docker:
#   postgres  PostgreSQL on 127.0.0.1:5432, reached as postgres/postgres (the reference setup)
#   modern    LocalStack 4.7 (SQS with JSON + query protocols, KMS, Secrets Manager, and for the
#             deploy test CloudFormation, IAM, STS, SSM, Logs, CloudWatch, EC2) on 127.0.0.1:${MODERN_PORT:-4566}
#   legacy    LocalStack 0.14.3 (SQS, query protocol only, like the reference image)
#             on 127.0.0.1:${LEGACY_PORT:-4510}
#   tls       a private TLS-only PostgreSQL cluster on 127.0.0.1:${TLS_PORT:-5439}, for the TLS and
#             Secrets Manager tests (scripts/postgres-tls.sh; under /tmp/veil-pg-tls), and two
#             more for libpq's certificate rules: a CN-only certificate on ${TLS_CN_ONLY_PORT:-5441},
#             the PostgreSQL documentation's self-signed one on ${TLS_SELF_SIGNED_PORT:-5442}
# Usage: scripts/services.sh up|down|status [postgres] [modern] [legacy] [tls]   (default: all four)
#
# What it changes on this machine, and nothing else:
#   - LocalStack: Python venvs and run directories under /tmp (scripts/localstack-*.sh; the
#     first install takes about a minute each and needs PyPI). Python 3.11, 3.12 or 3.13 is
#     chosen automatically, or set PYTHON=...
#   - PostgreSQL: starts the installed cluster if it is stopped (pg_ctlcluster), and says so.
#     The TLS test cluster is a separate one under /tmp/veil-pg-tls (initdb, its own port).
#     Only with VEIL_SETUP_POSTGRES=1 does it also install PostgreSQL from Debian's packages
#     when it is missing (as root) and set the postgres role's password to "postgres" when
#     that login fails. Without it, it stops and prints the command that would do it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODERN_PORT="${MODERN_PORT:-4566}"
LEGACY_PORT="${LEGACY_PORT:-4510}"
TLS_PORT="${TLS_PORT:-5439}"
TLS_CN_ONLY_PORT="${TLS_CN_ONLY_PORT:-5441}"
TLS_SELF_SIGNED_PORT="${TLS_SELF_SIGNED_PORT:-5442}"
# The services the tests use; `make demo` asks for sqs,kms only (a faster start).
MODERN_SERVICES="${MODERN_SERVICES:-sqs,kms,secretsmanager,iam,sts,cloudformation,ssm,logs,cloudwatch,ec2,scheduler}"
TAG="[services]"

pg_ready() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
pg_login() { PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; }
setup_allowed() { [[ "${VEIL_SETUP_POSTGRES:-0}" == 1 ]]; }

postgres_up() {
  if pg_ready && pg_login; then echo "$TAG PostgreSQL ready on 127.0.0.1:5432"; return 0; fi
  if ! command -v pg_ctlcluster >/dev/null || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    if pg_ready; then :  # a server we did not install (Homebrew, a container): use it as it is
    elif setup_allowed && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      echo "$TAG VEIL_SETUP_POSTGRES=1: installing PostgreSQL from Debian's packages (apt-get install postgresql) ..."
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
      echo "$TAG ERROR: no PostgreSQL answers on 127.0.0.1:5432 and none is installed here." >&2
      echo "$TAG fix: install and start one (Debian/Ubuntu: sudo apt-get install postgresql;" >&2
      echo "$TAG      macOS: brew install postgresql@15 && brew services start postgresql@15)," >&2
      echo "$TAG      or, as root on Debian, rerun with VEIL_SETUP_POSTGRES=1 to let this script install it." >&2
      exit 1
    fi
  fi
  if ! pg_ready; then
    local version; version=$(ls /etc/postgresql | sort -V | tail -n 1)
    echo "$TAG starting the installed PostgreSQL $version cluster (pg_ctlcluster $version main start) ..."
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 150); do pg_ready && break; sleep 0.2; done
    pg_ready || { echo "$TAG ERROR: PostgreSQL did not become ready; see /var/log/postgresql/" >&2; exit 1; }
  fi
  # The reference credentials (postgres/postgres over TCP) must work for the demo and tests.
  if ! pg_login; then
    if setup_allowed && [[ $(id -u) -eq 0 ]] && command -v runuser >/dev/null; then
      echo "$TAG VEIL_SETUP_POSTGRES=1: setting the password of role postgres to 'postgres' ..."
      runuser -u postgres -- psql -qc "ALTER USER postgres PASSWORD 'postgres'" >/dev/null
    else
      echo "$TAG ERROR: PostgreSQL runs, but postgres/postgres cannot log in on 127.0.0.1:5432." >&2
      echo "$TAG fix: sudo -u postgres psql -c \"ALTER USER postgres PASSWORD 'postgres'\"" >&2
      echo "$TAG      (or rerun with VEIL_SETUP_POSTGRES=1 as root), or point veil elsewhere with DATABASE_URL." >&2
      exit 1
    fi
    pg_login || { echo "$TAG ERROR: still cannot log in as postgres/postgres on 127.0.0.1:5432" >&2; exit 1; }
  fi
  echo "$TAG PostgreSQL ready on 127.0.0.1:5432"
}

up() {
  for service in "$@"; do
    case "$service" in
      postgres) postgres_up ;;
      modern) PORT="$MODERN_PORT" SERVICES="$MODERN_SERVICES" "$here/localstack-modern.sh" start ;;
      legacy) PORT="$LEGACY_PORT" "$here/localstack-legacy.sh" start ;;
      tls) PORT="$TLS_PORT" "$here/postgres-tls.sh" start
           # libpq's certificate rules: a CN-only certificate, and the documentation's self-signed one
           PORT="$TLS_CN_ONLY_PORT" DIR=/tmp/veil-pg-tls-cn-only CERT=cn-only "$here/postgres-tls.sh" start
           PORT="$TLS_SELF_SIGNED_PORT" DIR=/tmp/veil-pg-tls-self-signed CERT=self-signed "$here/postgres-tls.sh" start ;;
      *) echo "$TAG unknown service $service (postgres, modern, legacy, tls)" >&2; exit 2 ;;
    esac
  done
}

down() {
  for service in "$@"; do
    case "$service" in
      postgres) echo "$TAG leaving PostgreSQL running (it is the machine's)" ;;
      modern) PORT="$MODERN_PORT" "$here/localstack-modern.sh" stop ;;
      legacy) PORT="$LEGACY_PORT" "$here/localstack-legacy.sh" stop ;;
      tls) PORT="$TLS_PORT" "$here/postgres-tls.sh" stop
           PORT="$TLS_CN_ONLY_PORT" DIR=/tmp/veil-pg-tls-cn-only "$here/postgres-tls.sh" stop
           PORT="$TLS_SELF_SIGNED_PORT" DIR=/tmp/veil-pg-tls-self-signed "$here/postgres-tls.sh" stop ;;
      *) echo "$TAG unknown service $service (postgres, modern, legacy, tls)" >&2; exit 2 ;;
    esac
  done
}

status() {
  local rc=0
  pg_ready && echo "$TAG PostgreSQL ready" || { echo "$TAG PostgreSQL not ready"; rc=1; }
  PORT="$MODERN_PORT" "$here/localstack-modern.sh" status || rc=1
  PORT="$LEGACY_PORT" "$here/localstack-legacy.sh" status || rc=1
  PORT="$TLS_PORT" "$here/postgres-tls.sh" status || rc=1
  PORT="$TLS_CN_ONLY_PORT" DIR=/tmp/veil-pg-tls-cn-only "$here/postgres-tls.sh" status || rc=1
  PORT="$TLS_SELF_SIGNED_PORT" DIR=/tmp/veil-pg-tls-self-signed "$here/postgres-tls.sh" status || rc=1
  return $rc
}

command="${1:-up}"; shift || true
[[ $# -gt 0 ]] || set -- postgres modern legacy tls
case "$command" in
  up) up "$@" ;;
  down) down "$@" ;;
  status) status ;;
  *) echo "usage: $0 up|down|status [postgres] [modern] [legacy] [tls]" >&2; exit 2 ;;
esac
