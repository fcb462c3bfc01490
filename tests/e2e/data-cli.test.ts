/**
 * `peertrain prepare`, training on a prepared folder, `eval`, `generate` and fine-tuning, as real processes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { loadBrownText } from '../../node/data/builtin-corpus.ts';
import { killAll, runCli, tempDir, writeText } from '../../harness/cli.ts';

const docs = loadBrownText().split('\n\n').slice(0, 80);
let dir: string;
let jsonl: string;

beforeAll(() => {
  dir = tempDir('peertrain-data-');
  // 80 Brown documents, plus two exact duplicates and one that cleaning empties.
  const lines = [...docs, docs[3], docs[7], '\u0000\u200b  '].map((text) => JSON.stringify({ text }));
  jsonl = writeText(dir, 'corpus.jsonl', `${lines.join('\n')}\n`);
  mkdirSync(join(dir, 'mixed'));
  writeText(join(dir, 'mixed'), 'a.txt', docs[10]);
  writeText(join(dir, 'mixed'), 'b.md', `# Heading\n\n${docs[11]}`);
  writeText(join(dir, 'mixed'), 'ignored.csv', 'x,y');
});
afterAll(() => killAll());

function sha(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

function noPartials(out: string): void {
  expect(readdirSync(dirname(out)).filter((f) => f.includes('.partial-'))).toEqual([]);
}

describe('peertrain prepare', () => {
  it('cleans, dedupes, splits, tokenizes and writes verifiable shards, deterministically', async () => {
    const outs = [join(dir, 'prep-a'), join(dir, 'prep-b')];
    for (const out of outs) {
      const r = await runCli(['prepare', '--input', jsonl, join(dir, 'mixed'), '--tokenizer', 'bpe', '--vocab-size', '400', '--seq-len', '65', '--out', out, '--strip-markup']);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(r.code).toBe(0);
      // mixed/a.txt repeats document 10 of the JSONL: three exact duplicates in all.
      expect(r.stdout).toMatch(/85 documents read: 81 kept, 3 exact duplicates dropped, 1 empty after cleaning/);
    }
    const [a, b] = outs.map((o) => JSON.parse(readFileSync(join(o, 'manifest.json'), 'utf8')));
    expect(a.shards).toEqual(b.shards); // same split, same tokens, same hashes
    expect(a.vocabSize).toBe(400);
    expect(a.train.documents + a.val.documents).toBe(81);
    expect(a.val.documents).toBeGreaterThan(0);
    for (const s of a.shards) expect(sha(join(outs[0], s.file))).toBe(s.sha256);
  });

  const bad: Array<[string, (d: string) => string[], RegExp]> = [
    ['a JSONL line that is not an object with text', (d) => ['--input', writeText(d, 'x.jsonl', '{"text":"ok"}\n{"body":"no"}\n')], /x\.jsonl:2: expected an object with a "text" string/],
    ['a JSONL line that is not JSON', (d) => ['--input', writeText(d, 'y.jsonl', '{"text":"ok"}\n\n{oops\n')], /y\.jsonl:3: not valid JSON/],
    ['a binary file', (d) => ['--input', writeText(d, 'bin.txt', new Uint8Array([65, 0, 66]))], /bin\.txt looks binary/],
    ['a non-UTF-8 file', (d) => ['--input', writeText(d, 'l1.txt', new Uint8Array([0x63, 0x61, 0x66, 0xe9]))], /l1\.txt is not valid UTF-8/],
    ['a non-UTF-8 JSONL line', (d) => ['--input', writeText(d, 'l1.jsonl', Buffer.concat([Buffer.from('{"text":"a"}\n{"text":"'), Buffer.from([0xe9]), Buffer.from('"}\n')]))], /l1\.jsonl:2 is not valid UTF-8/],
    ['an empty input folder', (d) => (mkdirSync(join(d, 'empty-dir')), ['--input', join(d, 'empty-dir')]), /no \.txt, \.md or \.jsonl files/],
    ['an empty file', (d) => ['--input', writeText(d, 'e.txt', '')], /e\.txt is empty/],
    ['documents that clean to nothing', (d) => ['--input', writeText(d, 'ws.jsonl', '{"text":"  \\u0000 "}\n')], /every document is empty after cleaning/],
    ['a BPE vocabulary too small', () => ['--input', jsonl, '--tokenizer', 'bpe', '--vocab-size', '100'], /--vocab-size 100 is too small for byte-level BPE \(at least 258/],
    ['a missing vocabulary size', () => ['--input', jsonl, '--tokenizer', 'word'], /--tokenizer word needs --vocab-size N/],
    ['an unsupported file', (d) => ['--input', writeText(d, 'data.csv', 'a,b')], /data\.csv: unsupported file type/],
  ];
  it.each(bad)('refuses %s, writing nothing', async (_name, args, message) => {
    const d = tempDir('peertrain-bad-');
    const out = join(d, 'out');
    const r = await runCli(['prepare', ...args(d), '--out', out]);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(r.code).not.toBe(0);
    expect(existsSync(out)).toBe(false);
    noPartials(out);
  });

  it('never writes into a non-empty folder', async () => {
    const out = join(dir, 'occupied');
    mkdirSync(out);
    writeFileSync(join(out, 'keep.txt'), 'mine');
    const r = await runCli(['prepare', '--input', jsonl, '--out', out]);
    expect(r.stderr).toMatch(/occupied is not empty/);
    expect(r.code).toBe(1);
    expect(readdirSync(out)).toEqual(['keep.txt']);
  });
});

describe('training, evaluating and fine-tuning on prepared data', () => {
  const QUICK = ['--batch', '4', '--seq', '64', '--eval-every', '3', '--eval-batches', '1', '--sample-tokens', '8', '--workers', '2'];
  let data: string;
  let ckpt: string;

  beforeAll(async () => {
    data = join(dir, 'char-data');
    const r = await runCli(['prepare', '--input', jsonl, '--tokenizer', 'char', '--seq-len', '65', '--out', data]);
    expect(r.code).toBe(0);
    const out = join(dir, 'char-run');
    const t = await runCli(['train', '--data', data, '--steps', '3', '--out', out, '--json', ...QUICK]);
    expect(t.stderr).not.toMatch(/\n\s+at /);
    expect(t.code).toBe(0);
    ckpt = join(out, 'checkpoint.ptck');
  });

  it('eval --json reports loss, perplexity, bits per character, BLEU and diversity', async () => {
    const r = await runCli(['eval', ckpt, '--json', '--prompts', '3', '--prompt-tokens', '24', '--continuation-tokens', '24', '--batches', '2']);
    expect(r.code).toBe(0);
    const m = JSON.parse(r.stdout.trim().split('\n').pop()!);
    for (const k of ['valLoss', 'perplexity', 'bitsPerChar', 'bleu', 'distinct2', 'repetitionRate']) expect(Number.isFinite(m[k])).toBe(true);
    expect(m.perplexity).toBeCloseTo(Math.exp(m.valLoss), 6);
    // char data: bits per character = nats/ln 2 (one character per token, separators counted as one)
    expect(m.bitsPerChar).toBeCloseTo(m.valLoss / Math.LN2, 6);
  });

  it('generate continues a prompt', async () => {
    const r = await runCli(['generate', ckpt, '--prompt', 'The jury said', '--max-tokens', '20']);
    expect(r.code).toBe(0);
    expect(r.stdout.startsWith('The jury said')).toBe(true);
    const bad = await runCli(['generate', ckpt, '--prompt', 'x', '--temperature', '-1']);
    expect(bad.stderr).toMatch(/temperature must be >= 0/);
    expect(bad.code).toBe(1);
  });

  it('fine-tunes from a checkpoint with a new schedule; another tokenizer is refused', async () => {
    const out = join(dir, 'finetune');
    const r = await runCli(['train', '--from', ckpt, '--data', data, '--steps', '2', '--out', out, '--json', ...QUICK]);
    expect(r.stderr).toMatch(/fine-tuning .*checkpoint\.ptck \(step 3\)/);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout.trim().split('\n').pop()!).step).toBe(2);
    const bpe = join(dir, 'bpe-data');
    expect((await runCli(['prepare', '--input', jsonl, '--tokenizer', 'bpe', '--vocab-size', '300', '--seq-len', '65', '--out', bpe])).code).toBe(0);
    const m = await runCli(['train', '--from', ckpt, '--data', bpe, '--steps', '2', '--out', join(dir, 'ft-bad'), ...QUICK]);
    expect(m.stderr).toMatch(/the data's tokenizer \(bpe \(300 tokens\)\) differs from the checkpoint's \(char/);
    expect(m.code).toBe(1);
  });

  it('refuses a shard whose bytes do not match the manifest, naming it', async () => {
    const copy = join(dir, 'tampered');
    mkdirSync(copy);
    for (const f of readdirSync(data)) writeFileSync(join(copy, f), readFileSync(join(data, f)));
    const manifest = JSON.parse(readFileSync(join(copy, 'manifest.json'), 'utf8'));
    const shard = join(copy, manifest.shards[0].file);
    const bytes = readFileSync(shard);
    bytes[10] ^= 1;
    writeFileSync(shard, bytes);
    const r = await runCli(['train', '--data', copy, '--steps', '2', '--out', join(dir, 'tampered-run'), ...QUICK]);
    expect(r.stderr).toMatch(new RegExp(`shard .*${manifest.shards[0].file} does not match its sha256`));
    expect(r.code).toBe(1);
  });
});
