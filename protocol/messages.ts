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
  'pipe-round',
  'activation',
  'act-part',
  'pipe-error',
  'pipe-commit',
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
  /** Memory the peer offers for the model, in MiB: the pipeline planner gives it a stage that fits. */
  memoryMB: number;
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
  /**
   * The model parts [stageFrom, stageTo) the state covers: the whole model for a data-parallel peer, one
   * pipeline stage for a stage peer (the coordinator serves the stage its plan gives the peer).
   */
  stageFrom: number;
  stageTo: number;
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

/** One stage of a pipeline round: the model parts [from, to) and who serves them (indices into participants). */
export interface PipelineStage {
  from: number;
  to: number;
  peers: number[];
}

/**
 * The coordinator starts a pipeline round (or a retry, `attempt` > 0). Micro-batch m flows through the peers
 * `routes[m]` (one participant index per stage; routes[m][0] is its driver, which samples the batch), so every
 * stage peer knows which micro-batches it will see; `stageHashes[s]` is the hash of stage s's parameters at
 * the round's start.
 */
export interface PipelineAnnounce extends RunScoped {
  type: 'pipe-round';
  round: number;
  attempt: number;
  participants: string[];
  stages: PipelineStage[];
  routes: number[][];
  deadlineMs: number;
  stageHashes: string[];
  /**
   * The commit of the round before (null when there is none in this session): a peer that missed that
   * commit on gossip, or gets this announcement first, can still apply it.
   */
  previous: { attempt: number; gradNorm: number } | null;
}

/**
 * Header of one micro-batch's tensor on the pipeline stream, followed by `act-part` frames with `elements`
 * values. Forward (to the next stage): the activations [B, T, C], with the batch's targets (and masked-LM
 * weights, empty for the causal objective) riding along for the last stage. Backward (the answer): the
 * gradient w.r.t. those activations, with the micro-batch's loss from the last stage.
 */
export interface ActivationHeader extends RunScoped {
  type: 'activation';
  round: number;
  attempt: number;
  micro: number;
  /** The stage the receiver serves (forward), or the stage that answers (backward). */
  stage: number;
  direction: 'forward' | 'backward';
  B: number;
  T: number;
  C: number;
  dtype: 'float32' | 'float16';
  loss: number;
  targets: Int32Array;
  weights: Float32Array;
}

/** Values [offset, offset + values.length) of a micro-batch's activation or gradient of `total` elements. */
export interface ActivationPart extends RunScoped {
  type: 'act-part';
  round: number;
  attempt: number;
  micro: number;
  offset: number;
  total: number;
  /** float32 values, or float16 bit patterns when the run sends activations as fp16. */
  values: Float32Array | Uint16Array;
}

/** A micro-batch could not pass a stage: `failed` names the peer that did not answer ('' when unknown). */
export interface PipelineError extends RunScoped {
  type: 'pipe-error';
  round: number;
  attempt: number;
  micro: number;
  failed: string;
  reason: string;
}

/**
 * Every stage's averaged gradients reached the coordinator: participants of (round, attempt) apply them,
 * clipped with this global norm (each stage only sees its own slice of the gradient). Without a commit
 * nothing of the attempt is applied.
 */
export interface PipelineCommit extends RunScoped {
  type: 'pipe-commit';
  round: number;
  attempt: number;
  gradNorm: number;
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
  | DataPart
  | PipelineAnnounce
  | ActivationHeader
  | ActivationPart
  | PipelineError
  | PipelineCommit;
