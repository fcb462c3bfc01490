/**
 * manifest.json of a prepared data folder: the tokenizer, how the text was cleaned and packed, counts, and
 * per-shard sha256 so a peer can verify exactly what it trains on. Validated whenever it is read.
 */
import { DataError } from '../errors.ts';
import type { CleanOptions } from './clean.ts';
import type { TokenizerJSON } from './tokenizers/tokenizer.ts';

export const MANIFEST_FORMAT = 'peertrain-shards';
export const MANIFEST_VERSION = 1;

export interface ShardEntry {
  file: string;
  split: 'train' | 'val';
  /** Packed sequences in the shard. */
  sequences: number;
  tokens: number;
  bytes: number;
  sha256: string;
}

export interface SplitCounts {
  documents: number;
  tokens: number;
  /** Characters of cleaned text those tokens encode (bits per character = nats / ln 2 · tokens / characters). */
  characters: number;
  sequences: number;
}

export interface DataManifest {
  format: typeof MANIFEST_FORMAT;
  version: typeof MANIFEST_VERSION;
  name: string;
  tokenizer: TokenizerJSON;
  vocabSize: number;
  eosId: number;
  maskId: number;
  /** Tokens per packed sequence (a training window of seqLen - 1). */
  sequenceLength: number;
  dtype: 'uint16' | 'uint32';
  clean: CleanOptions;
  valFraction: number;
  documents: { read: number; kept: number; duplicates: number; empty: number };
  train: SplitCounts;
  val: SplitCounts;
  shards: ShardEntry[];
}

const SAFE_FILE = /^[A-Za-z0-9._-]+$/;

export function validateDataManifest(raw: unknown, where = 'manifest.json'): DataManifest {
  const fail = (what: string): never => {
    throw new DataError(`${where}: ${what}`);
  };
  if (typeof raw !== 'object' || raw === null) fail('not a JSON object');
  const m = raw as DataManifest;
  if (m.format !== MANIFEST_FORMAT) fail(`not a peertrain data manifest (format ${JSON.stringify(m.format)})`);
  if (m.version !== MANIFEST_VERSION) fail(`unsupported manifest version ${JSON.stringify(m.version)}`);
  if (typeof m.tokenizer !== 'object' || m.tokenizer === null) fail('tokenizer missing');
  for (const k of ['vocabSize', 'eosId', 'maskId', 'sequenceLength'] as const) {
    if (!Number.isInteger(m[k]) || m[k] < 0) fail(`${k} must be a non-negative integer`);
  }
  if (m.sequenceLength < 2) fail('sequenceLength must be at least 2');
  if (m.dtype !== 'uint16' && m.dtype !== 'uint32') fail(`dtype must be uint16 or uint32, got ${JSON.stringify(m.dtype)}`);
  if (m.dtype === 'uint16' && m.vocabSize > 65536) fail('uint16 tokens cannot hold this vocabulary');
  if (!Array.isArray(m.shards)) fail('shards must be an array');
  const bytesPer = m.dtype === 'uint16' ? 2 : 4;
  const seen = new Set<string>();
  m.shards.forEach((s, i) => {
    if (typeof s.file !== 'string' || !SAFE_FILE.test(s.file)) fail(`shard ${i} has an unsafe or missing file name`);
    if (seen.has(s.file)) fail(`shard file ${s.file} is listed twice`);
    seen.add(s.file);
    if (s.split !== 'train' && s.split !== 'val') fail(`shard ${s.file} has split ${JSON.stringify(s.split)}`);
    if (!/^[0-9a-f]{64}$/.test(s.sha256)) fail(`shard ${s.file} has no valid sha256`);
    if (!Number.isInteger(s.sequences) || s.sequences < 1 || s.tokens !== s.sequences * m.sequenceLength || s.bytes !== s.tokens * bytesPer) {
      fail(`shard ${s.file} has inconsistent sequences/tokens/bytes`);
    }
  });
  for (const split of ['train', 'val'] as const) {
    const c = m[split];
    if (typeof c !== 'object' || c === null) fail(`${split} counts missing`);
    const seqs = m.shards.filter((s) => s.split === split).reduce((a, s) => a + s.sequences, 0);
    if (c.sequences !== seqs) fail(`${split}.sequences (${c.sequences}) does not match its shards (${seqs})`);
  }
  return m;
}
