/**
 * Averaging codecs, each against its stated error bound, and on the inputs that break codecs: all zeros,
 * non-finite values, nothing at all, and bytes that are not whole values or not aligned.
 */
import { describe, expect, it } from 'vitest';
import { float16Codec, identityCodec, roundTrip, type Codec } from '../../net/averaging/codec.ts';
import { makeRng, normalArray } from '../../engine/rng.ts';

const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** Values across the magnitudes a codec meets: gradients, deltas, parameters, subnormal dust. */
function spread(n: number): Float32Array {
  const rng = makeRng(5);
  const base = normalArray(n, 1, makeRng(6));
  return base.map((x) => x * 10 ** Math.floor(rng() * 14 - 9));
}

const codecs: Codec[] = [identityCodec, float16Codec];

describe.each(codecs.map((c) => [c.name, c] as const))('%s codec', (_, codec) => {
  it('stays within its error bound', () => {
    const x = spread(20_000);
    const y = roundTrip(codec, x);
    expect(y.length).toBe(x.length);
    for (let i = 0; i < x.length; i++) expect(Math.abs(y[i] - x[i])).toBeLessThanOrEqual(codec.maxError!(x[i]));
  });

  it('encodes to ratio × the float32 bytes', () => {
    const x = spread(1001);
    expect(codec.encode(x).byteLength).toBe(x.byteLength * codec.ratio);
  });

  it('round-trips all zeros exactly, keeping the sign of −0', () => {
    const x = Float32Array.from({ length: 64 }, (_, i) => (i % 2 ? -0 : 0));
    expect(bytes(roundTrip(codec, x)).equals(bytes(x))).toBe(true);
  });

  it('keeps non-finite values non-finite (NaN stays NaN, ±Infinity keeps its sign)', () => {
    const y = roundTrip(codec, Float32Array.from([NaN, Infinity, -Infinity, 1]));
    expect(Number.isNaN(y[0])).toBe(true);
    expect([y[1], y[2], y[3]]).toEqual([Infinity, -Infinity, 1]);
  });

  it('handles empty input', () => {
    const e = codec.encode(new Float32Array(0));
    expect(e.byteLength).toBe(0);
    expect(codec.decode(e).length).toBe(0);
  });

  it('refuses bytes that are not whole values, with a typed error', () => {
    const width = 4 * codec.ratio;
    expect(() => codec.decode(new Uint8Array(width + 1))).toThrow(expect.objectContaining({ name: 'CodecError' }));
  });

  it('decodes bytes at any offset in their buffer (a frame payload need not be aligned)', () => {
    const x = Float32Array.from([1.5, -2.25, 3]);
    const e = codec.encode(x);
    const shifted = new Uint8Array(e.byteLength + 1);
    shifted.set(e, 1);
    expect(Array.from(codec.decode(shifted.subarray(1)))).toEqual([1.5, -2.25, 3]);
  });
});

describe('identity codec', () => {
  it('is lossless and shares memory both ways (what makes it free in the Reducer)', () => {
    const x = spread(100);
    const e = identityCodec.encode(x);
    expect(e.buffer).toBe(x.buffer);
    const y = identityCodec.decode(e);
    expect(y.buffer).toBe(x.buffer);
    expect(bytes(y).equals(bytes(x))).toBe(true);
  });

  it('respects a subarray view', () => {
    const whole = Float32Array.from([1, 2, 3, 4]);
    expect(Array.from(roundTrip(identityCodec, whole.subarray(1, 3)))).toEqual([2, 3]);
  });
});

describe('float16 codec', () => {
  it('overflows finite values of 65520 and more to ±Infinity, and says so in its bound', () => {
    const y = roundTrip(float16Codec, Float32Array.from([65504, 65519, 65520, -1e6]));
    expect(Array.from(y)).toEqual([65504, 65504, Infinity, -Infinity]);
    expect(float16Codec.maxError!(65520)).toBe(Infinity);
    expect(float16Codec.maxError!(65519)).toBeLessThan(65519 * 2 ** -10);
  });

  it('flushes dust below half the smallest subnormal to zero, within the absolute bound', () => {
    const x = Float32Array.from([2 ** -26, -(2 ** -26), 2 ** -24]);
    expect(Array.from(roundTrip(float16Codec, x))).toEqual([0, -0, 2 ** -24]);
  });

  it('is idempotent: a value that crossed once crosses again unchanged', () => {
    const once = roundTrip(float16Codec, spread(5000));
    expect(bytes(roundTrip(float16Codec, once)).equals(bytes(once))).toBe(true);
  });
});
