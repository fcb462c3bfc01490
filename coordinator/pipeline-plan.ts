/**
 * Pipeline-parallel planning, pure: how many stages, which parts each holds, which members serve each stage,
 * and which stage peer each micro-batch visits in a round.
 *
 * Stages are cut where they balance compute (the slowest stage paces the pipeline); a member serves a stage
 * only when its offered memory holds that stage's parameters, optimizer state and activations. Re-planning
 * keeps members where they are when it can: moving one means fetching a whole stage's state.
 */
import type { ModelConfig, TrainConfig } from '../engine/config.ts';
import { ConfigError } from '../engine/errors.ts';
import { parameterSpecs, partNames } from '../engine/model.ts';
import { stageParamNames, type StageRange } from '../engine/stages.ts';

export interface PlanMember {
  id: string;
  /** Measured throughput (tokens/s the peer reported; 0 = not yet measured, treat as the median of the known ones, or 1 if none). */
  tokensPerSec: number;
  /** Memory the peer offers (bytes). */
  memoryBytes: number;
  /** Round-trip time coordinator→peer in ms (0 = unknown). */
  rttMs: number;
}

export interface StagePlan {
  from: number;
  to: number;
  peers: string[];
}

export interface PipelinePlan {
  stages: StagePlan[];
}

export interface PlanResult {
  /** Ranges for S stages; a stage's peers may be empty when members are too few (then `waiting` says why). */
  plan: PipelinePlan;
  /** Members whose stage changed from `previous` (or newly assigned): they must fetch that stage's state before serving. */
  moved: string[];
  /** Members left out (too little memory for any stage). */
  unassigned: string[];
  /** Why the plan cannot run yet (a stage has no member), else undefined. */
  waiting?: string;
}

// --- compute cost ------------------------------------------------------------------------------------------

/** Forward + backward is ~3 forward passes, and a multiply-add is 2 FLOPs: 6 FLOPs per weight per token. */
const FLOPS_PER_WEIGHT = 6;
/** A LayerNorm costs a handful of FLOPs per channel (mean, variance, scale, shift), forward and backward. */
const LAYER_NORM_FLOPS_PER_CHANNEL = 15;

/** Relative compute cost per token of each part (embed, each block, head): FLOPs of forward+backward. */
export function partCosts(c: ModelConfig): number[] {
  const C = c.nEmbd;
  // Embedding: a row lookup and an add; its backward is a scatter-add of the same size.
  const embed = 2 * C;
  // Block: QKV (3C²), projection (C²) and MLP (8C²) weights, plus attention scores and weighted sum
  // (2·T·C multiply-adds per token) over the full context T = blockSize.
  const block = FLOPS_PER_WEIGHT * 12 * C * C + FLOPS_PER_WEIGHT * 2 * c.blockSize * C;
  // Head: final LayerNorm and the tied LM-head matmul to vocabulary logits.
  const head = FLOPS_PER_WEIGHT * c.vocabSize * C + LAYER_NORM_FLOPS_PER_CHANNEL * C;
  return [embed, ...Array.from({ length: c.nLayer }, () => block), head];
}

function prefixSums(costs: number[]): number[] {
  const sums = [0];
  for (const cost of costs) sums.push(sums[sums.length - 1] + cost);
  return sums;
}

function rangeCost(prefix: number[], r: StageRange): number {
  return prefix[r.to] - prefix[r.from];
}

/**
 * Optimal min-max splits for every stage count up to `maxStages` from one DP table (chooseStageCount tries
 * several counts; one table keeps that O(maxStages · parts²)). Index k-1 holds the ranges for k stages.
 */
function stageRangesByCount(costs: number[], maxStages: number): StageRange[][] {
  const n = costs.length;
  const prefix = prefixSums(costs);
  // worst[k][i]: the smallest possible largest stage cost when parts [0, i) form k stages.
  // cut[k][i]: where the last of those k stages starts.
  const worst: number[][] = [prefix.map((_, i) => (i === 0 ? 0 : Infinity))];
  const cut: number[][] = [prefix.map(() => 0)];
  for (let k = 1; k <= maxStages; k++) {
    worst.push(new Array<number>(n + 1).fill(Infinity));
    cut.push(new Array<number>(n + 1).fill(-1));
    for (let i = k; i <= n; i++) {
      // Scanning later cuts first and replacing only on strict improvement keeps the last stage as light
      // as ties allow: it holds the head, whose logits make it the hungriest stage for memory.
      for (let j = i - 1; j >= k - 1; j--) {
        const candidate = Math.max(worst[k - 1][j], prefix[i] - prefix[j]);
        if (candidate < worst[k][i]) {
          worst[k][i] = candidate;
          cut[k][i] = j;
        }
      }
    }
  }
  return Array.from({ length: maxStages }, (_, k) => rangesFromCuts(cut, k + 1, n));
}

