/**
 * Validation of decoded messages. Input is hostile until proven otherwise, so this never throws: it returns
 * the message or the first reason to drop it, checked cheapest and most basic first — structure → version →
 * run → sender → round → finiteness → norm. The reasons are stable strings that feed peer scoring and
 * metrics, so a peer that sends garbage is told apart from one that is merely behind or has diverged.
 */
import {
  MAX_BACKEND_LENGTH,
  MAX_CONFIG_DEPTH,
  MAX_CONFIG_NODES,
  MAX_DATA_BYTES,
  MAX_ACTIVATION_ABS,
  MAX_ACTIVATION_ELEMENTS,
  MAX_LISTEN_ADDRS,
  MAX_MICRO_TOKENS,
  MAX_STAGES,
  MAX_SHARDS,
  MAX_ADDR_LENGTH,
  MAX_FILE_NAME_LENGTH,
  MAX_FUTURE_ROUNDS,
  MAX_ID_LENGTH,
  MAX_LEAVE_REASON_LENGTH,
  MAX_MICRO_BATCHES,
  MAX_PARTICIPANTS,
  MAX_PART_ELEMENTS,
  MAX_PEER_ID_LENGTH,
  MAX_REASON_LENGTH,
  MAX_TOKEN_LENGTH,
  PROTOCOL_VERSION,
} from './constants.ts';
import { float16Finite } from './float16.ts';
import type { Message, MessageType } from './messages.ts';

/**
 * Why a message was dropped:
 * - size: more bytes than the limit (checked before decoding anything);
 * - malformed: bytes msgpack cannot decode, or a value that is not a map;
 * - structure: a map, but with an unknown type, missing, extra or wrongly typed fields;
 * - version: another protocol version;
 * - run: another runId or configHash;
 * - sender: the claimed sender is not the transport-authenticated peer;
 * - unadmitted: the sender is not admitted to the run;
 * - stale / future: a round too old (a replay) or too far ahead;
 * - nonfinite: NaN or ±Infinity in a number or tensor (a diverged peer, or poison);
 * - norm: a tensor part whose L2 norm exceeds the bound.
 */
export const REJECT_REASONS = [
  'size',
  'malformed',
  'structure',
  'version',
  'run',
  'sender',
  'unadmitted',
  'stale',
  'future',
  'nonfinite',
  'norm',
] as const;

export type RejectReason = (typeof REJECT_REASONS)[number];

export type DecodeResult = { ok: true; msg: Message } | { ok: false; reason: RejectReason; detail: string };

export interface ValidationContext {
  /** Expected run id and config hash; messages of type join/refused skip this check; when undefined (a joiner before its welcome), run checks are skipped. */
  runId?: string;
  configHash?: string;
  /** The transport-authenticated sender (libp2p peer id of the connection or of the signed gossip message); when given, must equal msg.sender (reason 'sender'). */
  from?: string;
  /** Whether a peer id is admitted to the run; join/welcome/refused skip it; when undefined, skip. A callback that throws counts as "not admitted". */
  isAdmitted?: (peerId: string) => boolean;
  /**
   * The receiver's current round: messages with a round field older than (currentRound - staleRounds) are
   * 'stale' (replays of old rounds); newer than currentRound + 2 are 'future'. When undefined, skip. It
   * applies to every message with a round (heartbeats too), so pass it per topic or stream as fits.
   */
  currentRound?: number;
  /** Rounds before currentRound still accepted. Default 0: only the current round and later are fresh. */
  staleRounds?: number;
  /** Upper bound on the L2 norm of a TensorPart's values ('norm'); when undefined, skip. */
  maxPartNorm?: number;
  /** Size limit in bytes (default MAX_MESSAGE_BYTES). */
  maxBytes?: number;
}

// --- field checks: each returns what is wrong with a value, or undefined when it is fine --------------------

type Fields = Record<string, unknown>;
type Check = (value: unknown, msg: Fields) => string | undefined;

const isInt = (x: unknown): x is number => Number.isSafeInteger(x);

