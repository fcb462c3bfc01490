/**
 * Batches from a token stream. A batch is a pure function of (seed, step, micro-batch index): any peer can
 * recompute exactly what another trained on, and a resumed run continues with the batches it would have seen.
 */
import { DataError } from '../errors.ts';
import { makeRng, mixSeed } from '../rng.ts';
import type { Batch } from '../trainer.ts';

export interface BatchSpec {
  B: number;
  T: number;
  objective: 'causal' | 'mlm';
  /** For mlm: fraction of positions to predict, the [MASK] id, and the vocabulary size (random replacements). */
  maskProb?: number;
  maskId?: number;
  vocabSize?: number;
}

/** Train/validation split of one token stream: the last `valFraction` of tokens is held out. */
export function splitTokens(tokens: Int32Array, valFraction: number, minLength: number): { train: Int32Array; val: Int32Array } {
  const valLen = Math.floor(tokens.length * valFraction);
  const train = tokens.subarray(0, tokens.length - valLen);
  const val = tokens.subarray(tokens.length - valLen);
  if (train.length < minLength || val.length < minLength) {
    throw new DataError(`data too short: ${tokens.length} tokens give ${train.length} train and ${val.length} validation tokens; each needs at least ${minLength}`);
  }
  return { train, val };
}

/** Random windows of T+1 tokens: ids are the first T, targets the next-token shift (causal). */
export function sampleBatch(tokens: Int32Array, spec: BatchSpec, seed: number): Batch {
  const { B, T } = spec;
  if (tokens.length < T + 1) throw new DataError(`need at least ${T + 1} tokens for sequences of ${T}, have ${tokens.length}`);
  const rng = makeRng(seed);
  const ids = new Int32Array(B * T);
  const targets = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    const start = Math.floor(rng() * (tokens.length - T));
    if (spec.objective === 'causal') {
      ids.set(tokens.subarray(start, start + T), b * T);
      targets.set(tokens.subarray(start + 1, start + T + 1), b * T);
    } else {
      ids.set(tokens.subarray(start, start + T), b * T);
      targets.set(tokens.subarray(start, start + T), b * T);
    }
  }
  if (spec.objective === 'causal') return { B, T, ids, targets };
  return maskBatch({ B, T, ids, targets }, spec, rng);
}

/**
 * BERT-style masking: each position is chosen with maskProb (at least one per row); a chosen input becomes
 * [MASK] 80% of the time, a random token 10%, itself 10%. Loss weights are 1 on chosen positions only.
 */
function maskBatch(b: Batch, spec: BatchSpec, rng: () => number): Batch {
  const { maskProb = 0.15, maskId, vocabSize } = spec;
  if (maskId === undefined || vocabSize === undefined || maskId < 0) throw new DataError('mlm batches need a tokenizer with a [MASK] token');
  const weights = new Float32Array(b.B * b.T);
  for (let r = 0; r < b.B; r++) {
    let chosen = 0;
    for (let t = 0; t < b.T; t++) {
      if (rng() < maskProb) {
        weights[r * b.T + t] = 1;
        chosen++;
      }
    }
    if (chosen === 0) weights[r * b.T + Math.floor(rng() * b.T)] = 1;
    for (let t = 0; t < b.T; t++) {
      const i = r * b.T + t;
      if (weights[i] === 0) continue;
      const u = rng();
      if (u < 0.8) b.ids[i] = maskId;
      else if (u < 0.9) b.ids[i] = Math.floor(rng() * maskId); // a random real token (never [MASK])
    }
  }
  return { ...b, weights };
}

/** The micro-batches of one optimizer step: seeded by (seed, step, micro index). */
export function stepBatches(tokens: Int32Array, spec: BatchSpec, seed: number, step: number, microBatches: number): Batch[] {
  return Array.from({ length: microBatches }, (_, k) => sampleBatch(tokens, spec, mixSeed(seed, step, k)));
}

/** A fixed set of validation batches (same every evaluation, so val loss is comparable across steps). */
export function validationBatches(tokens: Int32Array, spec: BatchSpec, seed: number, count: number): Batch[] {
  return Array.from({ length: count }, (_, k) => sampleBatch(tokens, spec, mixSeed(seed, 0x7a11d, k)));
}
