# veil: the two commands that matter are `make demo` and `make test`.
# Both start what they need natively (no Docker), with scripts/services.sh:
#   demo         PostgreSQL on 127.0.0.1:5432 and LocalStack 4.7 on :4566 (JSON + query)
#   demo-legacy  PostgreSQL and LocalStack 0.14.3 on :4510 (query only, like the reference image)
#   test         all three, and a TLS-only PostgreSQL cluster on :5439
# scripts/services.sh says what it changes on the machine (venvs under /tmp; nothing else
# unless VEIL_SETUP_POSTGRES=1).

CARGO ?= cargo
# cargo's own variable, when set, moves the build out of ./target
VEIL  := $(or $(CARGO_TARGET_DIR),target)/debug/veil
LEGACY_QUEUE := http://localhost:4510/000000000000/login-queue
DEMO_PSQL := PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres

.PHONY: demo demo-legacy demo-reset test check check-deploy services services-down build

## demo: start Postgres + LocalStack 4.7, seed 100 events (5% junk), drain them, print the table
demo: build
	MODERN_SERVICES=sqs,kms scripts/services.sh up postgres modern
	$(VEIL) seed --count 100 --bad-ratio 0.05
	$(VEIL) run --until-empty
	@echo
	@echo "Next: README.md, 'After the demo' (the binary is $(VEIL); make demo-reset starts over)"

## demo-legacy: the same against the old query-protocol LocalStack (auto-detected)
demo-legacy: build
	scripts/services.sh up postgres legacy
	$(VEIL) seed --count 100 --bad-ratio 0.05 --queue-url $(LEGACY_QUEUE)
	$(VEIL) run --until-empty --queue-url $(LEGACY_QUEUE)

## demo-reset: forget what the demos wrote; the keyring stays
demo-reset:
	@echo "demo-reset: dropping table user_logins and schema veil from database postgres on 127.0.0.1:5432,"
	@echo "            and stopping both LocalStacks (their queues live in memory); the keyring stays"
	$(DEMO_PSQL) -qc 'DROP TABLE IF EXISTS user_logins' -c 'DROP SCHEMA IF EXISTS veil CASCADE'
	scripts/services.sh down modern legacy

## test: start all services (both LocalStacks, the TLS cluster), run unit and integration tests
test: services
	$(CARGO) test --locked --lib --bins --tests

## check: formatting, lints, and the declared Rust version, as CI runs them
check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	scripts/check-rust-version.sh

## check-deploy: CloudFormation, Kubernetes, Prometheus, workflows, compose through their validators
check-deploy:
	scripts/check-deploy.sh

build:
	$(CARGO) build --locked --quiet

services:
	scripts/services.sh up

services-down:
	scripts/services.sh down modern legacy tls