const intAtLeast =
  (min: number): Check =>
  (x) =>
    isInt(x) && x >= min ? undefined : `expected an integer >= ${min}`;

/**
 * A real-valued field only has to be a number here: whether it is finite is the later 'nonfinite' check, so
 * a NaN loss from a diverged peer is reported as such rather than as garbage. Bounds apply to finite values.
 */
const real =
  (min: number, strict = false): Check =>
  (x) => {
    if (typeof x !== 'number') return 'expected a number';
    if (Number.isFinite(x) && (strict ? x <= min : x < min)) return `expected a number ${strict ? '>' : '>='} ${min}`;
    return undefined;
  };

const str =
  (min: number, max: number): Check =>
  (x) =>
    typeof x === 'string' && x.length >= min && x.length <= max ? undefined : `expected a string of ${min} to ${max} characters`;

const oneOf =
  (...allowed: string[]): Check =>
  (x) =>
    typeof x === 'string' && allowed.includes(x) ? undefined : `expected one of ${allowed.join(', ')}`;

/** libp2p peer ids print as base58btc or base32 multibase: letters and digits only. */
const PEER_ID_RE = new RegExp(`^[A-Za-z0-9]{1,${MAX_PEER_ID_LENGTH}}$`);
const isPeerId = (x: unknown): x is string => typeof x === 'string' && PEER_ID_RE.test(x);
const peerId: Check = (x) => (isPeerId(x) ? undefined : 'expected a peer id');

/** Parameter hashes are hashFloats output: 8 lowercase hex digits. */
const hash8: Check = (x) => (typeof x === 'string' && /^[0-9a-f]{8}$/.test(x) ? undefined : 'expected 8 lowercase hex digits');

const participants: Check = (x) => {
  if (!Array.isArray(x) || x.length < 1 || x.length > MAX_PARTICIPANTS) return `expected 1 to ${MAX_PARTICIPANTS} peer ids`;
  if (!x.every(isPeerId)) return 'expected peer ids';
  return new Set(x).size === x.length ? undefined : 'expected distinct peer ids';
};

const microBatches: Check = (x, msg) => {
  const n = Array.isArray(msg.participants) ? msg.participants.length : -1;
  if (!Array.isArray(x) || x.length !== n) return 'expected one count per participant';
  return x.every((b) => isInt(b) && b >= 0 && b <= MAX_MICRO_BATCHES) ? undefined : `expected integers in [0, ${MAX_MICRO_BATCHES}]`;
};

const values: Check = (x, msg) => {
  if (!(x instanceof Float32Array)) return 'expected a Float32Array';
  if (x.length < 1 || x.length > MAX_PART_ELEMENTS) return `expected 1 to ${MAX_PART_ELEMENTS} elements`;
  return (msg.offset as number) + x.length <= (msg.total as number) ? undefined : 'offset + values.length exceeds total';
};

/** Reduce parts are averaged with their weight as divisor, so it must be positive there. */
const weight: Check = (x, msg) => real(0, msg.phase === 'reduce')(x, msg);

/**
 * Keys that could reach an object's prototype if the value were ever merged or copied naively. msgpackr
 * renames a wire `__proto__` to `__proto_`, which is no more legitimate.
 */
const FORBIDDEN_KEYS = new Set(['__proto__', '__proto_', 'constructor', 'prototype']);

function isPlainObject(x: unknown): x is Fields {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return false;
  const proto: unknown = Object.getPrototypeOf(x);
  return proto === Object.prototype || proto === null;
}

/**
 * Walks a JSON-like value (plain objects, arrays, strings, numbers, booleans, null), bounded in depth and
 * node count so that a hostile value — or a cyclic one handed to validateMessage — costs bounded time.
 * Returns what is wrong, and whether a non-finite number was seen (reported later, as 'nonfinite').
 */
