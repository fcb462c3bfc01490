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
  eosId?: number;
  vocabSize?: number;
}

/**
 * BERT-style masking: each position is chosen with maskProb (at least one per row); a chosen input becomes
 * [MASK] 80% of the time, a random token 10%, itself 10%. Loss weights are 1 on chosen positions only.
 */
function maskBatch(b: Batch, spec: BatchSpec, rng: () => number): Batch {
  const { maskProb = 0.15, maskId, vocabSize } = spec;
  if (maskId === undefined || vocabSize === undefined || maskId < 0) throw new DataError('mlm batches need a tokenizer with a [MASK] token');
  // Random replacements come from the base vocabulary: ids below both specials (EOS and [MASK] sit at the end).
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
      else if (u < 0.9) b.ids[i] = Math.floor(rng() * Math.min(maskId, spec.eosId ?? maskId)); // a random ordinary token
    }
  }
  return { ...b, weights };
}

/** Sequences packed back to back: sequence k is data[k·length, (k+1)·length). */
export interface PackedSequences {
  data: Int32Array;
  /** Tokens per sequence (T + 1 for a window of T). */
  length: number;
  count: number;
}

export function packedSequences(data: Int32Array, length: number): PackedSequences {
  return { data, length, count: Math.floor(data.length / length) };
}

/**
 * B random sequences (a window of T + 1 tokens at a random offset in each when T + 1 < length): ids are the
 * first T tokens, targets the next-token shift (causal) or the tokens themselves (mlm, then masked).
 */
export function samplePackedBatch(seqs: PackedSequences, spec: BatchSpec, seed: number): Batch {
  const { B, T } = spec;
  if (seqs.count < 1) throw new DataError('no sequences to sample from');
  if (T + 1 > seqs.length) throw new DataError(`sequence length ${T} needs ${T + 1} tokens per sequence, the data packs ${seqs.length}`);
  const rng = makeRng(seed);
  const ids = new Int32Array(B * T);
  const targets = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    const k = Math.floor(rng() * seqs.count);
    const start = k * seqs.length + Math.floor(rng() * (seqs.length - T));
    ids.set(seqs.data.subarray(start, start + T), b * T);
    if (spec.objective === 'causal') targets.set(seqs.data.subarray(start + 1, start + T + 1), b * T);
    else targets.set(seqs.data.subarray(start, start + T), b * T);
  }
  if (spec.objective === 'causal') return { B, T, ids, targets };
  return maskBatch({ B, T, ids, targets }, spec, rng);
}

/** The micro-batches of one optimizer step: seeded by (seed, step, micro index). */
export function stepBatches(seqs: PackedSequences, spec: BatchSpec, seed: number, step: number, microBatches: number): Batch[] {
  return Array.from({ length: microBatches }, (_, k) => samplePackedBatch(seqs, spec, mixSeed(seed, step, k)));
}

/** A fixed set of validation batches (same every evaluation, so val loss is comparable across steps). */
export function validationBatches(seqs: PackedSequences, spec: BatchSpec, seed: number, count: number): Batch[] {
  return Array.from({ length: count }, (_, k) => samplePackedBatch(seqs, spec, mixSeed(seed, 0x7a11d, k)));
}
