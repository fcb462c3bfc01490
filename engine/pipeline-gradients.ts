/**
 * How a pipeline's gradients are split for averaging and put back together. Each stage's swarm averages its
 * own parameters; the token embedding `wte`, tied to the LM head, gets gradients in two stages (the first,
 * through the embedding, and the last, through the head) and is averaged in a group of its own formed by both
 * swarms. With every contribution weighted by its sequences, that group's mean is half the whole model's wte
 * gradient (each micro-batch passes both stages once), so the total is twice the group mean.
 */
import type { ModelConfig } from './config.ts';
import type { Manifest } from './flat.ts';
import { partNames } from './model.ts';
import { gatherStage, stageManifest } from './stage-trainer.ts';
import type { StageRange } from './stages.ts';

/** Elements of wte at the front of a stage's flat layout when the plan averages it apart (more than one stage). */
export function tiedPrefix(c: ModelConfig, r: StageRange, stages: number): number {
  if (stages < 2) return 0;
  return r.from === 0 || r.to === partNames(c).length ? c.vocabSize * c.nEmbd : 0;
}

/** A stage's mean gradient split into what its own swarm averages and the tied wte part (empty when none). */
export function splitStageGradient(c: ModelConfig, r: StageRange, stages: number, values: Float32Array): { own: Float32Array; tied: Float32Array } {
  const k = tiedPrefix(c, r, stages);
  return { own: values.subarray(k), tied: values.subarray(0, k) };
}

/** The inverse: a stage's gradient from its swarm's average and the tied group's average (doubled: see above). */
export function joinStageGradient(c: ModelConfig, r: StageRange, stages: number, own: Float32Array, tiedMean: Float32Array | undefined): Float32Array {
  const k = tiedPrefix(c, r, stages);
  const out = new Float32Array(k + own.length);
  if (k) {
    if (!tiedMean || tiedMean.length !== k) throw new Error(`stage [${r.from}, ${r.to}) needs the tied embedding's ${k} averaged values`);
    for (let i = 0; i < k; i++) out[i] = 2 * tiedMean[i];
  }
  out.set(own, k);
  return out;
}

/** The whole model's gradient from every stage's (joined) gradient, in the model's flat layout. */
export function assembleModelGradient(c: ModelConfig, model: Manifest, ranges: StageRange[], stageGrads: Float32Array[]): Float32Array {
  const full = new Float32Array(model.totalSize);
  const byName = new Map(model.entries.map((e) => [e.name, e]));
  ranges.forEach((r, s) => {
    const m = stageManifest(c, r);
    for (const e of m.entries) {
      // wte appears in the first and the last stage with the same (joined) total: write it once.
      const at = byName.get(e.name)!;
      full.set(stageGrads[s].subarray(e.offset, e.offset + e.size), at.offset);
    }
  });
  return full;
}

/** Each stage's slice of the whole model's parameters (hashes in announcements, state for stage peers). */
export function stageSlices(c: ModelConfig, model: Manifest, ranges: StageRange[], full: Float32Array): Float32Array[] {
  return ranges.map((r) => gatherStage(full, model, stageManifest(c, r)));
}
