/**
 * Pipeline parallelism as users run it: `peertrain coordinator --stages 2` and `peertrain node` processes on
 * 127.0.0.1, activations and gradients crossing real libp2p streams between stage peers.
 *  - equivalence: 2 stages x 1 peer and 2 stages x 2 peers, in sync mode, end with the parameters (and report
 *    the losses) of one process training on the same micro-batches, recomputed from the run's database;
 *  - faults: a stage peer killed mid-run — the run goes on, the status shows the re-plan, and the stage it
 *    left empty is served by a peer moved there (which fetched that stage's state first).
 */
import type { PipelineReport, StatusReport } from '../../run/status-report.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { packedSequences, samplePackedBatch } from '../../engine/data/batches.ts';
import { decodeShard } from '../../engine/data/shards.ts';
import { mixSeed } from '../../engine/rng.ts';
import { Trainer } from '../../engine/trainer.ts';
import { loadCheckpoint } from '../../node/checkpoint-io.ts';
import { loadBrownText } from '../../node/data/builtin-corpus.ts';
import { openShardDataset } from '../../node/data/shard-dataset.ts';
import { validateRunConfig } from '../../run/config.ts';
import { runCli, tempDir, writeText } from '../../harness/cli.ts';
import { useBackend } from '../helpers/backend.ts';
import { killAllProcs, startNode, startProc, status, waitFor, waitForJoin, type Proc } from '../../harness/processes.ts';

let dir: string;
let data: string;
let config: string;

beforeAll(async () => {
  dir = tempDir('peertrain-pipe-');
  const docs = loadBrownText().split('\n\n').slice(0, 60);
  const jsonl = writeText(dir, 'corpus.jsonl', docs.map((text) => JSON.stringify({ text })).join('\n'));
  data = join(dir, 'data');
  expect((await runCli(['prepare', '--input', jsonl, '--tokenizer', 'char', '--seq-len', '33', '--shard-tokens', '32768', '--out', data])).code).toBe(0);
  // 2 layers: parts embed, block0, block1, head — two stages of two parts.
  config = writeText(dir, 'run.json', JSON.stringify({ model: { nLayer: 2, nEmbd: 64, nHead: 4 }, evalEvery: 5, checkpointEvery: 5, roundTimeoutSec: 30 }));
  await useBackend('wasm');
});
afterAll(() => killAllProcs());

type PipelineStatus = StatusReport & { pipeline: PipelineReport };

function coordinatorArgs(runDir: string, extra: string[] = [], stages = '2'): string[] {
  return ['coordinator', '--run-dir', runDir, '--http-port', '0', '--data', data, '--config', config, '--batch', '8', '--micro-batch', '2', '--seq', '32', '--stages', stages, '--backend', 'wasm', ...extra];
}

/** Replays the run in this process: the first-stage peers' micro-batches, round by round, as one batch. */
async function replay(runDir: string): Promise<{ params: Float32Array; losses: number[]; perRound: Array<{ drivers: number; peers: number; stages: number[] }> }> {
  const run = validateRunConfig(JSON.parse(readFileSync(join(runDir, 'run.json'), 'utf8')).config);
  const dataset = await openShardDataset(data);
  const db = new Database(join(runDir, 'run.db'), { readonly: true });
  const peers = db.prepare('SELECT id, slot, shards FROM peers').all() as Array<{ id: string; slot: number; shards: string }>;
  const rows = db.prepare('SELECT round, peer, samples, stage FROM contributions ORDER BY round, peer').all() as Array<{ round: number; peer: string; samples: number; stage: number }>;
  db.close();
  const seqsOf = new Map<string, ReturnType<typeof packedSequences>>();
  for (const p of peers) {
    const mine = JSON.parse(p.shards) as string[];
    const parts = await Promise.all(dataset.manifest.shards.filter((x) => x.split === 'train' && mine.includes(x.file)).map(async (x) => decodeShard(await dataset.readShard(x.file), dataset.manifest, x.file)));
    const all = new Int32Array(parts.reduce((a, x) => a + x.length, 0));
    parts.reduce((off, x) => (all.set(x, off), off + x.length), 0);
    seqsOf.set(p.id, packedSequences(all, dataset.manifest.sequenceLength));
  }
  const slots = new Map(peers.map((p) => [p.id, p.slot]));
  const trainer = new Trainer(run.model, run.train);
  const spec = { B: run.train.microBatchSize, T: run.train.seqLen, objective: run.model.objective };
  const losses: number[] = [];
  const perRound: Array<{ drivers: number; peers: number; stages: number[] }> = [];
  for (const r of [...new Set(rows.map((x) => x.round))]) {
    const these = rows.filter((x) => x.round === r);
    const drivers = these.filter((x) => x.stage === 0);
    perRound.push({ drivers: drivers.length, peers: these.length, stages: these.map((x) => x.stage) });
    const batches = drivers.flatMap((x) => Array.from({ length: x.samples / spec.B }, (_, k) => samplePackedBatch(seqsOf.get(x.peer)!, spec, mixSeed(run.train.seed, r, slots.get(x.peer)!, 0, k))));
    expect(batches.length * spec.B).toBe(run.train.batchSize);
    losses.push((await trainer.trainStep(batches)).loss);
  }
  const params = await trainer.exportParams();
  trainer.dispose();
  return { params, losses, perRound };
}