function walkJson(root: unknown): { error?: string; nonFinite: boolean } {
  let nodes = 0;
  let nonFinite = false;
  const visit = (x: unknown, depth: number): string | undefined => {
    if (++nodes > MAX_CONFIG_NODES) return `more than ${MAX_CONFIG_NODES} values`;
    if (depth > MAX_CONFIG_DEPTH) return `nested deeper than ${MAX_CONFIG_DEPTH}`;
    if (x === null || typeof x === 'string' || typeof x === 'boolean') return undefined;
    if (typeof x === 'number') {
      if (!Number.isFinite(x)) nonFinite = true;
      return undefined;
    }
    if (Array.isArray(x)) {
      if (Object.getPrototypeOf(x) !== Array.prototype) return 'a non-plain array';
      for (const item of x) {
        const e = visit(item, depth + 1);
        if (e) return e;
      }
      return undefined;
    }
    if (!isPlainObject(x)) return 'a value that is not JSON-like';
    for (const key of Object.keys(x)) {
      if (FORBIDDEN_KEYS.has(key)) return `forbidden key ${key}`;
      const e = visit(x[key], depth + 1);
      if (e) return e;
    }
    return undefined;
  };
  const error = isPlainObject(root) ? visit(root, 0) : 'expected a plain object';
  return { error, nonFinite };
}

/** Pipeline stages: contiguous, non-overlapping part ranges, each served by distinct participant indices. */
const pipelineStages: Check = (x, msg) => {
  const n = Array.isArray(msg.participants) ? msg.participants.length : 0;
  if (!Array.isArray(x) || x.length < 1 || x.length > MAX_STAGES) return `expected 1 to ${MAX_STAGES} stages`;
  let next = 0;
  const seen = new Set<number>();
  for (const s of x) {
    if (!isPlainObject(s) || Object.keys(s).length !== 3 || !isInt(s.from) || !isInt(s.to) || !Array.isArray(s.peers)) return 'expected stages of { from, to, peers }';
    if (s.from !== next || s.to <= s.from) return 'expected contiguous, non-empty part ranges from 0';
    next = s.to;
    if (s.peers.length < 1) return 'expected at least one peer per stage';
    for (const p of s.peers) {
      if (!isInt(p) || p < 0 || p >= n || seen.has(p)) return 'expected distinct participant indices';
      seen.add(p);
    }
  }
  return undefined;
};

/** Routes: one participant index per stage, each serving that stage. */
const pipelineRoutes: Check = (x, msg) => {
  if (!Array.isArray(msg.stages)) return 'expected stages first';
  const stages = msg.stages as Array<{ peers: number[] }>;
  if (!Array.isArray(x) || x.length < 1 || x.length > MAX_MICRO_BATCHES) return `expected 1 to ${MAX_MICRO_BATCHES} routes`;
  for (const r of x) {
    if (!Array.isArray(r) || r.length !== stages.length) return 'expected one peer per stage in every route';
    for (let s = 0; s < r.length; s++) if (!stages[s].peers.includes(r[s])) return `route peer ${show(r[s])} does not serve stage ${s}`;
  }
  return undefined;
};

const previousCommit: Check = (x) => {
  if (x === null) return undefined;
  if (!isPlainObject(x) || Object.keys(x).length !== 2 || !isInt(x.attempt) || (x.attempt as number) < 0) return 'expected null or { attempt, gradNorm }';
  return typeof x.gradNorm === 'number' && Number.isFinite(x.gradNorm) && x.gradNorm >= 0 ? undefined : 'expected a finite gradNorm >= 0';
};

const stageHashes: Check = (x, msg) =>
  Array.isArray(x) && Array.isArray(msg.stages) && x.length === msg.stages.length && x.every((h) => hash8(h, msg) === undefined) ? undefined : 'expected one 8-hex-digit hash per stage';

const dims: Check = (x, msg) => {
  if (!isInt(x) || (x as number) < 1) return 'expected an integer >= 1';
  const [B, T, C] = [msg.B, msg.T, msg.C].map(Number);
  if (B * T > MAX_MICRO_TOKENS) return `B·T over ${MAX_MICRO_TOKENS}`;
  return B * T * C > MAX_ACTIVATION_ELEMENTS ? `B·T·C over ${MAX_ACTIVATION_ELEMENTS}` : undefined;
};

