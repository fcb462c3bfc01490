/**
 * Pipeline rounds: the coordinator plans stages and swarms (stage-planner.ts), routes every round's
 * micro-batches through one peer per stage, observes each stage's averaging (and the tied embedding's), steps
 * its whole-model replica with the assembled gradient and commits the round with the global gradient norm,
 * which every stage peer needs for clipping.
 *
 * Faults: a stage peer that dies or stalls fails the attempt; nothing of it is applied anywhere (peers apply
 * only on a commit). The round is re-planned without the peer and all its micro-batches are routed again
 * through the survivors (counted in the status); a stage left without peers takes one from a stage that has
 * several, which first fetches its new stage's state.
 */
import { hashFloats } from '../engine/averaging.ts';
import { assembleModelGradient, joinStageGradient, stageSlices, tiedPrefix } from '../engine/pipeline-gradients.ts';
import { stageManifest } from '../engine/stage-trainer.ts';
import { partNames } from '../engine/model.ts';
import { AllReduceAbortedError, type AllReduce } from '../net/averaging/allreduce.ts';
import type { RunState } from '../net/state-sync.ts';
import { stageAllreduceProtocol, type JoinRequest, type PipelineAnnounce, type PipelineError, type RoundDone } from '../protocol/index.ts';
import { averagingGroups } from '../run/pipeline-groups.ts';
import type { PipelineReport } from '../run/status-report.ts';
import { partCosts } from './pipeline/partition.ts';
import type { PipelinePlan } from './pipeline/plan-types.ts';
import { everyoneRouted, routeMicroBatches } from './pipeline/routing.ts';
import { StagePlanner } from './pipeline/stage-planner.ts';
import { IDLE_POLL_MS, REANNOUNCE_MS, type RoundContext, type RoundDriver } from './round-driver.ts';

/** Expected stage hashes kept for checking late 'done' reports. */
const HASH_WINDOW_ROUNDS = 8;
/** Pause before retrying an attempt that failed with no one to blame. */
const BLAMELESS_RETRY_MS = 500;
/** Gossip gives no delivery promise: a commit is repeated after these delays (peers keep the first). */
const COMMIT_REPEATS_MS = [300, 1_000, 3_000];

export class PipelineDriver implements RoundDriver {
  private readonly planner: StagePlanner;
  private failedAttempts = 0;
  /** Micro-batches of failed attempts, routed again in the retry. */
  private reroutedMicroBatches = 0;
  private readonly groups = new Map<number, AllReduce>();
  private readonly hashAfter = new Map<number, Map<string, string>>();
  private early: Array<{ round: number; peer: string; hash: string }> = [];
  private startHashes?: { round: number; ranges: string; hashes: string[] };
  /** The last committed round: repeated in the next announcement for peers that missed its commit. */
  private lastCommit?: { round: number; attempt: number; gradNorm: number };
  /** Owners of chunks that never arrived in the last failed attempt (any group). */
  private lastMissing: string[] = [];
  private lastWait = '';
  private readonly commitTimers = new Set<ReturnType<typeof setTimeout>>();

  constructor(private readonly c: RoundContext) {
    this.planner = new StagePlanner(c);
  }

  async start(): Promise<void> {
    this.planner.start();
  }

  async stop(): Promise<void> {
    this.planner.stop();
    for (const t of this.commitTimers) clearTimeout(t);
    this.commitTimers.clear();
    for (const g of this.groups.values()) await g.stop();
    this.groups.clear();
  }

  private get model() {
    return this.c.config.model;
  }

  private group(g: number): AllReduce {
    let ar = this.groups.get(g);
    if (!ar) {
      ar = this.c.averaging(this.c.replica.manifest.totalSize, stageAllreduceProtocol(g));
      this.groups.set(g, ar);
      void ar.start();
    }
    return ar;
  }

