#!/usr/bin/env python3
"""Cold start and warm CPU of `veil lambda`, driven through a Lambda Runtime
API of this script's own (next, response, error, init error), against the
local Postgres (plain and TLS). Called by scripts/bench-lambda.sh, which
also measures the poller in the same run; prints one JSON object.

  cold start   process start -> the first answer posted (a 10-record batch
               queued before the process starts), median of COLD_ROUNDS,
               on plain TCP and on the TLS-only cluster (verify-full, scram)
  warm         user+sys CPU of one warm process (from /proc) over N
               invocations of 10 and of 100 records, per invocation and per event
"""

import json
import os
import queue
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VEIL = os.environ.get("VEIL", "target/release/veil")
COLD_ROUNDS = int(os.environ.get("COLD_ROUNDS", "5"))
WARM_10 = int(os.environ.get("WARM_10", "1000"))
WARM_100 = int(os.environ.get("WARM_100", "200"))
TICKS = os.sysconf("SC_CLK_TCK")


class Api:
    """The Runtime API: invocations queued by the bench, answers recorded."""

    def __init__(self):
        self.pending = queue.Queue()
        self.answers = {}
        self.answered = threading.Condition()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, status, body=b"", headers=()):
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if not self.path.endswith("/runtime/invocation/next"):
                    return self.reply(404)
                request_id, body, deadline_ms = api.pending.get()
                self.reply(200, body, [
                    ("Lambda-Runtime-Aws-Request-Id", request_id),
                    ("Lambda-Runtime-Deadline-Ms", str(deadline_ms)),
                    ("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:000000000000:function:veil"),
                ])

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                parts = self.path.split("/")
                if "init" in parts:
                    api.record("init", ("init_error", body))
                elif len(parts) >= 6:
                    api.record(parts[4], (parts[5], body))
                self.reply(202, b'{"status":"OK"}')

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a process killed mid-poll resets its connection

        self.server = Server(("127.0.0.1", 0), Handler)
        self.address = "127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def record(self, request_id, answer):
        with self.answered:
            self.answers[request_id] = (time.monotonic(), answer)
            self.answered.notify_all()

    def invoke(self, event, timeout_s=30):
        request_id = str(uuid.uuid4())
        deadline_ms = int((time.time() + timeout_s) * 1000)
        self.pending.put((request_id, json.dumps(event).encode(), deadline_ms))
        return request_id

    def answer(self, request_id, limit=60):
        end = time.monotonic() + limit
        with self.answered:
            while request_id not in self.answers and "init" not in self.answers:
                left = end - time.monotonic()
                if left <= 0:
                    raise SystemExit("no answer to %s" % request_id)
                self.answered.wait(left)
            if "init" in self.answers:
                raise SystemExit("init failed: %r" % (self.answers["init"],))
            at, (kind, body) = self.answers[request_id]
        if kind != "response":
            raise SystemExit("invocation failed: %s" % body.decode())
        response = json.loads(body)
        if response.get("batchItemFailures"):
            raise SystemExit("records not recorded: %s" % body.decode())
        return at


def login_event(rng):
    return json.dumps({
        "user_id": "u%06d" % rng.randrange(100000),
        "app_version": "%d.%d.%d" % (rng.randrange(1, 9), rng.randrange(10), rng.randrange(10)),
        "device_type": rng.choice(["android", "ios"]),
        "ip": "%d.%d.%d.%d" % (rng.randrange(1, 224), rng.randrange(256), rng.randrange(256), rng.randrange(1, 255)),
        "locale": rng.choice(["RU", "US", "DE", None]),
        "device_id": "%03d-%02d-%04d" % (rng.randrange(1000), rng.randrange(100), rng.randrange(10000)),
    })


def sqs_event(rng, records):
    now_ms = int(time.time() * 1000)
    return {"Records": [{
        "messageId": str(uuid.uuid4()),
        "receiptHandle": "AQEB" + uuid.uuid4().hex,
        "body": login_event(rng),
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": str(now_ms),
                       "SenderId": "000000000000", "ApproximateFirstReceiveTimestamp": str(now_ms)},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:bench",
        "awsRegion": "us-east-1",
    } for _ in range(records)]}


def start(api, database_url, key_file, log):
    env = dict(os.environ)
    env.update({
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_LAMBDA_FUNCTION_NAME": "veil",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "DATABASE_URL": database_url,
        "VEIL_KEY_FILE": key_file,
        "VEIL_LOG_FORMAT": "json",
        "RUST_LOG": "warn",
    })
    return subprocess.Popen([VEIL], env=env, stdout=subprocess.DEVNULL, stderr=log)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def cold_start(database_url, key_file, log, rng):
    api = Api()
    request_id = api.invoke(sqs_event(rng, 10))
    started = time.monotonic()
    process = start(api, database_url, key_file, log)
    try:
        return (api.answer(request_id) - started) * 1000
    finally:
        process.kill()
        process.wait()


def warm(database_url, key_file, log, rng, records, invocations):
    api = Api()
    process = start(api, database_url, key_file, log)
    try:
        for _ in range(5):
            api.answer(api.invoke(sqs_event(rng, records)))
        events = [sqs_event(rng, records) for _ in range(invocations)]
        before = cpu_seconds(process.pid)
        started = time.monotonic()
        for event in events:
            api.answer(api.invoke(event))
        wall = time.monotonic() - started
        cpu = cpu_seconds(process.pid) - before
        return {
            "invocations": invocations,
            "records": records,
            "cpu_ms_per_invocation": round(cpu / invocations * 1000, 3),
            "cpu_us_per_event": round(cpu / (invocations * records) * 1e6, 1),
            "wall_ms_per_invocation": round(wall / invocations * 1000, 2),
        }
    finally:
        process.kill()
        process.wait()


def main():
    plain_url, tls_url, key_file, log_path = sys.argv[1:5]
    rng = random.Random(7)
    with open(log_path, "ab") as log:
        result = {"cold_start_ms": {}, "warm": []}
        for name, url in (("plain", plain_url), ("tls_verify_full", tls_url)):
            rounds = [cold_start(url, key_file, log, rng) for _ in range(COLD_ROUNDS)]
            result["cold_start_ms"][name] = {
                "median": round(statistics.median(rounds), 1),
                "min": round(min(rounds), 1),
                "max": round(max(rounds), 1),
            }
        result["warm"].append(warm(plain_url, key_file, log, rng, 10, WARM_10))
        result["warm"].append(warm(plain_url, key_file, log, rng, 100, WARM_100))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
