/**
 * Word tokenizer: the K most frequent words and punctuation marks, plus <unk> (id 0) for the rest. Not
 * reversible (spacing is rebuilt by rule, rare words become <unk>): a baseline and a teaching tool.
 */
import { DataError } from '../../errors.ts';
import { checkIds, specialText, type Tokenizer, type TokenizerJSON } from './tokenizer.ts';

export const UNK_TEXT = '<unk>';
const WORD = /\p{L}+(?:['’]\p{L}+)*|\p{N}+|\n|[^\s\p{L}\p{N}]/gu;
const NO_SPACE_BEFORE = /^[.,;:!?%)\]}’'"]$/;
const NO_SPACE_AFTER = /^[(\[{$“"]$/;

/** Words, numbers, newlines and single punctuation marks of a text. */
export function splitWords(text: string, lowercase: boolean): string[] {
  return (lowercase ? text.toLowerCase() : text).match(WORD) ?? [];
}

/** Streaming word counts for building a vocabulary. */
export class WordCounter {
  readonly counts = new Map<string, number>();
  constructor(readonly lowercase: boolean) {}
  add(text: string): void {
    for (const w of splitWords(text, this.lowercase)) this.counts.set(w, (this.counts.get(w) ?? 0) + 1);
  }
}

export class WordTokenizer implements Tokenizer {
  readonly kind = 'word' as const;
  private readonly index = new Map<string, number>();

  /** words[0] must be <unk>. */
  constructor(
    readonly words: string[],
    readonly lowercase: boolean,
  ) {
    if (words[0] !== UNK_TEXT) throw new DataError('word tokenizer: the first word must be <unk>');
    words.forEach((w, i) => {
      if (this.index.has(w)) throw new DataError(`word tokenizer has ${JSON.stringify(w)} twice`);
      this.index.set(w, i);
    });
  }

  /** Top (vocabSize - 3) words by count (ties by first appearance order of the sorted key, for determinism). */
  static fromCounts(counter: WordCounter, vocabSize: number): WordTokenizer {
    if (!Number.isInteger(vocabSize) || vocabSize < 4) throw new DataError(`--vocab-size ${vocabSize} is too small for a word tokenizer (at least 4: <unk>, one word, and the two specials)`);
    const ranked = [...counter.counts.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
    if (ranked.length === 0) throw new DataError('cannot build a word vocabulary from empty text');
    return new WordTokenizer([UNK_TEXT, ...ranked.slice(0, vocabSize - 3).map(([w]) => w)], counter.lowercase);
  }

  static fromJSON(o: { words?: unknown; lowercase?: unknown }): WordTokenizer {
    if (!Array.isArray(o.words) || !o.words.every((w) => typeof w === 'string')) throw new DataError('word tokenizer JSON needs words: string[]');
    return new WordTokenizer(o.words as string[], Boolean(o.lowercase));
  }

  get vocabSize(): number {
    return this.words.length + 2;
  }
  get eosId(): number {
    return this.words.length;
  }
  get maskId(): number {
    return this.words.length + 1;
  }

  encode(text: string): Int32Array {
    return Int32Array.from(splitWords(text, this.lowercase), (w) => this.index.get(w) ?? 0);
  }

  encodeLenient(text: string): Int32Array {
    return this.encode(text);
  }

  decode(ids: ArrayLike<number>): string {
    checkIds(ids, this.vocabSize);
    let out = '';
    let prev = '\n';
    for (let i = 0; i < ids.length; i++) {
      const w = specialText(ids[i], this.eosId, this.maskId) ?? this.words[ids[i]];
      const glue = prev.endsWith('\n') || w.startsWith('\n') || NO_SPACE_BEFORE.test(w) || NO_SPACE_AFTER.test(prev);
      out += (glue ? '' : ' ') + w;
      prev = w;
    }
    return out;
  }

  toJSON(): TokenizerJSON {
    return { kind: 'word', words: this.words, lowercase: this.lowercase };
  }
}
