/**
 * The console logger of the long-running commands: a time stamp, an optional tag (a node's short peer id),
 * info unless --quiet, warnings always, debug lines with PEERTRAIN_DEBUG set. Everything goes to stderr, so
 * stdout stays free for --json.
 */
import type { Logger } from '../net/types.ts';

export function consoleLogger(quiet: boolean, tag = ''): Logger {
  const stamp = () => new Date().toISOString().slice(11, 19);
  const prefix = () => (tag ? `${stamp()} ${tag}` : stamp());
  return {
    info: (m) => (quiet ? undefined : console.error(`${prefix()} ${m}`)),
    warn: (m) => console.error(`${prefix()} warning: ${m}`),
    debug: (m) => (process.env.PEERTRAIN_DEBUG ? console.error(`${prefix()} debug: ${m}`) : undefined),
  };
}
