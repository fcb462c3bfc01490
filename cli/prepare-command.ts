/**
 * `peertrain prepare --input PATH... --tokenizer char|word|bpe-gpt2|bpe [--vocab-size N] --out DIR`:
 * raw text to verifiable shards (see prepare.ts), with a progress bar.
 */
import { DEFAULT_CLEAN } from '../engine/data/clean.ts';
import { TOKENIZER_KINDS, type TokenizerKind } from '../engine/data/tokenizers/index.ts';
import { helpText, parseArgs, type FlagSpec } from './args.ts';
import { UsageError } from '../node/errors.ts';
import { prepareDataset } from '../node/data/prepare.ts';
import { listInputFiles, readDocuments, type DocSplit } from '../node/data/readers.ts';

const FLAGS: Record<string, FlagSpec> = {
  input: { type: 'string', help: 'a .txt, .md or .jsonl file or a directory of them (repeat for more)' },
  tokenizer: { type: 'string', help: 'tokenizer', choices: TOKENIZER_KINDS, default: 'char' },
  'vocab-size': { type: 'int', help: 'vocabulary size for word and bpe', min: 1 },
  out: { type: 'string', help: 'output folder (must not exist or be empty)' },
  'seq-len': { type: 'int', help: 'tokens per packed sequence (training windows are one shorter)', min: 2, default: 257 },
  'val-fraction': { type: 'number', help: 'share of documents held out for validation', default: 0.1 },
  'shard-tokens': { type: 'int', help: 'tokens per shard file', min: 1024, default: 1 << 22 },
  docs: { type: 'string', help: 'what a .txt/.md file holds: one document, or one per paragraph', choices: ['file', 'paragraph'], default: 'file' },
  lowercase: { type: 'boolean', help: 'lowercase all text' },
  'strip-markup': { type: 'boolean', help: 'remove HTML tags and Markdown syntax' },
  help: { type: 'boolean', help: 'show this help' },
};
const USAGE = 'usage: peertrain prepare --input PATH... --tokenizer char|word|bpe-gpt2|bpe [--vocab-size N] --out DIR';

/** --input may repeat: collect every occurrence (parseArgs keeps the last). */
function inputsOf(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--input' && i + 1 < argv.length) out.push(argv[++i]);
    else if (argv[i].startsWith('--input=')) out.push(argv[i].slice('--input='.length));
  }
  return out;
}

export async function prepareCommand(argv: string[]): Promise<number> {
  const { flags, positionals } = parseArgs(argv, FLAGS);
  if (flags.help) {
    console.log(helpText(USAGE, FLAGS));
    return 0;
  }
  // Paths after the flags are inputs too: `--input a.txt b.txt` reads as a list.
  const inputs = [...inputsOf(argv), ...positionals];
  if (inputs.length === 0) throw new UsageError(`prepare needs --input PATH\n${USAGE}`);
  if (typeof flags.out !== 'string') throw new UsageError(`prepare needs --out DIR\n${USAGE}`);
  const kind = flags.tokenizer as TokenizerKind;
  if ((kind === 'word' || kind === 'bpe') && flags['vocab-size'] === undefined) throw new UsageError(`--tokenizer ${kind} needs --vocab-size N`);
  const valFraction = Number(flags['val-fraction']);
  if (!(valFraction > 0 && valFraction < 1)) throw new UsageError(`--val-fraction must be in (0, 1), got ${valFraction}`);

  const files = listInputFiles(inputs);
  if (files.length === 0) throw new UsageError(`no .txt, .md or .jsonl files under ${inputs.join(', ')}`);
  const totalBytes = files.reduce((a, f) => a + f.bytes, 0);
  const tty = process.stderr.isTTY;
  let lastDraw = 0;
  const started = Date.now();
  const draw = (p: number, bytes: number) => {
    const now = Date.now();
    if (now - lastDraw < (tty ? 100 : 5000) && bytes < totalBytes) return;
    lastDraw = now;
    const frac = totalBytes ? Math.min(1, bytes / totalBytes) : 1;
    const bar = '#'.repeat(Math.round(frac * 24)).padEnd(24, '.');
    const mb = (bytes / 1e6).toFixed(1);
    const rate = bytes / 1e6 / Math.max(0.001, (now - started) / 1000);
    const line = `pass ${p}/2 [${bar}] ${mb}/${(totalBytes / 1e6).toFixed(1)} MB, ${rate.toFixed(1)} MB/s`;
    process.stderr.write(tty ? `\r\x1b[2K${line}` : `${line}\n`);
  };
  const manifest = await prepareDataset(
    { name: inputs.join(', '), totalBytes, documents: () => readDocuments(files, flags.docs as DocSplit) },
    String(flags.out),
    {
      tokenizer: kind,
      vocabSize: flags['vocab-size'] as number | undefined,
      sequenceLength: Number(flags['seq-len']),
      valFraction,
      shardTokens: Number(flags['shard-tokens']),
      clean: { ...DEFAULT_CLEAN, lowercase: Boolean(flags.lowercase), stripMarkup: Boolean(flags['strip-markup']) },
      onProgress: draw,
      onLog: (m) => process.stderr.write(`${tty ? '\r\x1b[2K' : ''}${m}\n`),
    },
  );
  if (tty) process.stderr.write('\n');
  const d = manifest.documents;
  console.log(`${d.read} documents read: ${d.kept} kept, ${d.duplicates} exact duplicates dropped, ${d.empty} empty after cleaning`);
  console.log(`tokenizer ${kind}: ${manifest.vocabSize} tokens`);
  for (const split of ['train', 'val'] as const) {
    const c = manifest[split];
    console.log(`${split}: ${c.documents} documents, ${c.tokens} tokens, ${c.sequences} sequences of ${manifest.sequenceLength}, ${manifest.shards.filter((s) => s.split === split).length} shard(s)`);
  }
  console.log(`wrote ${flags.out}/manifest.json`);
  return 0;
}
