/**
 * The coordinator's side of a pipeline run: plans stages and swarms (re-planned as peers come and go), hands
 * each peer its stage's state, routes every round's micro-batches through one peer per stage, observes each
 * stage's averaging (and the tied embedding's), steps its whole-model replica with the assembled gradient and
 * commits the round with the global gradient norm, which every stage peer needs for clipping.
 *
 * Faults: a stage peer that dies or stalls fails the attempt; nothing of it is applied anywhere (peers apply
 * only on a commit). The round is re-planned without the peer and all its micro-batches are routed again
 * through the survivors (counted in the status); a stage left without peers takes one from a stage that has
 * several, which first fetches its new stage's state.
 */
import { peerIdFromString } from '@libp2p/peer-id';
import * as tf from '@tensorflow/tfjs-core';
import { hashFloats } from '../engine/averaging.ts';
import { assembleModelGradient, joinStageGradient, stageSlices, tiedPrefix } from '../engine/pipeline-gradients.ts';
import { gatherStage, stageManifest } from '../engine/stage-trainer.ts';
import { partNames } from '../engine/model.ts';
import { PROTOCOL_VERSION, stageAllreduceProtocol, type PipelineAnnounce } from '../protocol/index.ts';
import { AllReduce, AllReduceAbortedError } from '../net/averaging/allreduce.ts';
import { averagingGroups } from '../run/pipeline-groups.ts';
import { deadline } from '../net/deadline.ts';
import type { RunState } from '../net/state-sync.ts';
import { REANNOUNCE_MS, type Coordinator, type Member } from './coordinator.ts';
import { balancedStageRanges, describePlan, partCosts, planPipeline, routeMicroBatches, stageMemoryBytes, type PipelinePlan, type PlanMember } from './pipeline-plan.ts';

/** How often the coordinator measures its round-trip time to each peer (routing prefers close peers). */
const PING_EVERY_MS = 5_000;
/** Re-plans kept for the status page. */
const REPLANS_SHOWN = 20;

interface Replan {
  round: number;
  reason: string;
  stages: Array<{ stage: number; parts: string[]; peers: string[] }>;
}

export class PipelineRounds {
  plan?: PipelinePlan;
  waiting?: string;
  private readonly replans: Replan[] = [];
  failedAttempts = 0;
  /** Micro-batches of failed attempts, routed again in the retry. */
  reroutedMicroBatches = 0;
  private readonly groups = new Map<number, AllReduce>();
  private readonly hashAfter = new Map<number, Map<string, string>>();
  private early: Array<{ round: number; peer: string; hash: string }> = [];
  private startHashes?: { round: number; ranges: string; hashes: string[] };
  private smallestStage?: number;
  private readonly rtt = new Map<string, number>();
  private pinger?: ReturnType<typeof setInterval>;
  private stateCache?: { round: number; params: Float32Array; m: Float32Array; v: Float32Array; step: number };
  /** Peers the last attempt of this round failed on: left out of the retry (and told to resync). */
  private readonly excluded = new Set<string>();
  /** The last committed round: repeated in the next announcement for peers that missed its commit. */
  private lastCommit?: { round: number; attempt: number; gradNorm: number };

  constructor(private readonly c: Coordinator) {}

  start(): void {
    this.pinger = setInterval(() => void this.ping(), PING_EVERY_MS);
  }

  async stop(): Promise<void> {
    if (this.pinger) clearInterval(this.pinger);
    for (const g of this.groups.values()) await g.stop();
  }

  private get model() {
    return this.c.config.model;
  }

  private async ping(): Promise<void> {
    const ping = (this.c.d.libp2p.services as { ping?: { ping(p: unknown, o?: { signal?: AbortSignal }): Promise<number> } }).ping;
    if (!ping) return;
    for (const id of this.c.members.keys()) {
      try {
        this.rtt.set(id, await ping.ping(peerIdFromString(id), { signal: AbortSignal.timeout(2_000) }));
      } catch {
        // unreachable for now: its next heartbeat or the round will tell
      }
    }
  }

