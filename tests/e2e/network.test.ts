/**
 * The network as users run it: `peertrain coordinator` and `peertrain node` processes on 127.0.0.1.
 *  - exactness: in sync mode, the run ends with the parameters one process gets by training on the union of
 *    the peers' batches (recomputed from the run seed, round and slot recorded in the run's database);
 *  - churn: a peer killed mid-run costs the survivors no round, a newcomer contributes right after syncing,
 *    and a restarted coordinator continues the loss curve with the peers reconnecting;
 *  - a node without the join token is refused.
 */
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
import { killAllProcs, startNode, startProc, status, waitFor, waitForJoin } from '../../harness/processes.ts';

let dir: string;
let data: string;
let config: string;

beforeAll(async () => {
  dir = tempDir('peertrain-net-');
  const docs = loadBrownText().split('\n\n').slice(0, 60);
  const jsonl = writeText(dir, 'corpus.jsonl', docs.map((text) => JSON.stringify({ text })).join('\n'));
  data = join(dir, 'data');
  // Small shards: peers are assigned different subsets in proportion to their speed.
  expect((await runCli(['prepare', '--input', jsonl, '--tokenizer', 'char', '--seq-len', '33', '--shard-tokens', '32768', '--out', data])).code).toBe(0);
  // A small model keeps rounds short on 2 cores; the code path is the presets'.
  config = writeText(dir, 'run.json', JSON.stringify({ model: { nLayer: 2, nEmbd: 64, nHead: 4 }, evalEvery: 3, checkpointEvery: 3, roundTimeoutSec: 20 }));
  await useBackend('wasm');
});
afterAll(() => killAllProcs());

function coordinatorArgs(runDir: string, extra: string[] = []): string[] {
  return ['coordinator', '--run-dir', runDir, '--http-port', '0', '--data', data, '--config', config, '--batch', '12', '--micro-batch', '2', '--seq', '32', ...extra];
}

describe('sync mode is exact', () => {
  it('1 coordinator + 3 peers end with the parameters of one process training on the union of their batches', async () => {
    const runDir = join(dir, 'exact');
    const coord = startProc(coordinatorArgs(runDir, ['--rounds', '6']));
    const info = await waitForJoin(runDir, coord);
    const nodes = [0, 1, 2].map(() => startNode(info));
    expect(await coord.exited).toBe(0);
    for (const n of nodes) n.child.kill('SIGTERM');
    expect(coord.output()).not.toMatch(/out of sync/);

    // Replay the run in this process from what the database says each peer computed.
    const run = validateRunConfig(JSON.parse(readFileSync(join(runDir, 'run.json'), 'utf8')).config);
    const dataset = await openShardDataset(data);
    const db = new Database(join(runDir, 'run.db'), { readonly: true });
    const peerRows = db.prepare('SELECT id, slot, shards FROM peers').all() as Array<{ id: string; slot: number; shards: string }>;
    const slots = new Map(peerRows.map((p) => [p.id, p.slot]));
    // Each peer samples from the shards it was assigned, concatenated in manifest order.
    const seqsOf = new Map<string, ReturnType<typeof packedSequences>>();
    for (const p of peerRows) {
      const mine = JSON.parse(p.shards) as string[];
      const parts = await Promise.all(dataset.manifest.shards.filter((x) => x.split === 'train' && mine.includes(x.file)).map(async (x) => decodeShard(await dataset.readShard(x.file), dataset.manifest, x.file)));
      const all = new Int32Array(parts.reduce((a, x) => a + x.length, 0));
      parts.reduce((off, x) => (all.set(x, off), off + x.length), 0);
      seqsOf.set(p.id, packedSequences(all, dataset.manifest.sequenceLength));
    }
    expect(new Set(peerRows.map((p) => p.shards)).size).toBeGreaterThan(1); // they did get different shards
    const rows = db.prepare('SELECT round, peer, samples FROM contributions ORDER BY round, peer').all() as Array<{ round: number; peer: string; samples: number }>;
    db.close();
    const rounds = [...new Set(rows.map((r) => r.round))];
    expect(rounds).toEqual([0, 1, 2, 3, 4, 5]);
    expect(Math.max(...rounds.map((r) => rows.filter((x) => x.round === r).length))).toBe(3); // all three took part
    const trainer = new Trainer(run.model, run.train);
    const spec = { B: run.train.microBatchSize, T: run.train.seqLen, objective: run.model.objective };
    for (const r of rounds) {
      const batches = rows
        .filter((x) => x.round === r)
        .flatMap((x) => Array.from({ length: x.samples / run.train.microBatchSize }, (_, k) => samplePackedBatch(seqsOf.get(x.peer)!, spec, mixSeed(run.train.seed, r, slots.get(x.peer)!, 0, k))));
      await trainer.trainStep(batches);
    }
    const mine = await trainer.exportParams();
    const theirs = loadCheckpoint(join(runDir, 'checkpoint.ptck'));
    expect(theirs.step).toBe(6);
    let worst = 0;
    for (let i = 0; i < mine.length; i++) worst = Math.max(worst, Math.abs(mine[i] - theirs.params[i]));
    expect(worst).toBeLessThan(1e-4);
    trainer.dispose();
  });
});

