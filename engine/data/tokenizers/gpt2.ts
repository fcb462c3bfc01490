/**
 * GPT-2's byte-level BPE (50,257 tokens, the `r50k_base` merges shipped inside the npm package gpt-tokenizer:
 * nothing is downloaded). `<|endoftext|>` is GPT-2's own id 50256; [MASK] is appended as 50257.
 * Loaded lazily: the merge table is large, and only runs that ask for it pay for it.
 */
import { checkIds, decodeRuns, type Tokenizer, type TokenizerJSON } from './tokenizer.ts';

interface Gpt2Module {
  encode(text: string, options?: { disallowedSpecial?: Set<string> }): number[];
  decode(ids: number[]): string;
}

const GPT2_EOS = 50256;
const NO_SPECIALS = new Set<string>();

export class Gpt2Tokenizer implements Tokenizer {
  readonly kind = 'bpe-gpt2' as const;
  readonly vocabSize = 50258;
  readonly eosId = GPT2_EOS;
  readonly maskId = 50257;

  private constructor(private readonly m: Gpt2Module) {}

  static async load(): Promise<Gpt2Tokenizer> {
    const m = (await import('gpt-tokenizer/encoding/gpt2')) as unknown as Gpt2Module;
    return new Gpt2Tokenizer(m);
  }

  encode(text: string): Int32Array {
    // Special-token text in a document is ordinary text (the library would throw on it by default): a document
    // can neither crash preparation nor inject a separator.
    return Int32Array.from(this.m.encode(text, { disallowedSpecial: NO_SPECIALS }));
  }

  encodeLenient(text: string): Int32Array {
    return this.encode(text);
  }

  decode(ids: ArrayLike<number>): string {
    checkIds(ids, this.vocabSize);
    return decodeRuns(ids, this.eosId, this.maskId, (run) => this.m.decode(run));
  }

  toJSON(): TokenizerJSON {
    return { kind: 'bpe-gpt2' };
  }
}
