#!/usr/bin/env python3
"""check-prometheus.py -- checks the alert rules and the Grafana dashboard with promtool.

  1. promtool check rules / test rules on deploy/prometheus/veil-alerts.yml.
  2. Every query of deploy/grafana/veil-dashboard.json, with Grafana's interval
     variables filled in, becomes a recording rule in a scratch file that
     promtool check rules must accept (Grafana has no server here).
  3. Every veil_* metric the rules and the dashboard read is one veil exports
     (src/metrics/), every veil:* series they read is a recording rule, and
     every alert's runbook_url is a heading of docs/operations.md.

Run by `make check-deploy` with promtool on PATH (scripts/deploy-tools.sh).
"""
import json
import pathlib
import re
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "veil-alerts.yml"
TESTS = ROOT / "deploy" / "prometheus" / "veil-alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "veil-dashboard.json"
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def promtool(*args):
    result = subprocess.run(["promtool", *args], capture_output=True, text=True)
    if result.returncode != 0:
        return [f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"]
    return []


def exported_metrics():
    """The metric names veil's /metrics renders (string literals in src/metrics/)."""
    source = "".join(path.read_text() for path in sorted((ROOT / "src" / "metrics").glob("*.rs")))
    if not source:
        raise SystemExit("check-prometheus: no Rust files under src/metrics/; update exported_metrics()")
    names = set(re.findall(r'"(veil_[a-z0-9_]+)"', source))
    for histogram in [n for n in names if n.endswith("_seconds")]:
        names |= {f"{histogram}_bucket", f"{histogram}_sum", f"{histogram}_count"}
    return names


def dashboard_queries():
    dashboard = json.loads(DASHBOARD.read_text())
    queries, errors = [], []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        if not panel.get("targets"):
            errors.append(f"dashboard panel {panel['title']!r} has no query")
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            if "$" in expr:
                errors.append(f"dashboard panel {panel['title']!r}: unknown variable in {target['expr']!r}")
            queries.append((f"dashboard:panel_{panel['id']}_{target['refId']}", panel["title"], expr))
    return queries, errors


def slug(heading):
    return re.sub(r"[^a-z0-9 -]", "", heading.lower()).strip().replace(" ", "-")


def main():
    errors = promtool("check", "rules", str(RULES))
    errors += promtool("test", "rules", str(TESTS))

    queries, problems = dashboard_queries()
    errors += problems
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as scratch:
        yaml.safe_dump(
            {"groups": [{"name": "dashboard", "rules": [{"record": r, "expr": e} for r, _, e in queries]}]},
            scratch,
        )
        scratch.flush()
        errors += [f"dashboard queries: {e}" for e in promtool("check", "rules", scratch.name)]

    rules = yaml.safe_load(RULES.read_text())
    all_rules = [rule for group in rules["groups"] for rule in group["rules"]]
    recorded = {rule["record"] for rule in all_rules if "record" in rule}
    exported = exported_metrics()
    expressions = [(f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]) for rule in all_rules]
    expressions += [(f"dashboard panel {title!r}", expr) for _, title, expr in queries]
    for where, expr in expressions:
        for name in re.findall(r"\b(veil_[a-z0-9_]+)", expr):
            if name not in exported:
                errors.append(f"{where} reads {name}, which veil does not export")
        for name in re.findall(r"\b(veil:[a-z0-9_:]+)", expr):
            if name not in recorded:
                errors.append(f"{where} reads {name}, which no recording rule defines")


    headings = {slug(h) for h in re.findall(r"^#+ (.+)$", (ROOT / "docs" / "operations.md").read_text(), re.M)}
    for rule in all_rules:
        url = rule.get("annotations", {}).get("runbook_url")
        if "alert" in rule:
            if not url or not url.startswith("docs/operations.md#"):
                errors.append(f"alert {rule['alert']} needs a runbook_url into docs/operations.md")
            elif url.split("#", 1)[1] not in headings:
                errors.append(f"alert {rule['alert']}: runbook {url} is not a heading of docs/operations.md")

    alerts = sum(1 for rule in all_rules if "alert" in rule)
    if errors:
        sys.exit("\n".join(errors))
    print(f"  {alerts} alerts and {len(recorded)} recording rules pass promtool check and test;"
          f" {len(queries)} dashboard queries parse; every metric they read is exported")


if __name__ == "__main__":
    main()
