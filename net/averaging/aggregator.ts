/**
 * How the owner of a chunk turns everyone's contributions into one averaged chunk. An interface rather than a
 * loop in the round so that robust rules (trimmed mean, coordinate-wise median, norm clipping) plug in as new
 * Aggregators without touching the orchestration; the round only promises the order of contributions.
 */
import { weightedMeanOf, type Contribution } from '../../engine/averaging.ts';
import { AggregationError } from './errors.ts';

export type { Contribution };

export interface Aggregate {
  /** The averaged chunk (float32, as it goes on the wire). */
  mean: Float32Array;
  /** The weight the averaged chunk stands for (sent with the gather parts). */
  weight: number;
}

export interface Aggregator {
  /** Stable, for logs and run status. */
  readonly name: string;
  /**
   * Combines contributions of `length` values each: the owner's own first, then the others in participant
   * order, so that a rule whose arithmetic depends on order still gives the same bits on every run.
   */
  aggregate(contributions: readonly Contribution[], length: number): Aggregate;
}

/**
 * The sample-weighted mean, in float64: exactly the arithmetic averaging has always used (engine/averaging.ts
 * holds it, so local workers and network peers cannot drift apart).
 */
export const weightedMean: Aggregator = {
  name: 'weighted-mean',
  aggregate(contributions, length) {
    if (contributions.length === 0) throw new AggregationError('weighted mean of no contributions');
    return weightedMeanOf(contributions, length);
  },
};
