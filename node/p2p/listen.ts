/** Parses a comma-separated --listen flag into multiaddr strings, or says which one is not a multiaddr. */
import { multiaddr } from '@multiformats/multiaddr';
import { UsageError } from '../errors.ts';

export function parseListen(flag: string): string[] {
  const addrs = flag
    .split(',')
    .map((a) => a.trim())
    .filter(Boolean);
  if (addrs.length === 0) throw new UsageError('--listen needs at least one multiaddr');
  for (const a of addrs) {
    try {
      multiaddr(a);
    } catch (err) {
      throw new UsageError(`--listen: "${a}" is not a multiaddr (${(err as Error).message})`);
    }
  }
  return addrs;
}
