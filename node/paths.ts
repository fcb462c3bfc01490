/** Where peertrain keeps derived files (the prepared built-in corpus): $PEERTRAIN_CACHE, else the XDG cache. */
import { homedir } from 'node:os';
import { join } from 'node:path';

export function cacheDir(): string {
  return process.env.PEERTRAIN_CACHE || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'peertrain');
}
