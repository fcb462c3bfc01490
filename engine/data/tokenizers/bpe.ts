/**
 * Byte-level BPE with a vocabulary trained on the corpus. Ids 0–255 are bytes; id 256 + r is the r-th merge;
 * then the two specials. Text is first split into pieces (words with their leading space, numbers, punctuation
 * runs, whitespace) so merges never cross a word boundary; every piece is encoded independently, so the result
 * is exactly reversible for any UTF-8 text.
 */
import { DataError } from '../../errors.ts';
import { checkIds, decodeRuns, type Tokenizer, type TokenizerJSON } from './tokenizer.ts';

const PIECES = /'(?:s|t|re|ve|m|ll|d)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
const encoder = new TextEncoder();

/** The pre-tokenization pieces of a text (their concatenation is the text). */
export function bpePieces(text: string): string[] {
  return text.match(PIECES) ?? [];
}

/** Pair key: two ids below 2^24 packed in one exact float. */
export function pairKey(a: number, b: number): number {
  return a * 16777216 + b;
}

export class BpeTokenizer implements Tokenizer {
  readonly kind = 'bpe' as const;
  /** Merge rank by pair key: lower ranks merge first. */
  private readonly ranks = new Map<number, number>();
  /** Bytes of every base token. */
  private readonly bytes: Uint8Array[] = [];
  private readonly cache = new Map<string, number[]>();

  constructor(readonly merges: Array<[number, number]>) {
    for (let b = 0; b < 256; b++) this.bytes.push(Uint8Array.of(b));
    merges.forEach(([a, b], r) => {
      const id = 256 + r;
      if (!Number.isInteger(a) || !Number.isInteger(b) || a < 0 || b < 0 || a >= id || b >= id) {
        throw new DataError(`bpe merge ${r} refers to a token not defined before it: [${a}, ${b}]`);
      }
      if (this.ranks.has(pairKey(a, b))) throw new DataError(`bpe merge ${r} repeats [${a}, ${b}]`);
      this.ranks.set(pairKey(a, b), r);
      const joined = new Uint8Array(this.bytes[a].length + this.bytes[b].length);
      joined.set(this.bytes[a]);
      joined.set(this.bytes[b], this.bytes[a].length);
      this.bytes.push(joined);
    });
  }

  static fromJSON(o: { merges?: unknown }): BpeTokenizer {
    if (!Array.isArray(o.merges) || !o.merges.every((m) => Array.isArray(m) && m.length === 2)) throw new DataError('bpe tokenizer JSON needs merges: [number, number][]');
    return new BpeTokenizer(o.merges as Array<[number, number]>);
  }

  get vocabSize(): number {
    return 256 + this.merges.length + 2;
  }
  get eosId(): number {
    return 256 + this.merges.length;
  }
  get maskId(): number {
    return 257 + this.merges.length;
  }

  /** Applies merges to one piece's bytes, lowest rank first. */
  private encodePiece(piece: string): number[] {
    const hit = this.cache.get(piece);
    if (hit) return hit;
    let ids = Array.from(encoder.encode(piece));
    while (ids.length > 1) {
      let bestRank = Infinity;
      let at = -1;
      for (let i = 0; i + 1 < ids.length; i++) {
        const r = this.ranks.get(pairKey(ids[i], ids[i + 1]));
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          at = i;
        }
      }
      if (at < 0) break;
      const merged = 256 + bestRank;
      const a = ids[at];
      const b = ids[at + 1];
      const next: number[] = [];
      for (let i = 0; i < ids.length; i++) {
        if (i + 1 < ids.length && ids[i] === a && ids[i + 1] === b) {
          next.push(merged);
          i++;
        } else next.push(ids[i]);
      }
      ids = next;
    }
    // A bounded cache: corpora repeat their common words endlessly.
    if (this.cache.size > 100_000) this.cache.clear();
    this.cache.set(piece, ids);
    return ids;
  }

  encode(text: string): Int32Array {
    const out: number[] = [];
    for (const p of bpePieces(text)) for (const id of this.encodePiece(p)) out.push(id);
    return Int32Array.from(out);
  }

  encodeLenient(text: string): Int32Array {
    return this.encode(text);
  }

  decode(ids: ArrayLike<number>): string {
    checkIds(ids, this.vocabSize);
    return decodeRuns(ids, this.eosId, this.maskId, (run) => {
      const bytes: number[] = [];
      for (const id of run) for (const b of this.bytes[id]) bytes.push(b);
      return new TextDecoder().decode(Uint8Array.from(bytes));
    });
  }

  toJSON(): TokenizerJSON {
    return { kind: 'bpe', merges: this.merges };
  }
}
