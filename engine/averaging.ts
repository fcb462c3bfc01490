/**
 * Averaging arithmetic shared by local workers and network peers: weighted means of flat arrays, and a cheap
 * content hash so replicas can check they hold identical parameters.
 */
import { ManifestError } from './errors.ts';

export interface Contribution {
  values: Float32Array;
  /** Weight of this contribution (sequences it was computed on). */
  weight: number;
}

/** sum_i w_i·x_i / sum_i w_i, accumulated in float64 so the result does not depend on the order. */
export function weightedMean(parts: Contribution[]): Float32Array {
  if (parts.length === 0) throw new ManifestError('weightedMean needs at least one contribution');
  const n = parts[0].values.length;
  for (const p of parts) {
    if (p.values.length !== n) throw new ManifestError(`contributions differ in length (${p.values.length} vs ${n})`);
    if (!(p.weight > 0) || !Number.isFinite(p.weight)) throw new ManifestError(`contribution weight must be positive, got ${p.weight}`);
  }
  return weightedMeanOf(parts, n).mean;
}

/**
 * The arithmetic of every weighted mean in peertrain (local workers and network averaging), unchecked: the
 * callers have validated lengths and weights. Products summed in float64 in the order given, one division,
 * one rounding to float32, so every peer that averages the same inputs in the same order gets the same bits.
 * The first product is assigned rather than added to zero, so an all −0 column stays −0.
 */
export function weightedMeanOf(parts: readonly Contribution[], length: number): { mean: Float32Array; weight: number } {
  const acc = new Float64Array(length);
  let total = 0;
  for (let k = 0; k < parts.length; k++) {
    const { weight, values } = parts[k];
    if (k === 0) {
      total = weight;
      for (let i = 0; i < length; i++) acc[i] = weight * values[i];
    } else {
      total += weight;
      for (let i = 0; i < length; i++) acc[i] += weight * values[i];
    }
  }
  const mean = new Float32Array(length);
  for (let i = 0; i < length; i++) mean[i] = acc[i] / total;
  return { mean, weight: total };
}

/** FNV-1a (32-bit) over the float bytes, as 8 hex digits: equal arrays give equal hashes on every platform. */
export function hashFloats(values: Float32Array): string {
  const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i];
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0).toString(16).padStart(8, '0');
}
