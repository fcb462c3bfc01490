/**
 * A PeerMode is what a peer does in rounds of one parallelism: data-parallel (a whole-model replica that
 * averages gradients or pseudo-gradients) or stage (one pipeline stage). The runtime (peer.ts) joins, keeps the
 * heartbeat, routes gossip and serialises work; the mode owns everything about the rounds. A new kind of peer
 * work (an auditor, a compressed-update peer) is a new mode, not a branch in the runtime.
 */
import type { Batch } from '../engine/trainer.ts';
import type { AllReduce } from '../net/averaging/allreduce.ts';
import type { RunState } from '../net/state-sync.ts';
import type { Clock, Libp2pLike, Logger } from '../net/types.ts';
import type { Envelope, Message } from '../protocol/index.ts';
import type { RunConfig } from '../run/config.ts';

/** What the runtime gives a mode. */
export interface PeerModeContext {
  libp2p: Libp2pLike & { dial(addr: never, o?: { signal?: AbortSignal }): Promise<unknown> };
  config: RunConfig;
  runId: string;
  configHash: string;
  me: string;
  log: Logger;
  clock: Clock;
  /** The coordinator's peer id (it changes only across a reconnect to a restarted coordinator). */
  coordinator(): string;
  /** Whether `peer` may send us parts (the coordinator and the participants of announced rounds). */
  isAdmitted(peer: string): boolean;
  /** The envelope of a message sent now. */
  envelope(): Envelope;
  /** Publishes on the peers' topic (done reports, pipe errors). */
  publish(msg: Message): Promise<void>;
  /** Runs `task` after everything queued before it (rounds and state fetches never overlap). */
  enqueue(task: () => Promise<void>): void;
  /** Our state does not match the run: fetch it again (once, however often asked). */
  requestSync(why: string): void;
  /** We cannot take part as we are: leave and join again (the coordinator retries without us meanwhile). */
  rejoin(why: string): Promise<void>;
  /** The k-th micro-batch of this peer in `round` and inner step `inner` (seed, round, slot, inner, k). */
  batchAt(round: number, inner: number, k: number): Batch;
  /**
   * A new averaging service of this peer for vectors of `size` (on `protocol`, default the run's); `round()` is
   * the round this peer is at (older parts are replays).
   */
  averaging(size: number, round: () => number, protocol?: string): AllReduce;
  /** The runtime's shutdown signal. */
  stopping: AbortSignal;
  /** A round this peer contributed to is done: `tokens` it computed. */
  contributed(tokens: number): void;
}

export interface PeerMode {
  /** The next round this peer can take part in (its state is that of the start of this round). */
  readonly round: number;
  /** Measured training speed (whole-model tokens/s), as reported in heartbeats. */
  readonly speed: number;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** The coordinator may have restarted its rounds: drop whatever is in flight or buffered. */
  reset(why: string): void;
  /** Adopts the state the coordinator served. */
  adopt(s: RunState): Promise<void>;
  /** A message of the coordinator on the control topic (announcements, commits). */
  onControl(msg: Message): void;
}
