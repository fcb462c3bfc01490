/**
 * The tokenizer interface every data path uses. Each tokenizer has a base vocabulary of its own and two special
 * tokens appended after it: the document separator `<|endoftext|>` (eosId) and `[MASK]` (maskId, used by the
 * masked-LM objective). `encode` never emits specials; `decode` renders them by name (EOS as a blank line).
 */
import { DataError } from '../../errors.ts';

export type TokenizerKind = 'char' | 'word' | 'bpe' | 'bpe-gpt2';
export const TOKENIZER_KINDS: readonly TokenizerKind[] = ['char', 'word', 'bpe', 'bpe-gpt2'];

export const EOS_TEXT = '<|endoftext|>';
export const MASK_TEXT = '[MASK]';

export interface Tokenizer {
  readonly kind: TokenizerKind;
  /** Base vocabulary plus the two specials. */
  readonly vocabSize: number;
  readonly eosId: number;
  readonly maskId: number;
  /** Ids of the text; throws a DataError naming what cannot be encoded (char: an unseen character). */
  encode(text: string): Int32Array;
  /** Like encode, but skips what cannot be encoded (for prompts typed by a person). */
  encodeLenient(text: string): Int32Array;
  decode(ids: ArrayLike<number>): string;
  toJSON(): TokenizerJSON;
}

export type TokenizerJSON =
  | { kind: 'char'; chars: string[] }
  | { kind: 'word'; words: string[]; lowercase: boolean }
  | { kind: 'bpe'; merges: Array<[number, number]> }
  | { kind: 'bpe-gpt2' };

/** Appends the specials' names to a decoded piece: helper for decode implementations. */
export function specialText(id: number, eosId: number, maskId: number): string | undefined {
  if (id === eosId) return '\n\n';
  if (id === maskId) return MASK_TEXT;
  return undefined;
}

/**
 * Decodes ids whose ordinary tokens decode in runs (byte-level BPEs: a character may span several tokens):
 * each run between specials goes to `decodeRun`, specials become their text.
 */
export function decodeRuns(ids: ArrayLike<number>, eosId: number, maskId: number, decodeRun: (run: number[]) => string): string {
  let out = '';
  let run: number[] = [];
  for (let i = 0; i < ids.length; i++) {
    const special = specialText(ids[i], eosId, maskId);
    if (special === undefined) {
      run.push(ids[i]);
      continue;
    }
    if (run.length) out += decodeRun(run);
    run = [];
    out += special;
  }
  return run.length ? out + decodeRun(run) : out;
}

export function checkIds(ids: ArrayLike<number>, vocabSize: number): void {
  for (let i = 0; i < ids.length; i++) {
    if (!Number.isInteger(ids[i]) || ids[i] < 0 || ids[i] >= vocabSize) throw new DataError(`token id ${ids[i]} at position ${i} is outside the vocabulary [0, ${vocabSize})`);
  }
}

/** Two tokenizers are the same when their JSON is. */
export function sameTokenizer(a: TokenizerJSON, b: TokenizerJSON): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** A short human description: "char (87 tokens)". */
export function describeTokenizer(t: Tokenizer): string {
  return `${t.kind} (${t.vocabSize} tokens)`;
}