function rangesFromCuts(cut: number[][], stages: number, parts: number): StageRange[] {
  const ranges: StageRange[] = [];
  let to = parts;
  for (let k = stages; k >= 1; k--) {
    const from = cut[k][to];
    ranges.unshift({ from, to });
    to = from;
  }
  return ranges;
}

function checkStageCount(S: number, parts: number): void {
  if (!Number.isInteger(S) || S < 1 || S > parts) {
    throw new ConfigError(`stages must be an integer in [1, ${parts}], got ${S}`, 'stages');
  }
}

/** Splits parts into S contiguous non-empty ranges minimising the largest summed cost (exact DP, deterministic). */
export function balancedStageRanges(costs: number[], S: number): StageRange[] {
  checkStageCount(S, costs.length);
  return stageRangesByCount(costs, S)[S - 1];
}

// --- memory ------------------------------------------------------------------------------------------------

/** Parameters, gradients, AdamW m and v: four float32 copies of every parameter the stage reads. */
const STATE_BYTES_PER_PARAM = 4 * 4;
/** Rough count of [B,T,C]-sized intermediates a part keeps alive during its backward (attention, MLP, norms). */
const ACTIVATION_COPIES_PER_PART = 16;
/** Logits, their softmax and its gradient: three [B,T,V] float32 tensors in the head. */
const HEAD_LOGIT_COPIES = 3;

/** Bytes a peer needs to serve a stage: optimizer-complete parameter state plus one micro-batch's activations. */
export function stageMemoryBytes(c: ModelConfig, t: TrainConfig, r: StageRange): number {
  const sizes = new Map(parameterSpecs(c).map((s) => [s.name, s.shape.reduce((a, b) => a * b, 1)]));
  const params = stageParamNames(c, r).reduce((sum, name) => sum + (sizes.get(name) ?? 0), 0);
  const tokens = t.microBatchSize * t.seqLen;
  const activations = tokens * c.nEmbd * 4 * (r.to - r.from) * ACTIVATION_COPIES_PER_PART;
  const holdsHead = r.to === partNames(c).length;
  const logits = holdsHead ? tokens * c.vocabSize * 4 * HEAD_LOGIT_COPIES : 0;
  return params * STATE_BYTES_PER_PARAM + activations + logits;
}

function stageNeeds(c: ModelConfig, t: TrainConfig, ranges: StageRange[]): number[] {
  return ranges.map((r) => stageMemoryBytes(c, t, r));
}

/**
 * How many stages can each get a distinct member with enough memory. Fitting is a threshold, so matching the
 * smallest stage with the smallest member that holds it, upward, is a maximum matching.
 */
function coverableStages(needs: number[], memories: number[]): number {
  const sortedNeeds = [...needs].sort((a, b) => a - b);
  const sortedMemories = [...memories].sort((a, b) => a - b);
  let covered = 0;
  let m = 0;
  for (const need of sortedNeeds) {
    while (m < sortedMemories.length && sortedMemories[m] < need) m++;
    if (m === sortedMemories.length) break;
    covered++;
    m++;
  }
  return covered;
}

function membersFittingSomeStage(needs: number[], members: PlanMember[]): number {
  const smallest = Math.min(...needs);
  return members.filter((m) => m.memoryBytes >= smallest).length;
}

/**
 * 'auto': the smallest S in [1, min(parts, members)] for which every stage can get its own member with enough
 * memory (fewer stages = fewer hops and bubbles). When no S works, the S letting the most members serve,
 * preferring more stages on ties (smaller stages are closer to fitting as members join). A number is taken as is.
 */
