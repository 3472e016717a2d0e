# veil: the two commands that matter are `make demo` and `make test`.
# Both start what they need natively (no Docker): PostgreSQL on 127.0.0.1:5432,
# LocalStack 4.7 on :4566 (JSON + query) and LocalStack 0.14.3 on :4510 (query
# only, like the reference image). See scripts/services.sh.

CARGO ?= cargo
VEIL  := target/debug/veil
LEGACY_QUEUE := http://localhost:4510/000000000000/login-queue

.PHONY: demo demo-legacy test check services services-down build

## demo: start services, seed 100 events (5% junk), drain them, print the table
demo: services build
	$(VEIL) seed --count 100 --bad-ratio 0.05
	$(VEIL) run --until-empty

## demo-legacy: the same against the old query-protocol LocalStack (auto-detected)
demo-legacy: services build
	$(VEIL) seed --count 100 --bad-ratio 0.05 --queue-url $(LEGACY_QUEUE)
	$(VEIL) run --until-empty --queue-url $(LEGACY_QUEUE)

## test: start services, run unit and integration tests against them
test: services
	$(CARGO) test --locked --lib --bins --tests

## check: formatting and lints, as CI runs them
check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

build:
	$(CARGO) build --locked --quiet

services:
	scripts/services.sh up

services-down:
	scripts/services.sh down
