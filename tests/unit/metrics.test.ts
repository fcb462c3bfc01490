import { describe, expect, it } from 'vitest';
import { bitsPerCharacter, corpusBleu, distinctN, repetitionRate, wordTokens } from '../../engine/eval/metrics.ts';

const w = (s: string) => s.split(' ');

describe('corpus BLEU-4 (hand-computed cases)', () => {
  it('is 1 for identical text', () => {
    expect(corpusBleu([w('the cat sat on the mat')], [w('the cat sat on the mat')]).bleu).toBeCloseTo(1, 12);
  });
  it('is the geometric mean of clipped precisions', () => {
    // p1 = 5/6 (the second "the" is not in… it is, but "a" is not), p2 = 3/5, p3 = 2/4, p4 = 1/3; same length: BP = 1.
    const r = corpusBleu([w('the cat sat on a mat')], [w('the cat sat on the mat')]);
    expect(r.precisions).toEqual([5 / 6, 3 / 5, 2 / 4, 1 / 3]);
    expect(r.brevityPenalty).toBe(1);
    expect(r.bleu).toBeCloseTo(Math.pow((5 / 6) * (3 / 5) * (2 / 4) * (1 / 3), 1 / 4), 12);
  });
  it('clips repeated n-grams to their count in the reference', () => {
    const r = corpusBleu([w('the the the the')], [w('the cat')]);
    expect(r.precisions[0]).toBe(1 / 4);
    expect(r.bleu).toBe(0); // no bigram matches
  });
  it('applies the brevity penalty exp(1 - r/c) to short candidates', () => {
    const r = corpusBleu([w('the cat sat on')], [w('the cat sat on the mat')]);
    expect(r.precisions).toEqual([1, 1, 1, 1]);
    expect(r.bleu).toBeCloseTo(Math.exp(1 - 6 / 4), 12);
  });
  it('sums n-gram counts over the corpus before dividing', () => {
    const r = corpusBleu([w('a b c d'), w('x y z w')], [w('a b c d'), w('x y q w')]);
    // p1 = 7/8, p2 = 4/6, p3 = 2/4, p4 = 1/2
    expect(r.precisions).toEqual([7 / 8, 4 / 6, 2 / 4, 1 / 2]);
    expect(r.bleu).toBeCloseTo(Math.pow((7 / 8) * (4 / 6) * (2 / 4) * (1 / 2), 1 / 4), 12);
  });
});

describe('diversity and repetition', () => {
  it('distinct-n', () => {
    expect(distinctN([w('a b a b')], 2)).toBeCloseTo(2 / 3, 12);
    expect(distinctN([w('a b'), w('a b')], 2)).toBe(0.5);
    expect(distinctN([[]], 2)).toBe(0);
  });
  it('repetition rate counts 4-grams seen earlier in the same sample', () => {
    expect(repetitionRate([w('a b c d a b c d')])).toBeCloseTo(1 / 5, 12);
    expect(repetitionRate([w('a b c d e f')])).toBe(0);
  });
  it('word tokens and bits per character', () => {
    expect(wordTokens('Hello, world! It\'s 42.')).toEqual(['Hello', ',', 'world', '!', "It's", '42', '.']);
    expect(bitsPerCharacter(Math.LN2, 100, 100)).toBeCloseTo(1, 12);
    expect(bitsPerCharacter(Math.LN2 * 2, 100, 400)).toBeCloseTo(0.5, 12);
  });
});