/** Targets ride forward only, one per token. */
const targets: Check = (x, msg) => {
  if (!(x instanceof Int32Array)) return 'expected an Int32Array';
  const n = msg.direction === 'forward' ? Number(msg.B) * Number(msg.T) : 0;
  if (x.length !== n) return `expected ${n} targets`;
  for (let i = 0; i < x.length; i++) if (x[i] < 0) return 'expected non-negative token ids';
  return undefined;
};

const lossWeights: Check = (x, msg) => {
  if (!(x instanceof Float32Array)) return 'expected a Float32Array';
  const n = msg.direction === 'forward' ? Number(msg.B) * Number(msg.T) : 0;
  return x.length === 0 || x.length === n ? undefined : `expected 0 or ${n} weights`;
};

const activationValues: Check = (x, msg) => {
  if (!(x instanceof Float32Array) && !(x instanceof Uint16Array)) return 'expected a Float32Array or a Uint16Array (float16)';
  if (x.length < 1 || x.length > MAX_PART_ELEMENTS) return `expected 1 to ${MAX_PART_ELEMENTS} elements`;
  return (msg.offset as number) + x.length <= (msg.total as number) ? undefined : 'offset + values.length exceeds total';
};

const listenAddrs: Check = (x) =>
  Array.isArray(x) && x.length <= MAX_LISTEN_ADDRS && x.every((a) => typeof a === 'string' && a.startsWith('/') && a.length <= MAX_ADDR_LENGTH)
    ? undefined
    : `expected at most ${MAX_LISTEN_ADDRS} multiaddr strings`;

const fileName: Check = (x) =>
  typeof x === 'string' && x.length <= MAX_FILE_NAME_LENGTH && /^[A-Za-z0-9._-]+$/.test(x) && x !== '.' && x !== '..' ? undefined : 'expected a plain file name';

const dataBytes: Check = (x, msg) => {
  if (!(x instanceof Uint8Array)) return 'expected bytes';
  if (x.length < 1 || x.length > MAX_DATA_BYTES) return `expected 1 to ${MAX_DATA_BYTES} bytes`;
  return (msg.offset as number) + x.length <= (msg.total as number) ? undefined : 'offset + bytes.length exceeds total';
};

const shardList: Check = (x) =>
  Array.isArray(x) && x.length >= 1 && x.length <= MAX_SHARDS && x.every((f) => fileName(f, {}) === undefined) ? undefined : `expected 1 to ${MAX_SHARDS} shard file names`;

const jsonObject: Check = (x) => {
  const { error } = walkJson(x);
  return error && `config: ${error}`;
};

// --- one schema per message type, field by field in the order they are checked -------------------------

const count = intAtLeast(0);
const kind = oneOf('node', 'browser');
const backend = str(1, MAX_BACKEND_LENGTH);
const head = { v: count, type: () => undefined } satisfies Record<string, Check>;
const run = { runId: str(1, MAX_ID_LENGTH), configHash: str(1, MAX_ID_LENGTH), sender: peerId, ts: real(0) };

