/**
 * The averaging arithmetic: the weightedMean Aggregator must give exactly the bits of the loop allreduce.ts
 * used to inline (peers of mixed versions average together), and the Reducer applies its codec where the
 * wire would, so owner and receivers hold the same chunk.
 */
import { describe, expect, it } from 'vitest';
import { weightedMean, type Aggregator } from '../../net/averaging/aggregator.ts';
import { float16Codec, identityCodec, roundTrip } from '../../net/averaging/codec.ts';
import { Reducer } from '../../net/averaging/reducer.ts';
import { weightedMean as engineWeightedMean } from '../../engine/averaging.ts';
import { makeRng, normalArray } from '../../engine/rng.ts';

type C = { weight: number; values: Float32Array };

/** The weighted mean as allreduce.ts computed it inline before the split, verbatim. */
function oldInline(weight: number, mySlice: Float32Array, others: C[], ownLen: number): { mean: Float32Array; total: number } {
  const acc = new Float64Array(ownLen);
  let total = weight;
  for (let i = 0; i < ownLen; i++) acc[i] = weight * mySlice[i];
  for (const c of others) {
    total += c.weight;
    for (let i = 0; i < ownLen; i++) acc[i] += c.weight * c.values[i];
  }
  const mean = new Float32Array(ownLen);
  for (let i = 0; i < ownLen; i++) mean[i] = acc[i] / total;
  return { mean, total };
}

const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

describe('weightedMean aggregator', () => {
  it('is bit-identical to the old inline loop on random data', () => {
    const rng = makeRng(7);
    for (let trial = 0; trial < 40; trial++) {
      const P = 1 + Math.floor(rng() * 8);
      const len = Math.floor(rng() * 3000);
      const scale = 10 ** Math.floor(rng() * 8 - 4);
      const contributions: C[] = Array.from({ length: P }, (_, p) => ({
        // Integer sample counts and fractional weights both occur (DiLoCo weights by tokens, sync by samples).
        weight: trial % 2 ? 1 + Math.floor(rng() * 64) : rng() * 100 + 1e-3,
        values: normalArray(len, scale, makeRng(trial * 100 + p)),
      }));
      const [own, ...others] = contributions;
      const want = oldInline(own.weight, own.values, others, len);
      const got = weightedMean.aggregate(contributions, len);
      expect(got.weight).toBe(want.total);
      expect(bytes(got.mean).equals(bytes(want.mean))).toBe(true);
    }
  });

  it('keeps −0, zeros and subnormals exactly as the old loop did', () => {
    const len = 6;
    const a = Float32Array.from([-0, 0, -0, 1e-45, -1e-45, 3]);
    const b = Float32Array.from([-0, -0, 0, 1e-45, 1e-45, -3]);
    for (const contributions of [[{ weight: 1, values: a }], [{ weight: 1, values: a }, { weight: 3, values: b }]]) {
      const [own, ...others] = contributions;
      const want = oldInline(own.weight, own.values, others, len);
      const got = weightedMean.aggregate(contributions, len);
      expect(bytes(got.mean).equals(bytes(want.mean))).toBe(true);
    }
    expect(Object.is(weightedMean.aggregate([{ weight: 2, values: a }], len).mean[0], -0)).toBe(true);
  });

  it('reads only `length` values of a longer contribution, as the old loop did', () => {
    const long = Float32Array.from([1, 2, 3, 4]);
    const got = weightedMean.aggregate([{ weight: 1, values: Float32Array.from([3, 4]) }, { weight: 1, values: long }], 2);
    expect(Array.from(got.mean)).toEqual([2, 3]);
  });

  it('refuses to average nothing, with a typed error', () => {
    expect(() => weightedMean.aggregate([], 3)).toThrow(expect.objectContaining({ name: 'AggregationError' }));
  });

  it('is the arithmetic of the local workers too (engine weightedMean), which still checks its input', () => {
    const rng = makeRng(3);
    const contributions = [1, 2, 3].map((k) => ({ weight: 1 + Math.floor(rng() * 10), values: normalArray(257, 1, makeRng(k)) }));
    expect(bytes(engineWeightedMean(contributions)).equals(bytes(weightedMean.aggregate(contributions, 257).mean))).toBe(true);
    expect(() => engineWeightedMean([{ values: new Float32Array(2), weight: 0 }])).toThrow(/positive/);
  });
});

describe('Reducer', () => {
  const rng = makeRng(11);
  const len = 1000;
  const own = { weight: 3, values: normalArray(len, 1, makeRng(1)) };
  const others = [2, 3, 4].map((k) => ({ weight: 1 + Math.floor(rng() * 5), values: normalArray(len, 1, makeRng(k)) }));

  it('defaults to weightedMean over the identity codec: the old result, bit for bit', () => {
    const r = new Reducer();
    expect(r.aggregator.name).toBe('weighted-mean');
    expect(r.codec.name).toBe('identity');
    const got = r.reduce(own, others, len);
    const want = oldInline(own.weight, own.values, others, len);
    expect(got.weight).toBe(want.total);
    expect(bytes(got.mean).equals(bytes(want.mean))).toBe(true);
  });

  it('hands contributions to the aggregator own first, then the others in the order given', () => {
    const seen: number[] = [];
    const spy: Aggregator = {
      name: 'spy',
      aggregate(contributions, length) {
        seen.push(...contributions.map((c) => c.weight));
        return { mean: new Float32Array(length), weight: 0 };
      },
    };
    new Reducer({ aggregator: spy }).reduce({ weight: 1, values: new Float32Array(2) }, [2, 3, 4].map((weight) => ({ weight, values: new Float32Array(2) })), 2);
    expect(seen).toEqual([1, 2, 3, 4]);
  });

  it('with a lossy codec, quantizes what crossed the wire and the mean, never the own contribution', () => {
    const contributionsSeen: Float32Array[] = [];
    const capture: Aggregator = {
      name: 'capture',
      aggregate(contributions, length) {
        contributionsSeen.push(...contributions.map((c) => c.values));
        return weightedMean.aggregate(contributions, length);
      },
    };
    const got = new Reducer({ aggregator: capture, codec: float16Codec }).reduce(own, others, len);
    expect(contributionsSeen[0]).toBe(own.values);
    others.forEach((c, k) => expect(bytes(contributionsSeen[k + 1]).equals(bytes(roundTrip(float16Codec, c.values)))).toBe(true));
    // The owner keeps what it sends: the mean is already a float16 value, so another round trip changes nothing.
    expect(bytes(roundTrip(float16Codec, got.mean)).equals(bytes(got.mean))).toBe(true);
    const exact = new Reducer().reduce(own, others, len).mean;
    // A weighted mean of quantized inputs is off by at most the largest input error, then rounded once more
    // (1% slack for the float32 steps in between).
    for (let i = 0; i < len; i++) {
      const inputError = Math.max(...others.map((c) => float16Codec.maxError!(c.values[i])));
      expect(Math.abs(got.mean[i] - exact[i])).toBeLessThanOrEqual((inputError + float16Codec.maxError!(exact[i])) * 1.01);
    }
  });

  it('copies nothing with the identity codec', () => {
    const values = Float32Array.from([1, 2, 3]);
    expect(roundTrip(identityCodec, values).buffer).toBe(values.buffer);
  });
});