  private group(g: number): AllReduce {
    let ar = this.groups.get(g);
    if (!ar) {
      ar = new AllReduce({
        libp2p: this.c.d.libp2p,
        runId: this.c.d.info.runId,
        configHash: this.c.d.configHash,
        size: this.c.trainer.manifest.totalSize,
        protocol: stageAllreduceProtocol(g),
        isAdmitted: (p) => this.c.members.has(p),
        currentRound: () => this.c.round,
        maxPartNorm: this.c.config.maxPartNorm,
        onReject: (reason, from, detail) => this.c.reject(reason, from, detail),
        log: this.c.d.log,
      });
      this.groups.set(g, ar);
      void ar.start();
    }
    return ar;
  }

  private planMember(m: Member): PlanMember {
    return { id: m.id, tokensPerSec: m.tokensPerSec, memoryBytes: m.memoryMB * 2 ** 20, rttMs: this.rtt.get(m.id) ?? 0 };
  }

  /** Re-plans over the connected members; peers whose stage changed are told to fetch their new stage. */
  replan(reason: string): void {
    const members = [...this.c.members.values()].filter((m) => this.c.isConnected(m.id) && !this.excluded.has(m.id));
    const res = planPipeline(this.model, this.c.config.train, members.map((m) => this.planMember(m)), this.c.config.pipeline!.stages, this.plan);
    const key = (p?: PipelinePlan) => JSON.stringify(p?.stages ?? null);
    if (key(res.plan) !== key(this.plan)) {
      const entry = { round: this.c.round, reason, stages: describePlan(res.plan, this.model) };
      this.replans.push(entry);
      if (this.replans.length > REPLANS_SHOWN) this.replans.shift();
      this.c.d.log.info(`pipeline plan (${reason}): ${entry.stages.map((s) => `stage ${s.stage} [${s.parts[0]}..${s.parts[s.parts.length - 1]}] ${s.peers.map((p) => p.slice(-6)).join(',') || '(none)'}`).join(' | ')}`);
    }
    this.plan = res.plan;
    this.waiting = res.waiting;
    for (const id of res.moved) {
      const m = this.c.members.get(id);
      const s = res.plan.stages.find((st) => st.peers.includes(id))!;
      if (m?.holds && (m.holds.from !== s.from || m.holds.to !== s.to)) {
        m.syncedRound = -1;
        this.c.resync(id, `moved to the stage of parts [${s.from}, ${s.to})`);
      }
    }
  }

  /** Why a peer offering `memoryMB` could serve no stage of this run (its join is refused), or undefined. */
  memoryRefusal(memoryMB: number): string | undefined {
    if (this.smallestStage === undefined) {
      const p = this.c.config.pipeline!;
      const costs = partCosts(this.model);
      const counts = p.stages === 'auto' ? costs.map((_, i) => i + 1) : [p.stages];
      this.smallestStage = Math.min(...counts.flatMap((S) => balancedStageRanges(costs, S).map((r) => stageMemoryBytes(this.model, this.c.config.train, r))));
    }
    if (memoryMB * 2 ** 20 >= this.smallestStage) return undefined;
    return `the smallest stage of this run needs ${(this.smallestStage / 2 ** 20).toFixed(1)} MiB; this peer offers ${memoryMB} MiB (--memory)`;
  }

