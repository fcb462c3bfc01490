/**
 * What `--data` means for train and eval: a prepared folder (used as is), a text file (prepared on the fly
 * with the char tokenizer, one document per paragraph, cached by content hash), or nothing (the built-in
 * corpus, prepared once and cached).
 */
import { createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_CLEAN } from '../../engine/data/clean.ts';
import { DataError } from '../../engine/errors.ts';
import { cacheDir } from '../paths.ts';
import { brownSource } from './builtin-corpus.ts';
import { prepareDataset, type DocumentSource } from './prepare.ts';
import { readDocuments, readTextFile } from './readers.ts';
import { isDataFolder, openShardDataset, type ShardDataset } from './shard-dataset.ts';

/** Packed sequence length of on-the-fly preparation: the longest context of the presets but gpt2's, plus 1. */
export const DEFAULT_SEQUENCE_LENGTH = 257;
/** Bumped when cleaning, splitting or packing of cached data changes, so stale caches are rebuilt. */
const CACHE_VERSION = 2;

async function prepared(key: string, source: DocumentSource, log: (m: string) => void): Promise<ShardDataset> {
  const dir = join(cacheDir(), 'prepared', `${key}-v${CACHE_VERSION}`);
  if (!isDataFolder(dir)) {
    log(`preparing ${source.name} (once; cached in ${dir})`);
    try {
      await prepareDataset(source, dir, { tokenizer: 'char', sequenceLength: DEFAULT_SEQUENCE_LENGTH, valFraction: 0.1, shardTokens: 1 << 20, clean: DEFAULT_CLEAN, onLog: log });
    } catch (err) {
      // Two processes preparing the same cache at once: the loser finds the winner's folder.
      if (!isDataFolder(dir)) throw err;
    }
  }
  return openShardDataset(dir);
}

export async function resolveData(data: string | undefined, log: (m: string) => void): Promise<ShardDataset> {
  if (data === undefined) return prepared('brown-char', brownSource(), log);
  if (!existsSync(data)) throw new DataError(`cannot read ${data}: no such file or directory`);
  if (isDataFolder(data)) return openShardDataset(data);
  if (statSync(data).isDirectory()) {
    throw new DataError(`${data} is a directory but not a prepared data folder (no manifest.json): run peertrain prepare --input ${data} --out DIR, then --data DIR`);
  }
  const text = readTextFile(data); // errors name the file: empty, binary, not UTF-8, a directory
  const hash = createHash('sha256').update(text).digest('hex').slice(0, 16);
  const source: DocumentSource = {
    name: data,
    totalBytes: Buffer.byteLength(text),
    documents: () => readDocuments([{ path: data }], 'paragraph'),
  };
  return prepared(`file-${hash}-char`, source, log);
}
