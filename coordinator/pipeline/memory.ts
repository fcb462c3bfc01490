/**
 * What a stage costs in memory, and how many stages a set of members can hold. A member serves a stage only
 * when its offered memory holds that stage's parameters, optimizer state and activations, so these estimates
 * decide both the stage count (partition.ts) and who may serve where (assignment.ts).
 */
import type { ModelConfig, TrainConfig } from '../../engine/config.ts';
import { parameterSpecs, partNames } from '../../engine/model.ts';
import { stageParamNames, type StageRange } from '../../engine/stages.ts';
import type { PlanMember } from './plan-types.ts';

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

/** The memory each of `ranges` needs, in stage order. */
export function stageNeeds(c: ModelConfig, t: TrainConfig, ranges: StageRange[]): number[] {
  return ranges.map((r) => stageMemoryBytes(c, t, r));
}

/**
 * How many stages can each get a distinct member with enough memory. Fitting is a threshold, so matching the
 * smallest stage with the smallest member that holds it, upward, is a maximum matching.
 */
export function coverableStages(needs: number[], memories: number[]): number {
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

/** How many members could serve at least one of the stages. */
export function membersFittingSomeStage(needs: number[], members: PlanMember[]): number {
  const smallest = Math.min(...needs);
  return members.filter((m) => m.memoryBytes >= smallest).length;
}
