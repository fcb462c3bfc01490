import { describe, expect, it } from 'vitest';
import {
  BpeTokenizer,
  CharTokenizer,
  Gpt2Tokenizer,
  loadTokenizer,
  PieceCounter,
  trainBpe,
  WordCounter,
  WordTokenizer,
  bpePieces,
} from '../../engine/data/tokenizers/index.ts';
import { loadBrownText } from '../../node/data/builtin-corpus.ts';

const SAMPLE = 'Héllo, wörld — naïve café 🚀!\n\n\tTabs, "quotes" and numbers 12345 won\'t break it.';

describe('char tokenizer', () => {
  it('round-trips text exactly, including non-ASCII', () => {
    const tok = CharTokenizer.fromText(SAMPLE);
    expect(tok.decode(tok.encode(SAMPLE))).toBe(SAMPLE);
  });
  it('names a character outside the vocabulary; lenient encoding skips it', () => {
    const tok = CharTokenizer.fromText('abc');
    expect(() => tok.encode('abd')).toThrow(/character "d" \(U\+0064\) is not in the vocabulary/);
    expect(Array.from(tok.encodeLenient('abd'))).toEqual([0, 1]);
  });
  it('appends the two specials after the alphabet', () => {
    const tok = CharTokenizer.fromText('ab');
    expect([tok.vocabSize, tok.eosId, tok.maskId]).toEqual([4, 2, 3]);
    expect(tok.decode([0, 3, 1, 2, 0])).toBe('a[MASK]b\n\na');
    expect(() => tok.decode([4])).toThrow(/outside the vocabulary/);
  });
  it('rejects empty text and malformed JSON', async () => {
    expect(() => CharTokenizer.fromText('')).toThrow(/empty text/);
    await expect(loadTokenizer({ kind: 'sentencepiece' })).rejects.toThrow(/unknown tokenizer kind "sentencepiece"/);
    await expect(loadTokenizer({ kind: 'char', chars: ['a', 'a'] })).rejects.toThrow(/twice/);
    await expect(loadTokenizer('char')).rejects.toThrow(/must be a JSON object/);
  });
});

describe('word tokenizer', () => {
  it('keeps the top words, maps the rest to <unk>, and rebuilds spacing', () => {
    const counter = new WordCounter(true);
    counter.add('The cat sat. The cat ran. The dog sat.');
    const tok = WordTokenizer.fromCounts(counter, 3 + 4);
    // the ×3, . ×3, cat ×2, sat ×2: ties go to the smaller string.
    expect(tok.words).toEqual(['<unk>', '.', 'the', 'cat', 'sat']);
    expect(tok.decode(tok.encode('The cat sat.'))).toBe('the cat sat.');
    expect(tok.decode(tok.encode('the dog sat'))).toBe('the <unk> sat');
    expect(() => WordTokenizer.fromCounts(counter, 3)).toThrow(/too small for a word tokenizer/);
  });
});

describe('byte-level BPE (trained)', () => {
  const text = loadBrownText().slice(0, 200_000);
  const counter = new PieceCounter();
  counter.add(text);
  const tok = trainBpe(counter, 512);

  it('learns the requested vocabulary size, deterministically', () => {
    expect(tok.vocabSize).toBe(512);
    expect(trainBpe(counter, 512).merges).toEqual(tok.merges);
    // Frequent English fragments become single tokens.
    expect(tok.encode(' the').length).toBe(1);
  });
  it('compresses its training text and round-trips any UTF-8 text exactly', () => {
    const sample = text.slice(1000, 6000);
    expect(tok.encode(sample).length).toBeLessThan(new TextEncoder().encode(sample).length / 2);
    expect(tok.decode(tok.encode(sample))).toBe(sample);
    expect(tok.decode(tok.encode(SAMPLE))).toBe(SAMPLE); // unseen characters fall back to bytes
  });
  it('survives a JSON round trip', async () => {
    const again = await loadTokenizer(JSON.parse(JSON.stringify(tok.toJSON())));
    expect(Array.from(again.encode(SAMPLE))).toEqual(Array.from(tok.encode(SAMPLE)));
  });
  it('refuses a vocabulary too small and malformed merges', () => {
    expect(() => trainBpe(counter, 257)).toThrow(/--vocab-size 257 is too small for byte-level BPE \(at least 258/);
    expect(() => new BpeTokenizer([[300, 1]])).toThrow(/merge 0 refers to a token not defined before it/);
  });
  it('splits text into pieces that concatenate back to it', () => {
    expect(bpePieces(SAMPLE).join('')).toBe(SAMPLE);
  });
});

describe('GPT-2 BPE (gpt-tokenizer, shipped merges)', () => {
  it('encodes with GPT-2 ids and round-trips', async () => {
    const tok = await Gpt2Tokenizer.load();
    expect(Array.from(tok.encode('Hello world'))).toEqual([15496, 995]);
    expect(tok.decode(tok.encode(SAMPLE))).toBe(SAMPLE);
    expect([tok.vocabSize, tok.eosId, tok.maskId]).toEqual([50258, 50256, 50257]);
    // Special-token text inside a document is ordinary text, never the separator.
    expect(Array.from(tok.encode('<|endoftext|>'))).not.toContain(50256);
  });
});