export function chooseStageCount(c: ModelConfig, t: TrainConfig, members: PlanMember[], requested: number | 'auto'): number {
  const parts = partNames(c).length;
  if (requested !== 'auto') {
    checkStageCount(requested, parts);
    return requested;
  }
  const maxStages = Math.min(parts, members.length);
  if (maxStages === 0) return 1;
  const rangesByCount = stageRangesByCount(partCosts(c), maxStages);
  const memories = members.map((m) => m.memoryBytes);
  let fallback = { stages: 1, fitting: -1 };
  for (let S = 1; S <= maxStages; S++) {
    const needs = stageNeeds(c, t, rangesByCount[S - 1]);
    if (coverableStages(needs, memories) === S) return S;
    const fitting = membersFittingSomeStage(needs, members);
    if (fitting >= fallback.fitting) fallback = { stages: S, fitting };
  }
  return fallback.stages;
}

// --- assignment --------------------------------------------------------------------------------------------

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** A member's value, or the median of the known ones (unmeasured peers are assumed typical), or `fallback`. */
function withUnknownsAsMedian(members: Iterable<PlanMember>, value: (m: PlanMember) => number, fallback: number): (m: PlanMember | undefined) => number {
  const known = [...members].map(value).filter((v) => v > 0);
  const typical = known.length > 0 ? median(known) : fallback;
  return (m) => (m && value(m) > 0 ? value(m) : typical);
}

const byId = (a: PlanMember, b: PlanMember): number => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** Working state while assigning: the members of each stage and what the stages need. */
interface Assignment {
  peers: PlanMember[][];
  needs: number[];
  stageCosts: number[];
  speedOf: (m: PlanMember) => number;
}

/** Stage throughput relative to its work: the pipeline runs at the pace of the lowest of these. */
function throughputPerCost(a: Assignment, s: number): number {
  return a.peers[s].reduce((sum, m) => sum + a.speedOf(m), 0) / a.stageCosts[s];
}

function fits(a: Assignment, m: PlanMember, s: number): boolean {
  return m.memoryBytes >= a.needs[s];
}

/** Gives each empty stage its own newcomer where one fits, covering as many stages as possible. */
function coverEmptyStages(a: Assignment, newcomers: PlanMember[]): PlanMember[] {
  const empty = a.peers.map((_, s) => s).filter((s) => a.peers[s].length === 0);
  empty.sort((x, y) => a.needs[x] - a.needs[y] || x - y);
  const pool = [...newcomers].sort((x, y) => x.memoryBytes - y.memoryBytes || byId(x, y));
  for (const s of empty) {
    const k = pool.findIndex((m) => fits(a, m, s));
    if (k >= 0) a.peers[s].push(...pool.splice(k, 1));
  }
  return newcomers.filter((m) => pool.includes(m));
}

/** Each remaining newcomer joins the stage it fits that is currently the most starved for throughput. */
function distributeNewcomers(a: Assignment, newcomers: PlanMember[]): void {
  for (const m of [...newcomers].sort(byId)) {
    let best = -1;
    for (let s = 0; s < a.peers.length; s++) {
      if (fits(a, m, s) && (best < 0 || throughputPerCost(a, s) < throughputPerCost(a, best))) best = s;
    }
    if (best >= 0) a.peers[best].push(m);
  }
}

/** The pipeline's pace: the lowest throughput per cost over the stages that have members. */
function bottleneck(a: Assignment): number {
  const paces = a.peers.map((_, s) => s).filter((s) => a.peers[s].length > 0).map((s) => throughputPerCost(a, s));
  return paces.length > 0 ? Math.min(...paces) : 0;
}

/**
 * Fills each empty stage by taking a member from a stage that has several, choosing the move that leaves the
 * pipeline's slowest stage fastest; ties go to the donor with the most throughput per cost, then to member id.
 */
function fillByMoving(a: Assignment): void {
  for (let target = 0; target < a.peers.length; target++) {
    if (a.peers[target].length > 0) continue;
    let best: { donor: number; member: PlanMember; pace: number; donorPace: number } | undefined;
    for (let donor = 0; donor < a.peers.length; donor++) {
      if (a.peers[donor].length < 2) continue;
      const donorPace = throughputPerCost(a, donor);
      for (const member of [...a.peers[donor]].sort(byId)) {
        if (!fits(a, member, target)) continue;
        const pace = paceAfterMove(a, donor, member, target);
        const better = !best || pace > best.pace || (pace === best.pace && donorPace > best.donorPace);
        if (better) best = { donor, member, pace, donorPace };
      }
    }
    if (best) moveMember(a, best.donor, best.member, target);
  }
}

