/**
 * A RoundDriver runs a run's rounds in one parallelism: data-parallel (sync, DiLoCo) or pipeline. The
 * coordinator composes the collaborators every driver uses — membership, the round book, the state server, the
 * model replica, the control channel — and hands them over as a RoundContext; a driver reaches the coordinator
 * through nothing else. A new way to run a round (rounds that close with whoever made the deadline, audited
 * rounds) is a new driver, not a branch in the loop.
 */
import type { AllReduce } from '../net/averaging/allreduce.ts';
import type { RunState } from '../net/state-sync.ts';
import type { Clock, Libp2pLike, Logger } from '../net/types.ts';
import type { JoinRequest, PipelineError, RejectReason, RoundDone } from '../protocol/index.ts';
import type { RunConfig } from '../run/config.ts';
import type { PipelineReport } from '../run/status-report.ts';
import type { ControlChannel } from './control-channel.ts';
import type { Membership } from './membership.ts';
import type { ModelReplica } from './model-replica.ts';
import type { Contribution, RoundBook } from './round-book.ts';
import type { StateServer } from './state-server.ts';

/** Announcements are re-published this often until the round completes (gossip may miss a new subscriber). */
export const REANNOUNCE_MS = 1_000;
/** How long a round loop waits before looking again when no round can start. */
export const IDLE_POLL_MS = 250;

export interface RoundContext {
  config: RunConfig;
  libp2p: Libp2pLike;
  log: Logger;
  clock: Clock;
  members: Membership;
  book: RoundBook;
  states: StateServer;
  replica: ModelReplica;
  control: ControlChannel;
  /** A new averaging service of the coordinator for vectors of `size` (on `protocol`, default the run's). */
  averaging(size: number, protocol?: string): AllReduce;
  /** Stop after this round (tests and the demo); undefined runs until stopped. */
  maxRounds?: number;
  /** Whether a round may start with `ready` peers: the session's first waits for --min-peers of them. */
  enoughToStart(ready: number): boolean;
  /** Waits `ms`, or less when a peer is admitted or asks for state, or the coordinator stops. */
  idle(ms: number): Promise<void>;
  /** Counts a rejected message against its sender. */
  reject(reason: RejectReason, from: string, detail: string): void;
  /** Book-keeping of a round whose step is taken: records it, evaluates and checkpoints when due. */
  roundFinished(participants: string[], contributions: Contribution[], tokens: number): Promise<void>;
}

export interface RoundDriver {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Runs rounds until `signal` aborts or maxRounds is reached. */
  run(signal: AbortSignal): Promise<void>;
  /** The state a peer fetching it gets (called between rounds). */
  stateFor(peer: string): Promise<RunState>;
  /** A member asked for the state. */
  onStateRequest(peer: string): void;
  /** Why this driver can use no peer joining with this request (its join is refused), or undefined. */
  admissionRefusal(join: JoinRequest): string | undefined;
  /** A participant's report of a round it finished. */
  onDone(done: RoundDone, from: string): void;
  /** A stage peer's report of a failed micro-batch (pipeline runs). */
  onPipeError(e: PipelineError, from: string): void;
  /** The driver's part of /api/status. */
  status(): PipelineReport | undefined;
}
