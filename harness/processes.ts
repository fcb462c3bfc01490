/** A coordinator and node peers as real processes for end-to-end tests, with status polling and cleanup. */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, testCacheDir } from './cli.ts';

export interface Proc {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}

const live = new Set<ChildProcess>();

export function startProc(args: string[], env: Record<string, string> = {}): Proc {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PEERTRAIN_CACHE: testCacheDir(), ...env } });
  live.add(child);
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => {
    live.delete(child);
    r(code);
  }));
  return { child, output: () => out, exited };
}

export function killAllProcs(): void {
  for (const c of live) c.kill('SIGKILL');
  live.clear();
}

export interface JoinInfo {
  multiaddrs: string[];
  token: string;
  url: string;
}

export async function waitFor<T>(what: string, f: () => T | undefined | Promise<T | undefined>, timeoutMs = 60_000, context?: () => string): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await f();
    if (v !== undefined && v !== false) return v as T;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${context ? `\n${context().slice(-3000)}` : ''}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function waitForJoin(runDir: string, coordinator: Proc): Promise<JoinInfo> {
  const p = join(runDir, 'join.json');
  return waitFor('join.json', () => {
    if (coordinator.child.exitCode !== null) throw new Error(`coordinator exited (${coordinator.child.exitCode}):\n${coordinator.output()}`);
    return existsSync(p) ? (JSON.parse(readFileSync(p, 'utf8')) as JoinInfo) : undefined;
  }, 90_000);
}

export type { StatusReport as Status } from '../run/status-report.ts';
import type { StatusReport as Status } from '../run/status-report.ts';

export async function status(url: string): Promise<Status | undefined> {
  try {
    const r = await fetch(`${url}api/status`, { signal: AbortSignal.timeout(5_000) });
    return r.ok ? ((await r.json()) as Status) : undefined;
  } catch {
    return undefined;
  }
}

export function startNode(info: JoinInfo, extra: string[] = []): Proc {
  return startProc(['node', '--join', info.multiaddrs[0], '--token', info.token, '--workers', '1', ...extra]);
}
