/**
 * A coordinator's run directory: everything needed to restart the run where it stopped.
 *   run.json        run id, join token, the run config, the addresses it listens on
 *   peer.key        the coordinator's libp2p identity (peers reconnect to the same peer id)
 *   run.db          SQLite run state (peers, contributions, history, rejections)
 *   checkpoint.ptck the global model, written atomically every N rounds
 *   join.json       { multiaddrs, token, url } for scripts, readable by its owner only
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { ConfigError } from '../engine/errors.ts';
import { writeFileAtomic } from '../node/checkpoint-io.ts';
import { validateRunConfig, type RunConfig } from '../run/config.ts';

export interface RunInfo {
  runId: string;
  token: string;
  config: RunConfig;
  /** The prepared data folder the run trains on (served to peers). */
  dataDir: string;
  /** Listen addresses actually bound on first start (reused on restart so peers find us again). */
  listen: string[];
  httpPort: number;
  createdAt: string;
}

export const paths = (dir: string) => ({
  run: join(dir, 'run.json'),
  key: join(dir, 'peer.key'),
  db: join(dir, 'run.db'),
  checkpoint: join(dir, 'checkpoint.ptck'),
  join: join(dir, 'join.json'),
});

export function readRunInfo(dir: string): RunInfo | undefined {
  const p = paths(dir).run;
  if (!existsSync(p)) return undefined;
  let raw: RunInfo;
  try {
    raw = JSON.parse(readFileSync(p, 'utf8')) as RunInfo;
  } catch (err) {
    throw new ConfigError(`${p} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof raw.runId !== 'string' || typeof raw.token !== 'string' || !Array.isArray(raw.listen) || typeof raw.dataDir !== 'string') {
    throw new ConfigError(`${p} is missing runId, token, dataDir or listen`);
  }
  return { ...raw, config: validateRunConfig(raw.config) };
}

export function writeRunInfo(dir: string, info: RunInfo): void {
  writeFileAtomic(paths(dir).run, `${JSON.stringify(info, null, 1)}\n`, 0o600);
}

export function newRunId(): string {
  return randomBytes(8).toString('hex');
}

export function newToken(): string {
  return randomBytes(24).toString('base64url');
}

/** The coordinator's identity: created once, then reused so its peer id (and so its multiaddrs) survive restarts. */
export async function loadOrCreateKey(dir: string): Promise<PrivateKey> {
  const p = paths(dir).key;
  if (existsSync(p)) return privateKeyFromProtobuf(readFileSync(p));
  const key = await generateKeyPair('Ed25519');
  writeFileAtomic(p, privateKeyToProtobuf(key), 0o600);
  return key;
}

export function writeJoinFile(dir: string, multiaddrs: string[], token: string, url: string): void {
  const p = paths(dir).join;
  writeFileAtomic(p, `${JSON.stringify({ multiaddrs, token, url }, null, 1)}\n`, 0o600);
  chmodSync(p, 0o600);
}

export function ensureDir(dir: string): void {
  mkdirSync(dir, { recursive: true });
}
