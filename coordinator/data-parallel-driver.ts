/**
 * Data-parallel rounds (sync and DiLoCo): every peer holds the whole model. A round's participants are the
 * connected members in sync with it; the run's micro-batches are split among them by measured speed; the
 * coordinator announces the attempt and observes the averaging (it receives every averaged chunk, so its
 * replica takes the same step as the peers). If the averaging does not complete (a peer died or stalled), the
 * round is retried at once as a new attempt without the peers that failed: no round is lost.
 */
import { AllReduceAbortedError, type AllReduce } from '../net/averaging/allreduce.ts';
import type { RunState } from '../net/state-sync.ts';
import type { JoinRequest, RoundDone } from '../protocol/index.ts';
import { splitMicroBatches } from '../run/shares.ts';
import type { Member } from './membership.ts';
import { IDLE_POLL_MS, REANNOUNCE_MS, type RoundContext, type RoundDriver } from './round-driver.ts';

/** Expected parameter hashes kept for checking late 'done' reports. */
const HASH_WINDOW_ROUNDS = 8;

export class DataParallelDriver implements RoundDriver {
  private readonly allreduce: AllReduce;
  /** Hash of the global parameters at the start of the current round (announced; peers must match it). */
  private paramHash = '';
  private readonly hashAfter = new Map<number, string>();
  private stateCache?: { round: number; state: RunState };

  constructor(private readonly c: RoundContext) {
    this.allreduce = c.averaging(c.replica.manifest.totalSize);
  }

  async start(): Promise<void> {
    this.paramHash = await this.c.replica.paramHash();
    await this.allreduce.start();
  }

  async stop(): Promise<void> {
    await this.allreduce.stop();
  }

  admissionRefusal(_join: JoinRequest): string | undefined {
    return undefined; // every peer holds the whole model, whatever memory it offers
  }

  onStateRequest(): void {}

  onPipeError(): void {}

  status(): undefined {
    return undefined;
  }

  async stateFor(): Promise<RunState> {
    // Every peer fetching between the same two rounds gets the same state: read it once.
    const round = this.c.book.round;
    if (this.stateCache?.round !== round) this.stateCache = { round, state: await this.c.replica.state(round) };
    return this.stateCache.state;
  }

  onDone(done: RoundDone, from: string): void {
    const expected = this.hashAfter.get(done.round);
    if (expected && expected !== done.paramHash) {
      this.c.members.unsync(from);
      this.c.control.resync(from, `parameter hash ${done.paramHash} after round ${done.round}, expected ${expected}`);
    }
  }

  async run(signal: AbortSignal): Promise<void> {
    const { c } = this;
    while (!signal.aborted && (c.maxRounds === undefined || c.book.round < c.maxRounds)) {
      await c.states.serveQueued(() => this.stateFor(), (p) => this.served(p));
      let participants = c.members.ready(c.book.round);
      if (participants.length === 0 || !c.enoughToStart(participants.length)) {
        await c.idle(IDLE_POLL_MS);
        continue;
      }
      const totalMicro = c.config.train.batchSize / c.config.train.microBatchSize;
      while (participants.length > 0 && !signal.aborted) {
        const micro = splitMicroBatches(totalMicro, participants.map((m) => m.tokensPerSec));
        const { avg, attempt, failedPeers } = await this.runAttempt(participants.map((m) => m.id), micro, signal);
        if (avg) {
          await this.finishRound(participants, micro, avg);
          break;
        }
        // Retry without the peers that failed: those that left, were banned or disconnected, else the owners of
        // the chunks that never arrived.
        const ids = participants.map((m) => m.id);
        const gathered = new Set(this.allreduce.gatheredChunks(c.book.round, attempt, ids));
        let failed = participants.filter((m) => failedPeers.has(m.id) || !c.members.isConnected(m.id) || !c.members.has(m.id));
        if (failed.length === 0) failed = participants.filter((_, j) => !gathered.has(j));
        if (failed.length === 0) failed = participants; // nothing arrived at all: start over with whoever is ready
        for (const m of failed) m.syncedRound = -1;
        c.log.warn(`round ${c.book.round} attempt ${attempt} failed; retrying without ${failed.map((m) => m.id.slice(-8)).join(', ')}`);
        participants = participants.filter((m) => !failed.includes(m));
      }
    }
  }

  private served(peer: string): void {
    const m = this.c.members.get(peer);
    if (m) m.syncedRound = this.c.book.round;
  }

  private async runAttempt(participants: string[], micro: number[], stopping: AbortSignal): Promise<{ avg?: Float32Array; attempt: number; failedPeers: Set<string> }> {
    const { c } = this;
    const timeoutMs = c.config.roundTimeoutSec * 1000;
    const a = c.book.beginAttempt(participants, timeoutMs, stopping);
    const announce = () =>
      c.control.publish({
        ...c.control.envelope(),
        type: 'round',
        round: a.round,
        attempt: a.attempt,
        participants,
        microBatches: micro,
        deadlineMs: timeoutMs,
        paramHash: this.paramHash,
      });
    await announce();
    const timer = setInterval(() => void announce(), REANNOUNCE_MS);
    try {
      return { avg: await this.allreduce.observe(a.round, a.attempt, participants, a.signal), attempt: a.attempt, failedPeers: a.failed };
    } catch (err) {
      // Any failure of an attempt (a deadline, or a malformed chunk a peer managed to send) fails the attempt,
      // never the round loop.
      if (err instanceof AllReduceAbortedError) c.log.debug(`round ${a.round} attempt ${a.attempt}: ${err.message}`);
      else c.log.warn(`round ${a.round} attempt ${a.attempt} failed: ${(err as Error).message}`);
      return { attempt: a.attempt, failedPeers: a.failed };
    } finally {
      clearInterval(timer);
      c.book.endAttempt();
    }
  }

  private async finishRound(participants: Member[], micro: number[], avg: Float32Array): Promise<void> {
    const { c } = this;
    const round = c.book.round;
    await c.replica.update.apply(avg);
    this.paramHash = await c.replica.paramHash();
    this.hashAfter.set(round, this.paramHash);
    this.hashAfter.delete(round - HASH_WINDOW_ROUNDS);
    this.allreduce.forgetBefore(round + 1);
    const seqPerMicro = c.config.train.microBatchSize * (c.config.mode === 'diloco' ? c.config.innerSteps : 1);
    const contributions = participants.map((m, i) => ({ peer: m.id, samples: micro[i] * seqPerMicro, loss: null }));
    await c.roundFinished(
      participants.map((m) => m.id),
      contributions,
      contributions.reduce((s, x) => s + x.samples, 0) * c.config.train.seqLen,
    );
  }
}
