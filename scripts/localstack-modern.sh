#!/usr/bin/env bash
# localstack-modern.sh -- LocalStack 4.7.0 (localstack-core, SQS only) run natively on the host, no Docker.
# Speaks both SQS protocols: AWS JSON 1.0 (X-Amz-Target: AmazonSQS.*, what current SDKs use)
# and the old query protocol (Action=...). Runs on Python 3.11, 3.12 and 3.13.
#
# Usage:  localstack-modern.sh [start|stop|restart|status|install]     (default: start)
# Env:    PORT           listen port on 127.0.0.1 (default 4566)
#         VENV           virtualenv (default /tmp/veil-ls-modern-venv-py3.X, one per Python)
#         RUN_DIR        pid file, log, LocalStack filesystem root (default /tmp/ls-modern-run-$PORT)
#         START_TIMEOUT  seconds to wait for health (default 120)
#         SERVICES       LocalStack services to enable (default sqs; services.sh asks for
#                        sqs,kms,secretsmanager)
#         SQS_ENDPOINT_STRATEGY  queue-URL style (default "off": http://localhost:$PORT/000000000000/<name>,
#                        as in 0.14; LocalStack's default "standard" yields
#                        sqs.<region>.localhost.localstack.cloud, which needs DNS and fails offline)
#         LOCALSTACK_HOST host:port put in queue URLs (default localhost:$PORT)
#         PYTHON         interpreter for the venv (default: the first suitable of python3.11,
#                        python3.12, python3.13, python3; see scripts/lib/python.sh). Tested on
#                        3.11, 3.12 and 3.13 with the same pins.
# Writes only under $VENV, $RUN_DIR and the pip cache /tmp/ls-pip-cache.
set -euo pipefail

PORT="${PORT:-4566}"
RUN_DIR="${RUN_DIR:-/tmp/veil-ls-modern-run-$PORT}"
START_TIMEOUT="${START_TIMEOUT:-120}"
PIDFILE="$RUN_DIR/localstack.pid"
LOG="$RUN_DIR/localstack.log"
TAG="[localstack-modern]"
# shellcheck source=lib/python.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/python.sh"
# The venv is chosen here; the interpreter is only looked for when one must be built.
choose_venv() {
  if [[ -n "${VENV:-}" ]]; then return 0; fi
  if [[ -z "${PY:-}" ]]; then PY=$(pick_python) || exit 1; fi
  VENV="/tmp/veil-ls-modern-venv-py$(python_minor "$PY")"
}
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-/tmp/ls-pip-cache}" PIP_DISABLE_PIP_VERSION_CHECK=1

# base-runtime + moto-ext is enough for SQS, KMS and Secrets Manager (the full [runtime] extra
# also works, ~2x install time). CloudFormation (the deploy test) also needs the SAM translator
# and the template engine's helpers: without them it reports "No module named 'samtranslator'".
REQS=("localstack-core[base-runtime]==4.7.0" moto-ext
      aws-sam-translator==1.99.0 jsonpath-ng json5 crontab airspeed-ext)

# Exact pins (pip freeze of a working install on Python 3.11.7; = what PyPI offered before
# 2025-08-15, i.e. 4.7.0's era). Newer deps break 4.7.0: cbor2>=6 (no cbor2._decoder ->
# "No component plugins found in namespace localstack.runtime.components"), pyOpenSSL>=26
# (X509.add_extensions gone), psutil>=7.1 (snicaddr gone).
write_constraints() {
cat > "$1" <<'PINS'
attrs==25.3.0
awscrt==0.27.6
boto3==1.39.14
botocore==1.39.14
build==1.3.0
cachetools==6.1.0
cbor2==5.7.0
certifi==2025.8.3
cffi==1.17.1
charset-normalizer==3.4.3
click==8.2.1
constantly==23.10.4
cryptography==45.0.6
dill==0.3.6
dnslib==0.9.26
dnspython==2.7.0
docker==7.1.0
h11==0.16.0
h2==4.2.0
hpack==4.1.0
Hypercorn==0.17.3
hyperframe==6.1.0
hyperlink==21.0.0
idna==3.10
incremental==24.7.2
isodate==0.7.2
Jinja2==3.1.6
jmespath==1.0.1
jsonpatch==1.33
jsonpickle==4.1.1
jsonpointer==3.0.0
jsonschema==4.25.0
jsonschema-path==0.3.4
jsonschema-specifications==2025.4.1
lazy-object-proxy==1.11.0
localstack-core==4.7.0
localstack-twisted==24.3.0
markdown-it-py==4.0.0
MarkupSafe==3.0.2
mdurl==0.1.2
more-itertools==10.7.0
moto-ext==5.1.6.post2
openapi-core==0.19.4
openapi-schema-validator==0.6.3
openapi-spec-validator==0.7.2
packaging==25.0
parse==1.20.2
pathable==0.4.4
plux==1.13.0
priority==1.3.0
psutil==7.0.0
pycparser==2.22
Pygments==2.19.2
pyOpenSSL==25.1.0
pyproject_hooks==1.2.0
python-dateutil==2.9.0.post0
python-dotenv==1.1.1
PyYAML==6.0.2
readerwriterlock==1.0.9
referencing==0.36.2
requests==2.32.4
requests-aws4auth==1.3.1
responses==0.25.8
rfc3339-validator==0.1.4
rich==14.1.0
rolo==0.7.6
rpds-py==0.27.0
s3transfer==0.13.1
semver==3.0.4
six==1.17.0
tailer==0.4.1
typing_extensions==4.14.1
urllib3==2.5.0
Werkzeug==3.1.3
wsproto==1.2.0
xmltodict==0.14.2
zope.interface==7.2
airspeed-ext==0.6.9
annotated-types==0.8.0
aws-sam-translator==1.99.0
crontab==1.0.5
json5==0.17.3
jsonpath-ng==1.16.0
pydantic==2.13.5
pydantic_core==2.46.5
typing-inspection==0.4.2
PINS
}