function paceAfterMove(a: Assignment, donor: number, member: PlanMember, target: number): number {
  moveMember(a, donor, member, target);
  const pace = bottleneck(a);
  moveMember(a, target, member, donor);
  return pace;
}

function moveMember(a: Assignment, from: number, member: PlanMember, to: number): void {
  a.peers[from] = a.peers[from].filter((m) => m !== member);
  a.peers[to].push(member);
}

/** Assigns `newcomers` around members already placed in `a`, then fills what stays empty by moving members. */
function completeAssignment(a: Assignment, newcomers: PlanMember[]): Assignment {
  const rest = coverEmptyStages(a, newcomers);
  distributeNewcomers(a, rest);
  fillByMoving(a);
  return a;
}

function emptyAssignment(needs: number[], stageCosts: number[], speedOf: (m: PlanMember) => number): Assignment {
  return { peers: needs.map(() => []), needs, stageCosts, speedOf };
}

function sameRanges(plan: PipelinePlan, ranges: StageRange[]): boolean {
  return plan.stages.length === ranges.length && plan.stages.every((s, i) => s.from === ranges[i].from && s.to === ranges[i].to);
}

function previousRangeOf(previous: PipelinePlan | undefined): Map<string, StageRange> {
  const out = new Map<string, StageRange>();
  for (const stage of previous?.stages ?? []) for (const id of stage.peers) out.set(id, { from: stage.from, to: stage.to });
  return out;
}

function hasEmptyStage(a: Assignment): boolean {
  return a.peers.some((p) => p.length === 0);
}

function describeRange(c: ModelConfig, r: StageRange): string {
  const parts = partNames(c);
  return r.to - r.from === 1 ? parts[r.from] : `${parts[r.from]}…${parts[r.to - 1]}`;
}

function waitingReason(c: ModelConfig, a: Assignment, ranges: StageRange[], memberCount: number): string | undefined {
  const empty = ranges.map((r, s) => ({ r, s })).filter(({ s }) => a.peers[s].length === 0);
  if (empty.length === 0) return undefined;
  const needs = empty.map(({ r, s }) => `stage ${s} (${describeRange(c, r)}) needs a peer with ≥ ${(a.needs[s] / 2 ** 20).toFixed(1)} MiB`);
  return `${ranges.length} stages, ${memberCount} member(s): ${needs.join('; ')}`;
}

/**
 * Re-plans with stability: with the same stage ranges as `previous`, members keep their stage while they
 * still fit; newcomers first cover empty stages, then join the fitting stage with the least throughput per
 * cost; a stage still empty takes a member from a stage with several. With different ranges everyone is
 * assigned afresh. Deterministic: ties go by member id.
 */
export function planPipeline(c: ModelConfig, t: TrainConfig, members: PlanMember[], requested: number | 'auto', previous?: PipelinePlan): PlanResult {
  const S = chooseStageCount(c, t, members, requested);
  const costs = partCosts(c);
  const ranges = balancedStageRanges(costs, S);
  const prefix = prefixSums(costs);
  const needs = stageNeeds(c, t, ranges);
  const stageCosts = ranges.map((r) => rangeCost(prefix, r));
  const speedOf = withUnknownsAsMedian(members, (m) => m.tokensPerSec, 1);

  const sorted = [...members].sort(byId);
  const minNeed = Math.min(...needs);
  const unassigned = sorted.filter((m) => m.memoryBytes < minNeed);
  const eligible = sorted.filter((m) => m.memoryBytes >= minNeed);

  const fresh = completeAssignment(emptyAssignment(needs, stageCosts, speedOf), eligible);
  let chosen = fresh;
  if (previous && sameRanges(previous, ranges)) {
    const stable = keepPrevious(emptyAssignment(needs, stageCosts, speedOf), previous, eligible);
    // Staying put is worth less than running at all: fall back to a fresh assignment if only it covers all stages.
    if (!hasEmptyStage(stable) || hasEmptyStage(fresh)) chosen = stable;
  }

  const before = previousRangeOf(previous);
  const moved: string[] = [];
  chosen.peers.forEach((peers, s) => {
    for (const m of peers) {
      const old = before.get(m.id);
      if (!old || old.from !== ranges[s].from || old.to !== ranges[s].to) moved.push(m.id);
    }
  });
  return {
    plan: { stages: ranges.map((r, s) => ({ from: r.from, to: r.to, peers: chosen.peers[s].map((m) => m.id).sort() })) },
    moved: moved.sort(),
    unassigned: unassigned.map((m) => m.id),
    waiting: waitingReason(c, chosen, ranges, members.length),
  };
}

