/**
 * The pure parts of a pipeline stage peer: who averages with whom (derived from the announcement alone), the
 * compute queue's backward-first order, and a micro-batch's tensor through the real codec as float32 and as
 * float16, with frames that do not fit the header refused.
 */
import { describe, expect, it } from 'vitest';
import { decodeMessage, encodeMessage, type Message, type PipelineAnnounce } from '../../protocol/index.ts';
import type { FramedStream } from '../../net/framed.ts';
import { readHeader, readValues, writeTensor, PipelineStreamError, type HeaderFields } from '../../peer/pipeline/activation-io.ts';
import { ComputeQueue } from '../../peer/pipeline/compute-queue.ts';
import { averagingGroups, microBatchesOf } from '../../run/pipeline-groups.ts';
import { makeRng, normalArray } from '../../engine/rng.ts';

const plan: Pick<PipelineAnnounce, 'participants' | 'stages' | 'routes'> = {
  participants: ['pA', 'pB', 'pC', 'pD', 'pE'],
  stages: [
    { from: 0, to: 2, peers: [3, 0] },
    { from: 2, to: 3, peers: [1] },
    { from: 3, to: 5, peers: [2, 4] },
  ],
  // pE (index 4) serves the last stage but no micro-batch is routed through it.
  routes: [
    [0, 1, 2],
    [3, 1, 2],
    [0, 1, 2],
  ],
};

describe('averaging groups', () => {
  it('each stage averages among its routed peers, in participant order; the tied group joins first and last', () => {
    const g = averagingGroups(plan);
    expect(g.stages).toEqual([['pA', 'pD'], ['pB'], ['pC']]);
    expect(g.tied).toEqual(['pA', 'pC', 'pD']);
    expect(averagingGroups({ ...plan, stages: [{ from: 0, to: 5, peers: [0, 1] }], routes: [[1], [0]] }).tied).toEqual([]);
  });

  it('lists the micro-batches routed through a peer at a stage', () => {
    expect(microBatchesOf(plan, 0, 0)).toEqual([0, 2]);
    expect(microBatchesOf(plan, 0, 3)).toEqual([1]);
    expect(microBatchesOf(plan, 1, 1)).toEqual([0, 1, 2]);
    expect(microBatchesOf(plan, 2, 4)).toEqual([]);
  });
});

describe('compute queue', () => {
  it('runs one task at a time, backward passes before waiting forward ones', async () => {
    const q = new ComputeQueue();
    const order: string[] = [];
    let release!: () => void;
    const first = q.run('forward', () => new Promise<void>((r) => (release = () => (order.push('f0'), r()))));
    const later = [q.run('forward', async () => void order.push('f1')), q.run('backward', async () => void order.push('b1')), q.run('forward', async () => void order.push('f2')), q.run('backward', async () => void order.push('b2'))];
    await new Promise((r) => setTimeout(r, 10));
    expect(order).toEqual([]);
    release();
    await Promise.all([first, ...later]);
    expect(order).toEqual(['f0', 'b1', 'b2', 'f1', 'f2']);
  });

  it('drops a waiting task whose signal aborts', async () => {
    const q = new ComputeQueue();
    let release!: () => void;
    const first = q.run('forward', () => new Promise<void>((r) => (release = r)));
    const abort = new AbortController();
    const dropped = q.run('backward', async () => 'ran', abort.signal);
    abort.abort(new Error('superseded'));
    await expect(dropped).rejects.toThrow('superseded');
    release();
    await first;
    expect(await q.run('forward', async () => 'next')).toBe('next');
  });
});

/** Two ends of an in-memory stream that encode and decode every frame with the real codec. */
function pipe(tamper?: (m: Message) => Message): [FramedStream, FramedStream] {
  const queue: Uint8Array[] = [];
  const waiters: Array<() => void> = [];
  const ctx = { runId: 'run', configHash: 'hash', from: 'pA' };
  const writer: FramedStream = {
    async write(m) {
      queue.push(encodeMessage(tamper ? tamper(m) : m));
      waiters.splice(0).forEach((w) => w());
    },
    read: async () => undefined,
    close: async () => {},
    abort: () => {},
  };
  const reader: FramedStream = {
    async read() {
      while (queue.length === 0) await new Promise<void>((r) => waiters.push(r));
      return decodeMessage(queue.shift()!, ctx);
    },
    write: async () => {},
    close: async () => {},
    abort: () => {},
  };
  return [writer, reader];
}

const scope = { runId: 'run', configHash: 'hash', sender: 'pA' };
const B = 2;
const T = 64;
const C = 2048; // B·T·C = 262,144 values: more than one frame
const head = (dtype: 'float32' | 'float16'): HeaderFields => ({ round: 3, attempt: 1, micro: 5, stage: 1, direction: 'forward', B, T, C, dtype, loss: 0, targets: new Int32Array(B * T).fill(7), weights: new Float32Array(0) });

describe('activations on the stream', () => {
  const values = normalArray(B * T * C, 1, makeRng(3));

  it('float32 arrives bit-exact, in several frames', async () => {
    const [w, r] = pipe();
    const sent = await writeTensor(w, scope, head('float32'), values);
    const h = await readHeader(r);
    expect(h.targets).toEqual(new Int32Array(B * T).fill(7));
    const got = await readValues(r, h);
    expect(got.values).toEqual(values);
    expect(sent).toBe(values.byteLength + B * T * 4);
  });

  it('float16 halves the bytes within half-precision rounding', async () => {
    const [w, r] = pipe();
    const sent = await writeTensor(w, scope, head('float16'), values);
    const got = await readValues(r, await readHeader(r));
    expect(sent).toBe(values.byteLength / 2 + B * T * 4);
    let worst = 0;
    for (let i = 0; i < values.length; i++) if (Math.abs(values[i]) > 1e-3) worst = Math.max(worst, Math.abs(got.values[i] - values[i]) / Math.abs(values[i]));
    expect(worst).toBeLessThanOrEqual(2 ** -11);
  });

  it('a frame that does not fit the header is refused, naming the micro-batch', async () => {
    const [w, r] = pipe((m) => (m.type === 'act-part' ? { ...m, total: m.total + 1 } : m));
    await writeTensor(w, scope, head('float32'), values);
    await expect(readValues(r, await readHeader(r))).rejects.toThrow(PipelineStreamError);
    const [w2, r2] = pipe((m) => (m.type === 'act-part' ? { ...m, micro: 6 } : m));
    await writeTensor(w2, scope, head('float32'), values);
    await expect(readValues(r2, await readHeader(r2))).rejects.toThrow(/unexpected act-part frame inside micro-batch 5/);
  });
});