  admissionRefusal(join: JoinRequest): string | undefined {
    return this.planner.memoryRefusal(join.memoryMB);
  }

  onStateRequest(peer: string): void {
    // A stage peer that asks for state cannot finish the round in flight: retry it now, not at its deadline.
    this.c.book.failParticipant(peer, 'is fetching its state');
  }

  stateFor(peer: string): Promise<RunState> {
    return this.planner.stateFor(peer);
  }

  onDone(done: RoundDone, from: string): void {
    this.checkHash(done.round, from, done.paramHash);
  }

  /**
   * A stage peer names the peer its micro-batches could not pass (or itself, when it cannot contribute):
   * leave that one out of the retry rather than wait out the round's deadline.
   */
  onPipeError(e: PipelineError, from: string): void {
    const { c } = this;
    if (e.round !== c.book.round) return;
    const culprit = e.failed && c.book.inFlight.includes(e.failed) ? e.failed : from;
    c.log.warn(`round ${e.round}: ${from.slice(-8)} reports ${culprit === from ? 'it cannot contribute' : `${culprit.slice(-8)} failed`}: ${e.reason}`);
    c.book.failParticipant(culprit, 'failed a micro-batch');
  }

  private resync(peer: string, why: string): void {
    this.c.members.unsync(peer);
    this.c.control.resync(peer, why);
  }

  /**
   * Checks a peer's reported stage hash after `round`; a report that beats the coordinator's own hashing
   * (a small stage applies faster than the whole model is hashed) waits for it.
   */
  private checkHash(round: number, peer: string, hash: string): void {
    const expected = this.hashAfter.get(round)?.get(peer);
    if (expected === undefined) {
      if (round >= this.c.book.round - 1) this.early.push({ round, peer, hash });
      return;
    }
    if (expected !== hash) this.resync(peer, `stage parameter hash ${hash} after round ${round}, expected ${expected}`);
  }

  async run(signal: AbortSignal): Promise<void> {
    const { c, planner } = this;
    let lastRound = -1;
    while (!signal.aborted && (c.maxRounds === undefined || c.book.round < c.maxRounds)) {
      if (c.book.round !== lastRound) {
        planner.excluded.clear();
        lastRound = c.book.round;
      }
      await c.states.serveQueued((p) => this.stateFor(p), (p) => this.served(p));
      c.members.dropSilent();
      planner.replan('membership');
      const plan = planner.plan!;
      const ready = plan.stages.map((s) => s.peers.filter((id) => planner.isReady(c.members.get(id), s)));
      if (planner.waiting || ready.some((r) => r.length === 0) || !c.enoughToStart(ready.flat().length)) {
        const why = planner.waiting ?? `ready per stage: ${ready.map((r) => r.length).join('/')}`;
        if (why !== this.lastWait) c.log.debug(`round ${c.book.round} waits: ${why}`);
        this.lastWait = why;
        await c.idle(IDLE_POLL_MS);
        continue;
      }
      const participants = ready.flat().sort((a, b) => c.members.get(a)!.slot - c.members.get(b)!.slot);
      const readyPlan: PipelinePlan = { stages: plan.stages.map((s, i) => ({ ...s, peers: ready[i] })) };
      const { ok, attempt, failedPeers } = await this.runAttempt(participants, readyPlan, signal);
      if (ok) continue;
      this.failedAttempts++;
      const failed = participants.filter((p) => failedPeers.has(p) || !c.members.isConnected(p) || !c.members.has(p));
      const culprits = failed.length ? failed : this.lastMissing;
      if (culprits.length === 0 || culprits.length === participants.length) {
        c.log.warn(`round ${c.book.round} attempt ${attempt} failed with no one to blame; retrying`);
        await c.idle(BLAMELESS_RETRY_MS);
        continue;
      }
      c.log.warn(`round ${c.book.round} attempt ${attempt} failed; re-planning without ${culprits.map((p) => p.slice(-8)).join(', ')}`);
      for (const p of culprits) {
        planner.excluded.add(p);
        // Alive but failed: it fetches the state again (then it is back in the plan) — unless it already is.
        if (c.members.has(p) && c.members.isConnected(p) && !c.states.awaiting(p)) this.resync(p, `failed round ${c.book.round} attempt ${attempt}`);
      }
    }
  }

