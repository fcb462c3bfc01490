/**
 * What averaged values look like after the wire. Compression is a small interface over typed arrays (encode,
 * decode, ratio, error bound), as in hivemind's compression/, so that a cheaper wire is a new Codec, not an
 * `if` in the round. Today's wire still carries float32 (protocol TensorPart.values): the Reducer applies a
 * codec's round trip where the wire would quantize, so every peer already holds what a compressed wire would
 * have delivered, and switching the wire to a codec's bytes later changes no result.
 *
 * Bytes are in platform order, like every typed array peertrain puts on the wire (little-endian everywhere
 * it runs).
 */
import { fromFloat16, toFloat16 } from '../../protocol/float16.ts';
import { CodecError } from './errors.ts';

export interface Codec {
  /** Stable, for logs and run status. */
  readonly name: string;
  /** Encoded bytes per float32 byte (1: none saved; 0.5: half the bytes). */
  readonly ratio: number;
  /** The wire form of `values`; may share memory with them (identity does), so do not mutate either. */
  encode(values: Float32Array): Uint8Array;
  /** Back to float32; throws CodecError for bytes that are not whole encoded values. */
  decode(bytes: Uint8Array): Float32Array;
  /** The largest |decode(encode(x)) − x| for a finite x; Infinity where the codec cannot represent x. */
  maxError?(x: number): number;
}

/** What `values` become after the codec's wire: the identity codec hands back the same memory, at no cost. */
export function roundTrip(codec: Codec, values: Float32Array): Float32Array {
  return codec.decode(codec.encode(values));
}

/** A typed view of `bytes` when they are aligned for it; a copy otherwise (a frame's payload may be at any offset). */
function aligned(bytes: Uint8Array, width: number): ArrayBufferLike {
  if (bytes.byteLength % width !== 0) throw new CodecError(`${bytes.byteLength} bytes are not whole ${width}-byte values`);
  return bytes.byteOffset % width === 0 ? bytes.buffer : bytes.slice().buffer;
}

function offsetOf(bytes: Uint8Array, width: number): number {
  return bytes.byteOffset % width === 0 ? bytes.byteOffset : 0;
}

/** Float32 as is: lossless, and non-finite values pass through unchanged (validation refuses them upstream). */
export const identityCodec: Codec = {
  name: 'identity',
  ratio: 1,
  encode: (values) => new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
  decode: (bytes) => new Float32Array(aligned(bytes, 4), offsetOf(bytes, 4), bytes.byteLength / 4),
  maxError: () => 0,
};

/** A float32 at or above this magnitude becomes ±Infinity in binary16 (halfway from 65504 to 2^16). */
const HALF_OVERFLOW = 65520;
/** Half a binary16 ulp relative to the value (11 significant bits): the round-to-nearest bound. */
const HALF_RELATIVE_ERROR = 2 ** -11;
/** Half the smallest binary16 subnormal: the absolute bound below 2^-14. */
const HALF_ABSOLUTE_ERROR = 2 ** -25;

/**
 * IEEE binary16, round to nearest even (protocol/float16.ts): half the bytes, about three decimal digits.
 * Non-finite input stays non-finite (NaN → NaN, ±Infinity → ±Infinity), and finite values of magnitude
 * 65520 or more overflow to ±Infinity, which validation would then refuse: scale before encoding if the
 * values can be that large (averaged gradients and deltas are not).
 */
export const float16Codec: Codec = {
  name: 'float16',
  ratio: 0.5,
  encode: (values) => {
    const half = toFloat16(values);
    return new Uint8Array(half.buffer, half.byteOffset, half.byteLength);
  },
  decode: (bytes) => fromFloat16(new Uint16Array(aligned(bytes, 2), offsetOf(bytes, 2), bytes.byteLength / 2)),
  maxError: (x) => (Math.abs(x) >= HALF_OVERFLOW ? Infinity : Math.max(Math.abs(x) * HALF_RELATIVE_ERROR, HALF_ABSOLUTE_ERROR)),
};
