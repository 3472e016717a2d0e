#!/usr/bin/env bash
# localstack-legacy.sh -- LocalStack 0.14.3 or 0.14.5 (SQS only) run natively on the host, no Docker.
# This is the generation used by fetchdocker/data-takehome-localstack: SQS speaks only the
# *query* protocol (form-encoded Action=... POSTs, XML replies); JSON-protocol SDKs fail.
#
# Usage:  localstack-legacy.sh [start|stop|restart|status|install]     (default: start)
# Env:    PORT           listen port on 127.0.0.1 (default 4566)
#         LS_VERSION     0.14.3 (default) or 0.14.5 (both tested; identical SQS behaviour)
#         VENV           virtualenv (default /tmp/veil-ls-legacy-venv-$LS_VERSION-py3.X, one per Python)
#         RUN_DIR        pid file, log, LocalStack tmp/config dirs (default /tmp/ls-legacy-run-$PORT)
#         START_TIMEOUT  seconds to wait for health (default 120)
#         EAGER_SERVICE_LOADING  (default 0: in 0.14.3 "1" imports *every* provider, ~+7 s and
#                        harmless "could not load service plugin" errors; SQS is warmed up by the
#                        health probe anyway)
#         PYTHON         interpreter for the venv (default: the first suitable of python3.11,
#                        python3.12, python3.13, python3; see scripts/lib/python.sh).
#                        Tested on 3.11, 3.12 and 3.13: 0.14.x predates 3.12, so on 3.12+ the
#                        venv gets the PyPI packages that restore what those Pythons removed
#                        (setuptools for pkg_resources and distutils, zombie-imp for imp,
#                        legacy-cgi for cgi) and boto's vendored six is replaced by six 1.17
#                        (the old one imports through find_module, gone in 3.12).
# Writes only under $VENV, $RUN_DIR and the pip cache /tmp/ls-pip-cache.
set -euo pipefail

PORT="${PORT:-4566}"
LS_VERSION="${LS_VERSION:-0.14.3}"
TAG="[localstack-legacy]"
case "$LS_VERSION" in
  0.14.3) MOTO_PIN=moto-ext==3.1.9 ;;
  0.14.5) MOTO_PIN=moto-ext==3.1.12 ;;
  *) echo "$TAG LS_VERSION must be 0.14.3 or 0.14.5" >&2; exit 2 ;;
esac
RUN_DIR="${RUN_DIR:-/tmp/veil-ls-legacy-run-$PORT}"
START_TIMEOUT="${START_TIMEOUT:-120}"
PIDFILE="$RUN_DIR/localstack.pid"
LOG="$RUN_DIR/localstack.log"
# shellcheck source=lib/python.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/python.sh"
# The venv is chosen here; the interpreter is only looked for when one must be built.
choose_venv() {
  if [[ -n "${VENV:-}" ]]; then return 0; fi
  if [[ -z "${PY:-}" ]]; then PY=$(pick_python) || exit 1; fi
  VENV="/tmp/veil-ls-legacy-venv-$LS_VERSION-py$(python_minor "$PY")"
}
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-/tmp/ls-pip-cache}" PIP_DISABLE_PIP_VERSION_CHECK=1

# Packages needed for SQS in host mode. Not the [runtime] extra: it pulls amazon-kclpy-ext
# (Kinesis; its setup.py wants jars from Maven) and ~40 more packages SQS does not use.
REQS=("localstack==$LS_VERSION" "localstack-ext==$LS_VERSION" boto boto3 botocore moto-ext cryptography
      pyopenssl Werkzeug Flask flask-cors Quart hypercorn h11 h2 xmltodict readerwriterlock
      requests-aws4auth jsonpatch cbor2 crontab airspeed plux click apispec)
# What Python 3.12 and 3.13 removed and 0.14.x still imports, back from PyPI.
SHIMS_312=(setuptools zombie-imp)   # pkg_resources and distutils; imp
SHIMS_313=(legacy-cgi)              # cgi (botocore 1.27 imports it)