  /** The state of the stage the plan gives `peer` (called between rounds). */
  async stateFor(peer: string): Promise<RunState> {
    // Left out of a failed attempt, it is back once it has fetched the state: plan with it again.
    this.excluded.delete(peer);
    this.replan(`peer ${peer.slice(-6)} asks for its stage`);
    const stage = this.plan!.stages.find((s) => s.peers.includes(peer));
    if (!stage) throw new Error(`no stage of the plan fits peer ${peer.slice(-8)} (memory ${this.c.members.get(peer)?.memoryMB ?? 0} MiB)`);
    if (this.stateCache?.round !== this.c.round) {
      const s = await this.c.trainer.optimizer.exportState();
      this.stateCache = { round: this.c.round, params: await this.c.trainer.exportParams(), m: s.m, v: s.v, step: s.step };
    }
    const cache = this.stateCache;
    const range = { from: stage.from, to: stage.to };
    const sm = stageManifest(this.model, range);
    const full = this.c.trainer.manifest;
    const optimizer = new Float32Array(2 * sm.totalSize);
    optimizer.set(gatherStage(cache.m, full, sm));
    optimizer.set(gatherStage(cache.v, full, sm), sm.totalSize);
    const m = this.c.members.get(peer);
    if (m) m.holds = range;
    return { round: this.c.round, step: cache.step, params: gatherStage(cache.params, full, sm), optimizer, stageFrom: range.from, stageTo: range.to };
  }

  /**
   * Checks a peer's reported stage hash after `round`; a report that beats the coordinator's own hashing
   * (a small stage applies faster than the whole model is hashed) waits for it.
   */
  checkHash(round: number, peer: string, hash: string): void {
    const expected = this.hashAfter.get(round)?.get(peer);
    if (expected === undefined) {
      if (round >= this.c.round - 1) this.early.push({ round, peer, hash });
      return;
    }
    if (expected !== hash) this.c.resync(peer, `stage parameter hash ${hash} after round ${round}, expected ${expected}`);
  }

  private isReady(m: Member | undefined, s: { from: number; to: number }): boolean {
    return !!m && m.syncedRound === this.c.round && m.holds?.from === s.from && m.holds?.to === s.to && this.c.isConnected(m.id) && !this.excluded.has(m.id);
  }

  /** The round loop of a pipeline run (the coordinator's runLoop delegates here). */
  async loop(): Promise<void> {
    const c = this.c;
    let lastRound = -1;
    while (!c.abort.signal.aborted && (c.d.maxRounds === undefined || c.round < c.d.maxRounds)) {
      if (c.round !== lastRound) {
        this.excluded.clear();
        lastRound = c.round;
      }
      await c.serveQueuedState();
      c.readyParticipants(); // drops members silent for too long
      this.replan('membership');
      const plan = this.plan!;
      const ready = plan.stages.map((s) => s.peers.filter((id) => this.isReady(c.members.get(id), s)));
      if (this.waiting || ready.some((r) => r.length === 0) || !c.enoughToStart(ready.flat().length)) {
        const why = this.waiting ?? `ready per stage: ${ready.map((r) => r.length).join('/')}`;
        if (why !== this.lastWait) c.d.log.debug(`round ${c.round} waits: ${why}`);
        this.lastWait = why;
        await c.sleep(250);
        continue;
      }
      const participants = ready.flat().sort((a, b) => c.members.get(a)!.slot - c.members.get(b)!.slot);
      const readyPlan: PipelinePlan = { stages: plan.stages.map((s, i) => ({ ...s, peers: ready[i] })) };
      const attempt = c.nextAttempt++;
      const ok = await this.runAttempt(attempt, participants, readyPlan);
      if (ok) continue;
      this.failedAttempts++;
      const failed = participants.filter((p) => c.failedPeers.has(p) || !c.isConnected(p) || !c.members.has(p));
      const culprits = failed.length ? failed : this.lastMissing;
      if (culprits.length === 0 || culprits.length === participants.length) {
        c.d.log.warn(`round ${c.round} attempt ${attempt} failed with no one to blame; retrying`);
        await c.sleep(500);
        continue;
      }
      c.d.log.warn(`round ${c.round} attempt ${attempt} failed; re-planning without ${culprits.map((p) => p.slice(-8)).join(', ')}`);
      for (const p of culprits) {
        this.excluded.add(p);
        const m = c.members.get(p);
        // Alive but failed: it fetches the state again (then it is back in the plan) — unless it already is.
        if (m && c.isConnected(p) && !c.awaitingState(p)) {
          m.syncedRound = -1;
          c.resync(p, `failed round ${c.round} attempt ${attempt}`);
        }
      }
    }
  }

