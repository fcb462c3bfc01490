/**
 * Averaging benchmark: one process, N real libp2p nodes on loopback (TCP, noise, yamux), averaging a random
 * vector of `size` float32 per round — over direct streams (our reduce-scatter + all-gather) and over gossipsub
 * (every peer publishes its whole vector in ≤1 MiB messages; everyone averages what it receives).
 * Wire bytes come from the loopback interface's counters (/proc/net/dev) during the rounds, divided by peers:
 * they include noise and yamux framing and gossip's duplicates.
 *   node bin/run-ts.js bench/averaging.ts --peers 4 --size 1000000 --method streams --rounds 3
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from '../cli/args.ts';
import { AllReduce } from '../net/averaging/allreduce.ts';
import { silentLogger } from '../net/types.ts';
import { makeRng, normalArray } from '../engine/rng.ts';
import { startNodes, stopNodes } from '../harness/local-mesh.ts';

const { flags } = parseArgs(process.argv.slice(2), {
  peers: { type: 'int', help: '', default: 4, min: 2 },
  size: { type: 'int', help: '', default: 1_000_000, min: 1 },
  method: { type: 'string', help: '', choices: ['streams', 'gossip'], default: 'streams' },
  rounds: { type: 'int', help: '', default: 3, min: 1 },
});

function loopbackBytes(): number {
  const line = readFileSync('/proc/net/dev', 'utf8')
    .split('\n')
    .find((l) => l.trim().startsWith('lo:'));
  return line ? Number(line.split(':')[1].trim().split(/\s+/)[8]) : Number.NaN; // transmitted bytes
}

const P = Number(flags.peers);
const size = Number(flags.size);
const nodes = await startNodes(P);
const ids = nodes.map((n) => n.peerId.toString());
const vectors = ids.map((_, p) => normalArray(size, 1, makeRng(p + 1)));
const times: number[] = [];
let bytes = 0;
try {
  if (flags.method === 'streams') {
    let round = 0;
    const services = nodes.map((libp2p) => new AllReduce({ libp2p, runId: 'bench', configHash: 'bench', size, isAdmitted: () => true, currentRound: () => round, maxPartNorm: 1e12, onReject: () => {}, log: silentLogger }));
    await Promise.all(services.map((s) => s.start()));
    for (; round < Number(flags.rounds); round++) {
      const b0 = loopbackBytes();
      const t0 = performance.now();
      await Promise.all(services.map((s, p) => s.run(round, 0, ids, vectors[p], 1, [], AbortSignal.timeout(600_000))));
      times.push(performance.now() - t0);
      bytes += loopbackBytes() - b0;
    }
  } else {
    // Gossip all-to-all: each peer's vector in parts under the sender cap; receivers wait for all parts.
    const PART = 256 * 1024; // floats per message (1 MiB)
    const parts = Math.ceil(size / PART);
    const topic = 'bench/gossip';
    // Gossip needs open connections (streams dial on demand): a full mesh.
    for (let i = 0; i < P; i++) for (let j = i + 1; j < P; j++) await nodes[i].dial(nodes[j].peerId);
    for (const n of nodes) n.services.pubsub.subscribe(topic);
    await new Promise((r) => setTimeout(r, 2_000)); // mesh formation
    for (let round = 0; round < Number(flags.rounds); round++) {
      const b0 = loopbackBytes();
      const t0 = performance.now();
      const done = nodes.map(
        (n) =>
          new Promise<void>((resolve) => {
            let got = 0;
            const onMsg = (evt: CustomEvent<{ topic: string; data: Uint8Array }>) => {
              if (evt.detail.topic !== topic || evt.detail.data[0] !== round) return;
              if (++got === (P - 1) * parts) {
                n.services.pubsub.removeEventListener('message', onMsg as never);
                resolve();
              }
            };
            n.services.pubsub.addEventListener('message', onMsg as never);
          }),
      );
      await Promise.all(
        nodes.map(async (n, p) => {
          for (let k = 0; k < parts; k++) {
            const chunk = vectors[p].subarray(k * PART, Math.min(size, (k + 1) * PART));
            const msg = new Uint8Array(8 + chunk.byteLength);
            msg[0] = round;
            new DataView(msg.buffer).setUint32(4, k);
            msg.set(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength), 8);
            const r = await n.services.pubsub.publish(topic, msg);
            if (r.recipients.length === 0) throw new Error('a gossip message reached nobody');
          }
        }),
      );
      await Promise.race([Promise.all(done), new Promise((_, rej) => setTimeout(() => rej(new Error('gossip round timed out')), 300_000))]);
      times.push(performance.now() - t0);
      bytes += loopbackBytes() - b0;
    }
  }
  times.sort((a, b) => a - b);
  const payload = size * 4;
  const perPeer = bytes / Number(flags.rounds) / P;
  console.log(
    JSON.stringify({ method: flags.method, peers: P, params: size, roundSec: Number((times[Math.floor(times.length / 2)] / 1000).toFixed(3)), bytesPerPeerPerRound: Math.round(perPeer), wireVsPayload: Number((perPeer / payload).toFixed(2)) }),
  );
} finally {
  await stopNodes(nodes);
}
process.exit(0);
