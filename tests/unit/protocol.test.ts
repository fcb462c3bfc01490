import { Packr, Unpackr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import {
  MAX_MESSAGE_BYTES,
  MAX_PART_ELEMENTS,
  MESSAGE_TYPES,
  PROTOCOL_VERSION,
  REJECT_REASONS,
  chunkBounds,
  decodeMessage,
  encodeMessage,
  partsOf,
  validateMessage,
  type Message,
  type RejectReason,
  type TensorPart,
  type ValidationContext,
} from '../../protocol/index.ts';

const v = PROTOCOL_VERSION;
const run = { runId: 'run-1', configHash: 'c0ffee42', sender: 'peerA', ts: 1_700_000_000_000 };
const part: TensorPart = {
  v, type: 'part', ...run, round: 5, attempt: 0, phase: 'reduce', chunk: 1, offset: 2, total: 10, weight: 3,
  values: new Float32Array([0.5, -1.25, 3]),
};
const samples: Message[] = [
  { v, type: 'join', token: 'secret', kind: 'browser', backend: 'webgpu', tokensPerSec: 1234.5, memoryMB: 2048, sender: 'peerA' },
  { v, type: 'welcome', ...run, config: { model: { nLayer: 2, nHead: 2 }, lr: 3e-4, tags: ['a', null, true] }, round: 5, slot: 3, shards: ['train-00000.bin'] },
  { v, type: 'refused', reason: 'run is full' },
  { v, type: 'heartbeat', ...run, round: 5, step: 40, tokensPerSec: 0, kind: 'node', backend: 'tensorflow', addrs: ['/ip4/127.0.0.1/tcp/4001'] },
  { v, type: 'round', ...run, round: 6, attempt: 1, participants: ['peerA', 'peerB'], microBatches: [4, 0], deadlineMs: 30_000, paramHash: '0a1b2c3d' },
  part,
  { v, type: 'done', ...run, round: 5, attempt: 0, paramHash: 'deadbeef', loss: 2.75, samples: 16 },
  { v, type: 'state-request', ...run },
  { v, type: 'state', ...run, round: 5, step: 40, paramHash: 'deadbeef', params: 1000, optimizer: 0, stageFrom: 0, stageTo: 3 },
  { v, type: 'leave', ...run, reason: 'tab closed' },
  { v, type: 'resync', ...run, target: 'peerB', reason: 'paramHash differs' },
  { v, type: 'data-request', ...run, file: 'train-00000.bin' },
  { v, type: 'data', ...run, file: 'train-00000.bin', offset: 4, total: 10, bytes: new Uint8Array([1, 2, 3]) },
  { v, type: 'pipe-round', ...run, round: 6, attempt: 0, participants: ['peerA', 'peerB', 'peerC'], stages: [{ from: 0, to: 2, peers: [0, 2] }, { from: 2, to: 4, peers: [1] }], routes: [[0, 1], [2, 1]], deadlineMs: 30_000, stageHashes: ['0a1b2c3d', 'deadbeef'], previous: { attempt: 3, gradNorm: 0.5 } },
  { v, type: 'activation', ...run, round: 6, attempt: 0, micro: 1, stage: 1, direction: 'forward', B: 2, T: 3, C: 4, dtype: 'float16', loss: 0, targets: new Int32Array([1, 2, 3, 4, 5, 6]), weights: new Float32Array(0) },
  { v, type: 'act-part', ...run, round: 6, attempt: 0, micro: 1, offset: 0, total: 24, values: new Uint16Array([15360, 16384]) },
  { v, type: 'act-part', ...run, round: 6, attempt: 0, micro: 1, offset: 2, total: 24, values: new Float32Array([1.5, -2]) },
  { v, type: 'pipe-error', ...run, round: 6, attempt: 0, micro: 1, failed: 'peerB', reason: 'stage 1 peer unreachable' },
  { v, type: 'pipe-commit', ...run, round: 6, attempt: 0, gradNorm: 0.75 },
];
const ctx: ValidationContext = {
  runId: run.runId, configHash: run.configHash, from: 'peerA', isAdmitted: (p) => p !== 'peerZ', currentRound: 5, maxPartNorm: 100,
};
/** Another msgpackr instance: what a peer built from other code (or an attacker) would send. */
const raw = new Packr({ moreTypes: true, useRecords: false });
const sample = (type: Message['type']) => samples.find((m) => m.type === type) as Message & Record<string, unknown>;
const with_ = (type: Message['type'], changes: Record<string, unknown>) => ({ ...sample(type), ...changes }) as Message;
const without = (type: Message['type'], key: string) => {
  const m: Record<string, unknown> = { ...sample(type) };
  delete m[key];
  return m;
};

/** Deterministic PRNG (mulberry32) so a fuzz failure reproduces. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('protocol codec round trip', () => {
  it('has a sample of every message type', () => {
    expect([...new Set(samples.map((m) => m.type))].sort()).toEqual([...MESSAGE_TYPES].sort());
  });

  it.each(samples.map((m) => [m.type, m] as const))('round-trips %s', (_type, msg) => {
    const res = decodeMessage(encodeMessage(msg), ctx);
    expect(res).toEqual({ ok: true, msg });
  });

  it.each(samples.map((m) => [m.type, m] as const))('decodes %s packed by a separate msgpackr instance', (_type, msg) => {
    expect(decodeMessage(raw.pack(msg), ctx)).toEqual({ ok: true, msg });
  });

  it.each(samples.map((m) => [m.type, m] as const))('encodes %s self-contained: a fresh Unpackr reads it', (_type, msg) => {
    expect(new Unpackr({ moreTypes: true, useRecords: false }).unpack(encodeMessage(msg))).toEqual(msg);
  });

  it('fits a full-size part frame under MAX_MESSAGE_BYTES, bit-exact', () => {
    const values = Float32Array.from({ length: MAX_PART_ELEMENTS }, (_, i) => Math.sin(i) * 1e-3);
    const msg = { ...part, offset: 0, total: MAX_PART_ELEMENTS, values };
    const bytes = encodeMessage(msg);
    expect(bytes.byteLength).toBeLessThanOrEqual(MAX_MESSAGE_BYTES);
    const res = decodeMessage(bytes, { ...ctx, maxPartNorm: undefined });
    if (!res.ok || res.msg.type !== 'part') throw new Error(`decode failed: ${JSON.stringify(res)}`);
    const got = res.msg.values;
    expect(got.length).toBe(values.length);
    expect(got.every((x, i) => Object.is(x, values[i]))).toBe(true); // toEqual on 2^18 elements is slow
  });

  it('returns part values as a fresh, aligned Float32Array even from an unaligned input view', () => {
    const bytes = encodeMessage(part);
    const backing = new Uint8Array(bytes.length + 3);
    const view = backing.subarray(3); // odd offset: the float bytes inside cannot be 4-byte aligned in place
    view.set(bytes);
    const res = decodeMessage(view, ctx);
    if (!res.ok || res.msg.type !== 'part') throw new Error(`decode failed: ${JSON.stringify(res)}`);
    const values = res.msg.values;
    expect(values).toBeInstanceOf(Float32Array);
    expect(values.byteOffset % 4).toBe(0);
    expect(values.buffer).not.toBe(backing.buffer);
    expect(values.buffer.byteLength).toBe(values.byteLength);
    backing.fill(0);
    expect(Array.from(values)).toEqual([0.5, -1.25, 3]);
  });

  it('encodes a subarray view as just its elements', () => {
    const big = new Float32Array([9, 1, 2, 3, 9]);
    const res = decodeMessage(encodeMessage({ ...part, values: big.subarray(1, 4) }), ctx);
    expect(res.ok && res.msg.type === 'part' && Array.from(res.msg.values)).toEqual([1, 2, 3]);
  });
});

describe('protocol rejections', () => {
  const truncated = () => encodeMessage(part).slice(0, -3);
  const protoKey = () => raw.pack(JSON.parse(JSON.stringify(sample('leave')).replace('{', '{"__proto__":{"polluted":true},')));
  const cases: Array<[name: string, reason: RejectReason, bytes: () => Uint8Array, ctx?: ValidationContext]> = [
    ['over the byte limit', 'size', () => new Uint8Array(MAX_MESSAGE_BYTES + 1)],
    ['over a custom byte limit', 'size', () => encodeMessage(part), { ...ctx, maxBytes: 16 }],
    ['garbage bytes', 'malformed', () => new Uint8Array([0xc1, 0xff, 0x00])],
    ['empty buffer', 'malformed', () => new Uint8Array(0)],
    ['truncated buffer', 'malformed', truncated],
    ['trailing bytes', 'malformed', () => new Uint8Array([...encodeMessage(part), 0x00])],
    ['a number, not a map', 'malformed', () => raw.pack(42)],
    ['an array, not a map', 'malformed', () => raw.pack([1, 2])],
    ['a structured-clone cycle', 'malformed', () => new Packr({ structuredClone: true }).pack(cyclic())],
    ['unknown type', 'structure', () => raw.pack({ ...part, type: 'gradient' })],
    ['missing field', 'structure', () => raw.pack(without('round', 'paramHash'))],
    ['extra field', 'structure', () => raw.pack({ ...part, admin: true })],
    ['__proto__ key', 'structure', protoKey],
    ['__proto__ key inside config', 'structure', () => raw.pack({ ...sample('welcome'), config: JSON.parse('{"__proto__":{"x":1}}') })],
    ['round as a string', 'structure', () => raw.pack({ ...part, round: '5' })],
    ['values as a plain array', 'structure', () => raw.pack({ ...part, values: [1, 2, 3] })],
    ['values as Float64Array', 'structure', () => raw.pack({ ...part, values: new Float64Array(3) })],
    ['empty values', 'structure', () => raw.pack({ ...part, values: new Float32Array(0) })],
    ['values past total', 'structure', () => raw.pack({ ...part, offset: 8 })],
    ['zero weight in reduce', 'structure', () => raw.pack({ ...part, weight: 0 })],
    ['negative tokensPerSec', 'structure', () => raw.pack(with_('heartbeat', { tokensPerSec: -1 }))],
    ['bad paramHash', 'structure', () => raw.pack(with_('done', { paramHash: 'DEADBEEF' }))],
    ['duplicate participants', 'structure', () => raw.pack(with_('round', { participants: ['peerA', 'peerA'] }))],
    ['microBatches length mismatch', 'structure', () => raw.pack(with_('round', { microBatches: [1] }))],
    ['config not an object', 'structure', () => raw.pack(with_('welcome', { config: 'x' }))],
    ['token too long', 'structure', () => raw.pack(with_('join', { token: 'x'.repeat(257) }))],
    ['route through a peer of another stage', 'structure', () => raw.pack(with_('pipe-round', { routes: [[0, 2]] }))],
    ['stages not contiguous', 'structure', () => raw.pack(with_('pipe-round', { stages: [{ from: 0, to: 2, peers: [0, 2] }, { from: 3, to: 4, peers: [1] }] }))],
    ['a peer in two stages', 'structure', () => raw.pack(with_('pipe-round', { stages: [{ from: 0, to: 2, peers: [0, 1] }, { from: 2, to: 4, peers: [1] }] }))],
    ['a previous commit with a NaN norm', 'structure', () => raw.pack(with_('pipe-round', { previous: { attempt: 0, gradNorm: NaN } }))],
    ['one stage hash missing', 'structure', () => raw.pack(with_('pipe-round', { stageHashes: ['0a1b2c3d'] }))],
    ['targets not one per token', 'structure', () => raw.pack(with_('activation', { targets: new Int32Array(5) }))],
    ['activation larger than the limit', 'structure', () => raw.pack(with_('activation', { B: 1 << 12, T: 1 << 12, C: 1 << 12, targets: new Int32Array(0) }))],
    ['activation values as Float64Array', 'structure', () => raw.pack(with_('act-part', { values: new Float64Array(2) }))],
    ['float16 Infinity in activations', 'nonfinite', () => encodeMessage(with_('act-part', { values: new Uint16Array([15360, 0x7c00]) }))],
    ['activation beyond float16 range', 'norm', () => encodeMessage(with_('act-part', { values: new Float32Array([1, -70000]) }))],
    ['NaN gradient norm in a commit', 'nonfinite', () => encodeMessage(with_('pipe-commit', { gradNorm: NaN }))],
    ['wrong version', 'version', () => encodeMessage({ ...part, v: 1 })],
    ['wrong runId', 'run', () => encodeMessage({ ...part, runId: 'run-0' })],
    ['wrong configHash', 'run', () => encodeMessage(with_('heartbeat', { configHash: 'c0ffee43' }))],
    ['sender mismatch', 'sender', () => encodeMessage({ ...part, sender: 'peerB' })],
    ['join sender mismatch', 'sender', () => encodeMessage(sample('join')), { ...ctx, from: 'peerB' }],
    ['unadmitted sender', 'unadmitted', () => encodeMessage({ ...part, sender: 'peerZ' }), { ...ctx, from: 'peerZ' }],
    ['admission check that throws', 'unadmitted', () => encodeMessage(part), { ...ctx, isAdmitted: () => { throw new Error('db down'); } }],
    ['stale round (replay)', 'stale', () => encodeMessage({ ...part, round: 4 })],
    ['round beyond staleRounds', 'stale', () => encodeMessage({ ...part, round: 2 }), { ...ctx, staleRounds: 2 }],
    ['future round', 'future', () => encodeMessage({ ...part, round: 8 })],
    ['NaN in values', 'nonfinite', () => encodeMessage({ ...part, values: new Float32Array([1, NaN, 2]) })],
    ['Infinity in values', 'nonfinite', () => encodeMessage({ ...part, values: new Float32Array([-Infinity]) })],
    ['Infinity in loss', 'nonfinite', () => encodeMessage(with_('done', { loss: Infinity }))],
    ['NaN weight', 'nonfinite', () => encodeMessage({ ...part, weight: NaN })],
    ['NaN inside config', 'nonfinite', () => encodeMessage(with_('welcome', { config: { lr: NaN } }))],
    ['norm over bound', 'norm', () => encodeMessage({ ...part, values: new Float32Array([60, 80, 0.5]) })],
  ];

  it('covers every reason', () => {
    expect(new Set(cases.map((c) => c[1]))).toEqual(new Set(REJECT_REASONS));
  });

  it.each(cases)('rejects %s as %s', (_name, reason, bytes, context = ctx) => {
    const res = decodeMessage(bytes(), context);
    expect(res.ok ? 'ok' : res.reason).toBe(reason);
    expect(res.ok || res.detail.length > 0).toBe(true);
  });

  it('leaves Object.prototype alone', () => {
    decodeMessage(protoKey(), ctx);
    expect((Object.prototype as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('accepts what the context allows: older rounds within staleRounds, a norm at the bound, no context at all', () => {
    expect(decodeMessage(encodeMessage({ ...part, round: 3 }), { ...ctx, staleRounds: 2 }).ok).toBe(true);
    expect(decodeMessage(encodeMessage({ ...part, round: 7 }), ctx).ok).toBe(true);
    expect(decodeMessage(encodeMessage({ ...part, values: new Float32Array([60, 80]) }), ctx).ok).toBe(true);
    expect(decodeMessage(encodeMessage({ ...part, runId: 'other', sender: 'peerZ', round: 99 }), {}).ok).toBe(true);
    expect(decodeMessage(encodeMessage(sample('welcome')), { from: 'peerA' }).ok).toBe(true); // joiner: no run yet
  });

  it('reports the first failing check, in order', () => {
    let m: Record<string, unknown> = { ...part, round: 'zero', v: 1, runId: 'x', sender: 'peerZ', values: new Float32Array([NaN]) };
    let c: ValidationContext = { ...ctx, from: 'peerB' };
    const steps: Array<[RejectReason | 'ok', Record<string, unknown>, ValidationContext]> = [
      ['size', {}, { maxBytes: 8 }], ['structure', {}, { maxBytes: undefined }], ['version', { round: 0 }, {}],
      ['run', { v }, {}], ['sender', { runId: run.runId }, {}], ['unadmitted', {}, { from: 'peerZ' }],
      ['stale', {}, { isAdmitted: () => true }], ['nonfinite', { round: 5 }, {}],
      ['norm', { values: new Float32Array([1000]) }, {}], ['ok', {}, { maxPartNorm: undefined }],
    ];
    for (const [reason, fixMsg, fixCtx] of steps) {
      m = { ...m, ...fixMsg };
      c = { ...c, ...fixCtx };
      const res = decodeMessage(raw.pack(m), c);
      expect(res.ok ? 'ok' : res.reason).toBe(reason);
    }
  });

  it('never throws on 500 random buffers or 500 corrupted messages', () => {
    const next = rng(12345);
    const valid = samples.map((m) => encodeMessage(m));
    for (let i = 0; i < 1000; i++) {
      let bytes: Uint8Array;
      if (i < 500) {
        bytes = Uint8Array.from({ length: Math.floor(next() * 300) }, () => Math.floor(next() * 256));
      } else {
        bytes = valid[i % valid.length].slice();
        for (let k = 1 + Math.floor(next() * 4); k > 0; k--) bytes[Math.floor(next() * bytes.length)] = Math.floor(next() * 256);
      }
      const res = decodeMessage(bytes, ctx);
      if (!res.ok) expect(REJECT_REASONS).toContain(res.reason);
    }
  });

  it('validateMessage never throws on hostile objects', () => {
    const trap = Object.defineProperty({ ...part }, 'round', { enumerable: true, get: () => { throw new Error('gotcha'); } });
    expect(validateMessage(trap, ctx)).toMatchObject({ ok: false, reason: 'malformed' });
    expect(validateMessage(with_('welcome', { config: cyclic() }), ctx)).toMatchObject({ ok: false, reason: 'structure' });
    expect(validateMessage(null, ctx)).toMatchObject({ ok: false, reason: 'malformed' });
    expect(validateMessage(new Map(), ctx)).toMatchObject({ ok: false, reason: 'malformed' });
  });

  it('encodeMessage refuses structurally invalid or oversized messages with a ProtocolError', () => {
    expect(() => encodeMessage({ ...part, extra: 1 } as Message)).toThrowError(expect.objectContaining({ name: 'ProtocolError', reason: 'structure' }));
    const huge = with_('welcome', { config: { blob: 'x'.repeat(MAX_MESSAGE_BYTES) } });
    expect(() => encodeMessage(huge)).toThrowError(expect.objectContaining({ name: 'ProtocolError', reason: 'size' }));
  });
});

function cyclic(): Record<string, unknown> {
  const o: Record<string, unknown> = { a: 1 };
  o.self = o;
  return o;
}

describe('chunkBounds and partsOf', () => {
  it('split [0, total) into contiguous near-equal chunks, longer ones first', () => {
    for (const total of [0, 1, 7, 100, 1_000_003]) {
      for (const parts of [1, 2, 3, 7, 64]) {
        const chunks = Array.from({ length: parts }, (_, i) => chunkBounds(total, parts, i));
        expect(chunks[0].start).toBe(0);
        expect(chunks[parts - 1].end).toBe(total);
        for (let i = 1; i < parts; i++) expect(chunks[i].start).toBe(chunks[i - 1].end);
        const sizes = chunks.map((c) => c.end - c.start);
        expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
        expect([...sizes].sort((a, b) => b - a)).toEqual(sizes);
      }
    }
  });

  it('cut a range into frames of at most MAX_PART_ELEMENTS that cover it exactly', () => {
    for (const [start, n] of [[0, 0], [5, 1], [10, MAX_PART_ELEMENTS], [3, 2 * MAX_PART_ELEMENTS + 17]]) {
      const frames = partsOf(start, start + n);
      let next = 0;
      for (const f of frames) {
        expect(f.offset).toBe(next);
        expect(f.length).toBeGreaterThan(0);
        expect(f.length).toBeLessThanOrEqual(MAX_PART_ELEMENTS);
        next += f.length;
      }
      expect(next).toBe(n);
      expect(frames.length).toBe(Math.ceil(n / MAX_PART_ELEMENTS));
    }
  });

  it('refuse impossible arguments', () => {
    expect(() => chunkBounds(10, 0, 0)).toThrowError(expect.objectContaining({ name: 'ProtocolError' }));
    expect(() => chunkBounds(10, 2, 2)).toThrowError(expect.objectContaining({ name: 'ProtocolError' }));
    expect(() => chunkBounds(1.5, 2, 0)).toThrowError(expect.objectContaining({ name: 'ProtocolError' }));
    expect(() => partsOf(5, 4)).toThrowError(expect.objectContaining({ name: 'ProtocolError' }));
  });
});
