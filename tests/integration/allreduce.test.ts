/**
 * Reduce-scatter + all-gather over real libp2p streams on loopback: every participant and the observer end
 * with the exact weighted mean; hostile frames are rejected with their reason while honest peers still agree
 * on the mean of the honest set.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { lpStream } from '@libp2p/utils';
import { AllReduce } from '../../net/averaging/allreduce.ts';
import { silentLogger } from '../../net/types.ts';
import { ALLREDUCE_PROTOCOL, encodeMessage, PROTOCOL_VERSION, type RejectReason, type TensorPart } from '../../protocol/index.ts';
import type { PeertrainLibp2p } from '../../node/p2p/create-libp2p.ts';
import { makeRng, normalArray } from '../../engine/rng.ts';
import { startNodes, stopNodes } from '../../harness/local-mesh.ts';

const RUN = { runId: 'run-test', configHash: 'cfg-test' };
let nodes: PeertrainLibp2p[] = [];
afterEach(async () => {
  await stopNodes(nodes);
  nodes = [];
});

function setup(n: number, size: number, admitted: (p: string) => boolean, round = 3) {
  const rejects: Array<{ reason: RejectReason; from: string }> = [];
  const services = nodes.slice(0, n).map(
    (node) =>
      new AllReduce({ libp2p: node, ...RUN, size, isAdmitted: admitted, currentRound: () => round, maxPartNorm: 1e4, onReject: (reason, from) => rejects.push({ reason, from }), log: silentLogger }),
  );
  return { services, rejects };
}

function expectedMean(vectors: Float32Array[], weights: number[]): Float64Array {
  const total = weights.reduce((a, b) => a + b, 0);
  const out = new Float64Array(vectors[0].length);
  vectors.forEach((v, p) => v.forEach((x, i) => (out[i] += (weights[p] / total) * x)));
  return out;
}

describe('allreduce over libp2p streams', () => {
  it('4 peers and an observer end with the exact weighted mean (several frames per chunk)', async () => {
    nodes = await startNodes(5);
    const ids = nodes.map((n) => n.peerId.toString());
    const size = 300_000 * 4 + 7; // > 1 frame per chunk, uneven chunks
    const { services, rejects } = setup(5, size, (p) => ids.includes(p));
    await Promise.all(services.map((s) => s.start()));
    const participants = ids.slice(0, 4);
    const vectors = participants.map((_, p) => normalArray(size, 1, makeRng(p + 1)));
    const weights = [4, 1, 2, 3];
    const signal = AbortSignal.timeout(60_000);
    const [results, observed] = await Promise.all([
      Promise.all(participants.map((_, p) => services[p].run(3, 0, participants, vectors[p], weights[p], [ids[4]], signal))),
      services[4].observe(3, 0, participants, signal),
    ]);
    const want = expectedMean(vectors, weights);
    for (const r of [...results, observed]) {
      let worst = 0;
      for (let i = 0; i < size; i++) worst = Math.max(worst, Math.abs(r[i] - want[i]));
      expect(worst).toBeLessThan(1e-6);
    }
    // Every participant holds bit-identical results (one owner computed each chunk).
    for (const r of results.slice(1)) expect(Buffer.compare(Buffer.from(r.buffer), Buffer.from(results[0].buffer))).toBe(0);
    // Traffic per participant stays near 2·(P-1)/P of the payload, whatever P.
    for (const s of services.slice(0, 4)) expect(s.bytesSent / (size * 4)).toBeLessThan(2 * (3 / 4) + 0.3);
    expect(rejects).toEqual([]);
  });

  it('rejects hostile frames with their reason; honest peers still agree on the honest mean', async () => {
    nodes = await startNodes(3);
    const ids = nodes.map((n) => n.peerId.toString());
    const [a, b, evil] = ids;
    const size = 1000;
    const { services, rejects } = setup(2, size, (p) => ids.includes(p), 5);
    await Promise.all(services.map((s) => s.start()));
    const part = (over: Partial<TensorPart>): TensorPart => ({
      v: PROTOCOL_VERSION, type: 'part', ...RUN, sender: evil, ts: Date.now(), round: 5, attempt: 0, phase: 'reduce', chunk: 0, offset: 0, total: 500, weight: 1, values: new Float32Array(500).fill(0.5), ...over,
    });
    const frames: Uint8Array[] = [
      new Uint8Array([0xc1, 0xff, 0x00, 0x13]), // not msgpack
      encodeMessage(part({ runId: 'another-run' })),
      encodeMessage(part({ round: 1 })), // replay of an old round
      encodeMessage(part({ values: new Float32Array(500).fill(Number.NaN) })),
      encodeMessage(part({ values: new Float32Array(500).fill(1e6) })), // norm 2.2e7 > 1e4
      encodeMessage(part({ sender: a })), // claims to be someone else
    ];
    for (const f of frames) {
      const stream = await nodes[2].dialProtocol(nodes[0].peerId, ALLREDUCE_PROTOCOL);
      const lp = lpStream(stream);
      await lp.write(f);
      await stream.close().catch(() => {});
    }
    // An oversized frame (over the message limit) is refused too, without breaking the honest round.
    const big = await nodes[2].dialProtocol(nodes[0].peerId, ALLREDUCE_PROTOCOL);
    await lpStream(big, { maxDataLength: 1 << 30 }).write(new Uint8Array(3 * 1024 * 1024)).catch(() => {});
    await big.close().catch(() => {});
    const va = Float32Array.from({ length: size }, (_, i) => i / size);
    const vb = Float32Array.from({ length: size }, (_, i) => -i / size);
    const signal = AbortSignal.timeout(30_000);
    const [ra, rb] = await Promise.all([services[0].run(5, 0, [a, b], va, 1, [], signal), services[1].run(5, 0, [a, b], vb, 3, [], signal)]);
    const want = expectedMean([va, vb], [1, 3]);
    ra.forEach((x, i) => expect(x).toBeCloseTo(want[i], 4));
    expect(Buffer.compare(Buffer.from(ra.buffer), Buffer.from(rb.buffer))).toBe(0);
    const reasons = rejects.map((r) => r.reason).sort();
    expect(reasons).toEqual(expect.arrayContaining(['malformed', 'nonfinite', 'norm', 'run', 'sender', 'size', 'stale']));
    expect(rejects.every((r) => r.from === evil)).toBe(true);
  });

  it('an unreachable participant makes the round abort at its deadline (the coordinator then retries)', async () => {
    nodes = await startNodes(2);
    const ids = nodes.map((n) => n.peerId.toString());
    const { services } = setup(1, 100, () => true);
    await services[0].start();
    await nodes[1].stop(); // a participant that died
    const t0 = Date.now();
    await expect(services[0].run(3, 0, ids, new Float32Array(100), 1, [], AbortSignal.timeout(1500))).rejects.toThrow(/averaging abandoned|could not reach/);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });
});
