/**
 * The data pipeline behind `peertrain prepare`: documents → clean → drop exact duplicates → split by document
 * hash → tokenize → pack into fixed-length sequences → shards + manifest.json.
 *
 * Two streaming passes over the input: the first builds the vocabulary (alphabet, word counts or BPE piece
 * counts), the second encodes and writes. Memory holds the vocabulary statistics, one sha256 per kept document,
 * and one shard being filled — not the corpus. Output goes to a temporary sibling folder that is renamed into
 * place at the end, so an error never leaves a half-written data folder.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync, rmdirSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { cleanText, type CleanOptions } from '../../engine/data/clean.ts';
import { MANIFEST_FORMAT, MANIFEST_VERSION, type DataManifest, type ShardEntry, type SplitCounts } from '../../engine/data/manifest.ts';
import { SequencePacker } from '../../engine/data/packing.ts';
import { assignSplit } from '../../engine/data/split.ts';
import { alphabetOf, CharTokenizer, Gpt2Tokenizer, MIN_BPE_VOCAB, PieceCounter, trainBpe, WordCounter, WordTokenizer, type Tokenizer, type TokenizerKind } from '../../engine/data/tokenizers/index.ts';
import { DataError } from '../../engine/errors.ts';
import type { Document } from './readers.ts';

export interface DocumentSource {
  /** Shown in messages and stored in the manifest. */
  name: string;
  /** Input size, for progress. */
  totalBytes: number;
  /** Every document, in a fixed order; called once per pass. */
  documents(): AsyncIterable<Document>;
}

export interface PrepareOptions {
  tokenizer: TokenizerKind;
  /** Vocabulary size for word and bpe (char and bpe-gpt2 have their own). */
  vocabSize?: number;
  /** Tokens per packed sequence (training windows are one shorter). */
  sequenceLength: number;
  valFraction: number;
  /** Target tokens per shard file. */
  shardTokens: number;
  clean: CleanOptions;
  /** Called with (pass 1|2, bytes of input processed so far). */
  onProgress?: (pass: number, bytes: number) => void;
  /** Called with messages for the user. */
  onLog?: (message: string) => void;
}

type Pass = (doc: string, split: 'train' | 'val') => void;

/** Runs one pass: cleaning, dedupe and split, calling `use` on every kept document. */
async function pass(source: DocumentSource, o: PrepareOptions, n: number, use: Pass): Promise<DataManifest['documents']> {
  const seen = new Set<string>();
  const stats = { read: 0, kept: 0, duplicates: 0, empty: 0 };
  let bytes = 0;
  for await (const doc of source.documents()) {
    stats.read++;
    bytes += Buffer.byteLength(doc.text);
    const text = cleanText(doc.text, o.clean);
    if (text === '') {
      stats.empty++;
      continue;
    }
    const hash = createHash('sha256').update(text).digest('base64');
    if (seen.has(hash)) {
      stats.duplicates++;
      continue;
    }
    seen.add(hash);
    stats.kept++;
    use(text, assignSplit(text, o.valFraction));
    if (stats.read % 64 === 0) o.onProgress?.(n, bytes);
  }
  o.onProgress?.(n, source.totalBytes);
  return stats;
}

/**
 * Pass 1: counts documents and gathers what the tokenizer needs; returns a builder so that an input with no
 * usable document is reported as such before any vocabulary is built.
 */
async function scanForTokenizer(source: DocumentSource, o: PrepareOptions): Promise<{ docs: DataManifest['documents']; build: () => Promise<Tokenizer> }> {
  switch (o.tokenizer) {
    case 'char': {
      const set = new Set<string>();
      const docs = await pass(source, o, 1, (t) => alphabetOf(t, set));
      return { docs, build: async () => CharTokenizer.fromAlphabet(set) };
    }
    case 'word': {
      if (o.vocabSize === undefined) throw new DataError('--vocab-size is required for the word tokenizer');
      const counter = new WordCounter(o.clean.lowercase);
      const docs = await pass(source, o, 1, (t) => counter.add(t));
      return { docs, build: async () => WordTokenizer.fromCounts(counter, o.vocabSize!) };
    }
    case 'bpe': {
      if (o.vocabSize === undefined) throw new DataError('--vocab-size is required for the bpe tokenizer');
      if (o.vocabSize < MIN_BPE_VOCAB) trainBpe(new PieceCounter(), o.vocabSize); // fails fast with the reason
      const counter = new PieceCounter();
      const docs = await pass(source, o, 1, (t) => counter.add(t));
      return {
        docs,
        build: async () => {
          o.onLog?.(`training a ${o.vocabSize}-token byte-level BPE on ${counter.counts.size.toLocaleString('en-US')} distinct pieces`);
          return trainBpe(counter, o.vocabSize!);
        },
      };
    }
    case 'bpe-gpt2': {
      const docs = await pass(source, o, 1, () => {});
      return { docs, build: () => Gpt2Tokenizer.load() };
    }
  }
}

