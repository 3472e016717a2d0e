#!/usr/bin/env bash
# check-deploy.sh -- every deploy artefact through its validator (`make check-deploy`):
#   deploy/cloudformation   cfn-lint: zero errors, zero warnings
#   deploy/k8s              kubectl kustomize + kubernetes-validate --strict (Kubernetes 1.31),
#                           the project's schemas for KEDA / ServiceMonitor / External Secrets,
#                           cross-checks with veil and the stack, and a self-test of those checks
#   deploy/prometheus       promtool check rules + test rules; deploy/grafana: queries via promtool
#   .github/workflows       check-jsonschema vendor.github-workflows (+ every job has a timeout)
#   examples/contracts      check-jsonschema against docs/contract.schema.json (the editors' schema)
#   docker-compose.yml      compose-spec; its LocalStack healthcheck run against both LocalStacks
#   Dockerfile, workflows   the Rust toolchain they name is Cargo.toml's rust-version
# Installs the pinned tools first (scripts/deploy-tools.sh) and starts both LocalStacks
# (scripts/services.sh) for the healthcheck. CloudFormation is also deployed, on LocalStack, by
# the test suite (tests/it/deploy.rs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/deploy-tools.sh install
eval "$(scripts/deploy-tools.sh env)"
failed=0
step() {
  local name=$1; shift
  printf '== %s\n' "$name"
  if ! "$@"; then echo "FAILED: $name" >&2; failed=1; fi
}

step "cfn-lint deploy/cloudformation/veil.yaml" cfn-lint deploy/cloudformation/veil.yaml
step "kubernetes manifests" python scripts/check-k8s.py
step "kubernetes checks catch what they exist for" python scripts/check-k8s.py --self-test
step "prometheus rules, their tests, the grafana dashboard" python scripts/check-prometheus.py
step "github workflows" check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/ci.yml .github/workflows/release.yml
step "example contracts fit the editors' schema" check-jsonschema --schemafile docs/contract.schema.json examples/contracts/login.yaml examples/contracts/shop/signup.yaml examples/contracts/shop/purchase.yaml
step "github workflows: every job has a timeout" check-jsonschema --builtin-schema custom.github-workflows-require-timeout .github/workflows/ci.yml .github/workflows/release.yml

toolchain_agrees() {
  local declared; declared=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
  local docker; docker=$(sed -n 's/^FROM rust:\([0-9.]*\)-.* AS build$/\1/p' Dockerfile)
  local ci; ci=$(sed -n 's/^  RUST_TOOLCHAIN: "\(.*\)"$/\1/p' .github/workflows/ci.yml)
  if [[ "$docker" != "$declared" || "$ci" != "$declared" ]]; then
    echo "Cargo.toml rust-version $declared, Dockerfile rust:$docker, ci.yml RUST_TOOLCHAIN $ci: make them one" >&2
    return 1
  fi
  echo "  Rust $declared in Cargo.toml, the Dockerfile and CI"
}
step "one Rust toolchain" toolchain_agrees

scripts/services.sh up modern legacy >/dev/null
step "docker-compose.yml" python scripts/check-compose.py http://localhost:"${LEGACY_PORT:-4510}" http://localhost:"${MODERN_PORT:-4566}"

if [[ $failed != 0 ]]; then
  echo "check-deploy: FAILED (see above)" >&2
  exit 1
fi
echo "check-deploy: all deploy checks passed"
