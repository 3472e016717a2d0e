#!/usr/bin/env bash
# deploy-tools.sh -- installs, pinned, the validators `make check-deploy` runs, and prints where
# they are (sourceable: `eval "$(scripts/deploy-tools.sh env)"`). Everything lands under $TOOLS
# (default /tmp/veil-deploy-tools); nothing else on the machine changes.
#   cfn-lint 1.58.0, kubernetes-validate 1.37.0, check-jsonschema 0.39.0   (PyPI, in a venv)
#   promtool 2.42.0 (Debian bookworm's prometheus package $PROMETHEUS_DEB, unpacked with dpkg-deb;
#     no service installed). Where that exact build is gone from the mirror (a newer security
#     update replaced it) or on Ubuntu, the distribution's version is taken and named.
#   kubectl (for `kubectl kustomize`) must already be installed: Debian package kubectl
# Usage: scripts/deploy-tools.sh [install|env]   (default: install)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS="${TOOLS:-/tmp/veil-deploy-tools}"
TAG="[deploy-tools]"
PINS=(cfn-lint==1.58.0 kubernetes-validate==1.37.0 check-jsonschema==0.39.0)
PROMETHEUS_DEB="${PROMETHEUS_DEB:-2.42.0+ds-5+deb12u1}"
# shellcheck source=lib/python.sh
source "$here/lib/python.sh"

install_python_tools() {
  local marker; marker="$TOOLS/venv/.installed-$(printf '%s\n' "${PINS[@]}" | cksum | cut -d' ' -f1)"
  [[ -f "$marker" ]] && return 0
  local py; py=$(pick_python) || exit 1
  echo "$TAG installing ${PINS[*]} into $TOOLS/venv (PyPI) ..." >&2
  [[ -x "$TOOLS/venv/bin/python" ]] || "$py" -m venv "$TOOLS/venv"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$TOOLS/venv/bin/pip" install -q "${PINS[@]}"
  touch "$marker"
}

install_promtool() {
  [[ -x "$TOOLS/prometheus/usr/bin/promtool" ]] && return 0
  command -v apt-get >/dev/null || {
    echo "$TAG ERROR: promtool comes from Debian's prometheus package here; on another system put promtool 2.42+ on PATH" >&2
    exit 1
  }
  echo "$TAG unpacking promtool from Debian's prometheus package ..." >&2
  mkdir -p "$TOOLS/prometheus"
  (cd "$TOOLS" && { apt-get download -qq "prometheus=$PROMETHEUS_DEB" >/dev/null 2>&1 \
    || { echo "$TAG prometheus=$PROMETHEUS_DEB is not in the package index; taking the distribution's version" >&2
         apt-get download -qq prometheus >/dev/null 2>&1 \
           || { apt-get update -qq >/dev/null && apt-get download -qq prometheus; }; }; })
  dpkg-deb -x "$(ls "$TOOLS"/prometheus_*.deb | head -n 1)" "$TOOLS/prometheus"
  echo "$TAG $("$TOOLS/prometheus/usr/bin/promtool" --version 2>&1 | head -n 1)" >&2
}

check_kubectl() {
  command -v kubectl >/dev/null || {
    echo "$TAG ERROR: kubectl is not installed; fix: apt-get install kubectl (it renders the kustomizations offline)" >&2
    exit 1
  }
}

case "${1:-install}" in
  install)
    install_python_tools
    install_promtool
    check_kubectl
    echo "$TAG ready under $TOOLS" >&2
    ;;
  env)
    echo "export PATH=\"$TOOLS/venv/bin:$TOOLS/prometheus/usr/bin:\$PATH\""
    ;;
  *) echo "usage: $0 [install|env]" >&2; exit 2 ;;
esac
