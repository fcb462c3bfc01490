import { describe, expect, it } from 'vitest';
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeCheckpoint, encodeCheckpoint, type Checkpoint } from '../../engine/checkpoint.ts';
import { DEFAULT_TRAIN, modelConfigFromPreset } from '../../engine/config.ts';
import { buildManifest, validateManifest } from '../../engine/flat.ts';
import { initParameterArrays, parameterSpecs } from '../../engine/model.ts';
import { encodeSafetensors, hfGpt2Name } from '../../engine/export/safetensors.ts';
import { hashFloats } from '../../engine/averaging.ts';
import { loadCheckpoint, saveCheckpoint, writeFileAtomic } from '../../node/checkpoint-io.ts';

const model = { ...modelConfigFromPreset('tiny', 20), nLayer: 2 };
const manifest = buildManifest(parameterSpecs(model));

function sample(): Checkpoint {
  const init = initParameterArrays(model, 3);
  const params = new Float32Array(manifest.totalSize);
  for (const e of manifest.entries) params.set(init.get(e.name)!, e.offset);
  return {
    model,
    train: DEFAULT_TRAIN,
    step: 42,
    dataPosition: { nextStep: 42 },
    tokenizer: { kind: 'char', chars: ['a'], mask: false },
    history: [[10, 2.5, null], [42, 2.1, 2.2]],
    info: { backend: 'wasm' },
    manifest,
    params,
    m: params.map((x) => x * 0.5),
    v: params.map((x) => x * x),
  };
}

describe('checkpoint encoding', () => {
  it('round-trips every field exactly', () => {
    const c = sample();
    const d = decodeCheckpoint(encodeCheckpoint(c));
    expect(d.model).toEqual(c.model);
    expect(d.step).toBe(42);
    expect(d.history).toEqual(c.history);
    // Hashes, not toEqual: deep equality over 400k floats takes seconds.
    expect(hashFloats(d.params)).toBe(hashFloats(c.params));
    expect(hashFloats(d.m)).toBe(hashFloats(c.m));
    expect(hashFloats(d.v)).toBe(hashFloats(c.v));
    expect(d.params.length).toBe(c.params.length);
  });

  it('refuses truncated, corrupted and foreign bytes with a reason', () => {
    const bytes = encodeCheckpoint(sample());
    expect(() => decodeCheckpoint(bytes.subarray(0, 5))).toThrow(/truncated/);
    expect(() => decodeCheckpoint(bytes.subarray(0, bytes.length - 100))).toThrow(/truncated: payload has/);
    const flipped = bytes.slice();
    flipped[flipped.length - 7] ^= 0xff;
    expect(() => decodeCheckpoint(flipped)).toThrow(/CRC-32 mismatch/);
    const foreign = bytes.slice();
    foreign[0] = 0x50 + 1;
    expect(() => decodeCheckpoint(foreign)).toThrow(/bad magic/);
    const header = bytes.slice();
    header[13] = 0x7b; // '{{"format"…': no longer JSON
    expect(() => decodeCheckpoint(header)).toThrow(/header is corrupt|header is invalid/);
    expect(() => decodeCheckpoint(new Uint8Array([...bytes, 1, 2, 3, 4]))).toThrow(/trailing bytes/);
  });

  it('validates manifests from outside', () => {
    expect(() => validateManifest({ entries: [{ name: 'a', shape: [2], dtype: 'float32', offset: 0, size: 2 }], totalSize: 3 })).toThrow(/totalSize/);
    expect(() => validateManifest({ entries: [{ name: 'a', shape: [-1], dtype: 'float32', offset: 0, size: 2 }], totalSize: 2 })).toThrow(/invalid shape/);
    expect(() => validateManifest({ entries: [{ name: 'a', shape: [2], dtype: 'int8', offset: 0, size: 2 }], totalSize: 2 })).toThrow(/dtype/);
  });
});

describe('checkpoint files', () => {
  it('saves atomically and loads back; a failed write leaves the old file intact', () => {
    const dir = mkdtempSync(join(tmpdir(), 'peertrain-ckpt-'));
    const path = join(dir, 'c.ptck');
    saveCheckpoint(path, sample());
    const good = readFileSync(path);
    expect(loadCheckpoint(path).step).toBe(42);
    // Renaming onto a non-empty directory fails: the write must not leave a temp file behind.
    const blocked = join(dir, 'blocked');
    mkdirSync(blocked);
    writeFileSync(join(blocked, 'x'), 'x');
    expect(() => writeFileAtomic(blocked, new Uint8Array(10))).toThrow();
    expect(readdirSync(dir).sort()).toEqual(['blocked', 'c.ptck']);
    expect(Buffer.compare(readFileSync(path), good)).toBe(0);
  });

  it('names the file when it is missing or corrupt', () => {
    const dir = mkdtempSync(join(tmpdir(), 'peertrain-ckpt-'));
    expect(() => loadCheckpoint(join(dir, 'none.ptck'))).toThrow(/cannot read checkpoint .*none\.ptck: ENOENT/);
    writeFileSync(join(dir, 'bad.ptck'), 'not a checkpoint at all');
    expect(() => loadCheckpoint(join(dir, 'bad.ptck'))).toThrow(/bad\.ptck: not a peertrain checkpoint/);
  });
});

describe('safetensors export', () => {
  it('writes a valid header with GPT-2 names and exact offsets', () => {
    const c = sample();
    const bytes = encodeSafetensors(c.params, manifest, model);
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect((8 + n) % 8).toBe(0);
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
    expect(header['transformer.h.1.attn.c_attn.weight']).toEqual({ dtype: 'F32', shape: [128, 384], data_offsets: expect.any(Array) });
    expect(header.__metadata__.format).toBe('pt');
    const e = manifest.entries.find((x) => x.name === 'h.1.mlp.wFc')!;
    const [begin, end] = header[hfGpt2Name(e.name)].data_offsets;
    const data = new Float32Array(bytes.slice(8 + n + begin, 8 + n + end).buffer);
    expect(data).toEqual(c.params.subarray(e.offset, e.offset + e.size));
    expect(Object.keys(header).length).toBe(manifest.entries.length + 1);
    expect(bytes.length).toBe(8 + n + c.params.byteLength);
  });
});