/** Every field a message may have; the type checks that each schema names exactly its interface's fields. */
const SCHEMAS: { [T in MessageType]: Record<keyof Extract<Message, { type: T }>, Check> } = {
  join: { ...head, token: str(1, MAX_TOKEN_LENGTH), kind, backend, tokensPerSec: real(0), memoryMB: real(0), sender: peerId },
  welcome: { ...head, ...run, config: jsonObject, round: count, slot: count, shards: shardList },
  refused: { ...head, reason: str(0, MAX_REASON_LENGTH) },
  heartbeat: { ...head, ...run, round: count, step: count, tokensPerSec: real(0), kind, backend, addrs: listenAddrs },
  round: {
    ...head,
    ...run,
    round: count,
    attempt: count,
    participants,
    microBatches,
    deadlineMs: intAtLeast(1),
    paramHash: hash8,
  },
  part: {
    ...head,
    ...run,
    round: count,
    attempt: count,
    phase: oneOf('reduce', 'gather', 'state'),
    chunk: count,
    offset: count,
    total: intAtLeast(1),
    weight,
    values,
  },
  done: { ...head, ...run, round: count, attempt: count, paramHash: hash8, loss: real(-Infinity), samples: count },
  'state-request': { ...head, ...run },
  state: { ...head, ...run, round: count, step: count, paramHash: hash8, params: count, optimizer: count, stageFrom: count, stageTo: intAtLeast(1) },
  leave: { ...head, ...run, reason: str(0, MAX_LEAVE_REASON_LENGTH) },
  resync: { ...head, ...run, target: peerId, reason: str(0, MAX_REASON_LENGTH) },
  'data-request': { ...head, ...run, file: fileName },
  data: { ...head, ...run, file: fileName, offset: count, total: intAtLeast(1), bytes: dataBytes },
  'pipe-round': { ...head, ...run, round: count, attempt: count, participants, stages: pipelineStages, routes: pipelineRoutes, deadlineMs: intAtLeast(1), stageHashes, previous: previousCommit },
  activation: {
    ...head,
    ...run,
    round: count,
    attempt: count,
    micro: count,
    stage: count,
    direction: oneOf('forward', 'backward'),
    B: dims,
    T: dims,
    C: dims,
    dtype: oneOf('float32', 'float16'),
    loss: real(-Infinity),
    targets,
    weights: lossWeights,
  },
  'act-part': { ...head, ...run, round: count, attempt: count, micro: count, offset: count, total: intAtLeast(1), values: activationValues },
  'pipe-error': { ...head, ...run, round: count, attempt: count, micro: count, failed: (x) => (x === '' || isPeerId(x) ? undefined : 'expected a peer id or ""'), reason: str(0, MAX_REASON_LENGTH) },
  'pipe-commit': { ...head, ...run, round: count, attempt: count, gradNorm: real(0) },
};

/** A short, quoted rendering of an untrusted value for reject details (which end up in logs). */
function show(x: unknown): string {
  const s = typeof x === 'string' ? JSON.stringify(x) : String(x);
  return s.length > 40 ? `${s.slice(0, 37)}...` : s;
}

function reject(reason: RejectReason, detail: string): DecodeResult {
  return { ok: false, reason, detail };
}

/** The first structural problem of `obj` ('malformed' or 'structure'), or undefined when it is a well-formed message. */
export function structureProblem(obj: unknown): { reason: RejectReason; detail: string } | undefined {
  if (!isPlainObject(obj)) return { reason: 'malformed', detail: 'not a map' };
  const type = obj.type;
  if (typeof type !== 'string' || !Object.hasOwn(SCHEMAS, type)) return { reason: 'structure', detail: `unknown type ${show(type)}` };
  const schema: Record<string, Check> = SCHEMAS[type as MessageType];
  for (const key of Object.keys(obj)) {
    if (!Object.hasOwn(schema, key)) return { reason: 'structure', detail: `${type}: unexpected field ${show(key)}` };
  }
  for (const key of Object.keys(schema)) {
    if (!Object.hasOwn(obj, key)) return { reason: 'structure', detail: `${type}: missing field ${key}` };
    const problem = schema[key](obj[key], obj);
    if (problem) return { reason: 'structure', detail: `${type}.${key}: ${problem}` };
  }
  return undefined;
}

/** The first real-valued field (or the config) holding NaN or ±Infinity; a part's values are checked apart. */
function nonFiniteField(msg: Fields): string | undefined {
  for (const key of Object.keys(msg)) {
    const x = msg[key];
    if (typeof x === 'number' && !Number.isFinite(x)) return key;
    if (key === 'config' && walkJson(x).nonFinite) return key;
  }
  return undefined;
}

/**
 * Sum of squares of a part's values, in float64: finite exactly when every value is (float32 squares cannot
 * overflow float64, even 2^18 of them), so one pass serves both the 'nonfinite' and the 'norm' check.
 */
/** Largest magnitude; NaN when any value is NaN (a comparison loop would skip it). */
function maxAbs(values: Float32Array): number {
  let m = 0;
  for (let i = 0; i < values.length; i++) {
    const a = Math.abs(values[i]);
    if (!(a <= m)) m = a; // NaN fails every comparison: it sticks
    if (Number.isNaN(m)) return m;
  }
  return m;
}