write_launcher() {
cat > "$VENV/ls_host_launcher.py" <<'PYEOF'
# Start the LocalStack 4.x runtime on the host (what the Docker image's entrypoint runs).
import os, runpy, warnings
warnings.filterwarnings("ignore", message=".*service_identity.*")
# The default 'twisted' gateway ignores the host part of GATEWAY_LISTEN for IPv4 and binds
# 0.0.0.0 (localstack/runtime/server/twisted.py: "TODO: interface = host?"). Force the interface.
from twisted.internet import endpoints
_orig = endpoints.TCP4ServerEndpoint
_host = os.environ.get("GATEWAY_LISTEN", "127.0.0.1:4566").split(",")[0].rsplit(":", 1)[0] or "127.0.0.1"
def _tcp4(reactor, port, backlog=50, interface=""):
    return _orig(reactor, port, backlog, interface or _host)
endpoints.TCP4ServerEndpoint = _tcp4
runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)
PYEOF
}

install() {
  choose_venv
  # The marker names the requirement set, so a changed set installs into the venv again.
  local marker; marker="$VENV/.ls-modern-4.7.0-installed-$(printf '%s\n' "${REQS[@]}" | cksum | cut -d' ' -f1)"
  if [[ -f "$marker" && -x "$VENV/bin/python" ]]; then
    [[ -f "$VENV/ls_host_launcher.py" ]] || write_launcher
    return 0
  fi
  [[ -n "${PY:-}" ]] || [[ -x "$VENV/bin/python" ]] || PY=$(pick_python) || exit 1
  echo "$TAG installing localstack-core 4.7.0 into $VENV (needs PyPI; ~30-60 s) ..."
  local t0=$SECONDS
  [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
  write_constraints "$VENV/ls-constraints.txt"
  "$VENV/bin/pip" install -q -c "$VENV/ls-constraints.txt" "${REQS[@]}"
  write_launcher
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

# healthy == an unsigned JSON-protocol ListQueues answers 200 (also warms up SQS)
healthy() { "$VENV/bin/python" - "$PORT" <<'PYEOF'
import sys, urllib.request
try:
    r = urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/", data=b"{}",
        headers={"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS.ListQueues"},
        method="POST"), timeout=15)
    sys.exit(0 if r.status == 200 and r.read().startswith(b"{") else 1)
except Exception:
    sys.exit(1)
PYEOF
}

start() {
  install
  if pid_alive; then
    if [[ "$(cat "$RUN_DIR/services" 2>/dev/null)" == "${SERVICES:-sqs}" ]]; then
      echo "$TAG already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"; return 0
    fi
    echo "$TAG running with services '$(cat "$RUN_DIR/services" 2>/dev/null)'; restarting with '${SERVICES:-sqs}'"
    stop
  fi
  if port_busy; then echo "$TAG ERROR: 127.0.0.1:$PORT is already in use (see: ss -ltnp); set PORT=..." >&2; exit 1; fi
  mkdir -p "$RUN_DIR/fs" "$RUN_DIR/config" "$RUN_DIR/home"
  local t0; t0=$(date +%s.%N)
  ( cd "$RUN_DIR" && exec env -u LOCALSTACK_AUTH_TOKEN -u LOCALSTACK_API_KEY -u DOCKER_HOST -u TMPDIR \
      HOME="$RUN_DIR/home" FILESYSTEM_ROOT="$RUN_DIR/fs" CONFIG_DIR="$RUN_DIR/config" \
      OVERRIDE_IN_DOCKER=0 LOCALSTACK_CLI=0 \
      GATEWAY_LISTEN="127.0.0.1:$PORT" LOCALSTACK_HOST="${LOCALSTACK_HOST:-localhost:$PORT}" \
      SQS_ENDPOINT_STRATEGY="${SQS_ENDPOINT_STRATEGY:-off}" \
      SERVICES="${SERVICES:-sqs}" EAGER_SERVICE_LOADING="${EAGER_SERVICE_LOADING:-1}" DEBUG="${DEBUG:-0}" \
      DNS_ADDRESS=0 DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 \
      setsid "$VENV/bin/python" "$VENV/ls_host_launcher.py" >"$LOG" 2>&1 </dev/null ) &
  local pid=$!
  echo "$pid" > "$PIDFILE"
  echo "$VENV" > "$RUN_DIR/venv"
  echo "${SERVICES:-sqs}" > "$RUN_DIR/services"
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
  printf '%s LocalStack 4.7.0 (%s) ready on http://127.0.0.1:%s (Python %s, pid %s, healthy after %s s); log %s\n' \
    "$TAG" "${SERVICES:-sqs}" "$PORT" "$(python_minor "$VENV/bin/python")" "$pid" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')" "$LOG"
}

stop() {
  if ! pid_alive; then echo "$TAG not running"; rm -f "$PIDFILE"; return 0; fi
  local pid; pid=$(cat "$PIDFILE")
  # it was started with setsid, so its process group id == pid: signal the group (no strays)
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 75); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
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
