/** Tokenizers: char, word, trained byte-level BPE, GPT-2 BPE. `loadTokenizer` rebuilds one from its JSON. */
import { DataError } from '../../errors.ts';
import { BpeTokenizer } from './bpe.ts';
import { CharTokenizer } from './char.ts';
import { Gpt2Tokenizer } from './gpt2.ts';
import { TOKENIZER_KINDS, type Tokenizer } from './tokenizer.ts';
import { WordTokenizer } from './word.ts';

export * from './tokenizer.ts';
export { CharTokenizer, alphabetOf } from './char.ts';
export { WordTokenizer, WordCounter, splitWords, UNK_TEXT } from './word.ts';
export { BpeTokenizer, bpePieces } from './bpe.ts';
export { PieceCounter, trainBpe, MIN_BPE_VOCAB } from './bpe-train.ts';
export { Gpt2Tokenizer } from './gpt2.ts';

/** Rebuilds a tokenizer from its JSON (a manifest's or a checkpoint's); malformed JSON is a DataError. */
export async function loadTokenizer(json: unknown): Promise<Tokenizer> {
  const o = json as { kind?: unknown };
  if (typeof o !== 'object' || o === null) throw new DataError('tokenizer must be a JSON object');
  switch (o.kind) {
    case 'char':
      return CharTokenizer.fromJSON(o as { chars?: unknown });
    case 'word':
      return WordTokenizer.fromJSON(o as { words?: unknown });
    case 'bpe':
      return BpeTokenizer.fromJSON(o as { merges?: unknown });
    case 'bpe-gpt2':
      return Gpt2Tokenizer.load();
    default:
      throw new DataError(`unknown tokenizer kind ${JSON.stringify(o.kind)} (known: ${TOKENIZER_KINDS.join(', ')})`);
  }
}
