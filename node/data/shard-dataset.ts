/**
 * Opens a prepared data folder for training or evaluation: validates manifest.json and verifies every shard
 * against its sha256 before any of it is used. A mismatch is a DataError naming the shard.
 */
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { packedSequences, type PackedSequences } from '../../engine/data/batches.ts';
import { validateDataManifest, type DataManifest } from '../../engine/data/manifest.ts';
import { decodeShard } from '../../engine/data/shards.ts';
import { loadTokenizer, type Tokenizer } from '../../engine/data/tokenizers/index.ts';
import { DataError } from '../../engine/errors.ts';

export interface ShardDataset {
  dir: string;
  manifest: DataManifest;
  tokenizer: Tokenizer;
  train: PackedSequences;
  val: PackedSequences;
  /** A shard's bytes as stored (for serving it to peers). */
  readShard(file: string): Promise<Uint8Array>;
}

export function isDataFolder(path: string): boolean {
  try {
    return statSync(path).isDirectory() && statSync(join(path, 'manifest.json')).isFile();
  } catch {
    return false;
  }
}

export function readManifest(dir: string): DataManifest {
  const path = join(dir, 'manifest.json');
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new DataError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return validateDataManifest(raw, path);
}

function loadSplit(dir: string, m: DataManifest, split: 'train' | 'val'): PackedSequences {
  const shards = m.shards.filter((s) => s.split === split);
  const total = shards.reduce((a, s) => a + s.tokens, 0);
  const data = new Int32Array(total);
  let off = 0;
  for (const s of shards) {
    const path = join(dir, s.file);
    let bytes: Buffer;
    try {
      bytes = readFileSync(path);
    } catch {
      throw new DataError(`shard ${path} is missing`);
    }
    if (bytes.length !== s.bytes) throw new DataError(`shard ${path} has ${bytes.length} bytes, the manifest says ${s.bytes}`);
    const sha = createHash('sha256').update(bytes).digest('hex');
    if (sha !== s.sha256) throw new DataError(`shard ${path} does not match its sha256 in the manifest (corrupt or modified)`);
    const tokens = decodeShard(bytes, m, path);
    data.set(tokens, off);
    off += tokens.length;
  }
  return packedSequences(data, m.sequenceLength);
}

export async function openShardDataset(dir: string): Promise<ShardDataset> {
  const manifest = readManifest(dir);
  const tokenizer = await loadTokenizer(manifest.tokenizer);
  if (tokenizer.vocabSize !== manifest.vocabSize) throw new DataError(`${dir}: the tokenizer has ${tokenizer.vocabSize} tokens, the manifest says ${manifest.vocabSize}`);
  const files = new Set(manifest.shards.map((s) => s.file));
  const readShard = async (file: string) => {
    if (!files.has(file)) throw new DataError(`${dir}: no shard ${file}`);
    return readFileSync(join(dir, file));
  };
  return { dir, manifest, tokenizer, train: loadSplit(dir, manifest, 'train'), val: loadSplit(dir, manifest, 'val'), readShard };
}
