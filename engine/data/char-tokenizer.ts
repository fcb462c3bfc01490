/**
 * Character tokenizer: one id per Unicode code point seen in the training text, in sorted order.
 * Exactly reversible on text drawn from its alphabet. With `mask`, the last id is the [MASK] token (masked-LM).
 */
import { DataError } from '../errors.ts';

export interface TokenizerJSON {
  kind: 'char';
  chars: string[];
  mask: boolean;
}

export class CharTokenizer {
  readonly kind = 'char' as const;
  private readonly index = new Map<string, number>();

  constructor(
    readonly chars: string[],
    readonly mask = false,
  ) {
    if (chars.length === 0) throw new DataError('char tokenizer needs at least one character');
    chars.forEach((ch, i) => {
      if ([...ch].length !== 1) throw new DataError(`char tokenizer entry ${i} is not one character: ${JSON.stringify(ch)}`);
      if (this.index.has(ch)) throw new DataError(`char tokenizer has ${JSON.stringify(ch)} twice`);
      this.index.set(ch, i);
    });
  }

  /** Builds the alphabet of a text. */
  static fromText(text: string, mask = false): CharTokenizer {
    const set = new Set<string>();
    for (const ch of text) set.add(ch);
    if (set.size === 0) throw new DataError('cannot build a vocabulary from empty text');
    return new CharTokenizer([...set].sort(), mask);
  }

  static fromJSON(j: unknown): CharTokenizer {
    const o = j as TokenizerJSON;
    if (typeof o !== 'object' || o === null || o.kind !== 'char' || !Array.isArray(o.chars) || !o.chars.every((c) => typeof c === 'string')) {
      throw new DataError('tokenizer JSON is not a char tokenizer ({ kind: "char", chars: string[] })');
    }
    return new CharTokenizer(o.chars, Boolean(o.mask));
  }

  get vocabSize(): number {
    return this.chars.length + (this.mask ? 1 : 0);
  }

  /** Id of [MASK], or -1 without one. */
  get maskId(): number {
    return this.mask ? this.chars.length : -1;
  }

  /** Ids of the text; characters outside the alphabet are an error naming the first such character. */
  encode(text: string): Int32Array {
    const out: number[] = [];
    for (const ch of text) {
      const id = this.index.get(ch);
      if (id === undefined) throw new DataError(`character ${JSON.stringify(ch)} (U+${ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}) is not in the vocabulary`);
      out.push(id);
    }
    return Int32Array.from(out);
  }

  /** Ids for the text, skipping characters outside the alphabet (for prompts typed by a person). */
  encodeLenient(text: string): Int32Array {
    const out: number[] = [];
    for (const ch of text) {
      const id = this.index.get(ch);
      if (id !== undefined) out.push(id);
    }
    return Int32Array.from(out);
  }

  decode(ids: ArrayLike<number>): string {
    let s = '';
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      s += id === this.maskId ? '[MASK]' : (this.chars[id] ?? '\uFFFD');
    }
    return s;
  }

  toJSON(): TokenizerJSON {
    return { kind: 'char', chars: this.chars, mask: this.mask };
  }
}
