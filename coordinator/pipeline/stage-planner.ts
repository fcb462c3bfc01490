/**
 * The coordinator's view of a pipeline's stages as peers come and go: the current plan (stable re-plans over
 * the connected members, each change kept for the status page with its reason), peers left out of the round's
 * retries, round-trip times for routing, who can serve a stage at all (admission), and the state of the stage
 * the plan gives a peer — sliced from the coordinator's whole-model copy.
 */
import { peerIdFromString } from '@libp2p/peer-id';
import { gatherStage, stageManifest } from '../../engine/stage-trainer.ts';
import type { RunState } from '../../net/state-sync.ts';
import type { StageReport } from '../../run/status-report.ts';
import type { Member } from '../membership.ts';
import type { RoundContext } from '../round-driver.ts';
import { planPipeline } from './assignment.ts';
import { stageMemoryBytes } from './memory.ts';
import { balancedStageRanges, describePlan, partCosts } from './partition.ts';
import type { PipelinePlan, PlanMember } from './plan-types.ts';

/** How often the coordinator measures its round-trip time to each peer (routing prefers close peers). */
const PING_EVERY_MS = 5_000;
/** How long one ping may take. */
const PING_TIMEOUT_MS = 2_000;
/** Re-plans kept for the status page. */
const REPLANS_SHOWN = 20;

interface PingService {
  ping(p: unknown, o?: { signal?: AbortSignal }): Promise<number>;
}

export interface Replan {
  round: number;
  reason: string;
  stages: StageReport[];
}

export class StagePlanner {
  plan?: PipelinePlan;
  /** Why no round can start with the current plan, if so. */
  waiting?: string;
  readonly replans: Replan[] = [];
  /** Peers the last attempt of this round failed on: left out of the retry (and told to resync). */
  readonly excluded = new Set<string>();
  private readonly rtt = new Map<string, number>();
  private pinger?: ReturnType<typeof setInterval>;
  private smallestStage?: number;
  private stateCache?: { round: number; params: Float32Array; m: Float32Array; v: Float32Array; step: number };

  constructor(private readonly c: RoundContext) {}

  start(): void {
    this.pinger = setInterval(() => void this.ping(), PING_EVERY_MS);
  }

  stop(): void {
    if (this.pinger) clearInterval(this.pinger);
    this.pinger = undefined;
  }

  private get model() {
    return this.c.config.model;
  }

  private async ping(): Promise<void> {
    const ping = (this.c.libp2p as { services?: { ping?: PingService } }).services?.ping;
    if (!ping) return;
    for (const id of [...this.c.members.ids()]) {
      try {
        this.rtt.set(id, await ping.ping(peerIdFromString(id), { signal: AbortSignal.timeout(PING_TIMEOUT_MS) }));
      } catch {
        // unreachable for now: its next heartbeat or the round will tell
      }
    }
  }

  planMember(m: Member): PlanMember {
    return { id: m.id, tokensPerSec: m.tokensPerSec, memoryBytes: m.memoryMB * 2 ** 20, rttMs: this.rtt.get(m.id) ?? 0 };
  }

  /** Re-plans over the connected members; peers whose stage changed are told to fetch their new stage. */
  replan(reason: string): void {
    const { c } = this;
    const members = c.members.all().filter((m) => c.members.isConnected(m.id) && !this.excluded.has(m.id));
    const res = planPipeline(this.model, c.config.train, members.map((m) => this.planMember(m)), c.config.pipeline!.stages, this.plan);
    const key = (p?: PipelinePlan) => JSON.stringify(p?.stages ?? null);
    if (key(res.plan) !== key(this.plan)) {
      const entry = { round: c.book.round, reason, stages: describePlan(res.plan, this.model) };
      this.replans.push(entry);
      if (this.replans.length > REPLANS_SHOWN) this.replans.shift();
      c.log.info(`pipeline plan (${reason}): ${entry.stages.map((s) => `stage ${s.stage} [${s.parts[0]}..${s.parts[s.parts.length - 1]}] ${s.peers.map((p) => p.slice(-6)).join(',') || '(none)'}`).join(' | ')}`);
    }
    this.plan = res.plan;
    this.waiting = res.waiting;
    for (const id of res.moved) {
      const m = c.members.get(id);
      const s = res.plan.stages.find((st) => st.peers.includes(id))!;
      if (m?.holds && (m.holds.from !== s.from || m.holds.to !== s.to)) {
        c.members.unsync(id);
        c.control.resync(id, `moved to the stage of parts [${s.from}, ${s.to})`);
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
    const { c } = this;
    // Left out of a failed attempt, it is back once it has fetched the state: plan with it again.
    this.excluded.delete(peer);
    this.replan(`peer ${peer.slice(-6)} asks for its stage`);
    const stage = this.plan!.stages.find((s) => s.peers.includes(peer));
    if (!stage) throw new Error(`no stage of the plan fits peer ${peer.slice(-8)} (memory ${c.members.get(peer)?.memoryMB ?? 0} MiB)`);
    if (this.stateCache?.round !== c.book.round) this.stateCache = { round: c.book.round, ...(await c.replica.trainer.exportState()) };
    const cache = this.stateCache;
    const range = { from: stage.from, to: stage.to };
    const sm = stageManifest(this.model, range);
    const full = c.replica.manifest;
    const optimizer = new Float32Array(2 * sm.totalSize);
    optimizer.set(gatherStage(cache.m, full, sm));
    optimizer.set(gatherStage(cache.v, full, sm), sm.totalSize);
    const m = c.members.get(peer);
    if (m) m.holds = range;
    return { round: c.book.round, step: cache.step, params: gatherStage(cache.params, full, sm), optimizer, stageFrom: range.from, stageTo: range.to };
  }

  /** Whether member `m` is ready to serve stage `s` in the current round. */
  isReady(m: Member | undefined, s: { from: number; to: number }): boolean {
    const { c } = this;
    return !!m && m.syncedRound === c.book.round && m.holds?.from === s.from && m.holds?.to === s.to && c.members.isConnected(m.id) && !this.excluded.has(m.id);
  }

  describe(): StageReport[] {
    return this.plan ? describePlan(this.plan, this.model) : [];
  }
}
