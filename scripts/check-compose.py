#!/usr/bin/env python3
"""check-compose.py -- docker-compose.yml, checked without a Docker engine.

  1. It is valid against the Compose specification (check-jsonschema's compose-spec).
  2. veil waits for healthy dependencies and does not restart (a configuration
     error, exit 2, would only repeat).
  3. LocalStack's healthcheck command, run natively against both LocalStacks
     (0.14.3 query-only like the reference image, and 4.7): it fails while the
     queue is missing and passes once it exists.

Usage: check-compose.py [ENDPOINT ...]   (default: http://localhost:4510 http://localhost:4566)
"""
import pathlib
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
AUTH = "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0"


def sqs(endpoint, action, **params):
    body = urllib.parse.urlencode({"Action": action, "Version": "2012-11-05", **params})
    request = urllib.request.Request(f"{endpoint}/", data=body.encode(), headers={"Authorization": AUTH})
    return urllib.request.urlopen(request, timeout=5).read().decode()


def main():
    errors = []
    result = subprocess.run(
        ["check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        errors.append(f"compose-spec: {result.stdout}{result.stderr}")
    compose = yaml.safe_load(COMPOSE.read_text())
    veil = compose["services"]["veil"]
    for name, condition in veil.get("depends_on", {}).items():
        if condition.get("condition") != "service_healthy":
            errors.append(f"veil must wait for {name} to be healthy")
        if "healthcheck" not in compose["services"][name]:
            errors.append(f"{name} has no healthcheck to wait for")
    if veil.get("restart", "no") != "no":
        errors.append("veil must not restart: a configuration error (exit 2) would loop")
    if veil["environment"].get("VEIL_KEY") != "${VEIL_KEY:-}":
        errors.append("veil must take VEIL_KEY from the caller's environment (one keyring for host and container)")

    test = compose["services"]["localstack"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python3", "-c"], test
    code = test[3]
    queue_in_compose = veil["environment"]["VEIL_QUEUE_URL"].rsplit("/", 1)[1]
    if f"QueueName={queue_in_compose}" not in code:
        errors.append(f"the healthcheck must wait for veil's queue {queue_in_compose}")
    endpoints = sys.argv[1:] or ["http://localhost:4510", "http://localhost:4566"]
    for endpoint in endpoints:
        queue = f"compose-check-{uuid.uuid4().hex[:8]}"
        command = code.replace("http://localhost:4566", endpoint).replace(f"QueueName={queue_in_compose}", f"QueueName={queue}")
        before = subprocess.run(["python3", "-c", command], capture_output=True).returncode
        url = sqs(endpoint, "CreateQueue", QueueName=queue).split("<QueueUrl>")[1].split("</QueueUrl>")[0]
        after = subprocess.run(["python3", "-c", command], capture_output=True).returncode
        sqs(endpoint, "DeleteQueue", QueueUrl=url)
        if before == 0 or after != 0:
            errors.append(f"{endpoint}: healthcheck exit {before} before the queue exists (want non-zero), {after} after (want 0)")
        else:
            print(f"  compose healthcheck on {endpoint}: unhealthy without the queue, healthy with it")
    if errors:
        sys.exit("\n".join(errors))


if __name__ == "__main__":
    main()
