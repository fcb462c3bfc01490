/**
 * `peertrain train` and `peertrain export` as a user runs them: real processes, real files.
 * Bad input gets one line naming the problem, a non-zero exit, and nothing damaged on disk.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { hashFloats } from '../../engine/averaging.ts';
import { loadCheckpoint } from '../../node/checkpoint-io.ts';
import { loadBrownText } from '../../node/data/builtin-corpus.ts';
import { killAll, runCli, tempDir, writeText } from '../../harness/cli.ts';

// Real text: 60k characters of the Brown corpus.
// Paragraph breaks every few sentences: a text file's paragraphs are its documents (split train/val by hash).
const corpus = loadBrownText()
  .slice(0, 80_000)
  .split(/(?<=[.!?]) /)
  .map((s, i) => (i % 4 === 3 ? `${s}\n\n` : `${s} `))
  .join('');
// Small and quick: the tiny preset at short sequences and small batches.
const QUICK = ['--batch', '4', '--seq', '32', '--eval-every', '2', '--eval-batches', '1', '--sample-tokens', '16'];

let dir: string;
let data: string;

beforeAll(() => {
  dir = tempDir();
  data = writeText(dir, 'corpus.txt', corpus);
});
afterAll(() => killAll());

function summaryOf(stdout: string): Record<string, unknown> {
  const lines = stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]);
}

describe('peertrain train', () => {
  it('trains, validates, checkpoints, samples and prints a JSON summary', async () => {
    const out = join(dir, 'run-ok');
    const r = await runCli(['train', '--data', data, '--steps', '4', '--out', out, '--json', '--workers', '2', ...QUICK]);
    expect(r.stderr).toMatch(/backend: wasm \(XNNPACK, fast BatchMatMul\/Slice\/Transpose\/Sum\) × 2 workers/);
    expect(r.stderr).toMatch(/step 4: train loss [\d.]+, val loss [\d.]+/);
    expect(r.stderr).toMatch(/sample: /);
    expect(r.code).toBe(0);
    const s = summaryOf(r.stdout);
    expect(s).toMatchObject({ step: 4, backend: 'wasm', workers: 2 });
    for (const k of ['trainLoss', 'valLoss', 'tokensPerSec']) expect(Number.isFinite(s[k])).toBe(true);
    expect(loadCheckpoint(join(out, 'checkpoint.ptck')).step).toBe(4);
    // export writes safetensors other tools can read
    const e = await runCli(['export', join(out, 'checkpoint.ptck'), '--format', 'safetensors']);
    expect(e.code).toBe(0);
    const st = readFileSync(join(out, 'checkpoint.safetensors'));
    const headerLen = Number(st.readBigUInt64LE(0));
    expect(JSON.parse(st.subarray(8, 8 + headerLen).toString())['transformer.wte.weight'].dtype).toBe('F32');
  });

  it('--backend cpu is honoured and reported', async () => {
    const r = await runCli(['train', '--data', data, '--steps', '1', '--out', join(dir, 'run-cpu'), '--json', '--backend', 'cpu', '--workers', '1', ...QUICK, '--sample-tokens', '0', '--batch', '2']);
    expect(r.code).toBe(0);
    expect(summaryOf(r.stdout)).toMatchObject({ backend: 'cpu', workers: 1 });
  });

  it('Ctrl-C saves a checkpoint; resuming reaches the same parameters as an uninterrupted run', async () => {
    const args = ['--data', data, '--steps', '6', '--json', '--workers', '2', ...QUICK, '--sample-tokens', '0'];
    const straight = join(dir, 'run-straight');
    expect((await runCli(['train', ...args, '--out', straight])).code).toBe(0);
    const cut = join(dir, 'run-cut');
    const first = await runCli(['train', ...args, '--out', cut], { interruptWhen: (err) => /step 2: train loss/.test(err) });
    expect(first.code).toBe(130);
    expect(first.stderr).toMatch(/checkpoint saved at step \d/);
    const stopped = loadCheckpoint(join(cut, 'checkpoint.ptck')).step;
    expect(stopped).toBeGreaterThanOrEqual(2);
    expect(stopped).toBeLessThan(6);
    const second = await runCli(['train', ...args, '--out', cut, '--resume']);
    expect(second.code).toBe(0);
    expect(second.stderr).toMatch(new RegExp(`resuming at step ${stopped}`));
    const a = loadCheckpoint(join(straight, 'checkpoint.ptck'));
    const b = loadCheckpoint(join(cut, 'checkpoint.ptck'));
    expect(b.step).toBe(6);
    expect(hashFloats(b.params)).toBe(hashFloats(a.params));
    expect(hashFloats(b.v)).toBe(hashFloats(a.v));
    // The loss curve continues: history holds steps from both runs, in order.
    const steps = b.history.map(([s]) => s);
    expect(steps).toEqual([...steps].sort((x, y) => x - y));
    expect(steps[steps.length - 1]).toBe(6);
  });
});

describe('peertrain train refuses bad input', () => {
  const cases: Array<[string, () => string[], RegExp, number]> = [
    ['an unknown preset', () => ['--preset', 'huge'], /--preset must be one of tiny, small, gpt2, got "huge"/, 2],
    ['an unknown backend', () => ['--backend', 'metal'], /--backend must be one of auto, tensorflow, webgpu, wasm, cpu/, 2],
    ['a backend that is not installed', () => ['--backend', 'tensorflow'], /no backend could start \(tensorflow: neither @tensorflow\/tfjs-node-gpu nor @tensorflow\/tfjs-node is installed\); supported: tensorflow, webgpu, wasm, cpu/, 1],
    ['a negative learning rate', () => ['--lr', '-0.1'], /lr must be a number in \(0, 10\], got -0.1/, 1],
    ['zero steps', () => ['--steps', '0'], /--steps must be at least 1/, 2],
    ['an unknown flag', () => ['--epochs', '3'], /unknown flag --epochs/, 2],
    ['heads that do not divide the width', () => ['--config', writeText(dir, 'heads.json', JSON.stringify({ model: { nHead: 3 } }))], /nHead \(3\) must divide nEmbd \(128\)/, 1],
    ['zero layers', () => ['--config', writeText(dir, 'layers.json', JSON.stringify({ model: { nLayer: 0 } }))], /nLayer must be an integer in \[1, 512\], got 0/, 1],
    ['an unknown config key', () => ['--config', writeText(dir, 'key.json', JSON.stringify({ model: { depth: 3 } }))], /unknown model key "depth"/, 1],
    ['a config that is not JSON', () => ['--config', writeText(dir, 'bad.json', '{ model: ')], /cannot read config .*bad\.json/, 1],
    ['a missing data file', () => ['--data', join(dir, 'nope.txt')], /cannot read .*nope\.txt: no such file/, 1],
    ['an empty data file', () => ['--data', writeText(dir, 'empty.txt', '')], /empty\.txt is empty/, 1],
    ['a binary data file', () => ['--data', writeText(dir, 'bin.dat', new Uint8Array([1, 0, 2, 0, 3]))], /bin\.dat looks binary/, 1],
    ['a non-UTF-8 data file', () => ['--data', writeText(dir, 'latin1.txt', new Uint8Array([0x63, 0x61, 0x66, 0xe9, 0x20]))], /latin1\.txt is not valid UTF-8/, 1],
    ['a directory as data', () => ['--data', dir], /is a directory/, 1],
    ['data too short for one sequence', () => ['--data', writeText(dir, 'short.txt', 'hello world')], /split holds no complete sequence of 257 tokens/, 1],
  ];

  it.each(cases)('%s', async (_name, extra, message, code) => {
    const out = join(dir, `bad-${Math.random().toString(36).slice(2)}`);
    const r = await runCli(['train', '--data', data, '--steps', '2', '--out', out, ...QUICK, ...extra()]);
    expect(r.stderr).toMatch(message);
    expect(r.stderr.trim().split('\n').filter((l) => l.startsWith('peertrain train:'))).toHaveLength(1);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(r.code).toBe(code);
    expect(existsSync(join(out, 'checkpoint.ptck'))).toBe(false);
  });

  it('a corrupt or truncated checkpoint is refused and left as it was', async () => {
    const out = join(dir, 'run-damaged');
    expect((await runCli(['train', '--data', data, '--steps', '1', '--out', out, ...QUICK, '--sample-tokens', '0'])).code).toBe(0);
    const path = join(out, 'checkpoint.ptck');
    const good = readFileSync(path);
    copyFileSync(path, join(dir, 'good.ptck'));
    writeFileSync(path, good.subarray(0, good.length - 1000));
    const truncated = readFileSync(path);
    const r = await runCli(['train', '--data', data, '--steps', '3', '--out', out, '--resume', ...QUICK]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/checkpoint\.ptck: checkpoint is truncated/);
    expect(Buffer.compare(readFileSync(path), truncated)).toBe(0);
    const flipped = Buffer.from(good);
    flipped[flipped.length - 5] ^= 0x55;
    writeFileSync(path, flipped);
    const c = await runCli(['train', '--data', data, '--steps', '3', '--out', out, '--resume', ...QUICK]);
    expect(c.stderr).toMatch(/CRC-32 mismatch/);
    expect(c.code).toBe(1);
    expect(readdirSync(out).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('resuming with another architecture names the key; an existing run is never overwritten', async () => {
    const out = join(dir, 'run-arch');
    expect((await runCli(['train', '--data', data, '--steps', '1', '--out', out, ...QUICK, '--sample-tokens', '0'])).code).toBe(0);
    const before = readFileSync(join(out, 'checkpoint.ptck'));
    const r = await runCli(['train', '--data', data, '--steps', '3', '--out', out, '--resume', '--preset', 'small', ...QUICK]);
    expect(r.stderr).toMatch(/checkpoint architecture differs: blockSize is 128 in the checkpoint but 256 in the config/);
    expect(r.code).toBe(1);
    const again = await runCli(['train', '--data', data, '--steps', '3', '--out', out, ...QUICK]);
    expect(again.stderr).toMatch(/already exists: pass --resume/);
    expect(again.code).toBe(2);
    expect(Buffer.compare(readFileSync(join(out, 'checkpoint.ptck')), before)).toBe(0);
  });

  it('export refuses a file that is not a checkpoint', async () => {
    const r = await runCli(['export', writeText(dir, 'fake.ptck', 'nope'), '--format', 'safetensors']);
    expect(r.stderr).toMatch(/fake\.ptck: checkpoint is truncated|fake\.ptck: not a peertrain checkpoint/);
    expect(r.code).toBe(1);
  });
});