  /** Owners of chunks that never arrived in the last failed attempt (any group). */
  private lastMissing: string[] = [];
  private lastWait = '';

  private async runAttempt(attempt: number, ready: string[], readyPlan: PipelinePlan): Promise<boolean> {
    const c = this.c;
    const round = c.round;
    const model = this.model;
    const t = c.config.train;
    const S = readyPlan.stages.length;
    const M = t.batchSize / t.microBatchSize;
    const members = new Map(ready.map((id) => [id, this.planMember(c.members.get(id)!)]));
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
        : stageSlices(model, c.trainer.manifest, ranges, await c.trainer.exportParams()).map(hashFloats);
    const index = new Map(participants.map((id, i) => [id, i]));
    const a: PipelineAnnounce = {
      v: PROTOCOL_VERSION,
      type: 'pipe-round',
      runId: c.d.info.runId,
      configHash: c.d.configHash,
      sender: c.me,
      ts: c.d.clock.now(),
      round,
      attempt,
      participants,
      stages: plan.stages.map((s) => ({ from: s.from, to: s.to, peers: s.peers.map((id) => index.get(id)!) })),
      routes,
      deadlineMs: c.config.roundTimeoutSec * 1000,
      stageHashes,
      previous: this.lastCommit?.round === round - 1 ? { attempt: this.lastCommit.attempt, gradNorm: this.lastCommit.gradNorm } : null,
    };
    const groups = averagingGroups(a);
    const ownSize = ranges.map((r) => stageManifest(model, r).totalSize - tiedPrefix(model, r, S));
    const tiedSize = S > 1 ? model.vocabSize * model.nEmbd : 0;
    c.currentParticipants = participants;
    c.failedPeers.clear();
    c.participantsOf.set(round, participants.length);
    c.participantsOf.delete(round - 16);
    c.doneLosses.delete(round);
    c.roundAbort = new AbortController();
    const limit = deadline(c.config.roundTimeoutSec * 1000, c.roundAbort.signal, c.abort.signal);
    const signal = limit.signal;
    const announce = () => c.publish({ ...a, ts: c.d.clock.now() });
    await announce();
    c.d.log.debug(`round ${round} attempt ${attempt}: ${participants.length} participant(s), stages ${plan.stages.map((s) => s.peers.map((p) => p.slice(-6)).join(',')).join(' | ')}`);
    const timer = setInterval(() => void announce(), REANNOUNCE_MS);
    let own: Float32Array[];
    let tied: Float32Array | undefined;
    try {
      const observed = groups.stages.map((ids, s) => this.group(s).observe(round, attempt, ids, signal, ownSize[s]));
      if (tiedSize) observed.push(this.group(S).observe(round, attempt, groups.tied, signal, tiedSize));
      const results = await Promise.all(observed);
      own = results.slice(0, S);
      tied = tiedSize ? results[S] : undefined;
    } catch (err) {
      c.d.log.debug(`round ${round} attempt ${attempt}: averaging abandoned (${(err as Error).message})`);
      if (!(err instanceof AllReduceAbortedError)) c.d.log.warn(`round ${round} attempt ${attempt} failed: ${(err as Error).message}`);
      this.reroutedMicroBatches += M;
      const missing = new Set<string>();
      groups.stages.forEach((ids, s) => {
        const got = new Set(this.group(s).gatheredChunks(round, attempt, ids, ownSize[s]));
        ids.forEach((id, j) => got.has(j) || missing.add(id));
      });
      this.lastMissing = [...missing];
      return false;
    } finally {
      clearInterval(timer);
      limit.clear();
      c.currentParticipants = [];
    }
    // Every stage's average is in: step the whole model, then commit with the norm the stages clip by.
    const joined = ranges.map((r, s) => joinStageGradient(model, r, S, own[s], tied));
    const grad = assembleModelGradient(model, c.trainer.manifest, ranges, joined);
    const tensors = Object.fromEntries(c.trainer.manifest.entries.map((e) => [e.name, tf.tensor(grad.subarray(e.offset, e.offset + e.size), e.shape, 'float32')]));
    const { gradNorm } = await c.trainer.applyGradients(tensors);
    const commit = () => c.publish({ v: PROTOCOL_VERSION, type: 'pipe-commit', runId: c.d.info.runId, configHash: c.d.configHash, sender: c.me, ts: c.d.clock.now(), round, attempt, gradNorm });
    this.lastCommit = { round, attempt, gradNorm };
    await commit();
    // Gossip gives no delivery promise: repeat the commit a few times (peers keep the first).
    for (const ms of [300, 1_000, 3_000]) setTimeout(() => void commit(), ms);
    // The hashes peers must report, computed while they apply (off the round's critical path).
    const after = stageSlices(model, c.trainer.manifest, ranges, await c.trainer.exportParams()).map(hashFloats);
    const expected = new Map<string, string>();
    plan.stages.forEach((s, i) => s.peers.forEach((id) => expected.set(id, after[i])));
    this.hashAfter.set(round, expected);
    this.hashAfter.delete(round - 8);
    this.startHashes = { round: round + 1, ranges: rangesKey, hashes: after };
    const early = this.early.filter((e) => e.round === round);
    this.early = [];
    for (const e of early) this.checkHash(e.round, e.peer, e.hash);
    const micros = new Map<string, number>();
    for (const r of routes) for (const p of r) micros.set(participants[p], (micros.get(participants[p]) ?? 0) + 1);
    const stageOf = new Map(plan.stages.flatMap((s, i) => s.peers.map((id) => [id, i] as const)));
    for (const id of ready.filter((p) => !participants.includes(p))) {
      const m = c.members.get(id);
      if (m) m.syncedRound = -1;
      c.resync(id, `sat out round ${round} (more stage peers than micro-batches)`);
    }
    await c.roundFinished(
      participants.map((id) => c.members.get(id)!).filter(Boolean),
      // A first-stage peer's samples are the sequences it sampled and drove (a replay recomputes them).
      participants.map((id) => ({ peer: id, samples: (micros.get(id) ?? 0) * t.microBatchSize, loss: null, stage: stageOf.get(id)! })),
      M * t.microBatchSize * t.seqLen,
    );
    return true;
  }

