/** Shard bytes → tokens: the binary format prepare writes (little-endian uint16 or uint32, no header). */
import { DataError } from '../errors.ts';
import type { DataManifest } from './manifest.ts';

/** Decodes a verified shard, checking every token is inside the vocabulary. */
export function decodeShard(bytes: Uint8Array, m: DataManifest, name: string): Int32Array {
  const width = m.dtype === 'uint16' ? 2 : 4;
  if (bytes.length % width !== 0) throw new DataError(`shard ${name}: ${bytes.length} bytes is not a whole number of ${m.dtype} tokens`);
  const copy = new Uint8Array(bytes.length); // aligned for the typed-array view
  copy.set(bytes);
  const tokens = m.dtype === 'uint16' ? new Uint16Array(copy.buffer) : new Uint32Array(copy.buffer);
  const out = new Int32Array(tokens.length);
  for (let i = 0; i < tokens.length; i++) {
    if (tokens[i] >= m.vocabSize) throw new DataError(`shard ${name}: token ${tokens[i]} at ${i} is outside the vocabulary of ${m.vocabSize}`);
    out[i] = tokens[i];
  }
  return out;
}