  private served(peer: string): void {
    const m = this.c.members.get(peer);
    if (m) m.syncedRound = this.c.book.round;
  }

  private async runAttempt(ready: string[], readyPlan: PipelinePlan, stopping: AbortSignal): Promise<{ ok: boolean; attempt: number; failedPeers: Set<string> }> {
    const { c, planner, model } = this;
    const round = c.book.round;
    const t = c.config.train;
    const S = readyPlan.stages.length;
    const M = t.batchSize / t.microBatchSize;
    const members = new Map(ready.map((id) => [id, planner.planMember(c.members.get(id)!)]));
    const routed = everyoneRouted(readyPlan, ready, routeMicroBatches(readyPlan, ready, members, partCosts(model), M, t.microBatchSize * t.seqLen));
    // A peer no micro-batch is routed through sits this round out (it has nothing to average, so it could not
    // take the step): it stays in sync and is routed again next round.
    const used = new Set(routed.flat());
    const participants = ready.filter((_, i) => used.has(i));
    const plan: PipelinePlan = { stages: readyPlan.stages.map((s) => ({ ...s, peers: s.peers.filter((id) => participants.includes(id)) })) };
    const renumber = new Map(ready.map((id, i) => [i, participants.indexOf(id)]));
    const routes = routed.map((r) => r.map((i) => renumber.get(i)!));
    const ranges = plan.stages.map((s) => ({ from: s.from, to: s.to }));
    // The hashes of the round's starting state: computed at the end of the last round when the plan is the same.
    const rangesKey = JSON.stringify(ranges);
    const stageHashes =
      this.startHashes?.round === round && this.startHashes.ranges === rangesKey
        ? this.startHashes.hashes
        : stageSlices(model, c.replica.manifest, ranges, await c.replica.params()).map(hashFloats);
    const index = new Map(participants.map((id, i) => [id, i]));
    const timeoutMs = c.config.roundTimeoutSec * 1000;
    const a = c.book.beginAttempt(participants, timeoutMs, stopping);
    const announcement: PipelineAnnounce = {
      ...c.control.envelope(),
      type: 'pipe-round',
      round,
      attempt: a.attempt,
      participants,
      stages: plan.stages.map((s) => ({ from: s.from, to: s.to, peers: s.peers.map((id) => index.get(id)!) })),
      routes,
      deadlineMs: timeoutMs,
      stageHashes,
      previous: this.lastCommit?.round === round - 1 ? { attempt: this.lastCommit.attempt, gradNorm: this.lastCommit.gradNorm } : null,
    };
    const groups = averagingGroups(announcement);
    const ownSize = ranges.map((r) => stageManifest(model, r).totalSize - tiedPrefix(model, r, S));
    const tiedSize = S > 1 ? model.vocabSize * model.nEmbd : 0;
    const announce = () => c.control.publish({ ...announcement, ts: c.clock.now() });
    await announce();
    c.log.debug(`round ${round} attempt ${a.attempt}: ${participants.length} participant(s), stages ${plan.stages.map((s) => s.peers.map((p) => p.slice(-6)).join(',')).join(' | ')}`);
    const timer = setInterval(() => void announce(), REANNOUNCE_MS);
    let own: Float32Array[];
    let tied: Float32Array | undefined;
    try {
      const observed = groups.stages.map((ids, s) => this.group(s).observe(round, a.attempt, ids, a.signal, ownSize[s]));
      if (tiedSize) observed.push(this.group(S).observe(round, a.attempt, groups.tied, a.signal, tiedSize));
      const results = await Promise.all(observed);
      own = results.slice(0, S);
      tied = tiedSize ? results[S] : undefined;
    } catch (err) {
      c.log.debug(`round ${round} attempt ${a.attempt}: averaging abandoned (${(err as Error).message})`);
      if (!(err instanceof AllReduceAbortedError)) c.log.warn(`round ${round} attempt ${a.attempt} failed: ${(err as Error).message}`);
      this.reroutedMicroBatches += M;
      const missing = new Set<string>();
      groups.stages.forEach((ids, s) => {
        const got = new Set(this.group(s).gatheredChunks(round, a.attempt, ids, ownSize[s]));
        ids.forEach((id, j) => got.has(j) || missing.add(id));
      });
      this.lastMissing = [...missing];
      return { ok: false, attempt: a.attempt, failedPeers: a.failed };
    } finally {
      clearInterval(timer);
      c.book.endAttempt();
    }
    // Every stage's average is in: step the whole model, then commit with the norm the stages clip by.
    const joined = ranges.map((r, s) => joinStageGradient(model, r, S, own[s], tied));
    const grad = assembleModelGradient(model, c.replica.manifest, ranges, joined);
    const { gradNorm = 0 } = await c.replica.update.apply(grad);
    await this.commit(round, a.attempt, gradNorm);
    // The hashes peers must report, computed while they apply (off the round's critical path).
    const after = stageSlices(model, c.replica.manifest, ranges, await c.replica.params()).map(hashFloats);
    const expected = new Map<string, string>();
    plan.stages.forEach((s, i) => s.peers.forEach((id) => expected.set(id, after[i])));
    this.hashAfter.set(round, expected);
    this.hashAfter.delete(round - HASH_WINDOW_ROUNDS);
    this.startHashes = { round: round + 1, ranges: rangesKey, hashes: after };
    const early = this.early.filter((e) => e.round === round);
    this.early = [];
    for (const e of early) this.checkHash(e.round, e.peer, e.hash);
    const micros = new Map<string, number>();
    for (const r of routes) for (const p of r) micros.set(participants[p], (micros.get(participants[p]) ?? 0) + 1);
    const stageOf = new Map(plan.stages.flatMap((s, i) => s.peers.map((id) => [id, i] as const)));
    for (const id of ready.filter((p) => !participants.includes(p))) this.resync(id, `sat out round ${round} (more stage peers than micro-batches)`);
    await c.roundFinished(
      participants.filter((id) => c.members.has(id)),
      // A first-stage peer's samples are the sequences it sampled and drove (a replay recomputes them).
      participants.map((id) => ({ peer: id, samples: (micros.get(id) ?? 0) * t.microBatchSize, loss: null, stage: stageOf.get(id)! })),
      M * t.microBatchSize * t.seqLen,
    );
    return { ok: true, attempt: a.attempt, failedPeers: a.failed };
  }

  private async commit(round: number, attempt: number, gradNorm: number): Promise<void> {
    const { c } = this;
    const send = () => c.control.publish({ ...c.control.envelope(), type: 'pipe-commit', round, attempt, gradNorm });
    this.lastCommit = { round, attempt, gradNorm };
    await send();
    for (const ms of COMMIT_REPEATS_MS) {
      const timer = setTimeout(() => {
        this.commitTimers.delete(timer);
        void send();
      }, ms);
      this.commitTimers.add(timer);
    }
  }

  status(): PipelineReport {
    const p = this.c.config.pipeline!;
    return {
      requestedStages: p.stages,
      activationDtype: p.activationDtype,
      maxInFlight: p.maxInFlight,
      parts: partNames(this.model),
      stages: this.planner.describe(),
      waiting: this.planner.waiting ?? null,
      replans: this.planner.replans,
      failedAttempts: this.failedAttempts,
      reroutedMicroBatches: this.reroutedMicroBatches,
    };
  }
}