  /** The pipeline section of /api/status. */
  status(): Record<string, unknown> {
    const p = this.c.config.pipeline!;
    return {
      requestedStages: p.stages,
      activationDtype: p.activationDtype,
      maxInFlight: p.maxInFlight,
      parts: partNames(this.model),
      stages: this.plan ? describePlan(this.plan, this.model) : [],
      waiting: this.waiting ?? null,
      replans: this.replans,
      failedAttempts: this.failedAttempts,
      reroutedMicroBatches: this.reroutedMicroBatches,
    };
  }
}

/**
 * Gives every stage peer at least one micro-batch where the stage has enough of them, taking one from the
 * stage's busiest peer (the greedy router may leave a slow peer out): a peer with none could not average, so
 * it would have to sit the round out and fetch the state again.
 */
export function everyoneRouted(plan: PipelinePlan, participants: string[], routes: number[][]): number[][] {
  const out = routes.map((r) => [...r]);
  plan.stages.forEach((stage, s) => {
    const peers = stage.peers.map((id) => participants.indexOf(id)).filter((i) => i >= 0);
    for (const p of peers) {
      const count = (q: number) => out.filter((r) => r[s] === q).length;
      if (count(p) > 0) continue;
      const busiest = peers.reduce((a, b) => (count(b) > count(a) ? b : a));
      if (count(busiest) < 2) continue;
      // The last micro-batch of the busiest peer moves: routes stay in order for everyone else.
      const m = out.map((r, i) => [r, i] as const).filter(([r]) => r[s] === busiest).at(-1)![1];
      out[m][s] = p;
    }
  });
  return out;
}