function sumOfSquares(values: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i] * values[i];
  return sum;
}

function admitted(isAdmitted: (peerId: string) => boolean, peer: string): boolean {
  try {
    return isAdmitted(peer) === true;
  } catch {
    return false; // fail closed: a broken membership check must not let traffic through
  }
}

function validate(obj: unknown, ctx: ValidationContext): DecodeResult {
  const problem = structureProblem(obj);
  if (problem) return reject(problem.reason, problem.detail);
  const msg = obj as Message;
  const fields = obj as Fields;

  if (msg.v !== PROTOCOL_VERSION) return reject('version', `protocol version ${msg.v}, expected ${PROTOCOL_VERSION}`);

  if (msg.type !== 'join' && msg.type !== 'refused') {
    if (ctx.runId !== undefined && msg.runId !== ctx.runId) return reject('run', `runId ${show(msg.runId)}, expected ${show(ctx.runId)}`);
    if (ctx.configHash !== undefined && msg.configHash !== ctx.configHash) {
      return reject('run', `configHash ${show(msg.configHash)}, expected ${show(ctx.configHash)}`);
    }
  }

  if (msg.type !== 'refused') {
    if (ctx.from !== undefined && msg.sender !== ctx.from) return reject('sender', `claims to be ${show(msg.sender)} but came from ${show(ctx.from)}`);
    if (ctx.isAdmitted && msg.type !== 'join' && msg.type !== 'welcome' && !admitted(ctx.isAdmitted, msg.sender)) {
      return reject('unadmitted', `${show(msg.sender)} is not admitted to the run`);
    }
  }

  if ('round' in msg && ctx.currentRound !== undefined) {
    const oldest = ctx.currentRound - (ctx.staleRounds ?? 0);
    if (msg.round < oldest) return reject('stale', `round ${msg.round} is older than ${oldest}`);
    const newest = ctx.currentRound + MAX_FUTURE_ROUNDS;
    if (msg.round > newest) return reject('future', `round ${msg.round} is newer than ${newest}`);
  }

  const bad = nonFiniteField(fields);
  if (bad) return reject('nonfinite', `${msg.type}.${bad} is not finite`);
  if (msg.type === 'act-part' || msg.type === 'activation') {
    const v = msg.type === 'act-part' ? msg.values : msg.weights;
    // One pass: the largest magnitude is NaN or Infinity exactly when a value is.
    const largest = v instanceof Uint16Array ? (float16Finite(v) ? 0 : Infinity) : maxAbs(v);
    if (!Number.isFinite(largest)) return reject('nonfinite', `${msg.type} values hold NaN or Infinity`);
    // Activations and their gradients stay far inside float16's range in a healthy model; larger ones are a
    // diverged or hostile neighbour, refused before they can poison this stage's gradient.
    if (largest > MAX_ACTIVATION_ABS) return reject('norm', `${msg.type} holds values beyond ±${MAX_ACTIVATION_ABS}`);
  }
  if (msg.type === 'part') {
    const squares = sumOfSquares(msg.values);
    if (!Number.isFinite(squares)) return reject('nonfinite', 'part.values holds NaN or Infinity');
    const norm = Math.sqrt(squares);
    if (ctx.maxPartNorm !== undefined && !(norm <= ctx.maxPartNorm)) {
      return reject('norm', `L2 norm ${norm.toPrecision(4)} exceeds ${ctx.maxPartNorm}`);
    }
  }

  return { ok: true, msg };
}

/**
 * Checks an already-decoded value as decodeMessage does, minus the size check. Never throws: an object whose
 * properties cannot even be read (a throwing getter or proxy) is 'malformed'.
 */
export function validateMessage(obj: unknown, ctx: ValidationContext): DecodeResult {
  try {
    return validate(obj, ctx);
  } catch (err) {
    return reject('malformed', `unreadable value: ${show(err instanceof Error ? err.message : err)}`);
  }
}
