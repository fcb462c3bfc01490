import { describe, expect, it } from 'vitest';
import { CharTokenizer } from '../../engine/data/char-tokenizer.ts';
import { sampleBatch, splitTokens, stepBatches } from '../../engine/data/batches.ts';
import { detokenizeBrownFile, detokenizeBrownLine } from '../../engine/data/brown.ts';
import { mixSeed, makeRng, normalArray } from '../../engine/rng.ts';
import { hashFloats, weightedMean } from '../../engine/averaging.ts';
import { pickToken } from '../../engine/generate.ts';

describe('char tokenizer', () => {
  it('round-trips text exactly, including non-ASCII', () => {
    const text = 'Héllo, wörld — naïve café 🚀!\n\ttabs';
    const tok = CharTokenizer.fromText(text);
    expect(tok.decode(tok.encode(text))).toBe(text);
    expect(CharTokenizer.fromJSON(JSON.parse(JSON.stringify(tok.toJSON()))).decode(tok.encode(text))).toBe(text);
  });
  it('names a character outside the vocabulary', () => {
    const tok = CharTokenizer.fromText('abc');
    expect(() => tok.encode('abd')).toThrow(/character "d" \(U\+0064\) is not in the vocabulary/);
    expect(Array.from(tok.encodeLenient('abd'))).toEqual([0, 1]);
  });
  it('reserves the last id for [MASK] when asked', () => {
    const tok = CharTokenizer.fromText('ab', true);
    expect(tok.vocabSize).toBe(3);
    expect(tok.maskId).toBe(2);
    expect(tok.decode([0, 2, 1])).toBe('a[MASK]b');
  });
  it('rejects empty text and malformed JSON', () => {
    expect(() => CharTokenizer.fromText('')).toThrow(/empty text/);
    expect(() => CharTokenizer.fromJSON({ kind: 'bpe' })).toThrow(/not a char tokenizer/);
    expect(() => CharTokenizer.fromJSON({ kind: 'char', chars: ['a', 'a'] })).toThrow(/twice/);
  });
});

describe('batches', () => {
  const tokens = Int32Array.from({ length: 1000 }, (_, i) => i % 50);
  it('are a pure function of seed, step and micro-batch', () => {
    const spec = { B: 4, T: 16, objective: 'causal' as const };
    expect(stepBatches(tokens, spec, 7, 3, 2)).toEqual(stepBatches(tokens, spec, 7, 3, 2));
    expect(stepBatches(tokens, spec, 7, 3, 2)[0].ids).not.toEqual(stepBatches(tokens, spec, 7, 4, 2)[0].ids);
  });
  it('shift targets by one token for the causal objective', () => {
    const b = sampleBatch(tokens, { B: 2, T: 8, objective: 'causal' }, 1);
    for (let i = 0; i < 7; i++) expect(b.targets[i]).toBe(b.ids[i + 1]);
  });
  it('mask about maskProb of positions for mlm, with weights only there', () => {
    const spec = { B: 64, T: 32, objective: 'mlm' as const, maskProb: 0.15, maskId: 50, vocabSize: 51 };
    const b = sampleBatch(tokens, spec, 3);
    const chosen = b.weights!.reduce((s, w) => s + w, 0) / (64 * 32);
    expect(chosen).toBeGreaterThan(0.1);
    expect(chosen).toBeLessThan(0.2);
    let masked = 0;
    for (let i = 0; i < b.ids.length; i++) {
      if (b.weights![i] === 0) expect(b.ids[i]).toBe(b.targets[i]);
      else if (b.ids[i] === 50) masked++;
    }
    expect(masked / b.weights!.reduce((s, w) => s + w, 0)).toBeGreaterThan(0.7);
  });
  it('refuse data too short to split', () => {
    expect(() => splitTokens(tokens.subarray(0, 20), 0.1, 17)).toThrow(/data too short/);
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
