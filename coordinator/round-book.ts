/**
 * The round book: which round the run is at, the attempt in flight (its participants, deadline, and the
 * participants named as the cause when it is abandoned), attempt numbers that never repeat, and the record of
 * every finished round — contributions, tokens, and the training loss from the participants' reports, which
 * arrive just after the round ('round:done' fires when the last one is in).
 *
 * Round drivers (data-parallel, pipeline) run attempts through it; membership tells it when a participant is
 * lost; it never talks to the network.
 */
import { deadline, type Deadline } from '../net/deadline.ts';
import type { Clock, Logger } from '../net/types.ts';
import type { RunStore } from './run-store.ts';

/** Attempt numbers are offset by the coordinator's session (epoch) times this. */
export const ATTEMPTS_PER_EPOCH = 1_000_000;
/** Finished rounds whose loss reports are still awaited, at most (older ones are forgotten). */
const REPORT_WINDOW_ROUNDS = 16;
/** Validation losses kept for 'round:done' events. */
const VAL_LOSS_WINDOW_ROUNDS = 64;
/** How often settle() looks whether every report is in. */
const SETTLE_POLL_MS = 50;

export interface RoundRecord {
  round: number;
  loss: number;
  valLoss?: number;
}

export interface Contribution {
  peer: string;
  samples: number;
  loss: null;
  stage?: number;
}

/** One attempt of a round, as a driver runs it. */
export interface AttemptHandle {
  round: number;
  attempt: number;
  participants: string[];
  /** Aborts at the deadline, when a participant is lost, or when the coordinator stops. */
  signal: AbortSignal;
  /** Participants named as the cause when the attempt was abandoned. */
  failed: Set<string>;
}

export interface RoundBookDeps {
  store: RunStore;
  clock: Clock;
  log: Logger;
  /** Receives 'round:done' (detail: RoundRecord). */
  events: EventTarget;
}

export class RoundBook {
  /** The round about to run (or running). */
  round = 0;
  private nextAttemptId = 0;
  private current?: AttemptHandle & { abort: AbortController; limit: Deadline };
  private readonly doneLosses = new Map<number, Array<{ loss: number; samples: number }>>();
  /** Participants of recently finished rounds, until every report is in. */
  private readonly participantsOf = new Map<number, number>();
  private readonly valLossOf = new Map<number, number>();

  constructor(private readonly d: RoundBookDeps) {}

  /** A new coordinator session: its attempt numbers start past every earlier session's. */
  openSession(): void {
    const epoch = Number(this.d.store.getMeta('epoch') ?? -1) + 1;
    this.d.store.setMeta('epoch', String(epoch));
    this.nextAttemptId = epoch * ATTEMPTS_PER_EPOCH;
  }

  /** The round resumed from a checkpoint: rounds recorded after it are gone. */
  resumeAt(round: number): void {
    this.round = round;
    this.d.store.truncateAfter(round - 1);
  }

  /** Participants of the attempt in flight (none between attempts). */
  get inFlight(): string[] {
    return this.current?.participants ?? [];
  }

  /**
   * Starts an attempt of the current round with `participants`: a fresh attempt number (never repeated — a peer
   * may still hold parts of an earlier one), a deadline, and the reports of earlier attempts discarded.
   */
  beginAttempt(participants: string[], timeoutMs: number, stopping: AbortSignal): AttemptHandle {
    this.endAttempt();
    const round = this.round;
    const abort = new AbortController();
    const limit = deadline(timeoutMs, abort.signal, stopping);
    this.participantsOf.set(round, participants.length);
    this.participantsOf.delete(round - REPORT_WINDOW_ROUNDS);
    this.doneLosses.delete(round); // reports of an earlier, failed attempt do not count
    this.current = { round, attempt: this.nextAttemptId++, participants, signal: limit.signal, failed: new Set(), abort, limit };
    return this.current;
  }

  /** Ends the attempt in flight (done or given up): its deadline timer stops. */
  endAttempt(): void {
    this.current?.limit.clear();
    this.current = undefined;
  }

  /** Abandons the attempt in flight when `peer` takes part in it (and only then), naming it as the cause. */
  failParticipant(peer: string, why: string): void {
    const cur = this.current;
    if (!cur || !cur.participants.includes(peer)) return;
    cur.failed.add(peer);
    cur.abort.abort(new Error(`participant ${peer.slice(-8)} ${why}`));
  }

  /** Abandons the attempt in flight, whoever takes part. */
  abortAttempt(why: string): void {
    this.current?.abort.abort(new Error(why));
  }

  /**
   * Records the round whose step was taken and moves to the next: its contributions, tokens, and the loss of
   * the reports that beat us here.
   */
  finish(contributions: Contribution[], tokens: number, participants: number): number {
    const round = this.round;
    this.round = round + 1;
    const early = this.doneLosses.get(round) ?? [];
    const earlySamples = early.reduce((a, r) => a + r.samples, 0);
    const earlyLoss = earlySamples ? early.reduce((a, r) => a + r.loss * r.samples, 0) / earlySamples : null;
    this.d.store.recordRound(round, contributions, { loss: earlyLoss, valLoss: null, tokens, participants, at: this.d.clock.now() });
    return round;
  }

  /**
   * A participant's loss report of a finished round: the round's training loss is the sample-weighted mean of
   * them; 'round:done' fires when the last one is in.
   */
  recordLoss(round: number, loss: number, samples: number): void {
    const expected = this.participantsOf.get(round);
    if (expected === undefined) return; // not a round we finished (or one long gone)
    const reports = this.doneLosses.get(round) ?? [];
    reports.push({ loss, samples });
    this.doneLosses.set(round, reports);
    const total = reports.reduce((a, r) => a + r.samples, 0);
    const mean = reports.reduce((a, r) => a + r.loss * r.samples, 0) / Math.max(1, total);
    this.d.store.setLoss(round, mean);
    if (reports.length === expected) {
      this.doneLosses.delete(round);
      this.participantsOf.delete(round);
      this.d.events.dispatchEvent(new CustomEvent('round:done', { detail: { round, loss: mean, valLoss: this.valLossOf.get(round) } satisfies RoundRecord }));
    }
  }

  recordValLoss(round: number, valLoss: number): void {
    this.d.store.setValLoss(round, valLoss);
    this.valLossOf.set(round, valLoss);
    this.valLossOf.delete(round - VAL_LOSS_WINDOW_ROUNDS);
  }

  /** Waits (up to `ms`) for the participants' loss reports of the rounds already finished. */
  async settle(ms: number, signal?: AbortSignal): Promise<void> {
    const until = this.d.clock.now() + ms;
    while (this.participantsOf.size > 0 && this.d.clock.now() < until && !signal?.aborted) await new Promise((r) => setTimeout(r, SETTLE_POLL_MS));
  }
}
