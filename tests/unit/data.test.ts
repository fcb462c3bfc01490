import { describe, expect, it } from 'vitest';
import { packedSequences, samplePackedBatch, stepBatches } from '../../engine/data/batches.ts';
import { SequencePacker } from '../../engine/data/packing.ts';
import { detokenizeBrownFile, detokenizeBrownLine } from '../../engine/data/brown.ts';
import { mixSeed, makeRng, normalArray } from '../../engine/rng.ts';
import { hashFloats, weightedMean } from '../../engine/averaging.ts';
import { pickToken } from '../../engine/generate.ts';

describe('batches', () => {
  const tokens = packedSequences(Int32Array.from({ length: 1020 }, (_, i) => i % 50), 34);
  it('are a pure function of seed, step and micro-batch', () => {
    const spec = { B: 4, T: 16, objective: 'causal' as const };
    expect(stepBatches(tokens, spec, 7, 3, 2)).toEqual(stepBatches(tokens, spec, 7, 3, 2));
    expect(stepBatches(tokens, spec, 7, 3, 2)[0].ids).not.toEqual(stepBatches(tokens, spec, 7, 4, 2)[0].ids);
  });
  it('shift targets by one token for the causal objective', () => {
    const b = samplePackedBatch(tokens, { B: 2, T: 8, objective: 'causal' }, 1);
    for (let i = 0; i < 7; i++) expect(b.targets[i]).toBe(b.ids[i + 1]);
  });
  it('mask about maskProb of positions for mlm, with weights only there', () => {
    const spec = { B: 64, T: 32, objective: 'mlm' as const, maskProb: 0.15, maskId: 51, eosId: 50, vocabSize: 52 };
    const b = samplePackedBatch(tokens, spec, 3);
    const chosen = b.weights!.reduce((s, w) => s + w, 0) / (64 * 32);
    expect(chosen).toBeGreaterThan(0.1);
    expect(chosen).toBeLessThan(0.2);
    let masked = 0;
    for (let i = 0; i < b.ids.length; i++) {
      if (b.weights![i] === 0) expect(b.ids[i]).toBe(b.targets[i]);
      else if (b.ids[i] === 51) masked++;
      expect(b.ids[i]).not.toBe(50); // random replacements never produce a separator
    }
    expect(masked / b.weights!.reduce((s, w) => s + w, 0)).toBeGreaterThan(0.7);
  });
  it('take windows from inside one packed sequence', () => {
    // Sequences of 34 tokens hold ids 0..49 cyclically: a window never crosses into the next sequence.
    const b = samplePackedBatch(tokens, { B: 50, T: 20, objective: 'causal' }, 9);
    for (let r = 0; r < 50; r++) for (let t = 0; t < 19; t++) expect(b.ids[r * 20 + t + 1]).toBe(b.targets[r * 20 + t]);
    expect(() => samplePackedBatch(tokens, { B: 1, T: 34, objective: 'causal' }, 1)).toThrow(/needs 35 tokens per sequence, the data packs 34/);
  });
  it('packing appends separators and cuts fixed-length sequences', () => {
    const out: number[][] = [];
    const p = new SequencePacker(4, 99, (s) => out.push(Array.from(s)));
    p.addDocument([1, 2, 3]);
    p.addDocument([4, 5]);
    p.addDocument([6]);
    p.flush();
    expect(out).toEqual([[1, 2, 3, 99], [4, 5, 99, 6]]);
    expect(p.dropped).toBe(1);
  });
});

describe('Brown corpus detokenizer', () => {
  it('strips tags, converts quotes and attaches punctuation', () => {
    const line = "\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, and/cc (/( so/rb )/) it/pps ended/vbd ./.";
    expect(detokenizeBrownLine(line)).toBe('The jury said "no evidence", and (so) it ended.');
  });
  it('joins the sentences of a file', () => {
    expect(detokenizeBrownFile('\n\n\tA/at b/nn ./.\n\n\n\tC/at d/nn ./.\n')).toBe('A b. C d.');
  });
});

describe('rng and averaging', () => {
  it('rng is deterministic and seeds mix', () => {
    const a = makeRng(5);
    const b = makeRng(5);
    for (let i = 0; i < 10; i++) expect(a()).toBe(b());
    expect(mixSeed(1, 2)).not.toBe(mixSeed(2, 1));
    const n = normalArray(20000, 2, makeRng(1));
    const mean = n.reduce((s, x) => s + x, 0) / n.length;
    const std = Math.sqrt(n.reduce((s, x) => s + x * x, 0) / n.length);
    expect(Math.abs(mean)).toBeLessThan(0.05);
    expect(std).toBeCloseTo(2, 1);
  });
  it('weightedMean weights by sequences', () => {
    const m = weightedMean([
      { values: Float32Array.from([1, 2]), weight: 1 },
      { values: Float32Array.from([4, 8]), weight: 3 },
    ]);
    expect(Array.from(m)).toEqual([3.25, 6.5]);
    expect(() => weightedMean([{ values: new Float32Array(2), weight: 0 }])).toThrow(/positive/);
    expect(() => weightedMean([{ values: new Float32Array(2), weight: 1 }, { values: new Float32Array(3), weight: 1 }])).toThrow(/length/);
  });
  it('hashFloats tells arrays apart', () => {
    expect(hashFloats(Float32Array.from([1, 2]))).toBe(hashFloats(Float32Array.from([1, 2])));
    expect(hashFloats(Float32Array.from([1, 2]))).not.toBe(hashFloats(Float32Array.from([1, 2.0000002])));
  });
});

describe('token picking', () => {
  const logits = Float32Array.from([0, 3, 1, 2]);
  it('greedy at temperature 0, never the excluded id', () => {
    expect(pickToken(logits, { temperature: 0, topK: 0, topP: 1 }, makeRng(1))).toBe(1);
    expect(pickToken(logits, { temperature: 0, topK: 0, topP: 1 }, makeRng(1), 1)).toBe(3);
  });
  it('top-k 1 and a tiny top-p both pick the best token', () => {
    for (let s = 0; s < 20; s++) {
      expect(pickToken(logits, { temperature: 1, topK: 1, topP: 1 }, makeRng(s))).toBe(1);
      expect(pickToken(logits, { temperature: 1, topK: 0, topP: 0.01 }, makeRng(s))).toBe(1);
    }
  });
  it('top-k 2 samples only the two best', () => {
    const seen = new Set<number>();
    for (let s = 0; s < 200; s++) seen.add(pickToken(logits, { temperature: 1, topK: 2, topP: 1 }, makeRng(s)));
    expect([...seen].sort()).toEqual([1, 3]);
  });
});
