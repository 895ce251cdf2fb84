"""A projector that reports what the WASI sandbox shows a Python guest
(tests/polyglot.rs): one `Probe` node per `probe.wasi` event, whose
properties are the clock, randomness, environment, files and timers as seen
from inside. Everything it records must be a function of the event."""

import json
import os
import random
import time

from componentize_py_types import Err
from wit_world import WitWorld
from wit_world.imports.types import Description, Op_PutNode, ProjectionError, PutNode


def attempt(f):
    try:
        return "ok: " + repr(f())
    except Exception as e:  # the sandbox refuses: record how
        return "refused: " + type(e).__name__


class WitWorld(WitWorld):
    def describe(self):
        return Description(
            name="wasi-probe",
            version="1.0.0",
            handles=["probe.wasi"],
            node_types=["Probe"],
            edge_types=[],
        )

    def project(self, event):
        payload = json.loads(event.payload)
        probe = payload.get("probe_id")
        if not isinstance(probe, str):
            raise Err(ProjectionError(code="missing_field", message="probe_id"))
        urandom = os.urandom(16).hex()
        mono_before = time.monotonic_ns()
        time.sleep(3600)
        mono_after = time.monotonic_ns()
        props = {
            "urandom": urandom,
            "random": str(random.getrandbits(64)),
            "time_ns": str(time.time_ns()),
            "monotonic_before_ns": str(mono_before),
            "monotonic_after_ns": str(mono_after),
            "environ": len(os.environ),
            "listdir": attempt(lambda: os.listdir("/")),
            "open": attempt(lambda: open("/etc/passwd").read(10)),
        }
        return [Op_PutNode(PutNode(id=f"probe:{probe}", node_type="Probe", properties=json.dumps(props)))]