# Exact pins (pip freeze of a working install, Python 3.11.7). Verified necessary: plux==1.3.1
# (newer has no 'plugin' module), pyOpenSSL 22 + cryptography 37 (X509.add_extensions), boto (v2,
# imported by the serializer). Era pins: Werkzeug/Flask 2.1.2, Quart 0.17, Hypercorn 0.13.2.
# botocore 1.27.x: 0.14.x parses requests with botocore's bundled SQS spec, and botocore
# >=1.31.81 declares SQS as JSON-protocol (not tested here; pinned to stay safely pre-switch).
write_constraints() {
printf '%s\n' "localstack==$LS_VERSION" "localstack-ext==$LS_VERSION" "$MOTO_PIN" > "$1"
cat >> "$1" <<'PINS'
aiofiles==25.1.0
airspeed==0.5.19
apispec==5.2.2
blinker==1.9.0
boto==2.49.0
boto3==1.24.96
botocore==1.27.96
cachebox==5.2.3
cachetools==3.1.1
cbor2==5.6.5
certifi==2026.10.18
cffi==2.1.1
chardet==4.0.0
click==8.1.3
crontab==1.0.5
cryptography==37.0.4
deepdiff==9.1.0
dill==0.3.2
dnslib==0.9.26
dnspython==2.9.2
ecdsa==0.19.2
Flask==2.1.2
Flask-Cors==3.0.10
h11==0.13.0
h2==4.1.0
hpack==4.2.0
hypercorn==0.13.2
hyperframe==6.1.0
idna==2.10
itsdangerous==2.1.2
Jinja2==3.1.2
jmespath==1.1.0
jsonpatch==1.47
jsonpointer==3.12
localstack-client==2.12
markdown-it-py==4.3.0
MarkupSafe==2.1.1
mdurl==0.1.2
orderly-set==5.5.0
plux==1.3.1
priority==2.0.0
pyasn1==0.6.5
psutil==5.9.8
pyaes==1.6.1
pycparser==3.12
Pygments==2.21.0
pyOpenSSL==22.0.0
python-dateutil==2.9.0.post0
python-dotenv==1.2.4
python-jose==3.5.0
pytz==2026.6
PyYAML==6.0.3
quart==0.17.0
readerwriterlock==1.0.10
requests==2.25.1
requests-aws4auth==0.9
responses==0.23.1
rich==15.0.0
rsa==4.9.1
s3transfer==0.6.2
semver==3.1.1
six==1.17.0
stevedore==5.10.0
tabulate==0.10.0
tailer==0.4.1
toml==0.10.2
types-PyYAML==6.0.12.20261113
setuptools==75.8.0
zombie-imp==0.0.4
legacy-cgi==2.6.4
typing_extensions==4.16.0
urllib3==1.26.20
Werkzeug==2.1.2
wsproto==1.2.0
xmltodict==1.0.4
PINS
}

write_launcher() {
cat > "$VENV/ls_host_launcher.py" <<'PYEOF'
# Start LocalStack 0.14.x in host mode (what `localstack start --host` does), offline-safe.
import os, sys
# 1) This machine has /.dockerenv, so LocalStack's in_docker() would say "inside the LocalStack
#    image" and use /var/lib/localstack; hide the marker so host-mode dirs under $TMPDIR are used.
_exists = os.path.exists
os.path.exists = lambda p: False if p == "/.dockerenv" else _exists(p)
# 2) Startup always downloads a Java "fat jar" (only for Java Lambdas) from Maven Central;
#    offline that aborts startup. SQS does not need it.
from localstack.services import install as _install
_install.install_lambda_java_libs = lambda: None
sys.argv = ["localstack", "start", "--host", "--no-banner"]
from localstack.cli.main import main
main()
PYEOF
}

# The localstack 0.14.5 wheel on PyPI ships without entry_points.txt (0.14.3's has it), so no
# service plugin is found ("no provider exists for service sqs"). Regenerate it with plux.
fix_entry_points() {
  local sp; sp=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  local dist="$sp/localstack-$LS_VERSION.dist-info"
  [[ -s "$dist/entry_points.txt" ]] && return 0
  echo "$TAG generating missing $dist/entry_points.txt"
  local tmp; tmp=$(mktemp -d /tmp/ls-legacy-ep.XXXXXX)
  ( cd "$tmp" && HOME="$tmp" TMPDIR="$tmp" CONFIG_DIR="$tmp/config" "$VENV/bin/python" - "$sp" "$dist" <<'PYEOF'
import logging, os, sys
_exists = os.path.exists
os.path.exists = lambda p: False if p == "/.dockerenv" else _exists(p)
logging.basicConfig(level=logging.CRITICAL)
from plugin.entrypoint import find_plugins
eps = find_plugins(where=sys.argv[1], include=("localstack", "localstack.*"))
with open(os.path.join(sys.argv[2], "entry_points.txt"), "w") as f:
    for group in sorted(eps):
        f.write("[%s]\n%s\n\n" % (group, "\n".join(sorted(eps[group]))))
PYEOF
  ) >"$tmp/scan.log" 2>&1 || true   # the scan imports every module; noise like a failed `docker ps` is expected
  rm -rf "$tmp"
  [[ -s "$dist/entry_points.txt" ]] || { echo "$TAG ERROR: could not generate entry points" >&2; exit 1; }
}

# boto 2's vendored six (1.9) registers its "moves" with find_module, which Python 3.12 no
# longer calls ("No module named 'boto.vendored.six.moves'"): put six 1.17 in its place.
fix_vendored_six() {
  local sp; sp=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  cp "$sp/six.py" "$sp/boto/vendored/six.py"
}

