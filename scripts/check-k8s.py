#!/usr/bin/env python3
"""check-k8s.py -- renders every kustomization under deploy/k8s and checks what it renders.

  1. `kubectl kustomize` renders it (offline).
  2. kubernetes-validate --strict checks the built-in kinds against Kubernetes 1.31.
  3. The project's own JSON schemas (deploy/k8s/schemas/) check the custom kinds
     (KEDA, ServiceMonitor, External Secrets), which kubernetes-validate does not
     know. A kind with neither is an error: nothing ships unchecked.
  4. The objects agree with each other and with veil: the KEDA target is the
     Deployment, the trigger reads an env the container has, the region agrees with
     the queue URL, the grace period exceeds veil's shutdown timeout, the probes hit
     veil's endpoints, selectors select the pods, queueLength matches the
     CloudFormation stack's BacklogPerTask, and so on.

  --self-test breaks the production rendering in the ways these checks exist for
  and fails unless every breakage is caught.

Run by `make check-deploy` with the tools of scripts/deploy-tools.sh on PATH.
"""
import copy
import json
import pathlib
import re
import subprocess
import sys
import tempfile

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = [
    "base",
    "overlays/production",
    "overlays/production-external-secrets",
]
KUBERNETES_VERSION = "1.31.0"
SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("external-secrets.io/v1", "SecretStore"): "external-secrets.json",
    ("external-secrets.io/v1", "ExternalSecret"): "external-secrets.json",
}
BUILT_IN_GROUPS = {"v1", "apps/v1", "batch/v1", "policy/v1", "networking.k8s.io/v1"}
OPS_PORT = 9898


def render(kustomization):
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S / kustomization)], capture_output=True, text=True
    )
    if result.returncode != 0:
        sys.exit(f"kubectl kustomize {kustomization} failed:\n{result.stderr}")
    return result.stdout


def kubernetes_validate(text, name):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as rendered:
        rendered.write(text)
        rendered.flush()
        result = subprocess.run(
            ["kubernetes-validate", "-k", KUBERNETES_VERSION, "--strict", "--quiet", rendered.name],
            capture_output=True,
            text=True,
        )
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "ERROR" in line]
    if result.returncode != 0 and not errors:
        errors = [f"kubernetes-validate exited {result.returncode}: {result.stderr.strip()}"]
    return [f"{name}: {line}" for line in errors]


def schema_errors(docs):
    errors = []
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        label = f"{key[1]}/{doc.get('metadata', {}).get('name')}"
        if key in SCHEMAS:
            schema = json.loads((K8S / "schemas" / SCHEMAS[key]).read_text())
            validator = jsonschema.Draft202012Validator(schema)
            for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
                path = ".".join(str(p) for p in error.absolute_path) or "(top)"
                errors.append(f"{label}: {path}: {error.message}")
        elif key[0] not in BUILT_IN_GROUPS:
            errors.append(f"{label}: no schema checks {key[0]} {key[1]}; add one to deploy/k8s/schemas/")
    return errors


def only(docs, kind):
    found = [doc for doc in docs if doc["kind"] == kind]
    return found


def one(docs, kind, errors):
    found = only(docs, kind)
    if len(found) != 1:
        errors.append(f"expected one {kind}, found {len(found)}")
        return None
    return found[0]


def selects(selector, labels):
    return all(labels.get(key) == value for key, value in (selector or {}).items())


def stack_default(parameter):
    """A parameter's default in the CloudFormation stack (read as text: the template
    uses CloudFormation's YAML tags)."""
    template = (ROOT / "deploy" / "cloudformation" / "veil.yaml").read_text()
    found = re.search(rf"^  {parameter}:\n(?:    .*\n)*?    Default: (\S+)$", template, re.M)
    return found and found.group(1).strip('"')


def flag(args, name):
    for arg in args:
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    if f"--{name}" in args:
        return args[args.index(f"--{name}") + 1]
    return None


