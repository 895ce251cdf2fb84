"""The `deploys` example projector, in Python (componentize-py).

It projects deployment events into `Deployment` and `Environment` nodes with
`DEPLOYED_TO` and `SHIPS` edges, exactly as its Rust and JavaScript twins do
(projectors/examples/README.md has the rules; vectors.ndjson pins the ops).

It reads the clock through WASI (`time.time_ns()`): the host freezes the wall
clock at the event's timestamp, so the reading is a function of the event and
every replay gives the same ops. Nothing else here may depend on the host: no
files, no environment, no network (the host gives none), no state between
events (a fresh instance runs every event).
"""

import json
import time

from componentize_py_types import Err
from wit_world import WitWorld
from wit_world.imports import graph
from wit_world.imports.types import (
    Description,
    MergeNode,
    Op_MergeNode,
    Op_PutEdge,
    Op_PutNode,
    ProjectionError,
    PutEdge,
    PutNode,
)

NAME = "deploys"
VERSION = "1.0.0"
HANDLES = ["deploy.started", "deploy.finished"]
NODE_TYPES = ["Deployment", "Environment"]
EDGE_TYPES = ["DEPLOYED_TO", "SHIPS"]
STATUSES = ["succeeded", "failed", "rolled_back"]


def refuse(code, message):
    raise Err(ProjectionError(code=code, message=message))


def text(payload, event_type, key):
    """A required, non-empty string field of the payload."""
    value = payload.get(key)
    if not isinstance(value, str) or value == "":
        refuse("missing_field", f"{event_type}: payload.{key} is required (a non-empty string)")
    return value


def optional_text(payload, key):
    value = payload.get(key)
    return value if isinstance(value, str) else None


def clock_ms():
    """The wall clock in whole milliseconds: the event's timestamp."""
    return time.time_ns() // 1_000_000


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def deploy_id(target, deploy):
    return f"deploy:{target}:{deploy}"


def env_id(target, environment):
    return f"env:{target}:{environment}"


def started(ev, payload):
    deploy = text(payload, ev.event_type, "deploy_id")
    service = text(payload, ev.event_type, "service")
    environment = text(payload, ev.event_type, "environment")
    labels = payload.get("labels")
    node = deploy_id(ev.target, deploy)
    env = env_id(ev.target, environment)
    ops = [
        Op_PutNode(PutNode(
            id=node,
            node_type="Deployment",
            properties=dumps({
                "deploy_id": deploy,
                "service": service,
                "environment": environment,
                "version": optional_text(payload, "version"),
                "status": "started",
                "started_at": ev.timestamp,
                "started_ms": clock_ms(),
                "labels": labels if isinstance(labels, dict) else {},
                "actor": ev.actor_id,
            }),
        )),
        Op_MergeNode(MergeNode(
            id=env,
            node_type="Environment",
            properties=dumps({
                "name": environment,
                "target": ev.target,
                "last_deploy": deploy,
                "last_service": service,
            }),
            create_if_absent=True,
        )),
        Op_PutEdge(PutEdge(
            edge_type="DEPLOYED_TO",
            from_=node,
            to=env,
            properties=dumps({"at": ev.timestamp}),
        )),
    ]
    attempt = optional_text(payload, "attempt_id")
    if attempt:
        ops.append(Op_PutEdge(PutEdge(
            edge_type="SHIPS",
            from_=node,
            to=attempt,
            properties=dumps({"seq": ev.seq}),
        )))
    return ops


def finished(ev, payload):
    deploy = text(payload, ev.event_type, "deploy_id")
    status = text(payload, ev.event_type, "status")
    if status not in STATUSES:
        refuse(
            "invalid_field",
            f"{ev.event_type}: payload.status must be one of {', '.join(STATUSES)} (got {status!r})",
        )
    node = deploy_id(ev.target, deploy)
    now = clock_ms()
    # The past, read through the graph import: when did this deploy start?
    existing = graph.get_node(node)
    before = json.loads(existing.properties) if existing is not None else {}
    started_ms = before.get("started_ms")
    patch = {
        "status": status,
        "finished_at": ev.timestamp,
        "finished_ms": now,
        "duration_ms": now - started_ms if isinstance(started_ms, int) else None,
    }
    error = optional_text(payload, "error")
    if error is not None and status != "succeeded":
        patch["error"] = error
    ops = [Op_MergeNode(MergeNode(
        id=node,
        node_type="Deployment",
        properties=dumps(patch),
        create_if_absent=False,
    ))]
    environment = before.get("environment")
    if status == "succeeded" and isinstance(environment, str):
        ops.append(Op_MergeNode(MergeNode(
            id=env_id(ev.target, environment),
            node_type="Environment",
            properties=dumps({
                "current_deploy": deploy,
                "current_version": before.get("version"),
            }),
            create_if_absent=False,
        )))
    return ops


class WitWorld(WitWorld):
    def describe(self):
        return Description(
            name=NAME,
            version=VERSION,
            handles=HANDLES,
            node_types=NODE_TYPES,
            edge_types=EDGE_TYPES,
        )

    def project(self, event):
        # The host hands over a JSON object (RFC 8785 text).
        payload = json.loads(event.payload)
        if event.event_type == "deploy.started":
            return started(event, payload)
        if event.event_type == "deploy.finished":
            return finished(event, payload)
        refuse("unhandled", f"{event.event_type} is not a deploy event")
