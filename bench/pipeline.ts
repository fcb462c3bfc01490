/**
 * Pipeline benchmark: a real coordinator and one node process per stage on loopback, the `tiny` preset on the
 * built-in corpus, for a number of micro-batches per round. Prints one JSON line:
 *  - tokensPerSec over the measured rounds (the first two warm up);
 *  - bubbleFraction: 1 − (time the stage peers computed) / (peers × the round's compute window), the median
 *    over rounds, next to the ideal of a balanced pipeline, (S − 1) / (M + S − 1);
 *  - activationBytesPerToken: activation and gradient bytes all stage peers sent, per token trained;
 *  - the loss at the end (training loss of the last rounds, validation loss), to compare fp16 with fp32.
 *   node bin/run-ts.js bench/pipeline.ts --stages 2 --micro 8 --rounds 12 [--dtype float16]
 * On a machine with fewer cores than stages, the stage processes share cores: the measured bubble then
 * includes waiting for a core, not only the schedule's own idle time.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { parseArgs } from '../cli/args.ts';

const { flags } = parseArgs(process.argv.slice(2), {
  stages: { type: 'int', help: 'pipeline stages (one node each)', default: 2, min: 1 },
  micro: { type: 'int', help: 'micro-batches per round', default: 8, min: 1 },
  'micro-batch': { type: 'int', help: 'sequences per micro-batch', default: 4, min: 1 },
  seq: { type: 'int', help: 'tokens per sequence', default: 64, min: 2 },
  rounds: { type: 'int', help: 'rounds to run (2 warm up)', default: 12, min: 3 },
  dtype: { type: 'string', help: 'activation dtype', choices: ['float32', 'float16'], default: 'float32' },
});
const S = Number(flags.stages);
const M = Number(flags.micro);
const B = Number(flags['micro-batch']);
const T = Number(flags.seq);
const rounds = Number(flags.rounds);
const bin = fileURLToPath(new URL('../bin/peertrain.js', import.meta.url));
const runDir = join(mkdtempSync(join(tmpdir(), 'peertrain-bench-pipe-')), 'run');
const procs: ChildProcess[] = [];

function start(args: string[]): { child: ChildProcess; out: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(child);
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  return { child, out: () => out, exited: new Promise((r) => child.on('exit', r)) };
}

try {
  const coord = start([
    'coordinator', '--run-dir', runDir, '--http-port', '0', '--preset', 'tiny', '--batch', String(M * B), '--micro-batch', String(B), '--seq', String(T),
    '--stages', String(S), '--activation-dtype', String(flags.dtype), '--max-in-flight', String(Math.max(2, 2 * S)), '--rounds', String(rounds),
    '--min-peers', String(S), '--backend', 'wasm', '--json', '--round-timeout', '120',
  ]);
  const joinFile = join(runDir, 'join.json');
  for (let i = 0; !existsSync(joinFile); i++) {
    if (i > 1200 || coord.child.exitCode !== null) throw new Error(`the coordinator did not start:\n${coord.out().slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const info = JSON.parse(readFileSync(joinFile, 'utf8')) as { multiaddrs: string[]; token: string };
  const nodes = Array.from({ length: S }, () => start(['node', '--join', info.multiaddrs[0], '--token', info.token, '--workers', '1', '--backend', 'wasm']));
  const code = await coord.exited;
  const summary = JSON.parse(coord.out().trim().split('\n').filter((l) => l.startsWith('{')).pop() ?? '{}') as { valLoss?: number };
  if (code !== 0) throw new Error(`coordinator exited ${code}:\n${coord.out().slice(-2000)}`);

  // Per round: each stage peer's busy time, compute window and bytes sent (from its progress lines).
  const line = /round (\d+) \| stage (\d+)\/(\d+).*?\| (\d+) micro-batches \| busy (\d+) of (\d+) ms \| sent ([\d.]+) KiB/g;
  const byRound = new Map<number, Array<{ busy: number; window: number; bytes: number }>>();
  for (const n of nodes) {
    for (const m of n.out().matchAll(line)) {
      const r = Number(m[1]);
      const list = byRound.get(r) ?? [];
      list.push({ busy: Number(m[5]), window: Number(m[6]), bytes: Number(m[7]) * 1024 });
      byRound.set(r, list);
    }
  }
  const measured = [...byRound.entries()].filter(([r, l]) => r >= 2 && l.length === S).map(([, l]) => l);
  const bubbles = measured.map((l) => 1 - l.reduce((a, p) => a + p.busy, 0) / (S * Math.max(...l.map((p) => p.window))));
  bubbles.sort((a, b) => a - b);
  const tokensPerRound = M * B * T;
  const bytesPerRound = measured.length ? measured.reduce((a, l) => a + l.reduce((x, p) => x + p.bytes, 0), 0) / measured.length : NaN;

  const db = new Database(join(runDir, 'run.db'), { readonly: true });
  const history = db.prepare('SELECT round, loss, at FROM history ORDER BY round').all() as Array<{ round: number; loss: number | null; at: number }>;
  db.close();
  const timed = history.filter((h) => h.round >= 1);
  const seconds = (timed[timed.length - 1].at - timed[0].at) / 1000;
  const last = history.slice(-3).map((h) => h.loss ?? NaN);
  console.log(
    JSON.stringify({
      stages: S,
      microBatches: M,
      microBatchSize: B,
      seqLen: T,
      activationDtype: flags.dtype,
      rounds,
      tokensPerRound,
      tokensPerSec: Math.round(((timed.length - 1) * tokensPerRound) / seconds),
      bubbleFraction: Number((bubbles[Math.floor(bubbles.length / 2)] ?? NaN).toFixed(3)),
      idealBubbleFraction: Number(((S - 1) / (M + S - 1)).toFixed(3)),
      activationBytesPerToken: Math.round(bytesPerRound / tokensPerRound),
      trainLossLastRounds: Number((last.reduce((a, b) => a + b, 0) / last.length).toFixed(4)),
      valLoss: summary.valLoss,
    }),
  );
} finally {
  for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
}
process.exit(0);