def consistency_errors(docs):
    errors = []
    deployment = one(docs, "Deployment", errors)
    scaled = one(docs, "ScaledObject", errors)
    if deployment is None or scaled is None:
        return errors
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"].get("labels", {})
    spec = pod["spec"]
    container = next((c for c in spec["containers"] if c["name"] == "veil"), None)
    if container is None:
        return errors + ["the Deployment has no container named veil"]

    # The environment the container sees (ConfigMaps by envFrom, then env).
    config_maps = {doc["metadata"]["name"]: doc.get("data", {}) for doc in only(docs, "ConfigMap")}
    env = {}
    for source in container.get("envFrom", []):
        name = source.get("configMapRef", {}).get("name")
        if name is not None:
            if name not in config_maps:
                errors.append(f"envFrom names ConfigMap {name}, which is not rendered")
            env.update(config_maps.get(name, {}))
    for variable in container.get("env", []):
        env[variable["name"]] = variable.get("value", variable.get("valueFrom"))

    # veil's own settings.
    args = container.get("args", [])
    if not args or args[0] != "run":
        errors.append(f"the container must run `veil run`, not {args}")
    shutdown = int(flag(args, "shutdown-timeout-secs") or 20)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace <= shutdown + 5:
        errors.append(
            f"terminationGracePeriodSeconds {grace} must exceed --shutdown-timeout-secs {shutdown} "
            "by more than 5 s, or the kubelet kills veil mid-batch"
        )
    http_addr = env.get("VEIL_HTTP_ADDR", "")
    if not http_addr.startswith("0.0.0.0:") or http_addr.rsplit(":", 1)[1] != str(OPS_PORT):
        errors.append(f"VEIL_HTTP_ADDR must be 0.0.0.0:{OPS_PORT} (probes and scrapes come from outside the pod), not {http_addr!r}")
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if ports.get("ops") != OPS_PORT:
        errors.append(f"the container must expose port ops={OPS_PORT}, has {ports}")
    for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")]:
        got = container.get(probe, {}).get("httpGet", {})
        if got.get("path") != path or got.get("port") not in ("ops", OPS_PORT):
            errors.append(f"{probe} must GET {path} on the ops port, has {got}")
    key_sources = [name for name in ("VEIL_KEY", "VEIL_KEY_SECRET_ID", "VEIL_KEY_FILE") if env.get(name)]
    if len(key_sources) != 1:
        errors.append(f"exactly one keyring source must be set (veil refuses two), found {key_sources}")
    for required in ("VEIL_QUEUE_URL", "DATABASE_URL", "AWS_REGION"):
        if not env.get(required):
            errors.append(f"{required} is not set in the container's environment")
    database_url = env.get("DATABASE_URL") or ""
    if "sslmode=verify-full" not in database_url:
        errors.append("DATABASE_URL must use sslmode=verify-full (RDS forces TLS; verify who answers)")
    if re.match(r"^postgres(ql)?://[^/@]*:[^/@]*@", database_url):
        errors.append("DATABASE_URL carries a password: use VEIL_DATABASE_SECRET_ID or IAM auth")

    # Hardening.
    pod_security = spec.get("securityContext", {})
    container_security = container.get("securityContext", {})
    if not pod_security.get("runAsNonRoot"):
        errors.append("the pod must set runAsNonRoot")
    if not container_security.get("readOnlyRootFilesystem"):
        errors.append("the container must have a read-only root filesystem")
    if container_security.get("allowPrivilegeEscalation") is not False:
        errors.append("the container must set allowPrivilegeEscalation: false")
    if "ALL" not in container_security.get("capabilities", {}).get("drop", []):
        errors.append("the container must drop ALL capabilities")
    resources = container.get("resources", {})
    if not resources.get("requests") or not resources.get("limits", {}).get("memory"):
        errors.append("the container needs resource requests and a memory limit")
    if "replicas" in deployment["spec"]:
        errors.append("the Deployment must not set replicas: KEDA owns the count")

    # IRSA.
    accounts = {doc["metadata"]["name"]: doc for doc in only(docs, "ServiceAccount")}
    account = accounts.get(spec.get("serviceAccountName"))
    role = (account or {}).get("metadata", {}).get("annotations", {}).get("eks.amazonaws.com/role-arn", "")
    if not re.match(r"^arn:aws[a-z-]*:iam::\d{12}:role/.+", role):
        errors.append(f"ServiceAccount {spec.get('serviceAccountName')} needs an IRSA role annotation, has {role!r}")
    namespace = (account or {}).get("metadata", {}).get("namespace")
    trusted = stack_default("KubernetesServiceAccount")
    if account and namespace and f"{namespace}:{account['metadata']['name']}" != trusted:
        errors.append(
            f"ServiceAccount {namespace}:{account['metadata']['name']} is not the one the stack's IRSA role "
            f"trusts by default ({trusted}): pass KubernetesServiceAccount to the stack, or rename"
        )

    # KEDA.
    target = scaled["spec"]["scaleTargetRef"]
    if target.get("kind", "Deployment") != "Deployment" or target["name"] != deployment["metadata"]["name"]:
        errors.append(f"the ScaledObject scales {target}, not Deployment {deployment['metadata']['name']}")
    authentications = {doc["metadata"]["name"]: doc for doc in only(docs, "TriggerAuthentication")}
    sqs = [t for t in scaled["spec"]["triggers"] if t["type"] == "aws-sqs-queue"]
    if len(sqs) != 1:
        errors.append(f"expected one aws-sqs-queue trigger, found {len(sqs)}")
    for trigger in sqs:
        metadata = trigger["metadata"]
        queue = metadata.get("queueURL") or env.get(metadata.get("queueURLFromEnv", ""))
        if not queue:
            errors.append(f"the trigger's queue is unset: queueURLFromEnv {metadata.get('queueURLFromEnv')!r} is not in the container's environment")
        elif queue != env.get("VEIL_QUEUE_URL"):
            errors.append(f"KEDA watches {queue} but veil consumes {env.get('VEIL_QUEUE_URL')}")
        else:
            region = re.match(r"^https://sqs\.([a-z0-9-]+)\.amazonaws\.com/", queue)
            if region and region.group(1) != metadata.get("awsRegion"):
                errors.append(f"awsRegion {metadata.get('awsRegion')} is not the queue's region {region.group(1)}")
            if region and region.group(1) != env.get("AWS_REGION"):
                errors.append(f"AWS_REGION {env.get('AWS_REGION')} is not the queue's region {region.group(1)}")
        expected = stack_default("BacklogPerTask")
        if metadata.get("queueLength") != expected:
            errors.append(
                f"queueLength {metadata.get('queueLength')} differs from the stack's BacklogPerTask {expected}; "
                "both come from the same measurement (docs/deploy.md)"
            )
        reference = trigger.get("authenticationRef", {}).get("name")
        authentication = authentications.get(reference)
        if authentication is None:
            errors.append(f"the trigger's authenticationRef {reference!r} names no TriggerAuthentication")
        else:
            identity = authentication["spec"].get("podIdentity", {})
            if identity.get("identityOwner") == "workload" and not role:
                errors.append("identityOwner workload needs the workload's IRSA annotation")
    minimum = scaled["spec"].get("minReplicaCount", 0)
    maximum = scaled["spec"].get("maxReplicaCount", 100)
    if not 1 <= minimum <= maximum:
        errors.append(f"replicas must satisfy 1 <= min ({minimum}) <= max ({maximum})")

    # Selectors select the pods; the Service and its monitor find each other.
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for doc in only(docs, kind):
            selector = doc["spec"].get("selector", doc["spec"].get("podSelector", {})).get("matchLabels")
            if not selector or not selects(selector, pod_labels):
                errors.append(f"{kind}/{doc['metadata']['name']} does not select veil's pods")
    services = only(docs, "Service")
    for service in services:
        if not selects(service["spec"].get("selector"), pod_labels):
            errors.append(f"Service/{service['metadata']['name']} does not select veil's pods")
    for monitor in only(docs, "ServiceMonitor"):
        matched = [s for s in services if selects(monitor["spec"]["selector"].get("matchLabels"), s["metadata"].get("labels", {}))]
        if not matched:
            errors.append(f"ServiceMonitor/{monitor['metadata']['name']} selects no Service")
        for endpoint in monitor["spec"]["endpoints"]:
            names = {p.get("name") for s in matched for p in s["spec"]["ports"]}
            if endpoint.get("port") not in names or endpoint.get("path", "/metrics") != "/metrics":
                errors.append(f"ServiceMonitor endpoint {endpoint} is not a Service port serving /metrics")
    for policy in only(docs, "NetworkPolicy"):
        allowed = {p.get("port") for rule in policy["spec"].get("ingress", []) for p in rule.get("ports", [])}
        if OPS_PORT not in allowed and "ops" not in allowed:
            errors.append("the NetworkPolicy must let Prometheus reach the ops port")

    # Housekeeping's CronJob: veil maintain with the Deployment's image and
    # configuration; when it runs, veil run leaves housekeeping to it.
    for cronjob in only(docs, "CronJob"):
        job_spec = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        job = job_spec["containers"][0]
        if job.get("args", [])[:1] != ["maintain"]:
            errors.append(f"CronJob/{cronjob['metadata']['name']} must run `veil maintain`")
        if job.get("image") != container.get("image"):
            errors.append(f"CronJob image {job.get('image')} differs from the Deployment's {container.get('image')}")
        if job.get("envFrom") != container.get("envFrom"):
            errors.append("the CronJob must read the Deployment's configuration (the same envFrom)")
        job_env = {v["name"]: v for v in job.get("env", [])}
        owner_key = job_env.get("VEIL_DATABASE_SECRET_ID", {}).get("valueFrom", {}).get("configMapKeyRef", {}).get("key")
        if owner_key != "VEIL_OWNER_DATABASE_SECRET_ID" or owner_key not in env:
            errors.append("the maintain CronJob must log in as the owner (VEIL_DATABASE_SECRET_ID from VEIL_OWNER_DATABASE_SECRET_ID)")
        if job_spec.get("serviceAccountName") == spec.get("serviceAccountName"):
            errors.append("the maintain CronJob needs its own ServiceAccount: the pipeline's role must not read the owner's secret")
        if cronjob["spec"].get("suspend", False):
            errors.append("the maintain CronJob is suspended: nobody keeps the partitions")
        if not job_spec.get("securityContext", {}).get("runAsNonRoot") or not job.get("securityContext", {}).get("readOnlyRootFilesystem"):
            errors.append("the CronJob must run non-root on a read-only root filesystem")
        if cronjob["spec"].get("concurrencyPolicy") != "Forbid":
            errors.append("the CronJob must not overlap itself (concurrencyPolicy: Forbid)")
        if not cronjob["spec"].get("suspend", False) and env.get("VEIL_HOUSEKEEPING_INTERVAL_SECS") != "0":
            errors.append("with the maintain CronJob on, veil run should leave housekeeping to it (VEIL_HOUSEKEEPING_INTERVAL_SECS=0)")

    # Secrets by reference: every secretKeyRef names a Secret the cluster gets.
    produced = {doc["spec"]["target"]["name"] for doc in only(docs, "ExternalSecret")}
    produced |= {doc["metadata"]["name"] for doc in only(docs, "Secret")}
    for variable in container.get("env", []):
        reference = variable.get("valueFrom", {}).get("secretKeyRef")
        if reference and reference["name"] not in produced:
            errors.append(f"env {variable['name']} reads Secret {reference['name']}, which nothing creates")
    stores = {doc["metadata"]["name"] for doc in only(docs, "SecretStore")}
    for external in only(docs, "ExternalSecret"):
        if external["spec"]["secretStoreRef"]["name"] not in stores:
            errors.append(f"ExternalSecret/{external['metadata']['name']} names a SecretStore that is not rendered")
    return errors