describe('churn', () => {
  it('survivors lose no round when a peer dies; a newcomer contributes within a round; a restarted coordinator continues', async () => {
    const runDir = join(dir, 'churn');
    let coord = startProc(coordinatorArgs(runDir));
    let info = await waitForJoin(runDir, coord);
    const nodes = [0, 1, 2].map(() => startNode(info));
    const ctx = () => coord.output();
    await waitFor('3 peers in a round', async () => (await status(info.url))?.history.some((h) => h.participants === 3), 90_000, ctx);
    const before = (await status(info.url))!;
    const victim = before.peers.find((p) => nodes[2].output().includes(p.id.slice(-6)))!;
    nodes[2].child.kill('SIGKILL');
    const killedAt = before.round;
    await waitFor("3 rounds after the kill", async () => ((await status(info.url))?.round ?? 0) >= killedAt + 3, 90_000, () => coord.output() + nodes[0].output());
    // A newcomer: syncs, then contributes from the round it synced at.
    const newcomer = startNode(info);
    const joinedAt = Number(
      (await waitFor('the newcomer to sync', () => /joined run \w+ \(slot \d+\) at round (\d+)/.exec(newcomer.output())?.[1], 90_000, () => newcomer.output())),
    );
    await waitFor('the newcomer to contribute', () => /\] round \d+ \| loss/.test(newcomer.output()), 60_000, () => newcomer.output());
    const firstRound = Number(/\] round (\d+) \| loss/.exec(newcomer.output())![1]);
    expect(firstRound).toBeLessThanOrEqual(joinedAt + 1);

    // Every round after the kill has both survivors in it: they lost no round.
    const s = (await status(info.url))!;
    const db = new Database(join(runDir, 'run.db'), { readonly: true });
    const survivors = s.peers.filter((p) => p.id !== victim.id && [nodes[0], nodes[1]].some((n) => n.output().includes(p.id.slice(-6)))).map((p) => p.id);
    expect(survivors).toHaveLength(2);
    for (let r = killedAt + 1; r < s.round; r++) {
      const who = (db.prepare('SELECT peer FROM contributions WHERE round = ?').all(r) as Array<{ peer: string }>).map((x) => x.peer);
      expect(who).toEqual(expect.arrayContaining(survivors));
      expect(who).not.toContain(victim.id);
    }
    db.close();

    // Coordinator killed outright (no goodbye, no final checkpoint): the same run dir resumes from its last
    // checkpoint, the peers reconnect and resync, and the rounds continue from there.
    coord.child.kill('SIGKILL');
    await coord.exited;
    const stoppedAt = loadCheckpoint(join(runDir, 'checkpoint.ptck')).dataPosition.round as number;
    coord = startProc(['coordinator', '--run-dir', runDir]);
    info = await waitForJoin(runDir, coord);
    await waitFor('rounds after the restart', async () => ((await status(info.url))?.round ?? 0) >= stoppedAt + 3, 120_000, () => coord.output());
    const after = (await status(info.url))!;
    const rounds = after.history.map((h) => h.round);
    expect(rounds).toEqual(Array.from({ length: rounds.length }, (_, i) => i)); // no gap, no repeat
    expect(after.peers.length).toBeGreaterThanOrEqual(2);
    expect(coord.output()).toMatch(new RegExp(`resumed from .* at round ${stoppedAt}`));
    for (const n of [...nodes, newcomer]) n.child.kill('SIGTERM');
    coord.child.kill('SIGTERM');
  }, 600_000);
});