install() {
  choose_venv
  local marker="$VENV/.ls-legacy-$LS_VERSION-installed"
  if [[ -f "$marker" && -x "$VENV/bin/python" ]]; then
    [[ -f "$VENV/ls_host_launcher.py" ]] || write_launcher
    return 0
  fi
  [[ -n "${PY:-}" ]] || PY=$(pick_python) || exit 1
  [[ -x "$VENV/bin/python" ]] && PY="$VENV/bin/python"
  local minor; minor=$(python_minor "$PY")
  local reqs=("${REQS[@]}")
  case "$minor" in
    3.12) reqs+=("${SHIMS_312[@]}") ;;
    3.13) reqs+=("${SHIMS_312[@]}" "${SHIMS_313[@]}") ;;
  esac
  echo "$TAG installing LocalStack $LS_VERSION into $VENV with Python $minor ($PY; needs PyPI; ~1-1.5 min) ..."
  local t0=$SECONDS
  [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
  write_constraints "$VENV/ls-constraints.txt"
  "$VENV/bin/pip" install -q -c "$VENV/ls-constraints.txt" "${reqs[@]}"
  [[ "$minor" == 3.11 ]] || fix_vendored_six
  write_launcher
  fix_entry_points
  touch "$marker"
  echo "$TAG installed in $((SECONDS - t0)) s"
}

pid_alive() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null \
              && grep -qa ls_host_launcher "/proc/$(cat "$PIDFILE")/cmdline" 2>/dev/null; }

port_busy() { "$VENV/bin/python" - "$PORT" <<'PYEOF'
import socket, sys
s = socket.socket(); s.settimeout(0.5)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PYEOF
}

# healthy == an unsigned query-protocol ListQueues answers 200 with XML (also warms up SQS)
healthy() { "$VENV/bin/python" - "$PORT" <<'PYEOF'
import sys, urllib.request
try:
    r = urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/",
        data=b"Action=ListQueues&Version=2012-11-05", method="POST"), timeout=15)
    sys.exit(0 if r.status == 200 and b"ListQueuesResponse" in r.read() else 1)
except Exception:
    sys.exit(1)
PYEOF
}

start() {
  install
  if pid_alive; then echo "$TAG already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"; return 0; fi
  if port_busy; then echo "$TAG ERROR: 127.0.0.1:$PORT is already in use (see: ss -ltnp); set PORT=..." >&2; exit 1; fi
  mkdir -p "$RUN_DIR/tmp" "$RUN_DIR/config" "$RUN_DIR/home"
  local t0; t0=$(date +%s.%N)
  ( cd "$RUN_DIR" && exec env -u LOCALSTACK_API_KEY -u DOCKER_HOST \
      HOME="$RUN_DIR/home" TMPDIR="$RUN_DIR/tmp" CONFIG_DIR="$RUN_DIR/config" \
      SERVICES=sqs EAGER_SERVICE_LOADING="${EAGER_SERVICE_LOADING:-0}" DEBUG="${DEBUG:-0}" \
      EDGE_BIND_HOST=127.0.0.1 EDGE_PORT="$PORT" DNS_ADDRESS=0 DISABLE_EVENTS=1 \
      SKIP_INFRA_DOWNLOADS=1 SKIP_SSL_CERT_DOWNLOAD=1 \
      setsid "$VENV/bin/python" "$VENV/ls_host_launcher.py" >"$LOG" 2>&1 </dev/null ) &
  local pid=$!
  echo "$pid" > "$PIDFILE"
  echo "$VENV" > "$RUN_DIR/venv"
  local deadline=$((SECONDS + START_TIMEOUT))
  until healthy; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$TAG ERROR: LocalStack exited during startup; last log lines ($LOG):" >&2
      tail -n 30 "$LOG" >&2; rm -f "$PIDFILE"; exit 1
    fi
    if (( SECONDS >= deadline )); then
      echo "$TAG ERROR: not healthy after ${START_TIMEOUT}s; stopping. Log: $LOG" >&2; stop; exit 1
    fi
    sleep 0.2
  done
  printf '%s LocalStack %s SQS ready on http://127.0.0.1:%s (Python %s, pid %s, healthy after %s s); log %s\n' \
    "$TAG" "$LS_VERSION" "$PORT" "$(python_minor "$VENV/bin/python")" "$pid" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')" "$LOG"
}

stop() {
  if ! pid_alive; then echo "$TAG not running"; rm -f "$PIDFILE"; return 0; fi
  local pid; pid=$(cat "$PIDFILE")
  # it was started with setsid, so its process group id == pid: signal the group (no strays)
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  # 0.14.x often ignores SIGTERM (non-daemon edge thread keeps running): force it
  if kill -0 "$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$PIDFILE"
  echo "$TAG stopped (pid $pid)"
}

status() {
  if pid_alive; then
    [[ -n "${VENV:-}" ]] || VENV=$(cat "$RUN_DIR/venv")
    if healthy; then echo "$TAG running and healthy (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
    else echo "$TAG running (pid $(cat "$PIDFILE")) but not answering on 127.0.0.1:$PORT"; return 1; fi
  else echo "$TAG not running"; return 3; fi
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) status ;;
  install) install ;;
  *) echo "usage: $0 [start|stop|restart|status|install]" >&2; exit 2 ;;
esac
