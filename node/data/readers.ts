/**
 * Documents from input paths, streamed: .txt and .md files (one document per file, or per paragraph), and
 * .jsonl files (one {"text": ...} object per line, read line by line so a file larger than memory works).
 * Directories are walked in sorted order. Bad input is a DataError naming the file, and the line for JSONL.
 */
import { createReadStream, readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { DataError } from '../../engine/errors.ts';

export const TEXT_EXTENSIONS = ['.txt', '.md', '.jsonl'];
/** A .txt/.md file is read whole; bigger ones belong in JSONL. */
const MAX_TEXT_FILE_BYTES = 512 * 2 ** 20;

export interface Document {
  text: string;
  source: string;
}

export type DocSplit = 'file' | 'paragraph';

/** Every input file under the paths, sorted, with its size; unknown extensions in directories are skipped. */
export function listInputFiles(paths: string[]): Array<{ path: string; bytes: number }> {
  const out: Array<{ path: string; bytes: number }> = [];
  const visit = (p: string, explicit: boolean) => {
    let st;
    try {
      st = statSync(p);
    } catch {
      throw new DataError(`cannot read ${p}: no such file or directory`);
    }
    if (st.isDirectory()) {
      for (const name of readdirSync(p).sort()) if (!name.startsWith('.')) visit(join(p, name), false);
    } else if (TEXT_EXTENSIONS.includes(extname(p).toLowerCase())) out.push({ path: p, bytes: st.size });
    else if (explicit) throw new DataError(`${p}: unsupported file type (expected ${TEXT_EXTENSIONS.join(', ')})`);
  };
  for (const p of paths) visit(p, true);
  return out;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function decodeText(bytes: Uint8Array, where: string): string {
  if (bytes.includes(0)) throw new DataError(`${where} looks binary (it contains NUL bytes)`);
  try {
    return utf8.decode(bytes);
  } catch {
    throw new DataError(`${where} is not valid UTF-8 text`);
  }
}

/** A whole text file as UTF-8 (empty, binary and non-UTF-8 files are errors naming the file). */
export function readTextFile(path: string): string {
  let st;
  try {
    st = statSync(path);
  } catch (err) {
    throw new DataError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
  if (st.isDirectory()) throw new DataError(`${path} is a directory`);
  if (st.size > MAX_TEXT_FILE_BYTES) throw new DataError(`${path} is over ${MAX_TEXT_FILE_BYTES / 2 ** 20} MiB: split it, or convert it to JSONL (one document per line)`);
  const bytes = readFileSync(path);
  if (bytes.length === 0) throw new DataError(`${path} is empty`);
  return decodeText(bytes, path);
}

/** A JSONL line longer than this is refused (one document this large is a mistake, not a corpus). */
const MAX_LINE_BYTES = 256 * 2 ** 20;

/**
 * Lines of a file as buffers, streamed (a corpus file larger than memory is fine). The pieces of a line that
 * spans chunks are kept in a list and joined once, when its newline arrives.
 */
async function* lines(path: string): AsyncGenerator<Uint8Array> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let n = 0;
  for await (const chunk of createReadStream(path)) {
    let buf = chunk as Buffer;
    let nl: number;
    while ((nl = buf.indexOf(0x0a)) >= 0) {
      n++;
      yield pending.length ? Buffer.concat([...pending, buf.subarray(0, nl)]) : buf.subarray(0, nl);
      pending = [];
      pendingBytes = 0;
      buf = buf.subarray(nl + 1);
    }
    if (buf.length) {
      pending.push(buf);
      pendingBytes += buf.length;
      if (pendingBytes > MAX_LINE_BYTES) throw new DataError(`${path}:${n + 1}: line longer than ${MAX_LINE_BYTES / 2 ** 20} MiB`);
    }
  }
  if (pending.length) yield Buffer.concat(pending);
}

async function* jsonlDocuments(path: string): AsyncGenerator<Document> {
  let n = 0;
  for await (const raw of lines(path)) {
    n++;
    const where = `${path}:${n}`;
    const line = decodeText(raw, where).trim();
    if (line === '') continue;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch {
      throw new DataError(`${where}: not valid JSON`);
    }
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj) || typeof (obj as { text?: unknown }).text !== 'string') {
      throw new DataError(`${where}: expected an object with a "text" string`);
    }
    yield { text: (obj as { text: string }).text, source: where };
  }
}

/** Every document of the inputs, in a fixed order. */
export async function* readDocuments(files: Array<{ path: string }>, split: DocSplit, onFileDone?: (path: string) => void): AsyncGenerator<Document> {
  for (const { path } of files) {
    if (extname(path).toLowerCase() === '.jsonl') yield* jsonlDocuments(path);
    else {
      const text = readTextFile(path);
      if (split === 'file') yield { text, source: path };
      else for (const para of text.split(/\n[ \t]*\n/)) yield { text: para, source: path };
    }
    onFileDone?.(path);
  }
}
