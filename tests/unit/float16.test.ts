/**
 * binary16 conversion: exact values survive, rounding is to nearest even, the edges (overflow, subnormals,
 * underflow, NaN) behave as IEEE 754 says, and the error over ordinary data stays within half an ulp.
 */
import { describe, expect, it } from 'vitest';
import { float16Finite, fromFloat16, toFloat16 } from '../../protocol/float16.ts';

const roundTrip = (xs: number[]): number[] => Array.from(fromFloat16(toFloat16(Float32Array.from(xs))));
const halfOf = (x: number): number => toFloat16(Float32Array.of(x))[0];

/** Deterministic standard normals (Box–Muller over a small LCG), so failures reproduce. */
function normals(n: number, seed: number): Float32Array {
  let state = seed >>> 0;
  const uniform = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return (state + 1) / 2 ** 32;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  return out;
}

describe('float16', () => {
  it.each([
    ['zero', 0, 0x0000],
    ['negative zero', -0, 0x8000],
    ['one', 1, 0x3c00],
    ['-2.5', -2.5, 0xc100],
    ['largest finite', 65504, 0x7bff],
    ['smallest subnormal', 2 ** -24, 0x0001],
    ['largest subnormal', 2 ** -14 - 2 ** -24, 0x03ff],
    ['smallest normal', 2 ** -14, 0x0400],
  ])('%s is exact', (_name, value, bits) => {
    expect(halfOf(value)).toBe(bits);
    expect(Object.is(roundTrip([value])[0], value)).toBe(true);
  });

  it('every half survives half → float → half unchanged', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const back = toFloat16(fromFloat16(all));
    for (let h = 0; h < 65536; h++) {
      const isNaN = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
      if (isNaN) expect(Number.isNaN(fromFloat16(Uint16Array.of(back[h]))[0])).toBe(true);
      else if (back[h] !== h) expect.fail(`half 0x${h.toString(16)} came back as 0x${back[h].toString(16)}`);
    }
  });

  it.each([
    ['1 + 2^-11 (tie, even below)', 1 + 2 ** -11, 1],
    ['1 + 3·2^-11 (tie, even above)', 1 + 3 * 2 ** -11, 1 + 2 ** -9],
    ['just above a tie rounds up', 1 + 2 ** -11 + 2 ** -20, 1 + 2 ** -10],
    ['2^-25 (tie with zero)', 2 ** -25, 0],
    ['3·2^-25 (subnormal tie, even above)', 3 * 2 ** -25, 2 ** -23],
    ['just below 2^-14 rounds up to it', 2 ** -14 - 2 ** -26, 2 ** -14],
    ['65519 stays finite', 65519, 65504],
  ])('rounds to nearest even: %s', (_name, value, expected) => {
    expect(roundTrip([value])[0]).toBe(expected);
  });

  it('overflows to ±Infinity and underflows to signed zero', () => {
    expect(roundTrip([70000, -70000, 65520, 3e38, Infinity, -Infinity])).toEqual([
      Infinity,
      -Infinity,
      Infinity,
      Infinity,
      Infinity,
      -Infinity,
    ]);
    const tiny = roundTrip([2 ** -26, -(2 ** -30), 1e-40]);
    expect(tiny.map((x) => Object.is(x, 0) || Object.is(x, -0))).toEqual([true, true, true]);
    expect(Object.is(tiny[1], -0)).toBe(true);
  });

  it('keeps NaN a NaN, with its sign', () => {
    const bits = toFloat16(Float32Array.of(NaN, -NaN));
    expect(Number.isNaN(fromFloat16(bits)[0])).toBe(true);
    expect(bits[0] & 0x7fff).toBe(0x7e00);
    expect(float16Finite(bits)).toBe(false);
  });

  it('picks the nearest half for random float32 values', () => {
    const xs = normals(20_000, 7).map((x, i) => x * 2 ** ((i % 40) - 25));
    const halves = toFloat16(xs);
    const decoded = fromFloat16(halves);
    for (let i = 0; i < xs.length; i++) {
      const h = halves[i];
      // The neighbours one step either side in magnitude may not be closer (they lie further from x).
      const neighbours = fromFloat16(Uint16Array.of(h + 1, Math.max(h & 0x8000, h - 1)));
      const err = Math.abs(xs[i] - decoded[i]);
      for (const n of neighbours) if (Number.isFinite(n) && Math.abs(xs[i] - n) < err) expect.fail(`${xs[i]} → ${decoded[i]}, ${n} is nearer`);
    }
  });

  it('relative error ≤ 2^-11 over 100k normal values', () => {
    const xs = normals(100_000, 42);
    const back = fromFloat16(toFloat16(xs));
    let worst = 0;
    for (let i = 0; i < xs.length; i++) {
      if (Math.abs(xs[i]) >= 2 ** -14) worst = Math.max(worst, Math.abs(back[i] - xs[i]) / Math.abs(xs[i]));
    }
    expect(worst).toBeLessThanOrEqual(2 ** -11);
    expect(worst).toBeGreaterThan(0);
  });

  it('converts a subarray view without touching its neighbours', () => {
    const backing = Float32Array.of(9, 1.5, -3, 9);
    expect(Array.from(fromFloat16(toFloat16(backing.subarray(1, 3))))).toEqual([1.5, -3]);
  });

  it('float16Finite sees Infinity and NaN anywhere', () => {
    expect(float16Finite(toFloat16(Float32Array.of(0, -1, 65504, 2 ** -24)))).toBe(true);
    expect(float16Finite(new Uint16Array(0))).toBe(true);
    expect(float16Finite(Uint16Array.of(0x3c00, 0x7c00))).toBe(false);
    expect(float16Finite(Uint16Array.of(0xfc00, 0))).toBe(false);
    expect(float16Finite(Uint16Array.of(0, 0x7e01))).toBe(false);
  });

  it('converts a million values quickly', () => {
    const xs = normals(1_000_000, 3);
    const start = performance.now();
    const back = fromFloat16(toFloat16(xs));
    const ms = performance.now() - start;
    expect(back.length).toBe(xs.length);
    // Generous bound: a shared CI core; the point is "no per-element allocation or table build".
    expect(ms).toBeLessThan(500);
  });
});
