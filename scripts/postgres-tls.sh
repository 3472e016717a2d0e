#!/usr/bin/env bash
# postgres-tls.sh -- a private PostgreSQL cluster that accepts only TLS with a password, like RDS
# with rds.force_ssl=1, for veil's TLS tests. Built from the installed PostgreSQL server package
# (initdb, pg_ctl), on its own port, under its own directory; the machine's cluster is untouched.
#
#   scripts/postgres-tls.sh start|stop|status
#
# What it makes, under $DIR (default /tmp/veil-pg-tls):
#   ca.pem, ca.key          a throwaway CA (valid 30 days) that signed the server certificate
#   server.pem, server.key  the server certificate, for DNS:localhost and IP:127.0.0.1
#   other-ca.pem            a second CA that signed nothing here: "the wrong CA" for tests
#   data/                   the cluster: ssl=on, hostssl + scram-sha-256 only, plain TCP rejected
# CERT picks the server certificate (for libpq's name and anchor rules):
#   ca (default)   CA-signed, subjectAltName DNS:localhost, IP:127.0.0.1
#   cn-only        CA-signed, no subjectAltName: only CN=localhost names the host
#   self-signed    the PostgreSQL documentation's recipe (openssl req -x509 -subj /CN=localhost):
#                  self-signed, CA:TRUE, no subjectAltName; clients trust server.pem itself
# Login: user postgres, password $PASSWORD (default veil-tls), port $PORT (default 5439), e.g.
#   psql "postgres://postgres:veil-tls@localhost:5439/postgres?sslmode=verify-full&sslrootcert=/tmp/veil-pg-tls/ca.pem"
# As root, the cluster runs as the postgres user (initdb refuses root); otherwise as the caller.
set -euo pipefail
PORT="${PORT:-5439}"
DIR="${DIR:-/tmp/veil-pg-tls}"
PASSWORD="${PASSWORD:-veil-tls}"
CERT="${CERT:-ca}"
TAG="[postgres-tls]"

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[[ -x "$bin/initdb" ]] || {
  echo "$TAG ERROR: no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (Debian: apt-get install postgresql)" >&2
  exit 1
}
command -v openssl >/dev/null || { echo "$TAG ERROR: openssl is needed to make the certificates" >&2; exit 1; }

as_owner() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

certificates() {
  [[ -f "$DIR/server.pem" && -f "$DIR/other-ca.pem" ]] && return 0
  mkdir -p "$DIR"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=veil test CA" \
    -keyout "$DIR/ca.key" -out "$DIR/ca.pem" 2>/dev/null
  case "$CERT" in
    ca) printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$DIR/server.ext" ;;
    cn-only) printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$DIR/server.ext" ;;
    self-signed) ;;
    *) echo "$TAG ERROR: CERT=$CERT: use ca, cn-only or self-signed" >&2; exit 2 ;;
  esac
  if [[ "$CERT" == self-signed ]]; then
    # https://www.postgresql.org/docs/current/ssl-tcp.html#SSL-CERTIFICATE-CREATION
    openssl req -new -x509 -days 30 -nodes -subj "/CN=localhost" \
      -keyout "$DIR/server.key" -out "$DIR/server.pem" 2>/dev/null
  else
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout "$DIR/server.key" -out "$DIR/server.csr" 2>/dev/null
    openssl x509 -req -in "$DIR/server.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial \
      -days 30 -extfile "$DIR/server.ext" -out "$DIR/server.pem" 2>/dev/null
  fi
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=some other CA" \
    -keyout "$DIR/other-ca.key" -out "$DIR/other-ca.pem" 2>/dev/null
  chmod 644 "$DIR/ca.pem" "$DIR/other-ca.pem" "$DIR/server.pem"
  chmod 600 "$DIR/server.key"
}

cluster() {
  [[ -f "$DIR/data/PG_VERSION" ]] && return 0
  mkdir -p "$DIR/data"
  printf '%s\n' "$PASSWORD" > "$DIR/pwfile"
  if [[ $(id -u) -eq 0 ]]; then chown -R postgres "$DIR"; fi
  chmod 700 "$DIR/data"
  as_owner "$bin/initdb" -D "$DIR/data" -U postgres --pwfile="$DIR/pwfile" \
    --auth-host=scram-sha-256 --auth-local=trust --no-sync >/dev/null
  rm -f "$DIR/pwfile"
  cat >> "$DIR/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
ssl = on
ssl_cert_file = '$DIR/server.pem'
ssl_key_file = '$DIR/server.key'
fsync = off
CONF
  # TLS with a password, or nothing: no plain TCP, no trust over TCP.
  cat > "$DIR/data/pg_hba.conf" <<HBA
local     all  all                  trust
hostssl   all  all  127.0.0.1/32    scram-sha-256
hostnossl all  all  127.0.0.1/32    reject
HBA
}

running() { as_owner "$bin/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; }

start() {
  certificates
  cluster
  if running; then echo "$TAG already running on 127.0.0.1:$PORT (TLS only; CA $DIR/ca.pem)"; return 0; fi
  as_owner "$bin/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w start >/dev/null
  echo "$TAG PostgreSQL (TLS only, scram) ready on 127.0.0.1:$PORT; CA $DIR/ca.pem; user postgres/$PASSWORD"
}

stop() {
  if [[ -f "$DIR/data/PG_VERSION" ]] && running; then
    as_owner "$bin/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null
    echo "$TAG stopped"
  else
    echo "$TAG not running"
  fi
}

status() {
  if [[ -f "$DIR/data/PG_VERSION" ]] && running; then echo "$TAG running on 127.0.0.1:$PORT"; else echo "$TAG not running"; return 3; fi
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