async function expectEquivalent(runDir: string, coord: Proc, nodes: Proc[], peersPerRound: number): Promise<void> {
  expect(await coord.exited).toBe(0);
  const final = JSON.parse(readFileSync(join(runDir, 'run.json'), 'utf8'));
  expect(final.config.pipeline.stages).toBe(2);
  for (const n of nodes) n.child.kill('SIGTERM');
  expect(coord.output()).not.toMatch(/out of sync/);
  const { params, losses, perRound } = await replay(runDir);
  expect(perRound).toHaveLength(5);
  for (const r of perRound) {
    expect(r.peers).toBe(peersPerRound);
    expect(r.stages.filter((s) => s === 1)).toHaveLength(peersPerRound / 2); // both stages served by their swarm
  }
  const theirs = loadCheckpoint(join(runDir, 'checkpoint.ptck'));
  expect(theirs.step).toBe(5);
  let worst = 0;
  for (let i = 0; i < params.length; i++) worst = Math.max(worst, Math.abs(params[i] - theirs.params[i]));
  expect(worst).toBeLessThan(1e-4);
  // The losses the last stage reported are the single process's losses on the same batches.
  const db = new Database(join(runDir, 'run.db'), { readonly: true });
  const reported = (db.prepare('SELECT loss FROM history ORDER BY round').all() as Array<{ loss: number }>).map((h) => h.loss);
  db.close();
  reported.forEach((l, r) => expect(Math.abs(l - losses[r])).toBeLessThan(1e-4));
}

describe('pipeline equivalence (sync mode)', () => {
  it('2 stages x 1 peer match one process training on the same micro-batches for 5 rounds', async () => {
    const runDir = join(dir, 'pipe-2x1');
    const coord = startProc(coordinatorArgs(runDir, ['--rounds', '5', '--min-peers', '2']));
    const info = await waitForJoin(runDir, coord);
    const nodes = [0, 1].map(() => startNode(info));
    // A peer whose memory holds no stage is refused at once, and told why.
    const small = startNode(info, ['--memory', '1']);
    expect(await small.exited).toBe(1);
    expect(small.output()).toMatch(/refused to admit us: the smallest stage of this run needs [\d.]+ MiB; this peer offers 1 MiB/);
    await expectEquivalent(runDir, coord, nodes, 2);
    // Activations crossed the stream: the first stage peer reports what it sent.
    expect(nodes.map((n) => n.output()).join('\n')).toMatch(/stage 1\/2 \| 4 micro-batches .* sent [\d.]+ KiB/);
  }, 240_000);

  it('2 stages x 2 peers match one process training on the same micro-batches for 5 rounds', async () => {
    const runDir = join(dir, 'pipe-2x2');
    const coord = startProc(coordinatorArgs(runDir, ['--rounds', '5', '--min-peers', '4']));
    const info = await waitForJoin(runDir, coord);
    const nodes = [0, 1, 2, 3].map(() => startNode(info));
    await expectEquivalent(runDir, coord, nodes, 4);
  }, 300_000);
});

