/**
 * Every message peers exchange, as plain objects (no classes: they are msgpack maps on the wire, and the same
 * shape in memory on both sides). Each carries `v` (PROTOCOL_VERSION) and a `type` tag; callers build them
 * as literals and narrow on `type`. What each field may hold is checked in validate.ts, not here.
 */

/** Every message type tag, in the order a run meets them. */
export const MESSAGE_TYPES = [
  'data-request',
  'data',
  'join',
  'welcome',
  'refused',
  'heartbeat',
  'round',
  'part',
  'done',
  'state-request',
  'state',
  'leave',
  'resync',
] as const;

export type MessageType = (typeof MESSAGE_TYPES)[number];

/** Where a peer runs: a Node process or a browser tab (tabs vanish mid-round more often). */
export type PeerKind = 'node' | 'browser';

/** Which exchange a tensor part belongs to: all-reduce's two halves, or a state transfer. */
export type TensorPhase = 'reduce' | 'gather' | 'state';

/**
 * Fields of every message sent inside a run. `runId` and `configHash` let a receiver drop traffic of another
 * run or another config (a stale process, a misconfigured peer) before looking further; `sender` is the
 * libp2p peer id the sender claims, checked against the transport's authenticated one.
 */
export interface RunScoped {
  v: number;
  runId: string;
  configHash: string;
  sender: string;
  /** Sender's clock, ms since the epoch: for logs and metrics only, never trusted for ordering. */
  ts: number;
}

/** A peer asks the coordinator to join. Sent before the peer knows the run, so it has no run fields. */
export interface JoinRequest {
  v: number;
  type: 'join';
  /** Bearer token that admits the peer (1–256 characters). */
  token: string;
  kind: PeerKind;
  /** The TensorFlow.js backend the peer got ('tensorflow', 'webgpu', 'wasm', 'cpu', …). */
  backend: string;
  /** Measured training throughput, so the coordinator can size the peer's share of each round. */
  tokensPerSec: number;
  sender: string;
}

/** The coordinator admits a peer: the run's config and where the peer joins. */
export interface Welcome extends RunScoped {
  type: 'welcome';
  /** The run config (JSON-like); the engine validates its contents, the protocol only its shape. */
  config: unknown;
  /** The run's round when the peer was admitted. */
  round: number;
  /** The slot the coordinator gave the peer in the run. */
  slot: number;
  /** The training shards (manifest file names) this peer trains on, assigned in proportion to its speed. */
  shards: string[];
}

/** The coordinator refuses a join (bad token, run full, incompatible backend); the reason is for humans. */
export interface Refused {
  v: number;
  type: 'refused';
  reason: string;
}

/** Periodic liveness and progress from every peer. */
export interface Heartbeat extends RunScoped {
  type: 'heartbeat';
  round: number;
  step: number;
  tokensPerSec: number;
  kind: PeerKind;
  backend: string;
  /** Where this peer listens (multiaddrs without /p2p): how the other participants reach it for averaging. */
  addrs: string[];
}

/** The coordinator starts a round (or a retry of it, `attempt` > 0): who takes part and how much each does. */
export interface RoundAnnounce extends RunScoped {
  type: 'round';
  round: number;
  attempt: number;
  /** Distinct peer ids, in all-reduce order. */
  participants: string[];
  /** Micro-batches each participant computes, index for index with `participants`. */
  microBatches: number[];
  /** Round deadline in milliseconds. */
  deadlineMs: number;
  /** Hash of the parameters every participant must hold before the round (hashFloats, 8 hex digits). */
  paramHash: string;
}

/**
 * One frame of a tensor: `values` cover [offset, offset + values.length) of chunk `chunk`, whose full length
 * is `total` elements. `weight` is the number of samples behind the values (for weighted means).
 */
export interface TensorPart extends RunScoped {
  type: 'part';
  round: number;
  attempt: number;
  phase: TensorPhase;
  chunk: number;
  offset: number;
  total: number;
  weight: number;
  values: Float32Array;
}

/** A participant finished a round: its parameter hash after the update, and its loss over `samples`. */
export interface RoundDone extends RunScoped {
  type: 'done';
  round: number;
  attempt: number;
  paramHash: string;
  loss: number;
  samples: number;
}

/** A (re)joining peer asks another for the current parameters and optimizer state. */
export interface StateRequest extends RunScoped {
  type: 'state-request';
}

/**
 * Header of a state transfer; TensorPart frames with phase 'state' follow on the same stream, carrying
 * `params` parameter elements and `optimizer` optimizer elements (m and v together; 0 when not sent).
 */
export interface StateHeader extends RunScoped {
  type: 'state';
  round: number;
  step: number;
  paramHash: string;
  params: number;
  optimizer: number;
}

/** A peer leaves the run on purpose, so the coordinator need not wait for its heartbeats to stop. */
export interface Leave extends RunScoped {
  type: 'leave';
  reason: string;
}

/** The coordinator tells `target` its parameters diverged and it must fetch state again. */
export interface Resync extends RunScoped {
  type: 'resync';
  target: string;
  reason: string;
}

/** A peer asks for a data shard (by its manifest file name). */
export interface DataRequest extends RunScoped {
  type: 'data-request';
  file: string;
}

/** One frame of a shard: `bytes` cover [offset, offset + bytes.length) of a file of `total` bytes. */
export interface DataPart extends RunScoped {
  type: 'data';
  file: string;
  offset: number;
  total: number;
  bytes: Uint8Array;
}

export type Message =
  | JoinRequest
  | Welcome
  | Refused
  | Heartbeat
  | RoundAnnounce
  | TensorPart
  | RoundDone
  | StateRequest
  | StateHeader
  | Leave
  | Resync
  | DataRequest
  | DataPart;