def check(text, name):
    docs = [doc for doc in yaml.safe_load_all(text) if doc]
    return kubernetes_validate(text, name) + [
        f"{name}: {error}" for error in schema_errors(docs) + consistency_errors(docs)
    ]


def mutations():
    """Ways to break the production rendering; each must be caught."""

    def by_kind(docs, kind):
        return next(doc for doc in docs if doc["kind"] == kind)

    def container(docs):
        return by_kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]

    def trigger(docs):
        return by_kind(docs, "ScaledObject")["spec"]["triggers"][0]

    def config(docs):
        return by_kind(docs, "ConfigMap")["data"]

    return {
        "grace period below the shutdown timeout": lambda d: by_kind(d, "Deployment")["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=20),
        "ScaledObject targets another Deployment": lambda d: by_kind(d, "ScaledObject")["spec"]["scaleTargetRef"].update(name="other"),
        "typo in a ScaledObject field": lambda d: by_kind(d, "ScaledObject")["spec"].update(maxReplicaCont=3),
        "unknown aws-sqs-queue parameter": lambda d: trigger(d)["metadata"].update(queueLenght="5"),
        "queueLength not a number": lambda d: trigger(d)["metadata"].update(queueLength="many"),
        "queueLength off the measurement": lambda d: trigger(d)["metadata"].update(queueLength="5"),
        "trigger env that does not exist": lambda d: trigger(d)["metadata"].update(queueURLFromEnv="QUEUE"),
        "region unlike the queue's": lambda d: trigger(d)["metadata"].update(awsRegion="us-west-2"),
        "authenticationRef to nothing": lambda d: trigger(d)["authenticationRef"].update(name="nobody"),
        "static keys in the TriggerAuthentication": lambda d: by_kind(d, "TriggerAuthentication")["spec"].update(secretTargetRef=[{"parameter": "awsAccessKeyID", "name": "k", "key": "k"}]),
        "deprecated aws-eks pod identity": lambda d: by_kind(d, "TriggerAuthentication")["spec"]["podIdentity"].update(provider="aws-eks"),
        "readiness probe on the wrong path": lambda d: container(d)["readinessProbe"]["httpGet"].update(path="/healthz"),
        "writable root filesystem": lambda d: container(d)["securityContext"].update(readOnlyRootFilesystem=False),
        "two keyring sources": lambda d: container(d).setdefault("env", []).append({"name": "VEIL_KEY", "value": "x"}),
        "password in DATABASE_URL": lambda d: config(d).update(DATABASE_URL="postgres://veil:hunter2@db:5432/veil?sslmode=verify-full"),
        "TLS not verified": lambda d: config(d).update(DATABASE_URL="postgres://db:5432/veil?sslmode=require"),
        "ops endpoint on loopback": lambda d: config(d).update(VEIL_HTTP_ADDR="127.0.0.1:9898"),
        "replicas fixed in the Deployment": lambda d: by_kind(d, "Deployment")["spec"].update(replicas=3),
        "no IRSA annotation": lambda d: by_kind(d, "ServiceAccount")["metadata"].update(annotations={}),
        "a ServiceAccount the role does not trust": lambda d: by_kind(d, "ServiceAccount")["metadata"].update(name="ingest"),
        "PDB selecting other pods": lambda d: by_kind(d, "PodDisruptionBudget")["spec"].update(selector={"matchLabels": {"app": "other"}}),
        "ServiceMonitor on a missing port": lambda d: by_kind(d, "ServiceMonitor")["spec"]["endpoints"][0].update(port="http"),
        "unknown field in a core kind": lambda d: container(d).update(imagePullPolicyy="Always"),
        "maintain CronJob on another image": lambda d: by_kind(d, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0].update(image="veil:old"),
        "veil run doing housekeeping beside the maintain CronJob": lambda d: config(d).update(VEIL_HOUSEKEEPING_INTERVAL_SECS="3600"),
        "maintain CronJob suspended": lambda d: by_kind(d, "CronJob")["spec"].update(suspend=True),
        "maintain CronJob as the pipeline's ServiceAccount": lambda d: by_kind(d, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"].update(serviceAccountName="veil"),
        "maintain CronJob with the pipeline's login": lambda d: by_kind(d, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0].pop("env"),
        "custom kind without a schema": lambda d: d.append({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}}),
    }


def self_test():
    original = [doc for doc in yaml.safe_load_all(render("overlays/production")) if doc]
    clean = check(yaml.safe_dump_all(original), "production")
    if clean:
        sys.exit("self-test: the unbroken rendering already fails:\n" + "\n".join(clean))
    missed = []
    for name, breaker in mutations().items():
        docs = copy.deepcopy(original)
        breaker(docs)
        found = check(yaml.safe_dump_all(docs), "production")
        print(f"  {'caught' if found else 'MISSED'}: {name}" + (f"  ({found[0].split(': ', 1)[1][:90]})" if found else ""))
        if not found:
            missed.append(name)
    if missed:
        sys.exit(f"self-test: {len(missed)} breakage(s) not caught: {', '.join(missed)}")
    print(f"self-test: all {len(mutations())} breakages caught")


def main():
    if sys.argv[1:] == ["--self-test"]:
        self_test()
        return
    failures = []
    for kustomization in KUSTOMIZATIONS:
        errors = check(render(kustomization), kustomization)
        print(f"  {kustomization}: {'ok' if not errors else f'{len(errors)} problem(s)'}")
        failures += errors
    if failures:
        sys.exit("\n".join(failures))


if __name__ == "__main__":
    main()