describe('automatic stage count', () => {
  it('--stages auto with peers that can hold the whole model: one stage, every peer a replica on the pipeline path', async () => {
    const runDir = join(dir, 'pipe-auto');
    const coord = startProc(coordinatorArgs(runDir, ['--rounds', '4', '--min-peers', '2'], 'auto'));
    const info = await waitForJoin(runDir, coord);
    const nodes = [0, 1].map(() => startNode(info));
    expect(await coord.exited).toBe(0);
    expect(JSON.parse(readFileSync(join(runDir, 'run.json'), 'utf8')).config.pipeline.stages).toBe('auto');
    // Read from the peers' own reports (the run may be over before a status poll sees its plan): each served
    // the whole model, parts [0, 4), as the one stage.
    for (const n of nodes) {
      expect(n.output()).toMatch(/serving stage parts \[0, 4\)/);
      expect(n.output()).toMatch(/round 3 \| stage 1\/1 \| loss/);
    }
    for (const n of nodes) n.child.kill('SIGTERM');
  }, 180_000);

  it('--stages auto with peers offering too little memory for the whole model: as many stages as it takes', async () => {
    const runDir = join(dir, 'pipe-auto-small');
    const coord = startProc(coordinatorArgs(runDir, ['--rounds', '4', '--min-peers', '2'], 'auto'));
    const info = await waitForJoin(runDir, coord);
    // About 3 MiB hold this model's parameters, AdamW state and activations; 2 MiB hold half of it.
    const nodes = [0, 1].map(() => startNode(info, ['--memory', '2']));
    expect(await coord.exited).toBe(0);
    // One peer per stage: one served stage 1 of 2 to the end, the other stage 2 of 2.
    const outputs = nodes.map((n) => n.output()).join('\n');
    expect(outputs).toMatch(/round 3 \| stage 1\/2 \|/);
    expect(outputs).toMatch(/round 3 \| stage 2\/2 \| loss/);
    for (const n of nodes) n.child.kill('SIGTERM');
  }, 180_000);
});

describe('pipeline faults', () => {
  it('a stage peer killed mid-run: the run goes on, the status shows the re-plan, the emptied stage is refilled', async () => {
    const runDir = join(dir, 'pipe-kill');
    const coord = startProc(coordinatorArgs(runDir, ['--min-peers', '3']));
    const info = await waitForJoin(runDir, coord);
    const nodes = [0, 1, 2].map(() => startNode(info));
    const get = async () => (await status(info.url)) as unknown as PipelineStatus | undefined;
    const before = await waitFor('rounds with all 3 peers', async () => {
      const s = await get();
      return s && s.history.filter((h) => h.participants === 3).length >= 2 ? s : undefined;
    }, 120_000, () => coord.output());
    // Kill the lone peer of its stage: its stage empties, and a peer of the other stage must move there.
    const lone = before.pipeline.stages.find((s) => s.peers.length === 1)!;
    expect(lone).toBeDefined();
    const victimId = lone.peers[0];
    const victim = nodes.find((n) => n.output().includes(`[${victimId.slice(-6)}]`))!;
    victim.child.kill('SIGKILL');
    const killedAt = before.round;
    const after = await waitFor('3 rounds after the kill', async () => {
      const s = await get();
      return s && s.round >= killedAt + 3 ? s : undefined;
    }, 150_000, () => `${coord.output().slice(-1200)}\n${nodes.map((n) => n.output().slice(-600)).join('\n----\n')}`);
    // The re-plan: the victim is gone, every stage has a peer, and one survivor now serves the emptied stage.
    const replan = after.pipeline.replans.filter((r) => r.round >= killedAt).at(-1)!;
    expect(replan).toBeDefined();
    expect(replan.stages.flatMap((s) => s.peers)).not.toContain(victimId);
    expect(replan.stages.every((s) => s.peers.length >= 1)).toBe(true);
    expect(after.pipeline.stages[lone.stage].peers).toHaveLength(1);
    expect(after.pipeline.stages[lone.stage].peers[0]).not.toBe(victimId);
    // The moved peer fetched its new stage before serving it.
    const moved = nodes.find((n) => n.output().includes(`[${after.pipeline.stages[lone.stage].peers[0].slice(-6)}]`))!;
    const [fromPart, toPart] = [lone.parts, after.pipeline.stages[lone.stage].parts].map((p) => p.length);
    expect(fromPart).toBe(toPart);
    expect(moved.output()).toMatch(/serving stage parts \[\d+, \d+\) from round \d+[\s\S]*serving stage parts \[\d+, \d+\) from round \d+/);
    // Rounds after the kill are whole: no round lost, losses keep coming.
    const rounds = after.history.map((h) => h.round);
    expect(rounds).toEqual(Array.from({ length: rounds.length }, (_, i) => i));
    expect(after.history.filter((h) => h.round > killedAt).every((h) => h.participants === 2)).toBe(true);
    for (const n of nodes) n.child.kill('SIGTERM');
    coord.child.kill('SIGTERM');
  }, 360_000);
});