/** Writes one split's shards as sequences arrive. */
class ShardWriter {
  readonly entries: ShardEntry[] = [];
  private current: Int32Array[] = [];
  private currentTokens = 0;

  constructor(
    private readonly dir: string,
    private readonly split: 'train' | 'val',
    private readonly dtype: 'uint16' | 'uint32',
    private readonly shardTokens: number,
  ) {}

  add(seq: Int32Array): void {
    this.current.push(seq);
    this.currentTokens += seq.length;
    if (this.currentTokens >= this.shardTokens) this.flush();
  }

  flush(): void {
    if (this.current.length === 0) return;
    const tokens = this.currentTokens;
    const arr = this.dtype === 'uint16' ? new Uint16Array(tokens) : new Uint32Array(tokens);
    let off = 0;
    for (const s of this.current) {
      arr.set(s, off);
      off += s.length;
    }
    const bytes = new Uint8Array(arr.buffer);
    const file = `${this.split}-${String(this.entries.length).padStart(5, '0')}.bin`;
    writeFileSync(join(this.dir, file), bytes);
    this.entries.push({ file, split: this.split, sequences: this.current.length, tokens, bytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') });
    this.current = [];
    this.currentTokens = 0;
  }
}

/** Fails unless outDir is absent or an empty directory. */
function checkOutDir(outDir: string): void {
  if (!existsSync(outDir)) return;
  let entries: string[];
  try {
    entries = readdirSync(outDir);
  } catch {
    throw new DataError(`${outDir} exists and is not a directory`);
  }
  if (entries.length) throw new DataError(`${outDir} is not empty: choose a new --out (prepare never overwrites data)`);
}

export async function prepareDataset(source: DocumentSource, outDirRaw: string, o: PrepareOptions): Promise<DataManifest> {
  const outDir = resolve(outDirRaw);
  checkOutDir(outDir);
  if (!Number.isInteger(o.sequenceLength) || o.sequenceLength < 2) throw new DataError(`sequence length must be an integer >= 2, got ${o.sequenceLength}`);
  if (!(o.valFraction > 0 && o.valFraction < 1)) throw new DataError(`validation fraction must be in (0, 1), got ${o.valFraction}`);

  const { docs, build } = await scanForTokenizer(source, o);
  if (docs.read === 0) throw new DataError(`${source.name}: no documents found`);
  if (docs.kept === 0) throw new DataError(`${source.name}: every document is empty after cleaning`);
  const tokenizer = await build();

  mkdirSync(dirname(outDir), { recursive: true });
  const tmp = join(dirname(outDir), `.${basename(outDir)}.partial-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  try {
    const dtype = tokenizer.vocabSize <= 65536 ? 'uint16' : 'uint32';
    const counts: Record<'train' | 'val', SplitCounts> = {
      train: { documents: 0, tokens: 0, characters: 0, sequences: 0 },
      val: { documents: 0, tokens: 0, characters: 0, sequences: 0 },
    };
    const writers = { train: new ShardWriter(tmp, 'train', dtype, o.shardTokens), val: new ShardWriter(tmp, 'val', dtype, o.shardTokens) };
    const packers = {
      train: new SequencePacker(o.sequenceLength, tokenizer.eosId, (s) => writers.train.add(s)),
      val: new SequencePacker(o.sequenceLength, tokenizer.eosId, (s) => writers.val.add(s)),
    };
    await pass(source, o, 2, (text, split) => {
      const ids = tokenizer.encode(text);
      counts[split].documents++;
      counts[split].tokens += ids.length + 1; // with its separator
      counts[split].characters += [...text].length + 1; // the separator stands for the break between documents
      packers[split].addDocument(ids);
    });
    for (const split of ['train', 'val'] as const) {
      packers[split].flush();
      writers[split].flush();
      counts[split].sequences = writers[split].entries.reduce((a, e) => a + e.sequences, 0);
      if (counts[split].sequences === 0) {
        throw new DataError(
          `${source.name}: the ${split} split holds no complete sequence of ${o.sequenceLength} tokens (${counts[split].documents} documents, ${counts[split].tokens} tokens): add text or documents, or lower --seq-len`,
        );
      }
    }
    const manifest: DataManifest = {
      format: MANIFEST_FORMAT,
      version: MANIFEST_VERSION,
      name: source.name,
      tokenizer: tokenizer.toJSON(),
      vocabSize: tokenizer.vocabSize,
      eosId: tokenizer.eosId,
      maskId: tokenizer.maskId,
      sequenceLength: o.sequenceLength,
      dtype,
      clean: o.clean,
      valFraction: o.valFraction,
      documents: docs,
      train: counts.train,
      val: counts.val,
      shards: [...writers.train.entries, ...writers.val.entries],
    };
    writeFileSync(join(tmp, 'manifest.json'), `${JSON.stringify(manifest, null, 1)}\n`);
    if (existsSync(outDir)) rmdirSync(outDir); // checked empty above
    renameSync(tmp, outDir);
    return manifest;
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}
