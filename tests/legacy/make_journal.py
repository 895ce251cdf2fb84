"""Writes journals as the original (Python) control plane wrote them, for the
legacy import tests (tests/export.rs).

The hash follows the original's rules exactly: SHA-256 of
json.dumps({event_id, event_type, timestamp, actor_id, payload, prev_hash},
sort_keys=True, separators=(",", ":")) with ensure_ascii left at its default
and the timestamp as the parsed datetime's isoformat(). A line is the event
with prev_hash and hash, keys in the original's order, compact, non-ASCII as
raw UTF-8, the timestamp as the original's file form (naive as isoformat,
UTC-aware with a Z suffix, other offsets as +HH:MM).

usage: make_journal.py GOOD DAMAGED
GOOD: every link verifies. DAMAGED: the same events, where line 5's payload
was edited after it was hashed, line 6 was hashed with ensure_ascii=False by a
different writer, and line 7's float 1.0 was rewritten as 1 by a tool that
re-serialized the file.
"""

import datetime
import hashlib
import json
import sys


def parse_ts(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def file_ts(dt):
    s = dt.isoformat()
    if dt.tzinfo is not None and dt.utcoffset() == datetime.timedelta(0):
        s = s[: -len("+00:00")] + "Z"
    return s


def canonical(ev, prev, ensure_ascii=True):
    obj = {
        "event_id": ev["event_id"],
        "event_type": ev["event_type"],
        "timestamp": parse_ts(ev["timestamp"]).isoformat(),
        "actor_id": ev.get("actor_id"),
        "payload": ev["payload"],
        "prev_hash": prev,
    }
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=ensure_ascii)


EVENTS = [
    # The original's own test vectors (their hashes are known).
    {"event_id": "e1", "event_type": "target.registered", "timestamp": "2026-01-24T10:00:00Z",
     "actor_id": "sys",
     "payload": {"target_id": "radix", "name": "radix", "repo_url": "u", "default_branch": "main", "extra": "x"}},
    {"event_id": "e2", "event_type": "custom.thing", "timestamp": "2026-01-24T10:00:09.5",
     "payload": {"k": "é", "n": 1.0, "z": {"b": 1, "a": [2]}}},
    {"event_id": "task-1", "event_type": "task.created", "timestamp": "2026-01-24T10:01:00.123456",
     "actor_id": "scheduler",
     "payload": {"task_id": "t1", "target_id": "radix", "title": "Übersetzung 翻訳 😀", "scope": "docs",
                 "priority": "p1", "estimated_size": "s", "allowed_paths": ["docs/", "README.md"],
                 "acceptance_criteria": ["builds", "line\u2028sep\ttab \"quoted\" \\ back"],
                 "status": "pending"}},
    {"event_id": "att-1-created", "event_type": "attempt.created", "timestamp": "2026-01-24T10:02:00+00:00",
     "actor_id": "worker-att-1",
     "payload": {"attempt_id": "att-1", "task_id": "t1", "target_id": "radix", "attempt_number": 1,
                 "status": "created", "metrics": {"cost_usd": 0.1, "tiny": 1e-05, "big": 1e16,
                                                  "neg_zero": -0.0, "whole": 2.0, "huge_int": 2 ** 70,
                                                  "ratio": 1 / 3, "nested": [{"x": [1.5, {"y": 1e-7}]}]}}},
    {"event_id": "att-1-started", "event_type": "attempt.started", "timestamp": "2026-01-24T12:03:00.5+02:00",
     "actor_id": "worker-att-1",
     "payload": {"attempt_id": "att-1", "status": "running", "note": "naïve café ✓"}},
    {"event_id": "att-1-failed", "event_type": "attempt.failed", "timestamp": "2026-01-24T10:04:00",
     "actor_id": "worker-att-1",
     "payload": {"attempt_id": "att-1", "status": "failed", "failure_type": "execution_failed",
                 "error_summary": "tests failed: ñ"}},
    {"event_id": "topo-1", "event_type": "topo.indexed", "timestamp": "2026-01-24T10:05:00Z",
     "actor_id": None,
     "payload": {"target_id": "radix", "commit_sha": "abc", "areas_count": 3, "score": 1.0,
                 "subsystems_count": 2, "dependencies_count": 1}},
    # A re-indexing run: the same event_id again (the original appended it).
    {"event_id": "topo-1", "event_type": "topo.indexed", "timestamp": "2026-01-24T11:05:00Z",
     "actor_id": None,
     "payload": {"target_id": "radix", "commit_sha": "def", "areas_count": 4, "score": 0.5,
                 "subsystems_count": 2, "dependencies_count": 1}},
]


def write(path, damaged):
    prev = None
    with open(path, "w", encoding="utf-8") as f:
        for i, ev in enumerate(EVENTS, start=1):
            h = hashlib.sha256(canonical(ev, prev, ensure_ascii=not (damaged and i == 6)).encode("utf-8")).hexdigest()
            payload = dict(ev["payload"])
            if damaged and i == 5:
                payload["status"] = "succeeded"
            line = json.dumps({
                "event_id": ev["event_id"],
                "event_type": ev["event_type"],
                "timestamp": file_ts(parse_ts(ev["timestamp"])),
                "actor_id": ev.get("actor_id"),
                "payload": payload,
                "prev_hash": prev,
                "hash": h,
            }, ensure_ascii=False, separators=(",", ":"))
            if damaged and i == 7:
                line = line.replace('"score":1.0', '"score":1')
            f.write(line + "\n")
            if i == 2:
                f.write("\n")  # blank lines are skipped, as the original's reader does
            prev = h


write(sys.argv[1], False)
write(sys.argv[2], True)
