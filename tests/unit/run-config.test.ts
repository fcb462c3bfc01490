import { describe, expect, it } from 'vitest';
import { canonicalJson, validatePipelineConfig } from '../../run/config.ts';
import { assignShards, splitMicroBatches } from '../../run/shares.ts';

describe('run config helpers', () => {
  it('splits micro-batches in proportion to speed, at least one each, summing to the total', () => {
    expect(splitMicroBatches(6, [100, 100, 100])).toEqual([2, 2, 2]);
    expect(splitMicroBatches(8, [300, 100])).toEqual([6, 2]);
    expect(splitMicroBatches(4, [1000, 1, 1])).toEqual([2, 1, 1]);
    for (const speeds of [[1, 2, 3], [0, 0], [5], [7, 7, 7, 7, 7]]) {
      const total = 12;
      const out = splitMicroBatches(total, speeds);
      expect(out.reduce((a, b) => a + b, 0)).toBe(total);
      expect(Math.min(...out)).toBeGreaterThanOrEqual(1);
    }
  });

  it('assigns shards in proportion to speed, deterministically, spread by slot', () => {
    const shards = Array.from({ length: 10 }, (_, i) => ({ file: `train-${i}.bin`, sequences: 100 }));
    expect(assignShards(shards, 0, 100, [])).toHaveLength(10); // alone: everything
    expect(assignShards(shards, 1, 100, [100])).toHaveLength(5); // half
    expect(assignShards(shards, 2, 300, [100])).toHaveLength(8); // three quarters, rounded up to whole shards
    expect(assignShards(shards, 3, 1, [1000])).toHaveLength(1); // at least one
    expect(assignShards(shards, 3, 100, [100])[0]).toBe('train-3.bin'); // starts at its slot
    expect(assignShards(shards, 7, 100, [100, 100])).toEqual(assignShards(shards, 7, 100, [100, 100]));
    expect(assignShards(shards, 0, 0, [100, 100])).toHaveLength(4); // unknown speed counts as average
  });

  it('canonical JSON ignores key order', () => {
    expect(canonicalJson({ b: 1, a: [{ d: 2, c: 3 }] })).toBe(canonicalJson({ a: [{ c: 3, d: 2 }], b: 1 }));
    expect(canonicalJson({ a: 1 })).not.toBe(canonicalJson({ a: 2 }));
  });
});

describe('--listen flag', () => {
  it('accepts multiaddrs and names the one that is not', async () => {
    const { parseListen } = await import('../../node/p2p/listen.ts');
    expect(parseListen('/ip4/127.0.0.1/tcp/0, /ip4/127.0.0.1/tcp/0/ws')).toEqual(['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/tcp/0/ws']);
    expect(() => parseListen('/ip4/nope')).toThrow(/--listen: "\/ip4\/nope" is not a multiaddr/);
    expect(() => parseListen(' , ')).toThrow(/at least one multiaddr/);
  });
});

describe('pipeline config', () => {
  const ok = { stages: 2, activationDtype: 'float16', maxInFlight: 4 };
  it('accepts a stage count within the model\'s parts, or auto', () => {
    expect(validatePipelineConfig(ok, 6)).toEqual(ok);
    expect(validatePipelineConfig({ ...ok, stages: 'auto' }, 6).stages).toBe('auto');
    expect(validatePipelineConfig({ ...ok, stages: 6 }, 6)).toEqual({ ...ok, stages: 6 });
  });
  it.each([
    ['stages beyond the parts', { ...ok, stages: 7 }, /stages must be "auto" or an integer in \[1, 6\]/],
    ['zero stages', { ...ok, stages: 0 }, /stages/],
    ['fractional stages', { ...ok, stages: 1.5 }, /stages/],
    ['an unknown dtype', { ...ok, activationDtype: 'int8' }, /activationDtype must be "float32" or "float16"/],
    ['no in-flight micro-batches', { ...ok, maxInFlight: 0 }, /maxInFlight must be an integer in \[1, 64\]/],
    ['not an object', 'pipeline', /pipeline must be/],
    ['an unknown key', { ...ok, stage: 2 }, /pipeline: unknown key "stage"/],
  ])('refuses %s with a message naming it', (_name, raw, message) => {
    expect(() => validatePipelineConfig(raw, 6)).toThrow(message);
  });
});
