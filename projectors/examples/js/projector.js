// The `deploys` example projector, in JavaScript (ComponentizeJS).
//
// It projects deployment events into `Deployment` and `Environment` nodes with
// `DEPLOYED_TO` and `SHIPS` edges, exactly as its Rust and Python twins do
// (projectors/examples/README.md has the rules; vectors.ndjson pins the ops).
//
// It reads the clock through WASI (`Date.now()`): the host freezes the wall
// clock at the event's timestamp, so the reading is a function of the event and
// every replay gives the same ops. Nothing else here may depend on the host: no
// files, no environment, no network (the host gives none), no state between
// events (a fresh instance runs every event).

import { getNode } from 'leviathan:projector/graph@1.0.0';

const NAME = 'deploys';
const VERSION = '1.0.0';
const HANDLES = ['deploy.started', 'deploy.finished'];
const NODE_TYPES = ['Deployment', 'Environment'];
const EDGE_TYPES = ['DEPLOYED_TO', 'SHIPS'];
const STATUSES = ['succeeded', 'failed', 'rolled_back'];

// A `projection-error`: what the export's `result` carries on failure.
class Refusal extends Error {
  constructor(code, message) {
    super(message);
    this.payload = { code, message };
  }
}

function text(payload, eventType, key) {
  const value = payload[key];
  if (typeof value !== 'string' || value === '') {
    throw new Refusal('missing_field', `${eventType}: payload.${key} is required (a non-empty string)`);
  }
  return value;
}

function optionalText(payload, key) {
  const value = payload[key];
  return typeof value === 'string' ? value : null;
}

function isObject(v) {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

// The wall clock in whole milliseconds: the event's timestamp.
function clockMs() {
  return Date.now();
}

const deployId = (target, deploy) => `deploy:${target}:${deploy}`;
const envId = (target, environment) => `env:${target}:${environment}`;

function started(ev, payload) {
  const deploy = text(payload, ev.eventType, 'deploy_id');
  const service = text(payload, ev.eventType, 'service');
  const environment = text(payload, ev.eventType, 'environment');
  const node = deployId(ev.target, deploy);
  const env = envId(ev.target, environment);
  const ops = [
    {
      tag: 'put-node',
      val: {
        id: node,
        nodeType: 'Deployment',
        properties: JSON.stringify({
          deploy_id: deploy,
          service,
          environment,
          version: optionalText(payload, 'version'),
          status: 'started',
          started_at: ev.timestamp,
          started_ms: clockMs(),
          labels: isObject(payload.labels) ? payload.labels : {},
          actor: ev.actorId ?? null,
        }),
      },
    },
    {
      tag: 'merge-node',
      val: {
        id: env,
        nodeType: 'Environment',
        properties: JSON.stringify({
          name: environment,
          target: ev.target,
          last_deploy: deploy,
          last_service: service,
        }),
        createIfAbsent: true,
      },
    },
    {
      tag: 'put-edge',
      val: { edgeType: 'DEPLOYED_TO', from: node, to: env, properties: JSON.stringify({ at: ev.timestamp }) },
    },
  ];
  const attempt = optionalText(payload, 'attempt_id');
  if (attempt) {
    ops.push({
      tag: 'put-edge',
      // `seq` is a u64: a BigInt in JavaScript.
      val: { edgeType: 'SHIPS', from: node, to: attempt, properties: JSON.stringify({ seq: Number(ev.seq) }) },
    });
  }
  return ops;
}

function finished(ev, payload) {
  const deploy = text(payload, ev.eventType, 'deploy_id');
  const status = text(payload, ev.eventType, 'status');
  if (!STATUSES.includes(status)) {
    throw new Refusal(
      'invalid_field',
      `${ev.eventType}: payload.status must be one of ${STATUSES.join(', ')} (got '${status}')`,
    );
  }
  const node = deployId(ev.target, deploy);
  const now = clockMs();
  // The past, read through the graph import: when did this deploy start?
  const existing = getNode(node);
  const before = existing ? JSON.parse(existing.properties) : {};
  const startedMs = before.started_ms;
  const patch = {
    status,
    finished_at: ev.timestamp,
    finished_ms: now,
    duration_ms: Number.isInteger(startedMs) ? now - startedMs : null,
  };
  const error = optionalText(payload, 'error');
  if (error !== null && status !== 'succeeded') {
    patch.error = error;
  }
  const ops = [
    {
      tag: 'merge-node',
      val: { id: node, nodeType: 'Deployment', properties: JSON.stringify(patch), createIfAbsent: false },
    },
  ];
  if (status === 'succeeded' && typeof before.environment === 'string') {
    ops.push({
      tag: 'merge-node',
      val: {
        id: envId(ev.target, before.environment),
        nodeType: 'Environment',
        properties: JSON.stringify({ current_deploy: deploy, current_version: before.version ?? null }),
        createIfAbsent: false,
      },
    });
  }
  return ops;
}

export function describe() {
  return { name: NAME, version: VERSION, handles: HANDLES, nodeTypes: NODE_TYPES, edgeTypes: EDGE_TYPES };
}

export function project(event) {
  // The host hands over a JSON object (RFC 8785 text).
  const payload = JSON.parse(event.payload);
  switch (event.eventType) {
    case 'deploy.started':
      return started(event, payload);
    case 'deploy.finished':
      return finished(event, payload);
    default:
      throw new Refusal('unhandled', `${event.eventType} is not a deploy event`);
  }
}
