/**
 * The owner's step of a round: the buffered contributions to its chunk in, the averaged chunk out. It owns
 * the two choices a round makes about values, which rule combines them (the Aggregator) and what the wire
 * does to them (the Codec), so the orchestration in allreduce.ts never looks at a number.
 *
 * Where a compressed wire would quantize, the Reducer applies the codec's round trip: to the contributions
 * of others (they would have crossed the wire), not to the owner's own (it never does), and to the averaged
 * chunk before the owner keeps it, so the owner holds exactly the bits it sends and every peer ends with the
 * same vector. With the identity codec these are no-ops and no memory is copied.
 */
import { weightedMean, type Aggregate, type Aggregator, type Contribution } from './aggregator.ts';
import { identityCodec, roundTrip, type Codec } from './codec.ts';

export interface ReducerOptions {
  /** How contributions combine (default weightedMean). */
  aggregator?: Aggregator;
  /** What the wire does to values (default identityCodec). */
  codec?: Codec;
}

export class Reducer {
  readonly aggregator: Aggregator;
  readonly codec: Codec;

  constructor(o: ReducerOptions = {}) {
    this.aggregator = o.aggregator ?? weightedMean;
    this.codec = o.codec ?? identityCodec;
  }

  /**
   * The averaged chunk of `length` values from the owner's contribution and the others' (in participant
   * order): the order is part of the result's bits, so every run of a round must pass the same one.
   */
  reduce(own: Contribution, others: readonly Contribution[], length: number): Aggregate {
    const received = others.map((c) => ({ weight: c.weight, values: roundTrip(this.codec, c.values) }));
    const { mean, weight } = this.aggregator.aggregate([own, ...received], length);
    return { mean: roundTrip(this.codec, mean), weight };
  }
}