/** Seats members in their previous stage while they fit it, then places everyone else. */
function keepPrevious(a: Assignment, previous: PipelinePlan, eligible: PlanMember[]): Assignment {
  const stageOf = new Map<string, number>();
  previous.stages.forEach((stage, s) => stage.peers.forEach((id) => stageOf.set(id, s)));
  const newcomers: PlanMember[] = [];
  for (const m of eligible) {
    const s = stageOf.get(m.id);
    if (s !== undefined && fits(a, m, s)) a.peers[s].push(m);
    else newcomers.push(m);
  }
  return completeAssignment(a, newcomers);
}

// --- routing -----------------------------------------------------------------------------------------------

/**
 * How much a hop's latency counts against compute time when choosing a peer. Below 1 because in a full
 * pipeline transfers overlap other micro-batches' compute; only part of the latency shows on the critical path.
 */
const LATENCY_WEIGHT = 0.25;

/**
 * Routes for one round: micro-batch m goes through route[m][s] = index into `participants` of the peer
 * serving stage s. Greedy and deterministic: each (micro-batch, stage) in order goes to the stage peer that
 * would finish it first given the work already routed to it, plus a small charge for the hop's latency, so
 * work spreads in proportion to speed and equal peers are split by latency.
 */
export function routeMicroBatches(
  plan: PipelinePlan,
  participants: string[],
  members: Map<string, PlanMember>,
  costs: number[],
  microBatches: number,
  tokensPerMicro: number,
): number[][] {
  const indexOf = new Map(participants.map((id, i) => [id, i]));
  const candidates = plan.stages.map((stage, s) => {
    const present = stage.peers.map((id) => indexOf.get(id)).filter((i): i is number => i !== undefined);
    if (present.length === 0) throw new ConfigError(`stage ${s} has no participating peer this round`, 'participants');
    return present;
  });
  const prefix = prefixSums(costs);
  const modelCost = prefix[prefix.length - 1];
  const stageWork = plan.stages.map((r) => rangeCost(prefix, r) * tokensPerMicro);
  const known = [...members.values()];
  const tokensPerSecOf = withUnknownsAsMedian(known, (m) => m.tokensPerSec, 1);
  const rttOf = withUnknownsAsMedian(known, (m) => m.rttMs, 0);
  // tokensPerSec is whole-model throughput, so a peer does `modelCost` cost units per token it could process.
  const speed = participants.map((id) => tokensPerSecOf(members.get(id)) * modelCost);
  const rttSeconds = participants.map((id) => rttOf(members.get(id)) / 1000);
  const load = new Array<number>(participants.length).fill(0);

  const routes: number[][] = [];
  for (let m = 0; m < microBatches; m++) {
    const route: number[] = [];
    for (let s = 0; s < plan.stages.length; s++) {
      const prev = s > 0 ? route[s - 1] : undefined;
      // The first hop comes from the coordinator's side: half a round trip; later hops average both ends.
      const hop = (p: number) => (prev === undefined ? rttSeconds[p] / 2 : (rttSeconds[prev] + rttSeconds[p]) / 2);
      const finish = (p: number) => (load[p] + stageWork[s]) / speed[p] + LATENCY_WEIGHT * hop(p);
      const chosen = candidates[s].reduce((best, p) => (finish(p) < finish(best) ? p : best));
      load[chosen] += stageWork[s];
      route.push(chosen);
    }
    routes.push(route);
  }
  return routes;
}

/** The plan as /api/status shows it: each stage's part names and peers. */
export function describePlan(plan: PipelinePlan, c: ModelConfig): Array<{ stage: number; parts: string[]; peers: string[] }> {
  const parts = partNames(c);
  return plan.stages.map((s, stage) => ({ stage, parts: parts.slice(s.from, s.to), peers: [...s.peers] }));
}
