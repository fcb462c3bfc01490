/**
 * Partitioning: how many pipeline stages, and which contiguous parts (embed, blocks, head) each holds.
 * Stages are cut where they balance compute, because the slowest stage paces the whole pipeline; the count
 * is the smallest one the members' memory can hold, because every extra stage adds a hop and a bubble.
 */
import type { ModelConfig, TrainConfig } from '../../engine/config.ts';
import { ConfigError } from '../../engine/errors.ts';
import { partNames } from '../../engine/model.ts';
import type { StageRange } from '../../engine/stages.ts';
import { coverableStages, membersFittingSomeStage, stageNeeds } from './memory.ts';
import type { PipelinePlan, PlanMember } from './plan-types.ts';

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

/** sums[i] = cost of parts [0, i), so any range's cost is one subtraction (see rangeCost). */
export function prefixSums(costs: number[]): number[] {
  const sums = [0];
  for (const cost of costs) sums.push(sums[sums.length - 1] + cost);
  return sums;
}

export function rangeCost(prefix: number[], r: StageRange): number {
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

/** A range as part names, for messages: one name, or the first and last joined by an ellipsis. */
export function describeRange(c: ModelConfig, r: StageRange): string {
  const parts = partNames(c);
  return r.to - r.from === 1 ? parts[r.from] : `${parts[r.from]}…${parts[r.to - 1]}`;
}

/** The plan as /api/status shows it: each stage's part names and peers. */
export function describePlan(plan: PipelinePlan, c: ModelConfig): Array<{ stage: number; parts: string[]; peers: string[] }> {
  const parts = partNames(c);
  return plan.stages.map((s, stage) => ({ stage, parts: parts.slice(s.from, s.to), peers: [...s.peers] }));
}
