/**
 * Assignment: which members serve each stage. A member serves only a stage its memory holds; within that,
 * members go where throughput per unit of work is lowest, since the slowest stage paces the pipeline.
 * Re-planning keeps members where they are when it can, because moving one means fetching a whole stage's
 * state before it can serve.
 */
import type { ModelConfig, TrainConfig } from '../../engine/config.ts';
import type { StageRange } from '../../engine/stages.ts';
import { stageNeeds } from './memory.ts';
import { balancedStageRanges, chooseStageCount, describeRange, partCosts, prefixSums, rangeCost } from './partition.ts';
import { withUnknownsAsMedian, type PipelinePlan, type PlanMember } from './plan-types.ts';

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
