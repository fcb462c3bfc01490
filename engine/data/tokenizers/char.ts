/** Character tokenizer: one id per Unicode code point of the training text, sorted. Exactly reversible. */
import { DataError } from '../../errors.ts';
import { checkIds, specialText, type Tokenizer, type TokenizerJSON } from './tokenizer.ts';

export class CharTokenizer implements Tokenizer {
  readonly kind = 'char' as const;
  private readonly index = new Map<string, number>();

  constructor(readonly chars: string[]) {
    if (chars.length === 0) throw new DataError('char tokenizer needs at least one character');
    chars.forEach((ch, i) => {
      if ([...ch].length !== 1) throw new DataError(`char tokenizer entry ${i} is not one character: ${JSON.stringify(ch)}`);
      if (this.index.has(ch)) throw new DataError(`char tokenizer has ${JSON.stringify(ch)} twice`);
      this.index.set(ch, i);
    });
  }

  /** The alphabet of some text (or of several texts, passed one by one to an accumulating set). */
  static fromText(text: string): CharTokenizer {
    return CharTokenizer.fromAlphabet(alphabetOf(text));
  }

  static fromAlphabet(set: Set<string>): CharTokenizer {
    if (set.size === 0) throw new DataError('cannot build a vocabulary from empty text');
    return new CharTokenizer([...set].sort());
  }

  static fromJSON(o: { chars?: unknown }): CharTokenizer {
    if (!Array.isArray(o.chars) || !o.chars.every((c) => typeof c === 'string')) throw new DataError('char tokenizer JSON needs chars: string[]');
    return new CharTokenizer(o.chars as string[]);
  }

  get vocabSize(): number {
    return this.chars.length + 2;
  }
  get eosId(): number {
    return this.chars.length;
  }
  get maskId(): number {
    return this.chars.length + 1;
  }

  encode(text: string): Int32Array {
    const out = new Int32Array(text.length);
    let n = 0;
    for (const ch of text) {
      const id = this.index.get(ch);
      if (id === undefined) {
        const cp = ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0');
        throw new DataError(`character ${JSON.stringify(ch)} (U+${cp}) is not in the vocabulary`);
      }
      out[n++] = id;
    }
    return out.slice(0, n);
  }

  encodeLenient(text: string): Int32Array {
    const out: number[] = [];
    for (const ch of text) {
      const id = this.index.get(ch);
      if (id !== undefined) out.push(id);
    }
    return Int32Array.from(out);
  }

  decode(ids: ArrayLike<number>): string {
    checkIds(ids, this.vocabSize);
    let s = '';
    for (let i = 0; i < ids.length; i++) s += specialText(ids[i], this.eosId, this.maskId) ?? this.chars[ids[i]];
    return s;
  }

  toJSON(): TokenizerJSON {
    return { kind: 'char', chars: this.chars };
  }
}

/** Adds the characters of text to set (streaming alphabet collection). */
export function alphabetOf(text: string, set = new Set<string>()): Set<string> {
  for (const ch of text) set.add(ch);
  return set;
}
