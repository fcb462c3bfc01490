/**
 * IEEE 754 binary16 ("half") conversion for tensors on the wire: halves the bytes of activations and gradients
 * between pipeline stages. Pure bit manipulation on 32-bit views, no tables, so a million values take a few ms.
 *
 * binary16: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits. Largest finite 65504, smallest normal
 * 2^-14, smallest subnormal 2^-24. Rounding is to nearest, ties to even, as the hardware does.
 */

const F32_EXP_MASK = 0x7f800000;
const F32_ABS_MASK = 0x7fffffff;
/** |x| at or above this (65520, halfway from 65504 to 2^16, which ties to the even 2^16) rounds to Infinity. */
const F32_HALF_OVERFLOW = 0x477ff000;
/** 2^-14 as float32 bits: below this a half is subnormal. */
const F32_HALF_MIN_NORMAL = 0x38800000;
/** Exponent bias difference (127 - 15) placed in the float32 exponent field. */
const REBIAS = 112 << 23;
/** Mantissa bits a float32 has beyond a half's (23 - 10). */
const MANTISSA_SHIFT = 13;

const HALF_EXP_MASK = 0x7c00;
const HALF_INFINITY = 0x7c00;
/** Quiet NaN: only the top mantissa bit set, so it survives any payload truncation. */
const HALF_NAN = 0x7e00;

/** Rounds a float32 (given as bits) to the nearest binary16 (bits), ties to even. */
function halfBits(f: number): number {
  const sign = (f >>> 16) & 0x8000;
  const abs = f & F32_ABS_MASK;
  if (abs >= F32_EXP_MASK) return sign | (abs > F32_EXP_MASK ? HALF_NAN : HALF_INFINITY);
  if (abs >= F32_HALF_OVERFLOW) return sign | HALF_INFINITY;
  if (abs >= F32_HALF_MIN_NORMAL) return sign | roundNormal(abs);
  return sign | roundSubnormal(abs);
}

/**
 * Drops 13 mantissa bits with round-half-even: adding 0xfff plus the lowest kept bit carries exactly when the
 * dropped part is above half, or exactly half with an odd kept part. A carry into the exponent is still right.
 */
function roundNormal(abs: number): number {
  const lowestKept = (abs >>> MANTISSA_SHIFT) & 1;
  return (abs - REBIAS + 0xfff + lowestKept) >>> MANTISSA_SHIFT;
}

/** Values below 2^-14 become multiples of 2^-24: shift the full significand right and round half to even. */
function roundSubnormal(abs: number): number {
  const exponent = abs >>> 23;
  // Below 2^-25 even the round-up cannot reach the smallest subnormal; also keeps the shift under 32.
  if (exponent < 102) return 0;
  const significand = (abs & 0x7fffff) | 0x800000;
  const shift = 126 - exponent;
  const kept = significand >>> shift;
  const dropped = significand & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  const roundUp = dropped > half || (dropped === half && (kept & 1) === 1);
  // A round-up to 0x400 lands exactly on the smallest normal's encoding.
  return kept + (roundUp ? 1 : 0);
}

/** Converts to binary16 bits, rounding to nearest even; overflow gives ±Infinity, NaN stays NaN. */
export function toFloat16(values: Float32Array): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < bits.length; i++) out[i] = halfBits(bits[i]);
  return out;
}

/** Float32 bits of a binary16; exact, since every half is a float32. */
function floatBits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exponent = (h >>> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0x1f) return (sign | F32_EXP_MASK | (mantissa << MANTISSA_SHIFT)) >>> 0;
  if (exponent !== 0) return (sign | ((exponent << 23) + REBIAS) | (mantissa << MANTISSA_SHIFT)) >>> 0;
  if (mantissa === 0) return sign >>> 0;
  return (sign | subnormalMagnitudeBits(mantissa)) >>> 0;
}

/** Normalises a half subnormal (mantissa · 2^-24) into float32 bits, where it is a normal number. */
function subnormalMagnitudeBits(mantissa: number): number {
  // Leading zeros within the 10-bit field decide how far to shift the top 1 into the implicit-bit position.
  const shift = Math.clz32(mantissa) - 21;
  const exponent = 113 - shift; // 2^-14 is float32 exponent 113; each shift halves it.
  return (exponent << 23) | (((mantissa << shift) & 0x3ff) << MANTISSA_SHIFT);
}

/** Converts binary16 bits back to float32 exactly. */
export function fromFloat16(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) outBits[i] = floatBits(bits[i]);
  return out;
}

/** True when no element is Infinity or NaN (exponent bits all ones). */
export function float16Finite(bits: Uint16Array): boolean {
  for (let i = 0; i < bits.length; i++) {
    if ((bits[i] & HALF_EXP_MASK) === HALF_EXP_MASK) return false;
  }
  return true;
}