describe('admission', () => {
  it('a node without the join token is refused and says so', async () => {
    const runDir = join(dir, 'token');
    const coord = startProc(coordinatorArgs(runDir));
    const info = await waitForJoin(runDir, coord);
    const bad = startNode({ ...info, token: 'not-the-token' });
    expect(await bad.exited).toBe(1);
    expect(bad.output()).toMatch(/peertrain node: the coordinator refused to admit us: wrong join token/);
    expect((await status(info.url))!.rejected.token).toBe(1);
    // A malformed URL gets a 400, and the coordinator carries on.
    expect((await fetch(`${info.url}%`)).status).toBe(400);
    expect((await fetch(`${info.url}..%2f..%2fetc%2fpasswd`)).status).toBe(404);
    expect((await status(info.url))?.runId).toBeTruthy();
    coord.child.kill('SIGTERM');
  });
});

describe('bad input from a peer', () => {
  it('garbage, wrong-run, NaN, oversized and replayed messages are rejected and counted; the sender is banned; the run goes on', async () => {
    const { createPeertrainLibp2p } = await import('../../node/p2p/create-libp2p.ts');
    const { multiaddr } = await import('@multiformats/multiaddr');
    const { lpStream } = await import('@libp2p/utils');
    const { framed } = await import('../../net/framed.ts');
    const P = await import('../../protocol/index.ts');
    const runDir = join(dir, 'rogue');
    const coord = startProc(coordinatorArgs(runDir));
    const info = await waitForJoin(runDir, coord);
    const honest = startNode(info);
    await waitFor('a first round', async () => ((await status(info.url))?.round ?? 0) >= 2, 90_000, () => coord.output());

    const rogue = await createPeertrainLibp2p({ listen: ['/ip4/127.0.0.1/tcp/0'] });
    const me = rogue.peerId.toString();
    const conn = await rogue.dial(multiaddr(info.multiaddrs[0]));
    const coordinatorId = conn.remotePeer;
    const js = framed(await rogue.dialProtocol(coordinatorId, P.JOIN_PROTOCOL), () => ({}));
    await js.write({ v: P.PROTOCOL_VERSION, type: 'join', token: info.token, kind: 'node', backend: 'cpu', tokensPerSec: 1, memoryMB: 4096, sender: me });
    const welcome = await js.read();
    expect(welcome?.ok && welcome.msg.type).toBe('welcome');
    const w = welcome!.ok && welcome!.msg.type === 'welcome' ? welcome!.msg : undefined;
    const run = { v: P.PROTOCOL_VERSION, runId: w!.runId, configHash: w!.configHash, sender: me, ts: Date.now() };
    rogue.services.pubsub.subscribe(P.TOPIC_PEERS);
    await new Promise((r) => setTimeout(r, 1500)); // let the subscription propagate
    const gossip = (bytes: Uint8Array) => rogue.services.pubsub.publish(P.TOPIC_PEERS, bytes).catch(() => {});
    await gossip(new Uint8Array([0xc1, 1, 2, 3]));
    await gossip(P.encodeMessage({ ...run, runId: 'some-other-run', type: 'heartbeat', round: 0, step: 0, tokensPerSec: 1, kind: 'node', backend: 'cpu', addrs: [] }));
    await gossip(P.encodeMessage({ ...run, type: 'done', round: 1, attempt: 0, paramHash: '00000000', loss: Number.NaN, samples: 1 }));
    const now = (await status(info.url))!.round;
    const part = (over: Record<string, unknown>) =>
      P.encodeMessage({ ...run, type: 'part', round: now + 1, attempt: 0, phase: 'reduce', chunk: 0, offset: 0, total: 4, weight: 1, values: new Float32Array(4), ...over } as never);
    const frames = [part({ round: 0 }), part({ values: new Float32Array([Number.NaN, 0, 0, 0]) }), part({ values: new Float32Array([1e30, 0, 0, 0]) })];
    // Until the coordinator has had enough and bans us (it then hangs up, and dialling fails).
    const big = await rogue.dialProtocol(coordinatorId, P.ALLREDUCE_PROTOCOL);
    await lpStream(big, { maxDataLength: 1 << 30 }).write(new Uint8Array(3 * 1024 * 1024)).catch(() => {});
    let sent = 0;
    try {
      for (let i = 0; i < 10; i++) {
        for (const f of frames) {
          const s = await rogue.dialProtocol(coordinatorId, P.ALLREDUCE_PROTOCOL);
          await lpStream(s).write(f);
          await s.close().catch(() => {});
          sent++;
        }
      }
    } catch {
      // banned: the coordinator closed the connection
    }
    expect(sent).toBeGreaterThan(3);
    let lastRejected = '';
    const s = await waitFor('rejections to be counted', async () => {
      const st = await status(info.url);
      lastRejected = JSON.stringify(st?.rejected);
      return st && ['malformed', 'run', 'nonfinite', 'stale', 'norm', 'size'].every((k) => (st.rejected[k] ?? 0) > 0) ? st : undefined;
    }, 30_000, () => `${coord.output()}\n${lastRejected}`);
    expect(Object.values(s.rejected).reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(20);
    // Banned: no longer a member, and a new join is refused.
    await waitFor('the ban', async () => !(await status(info.url))?.peers.some((p) => p.id === me), 30_000);
    const again = framed(await rogue.dialProtocol(coordinatorId, P.JOIN_PROTOCOL).catch(async () => {
      await rogue.dial(multiaddr(info.multiaddrs[0]));
      return rogue.dialProtocol(coordinatorId, P.JOIN_PROTOCOL);
    }), () => ({}));
    await again.write({ v: P.PROTOCOL_VERSION, type: 'join', token: info.token, kind: 'node', backend: 'cpu', tokensPerSec: 1, memoryMB: 4096, sender: me });
    const refusal = await again.read();
    expect(refusal?.ok && refusal.msg.type === 'refused' && refusal.msg.reason).toBe('banned from this run');
    // The run goes on with the honest peer, which never had to resync.
    const at = (await status(info.url))!.round;
    await waitFor('more rounds', async () => ((await status(info.url))?.round ?? 0) >= at + 3, 60_000, () => coord.output());
    expect(coord.output()).not.toMatch(/out of sync|failed; retrying/);
    expect(honest.output()).not.toMatch(/resync/);
    await rogue.stop();
    honest.child.kill('SIGTERM');
    coord.child.kill('SIGTERM');
  }, 300_000);
});

describe('diloco mode', () => {
  it('peers take H local steps, average pseudo-gradients and stay identical (outer Nesterov step everywhere)', async () => {
    const runDir = join(dir, 'diloco');
    const coord = startProc(coordinatorArgs(runDir, ['--rounds', '4', '--mode', 'diloco', '--inner-steps', '3']));
    const info = await waitForJoin(runDir, coord);
    const nodes = [0, 1].map(() => startNode(info));
    expect(await coord.exited).toBe(0);
    for (const n of nodes) n.child.kill('SIGTERM');
    // Every peer reported the coordinator's parameter hash after every round (else: "out of sync").
    expect(coord.output()).not.toMatch(/out of sync/);
    expect(coord.output()).toMatch(/done: 4 rounds, validation loss [\d.]+/);
    const db = new Database(join(runDir, 'run.db'), { readonly: true });
    const rows = db.prepare('SELECT round, samples FROM contributions ORDER BY round').all() as Array<{ round: number; samples: number }>;
    const hist = db.prepare('SELECT round, loss FROM history ORDER BY round').all() as Array<{ round: number; loss: number }>;
    db.close();
    // Samples count the inner steps: micro-batches × micro-batch size × H.
    expect(rows.every((r) => r.samples % (2 * 3) === 0)).toBe(true);
    expect(hist.every((h) => typeof h.loss === 'number')).toBe(true);
    expect(hist[hist.length - 1].loss).toBeLessThan(hist[0].loss);
  }, 300_000);
});
