/** Runs the real `peertrain` CLI as a child process, bounded in time, and collects its output. */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const BIN = fileURLToPath(new URL('../bin/peertrain.js', import.meta.url));

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const children = new Set<ChildProcess>();

/** Kills every child still running (call from afterAll/afterEach). */
export function killAll(): void {
  for (const c of children) c.kill('SIGKILL');
  children.clear();
}

export interface RunOptions {
  timeoutMs?: number;
  /** Called with each stderr chunk; return true to send SIGINT (a Ctrl-C) to the process. */
  interruptWhen?: (stderrSoFar: string) => boolean;
  env?: Record<string, string>;
}

export function runCli(args: string[], o: RunOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, PEERTRAIN_CACHE: testCacheDir(), ...o.env },
    });
    children.add(child);
    let stdout = '';
    let stderr = '';
    let interrupted = false;
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => {
      stderr += d;
      if (!interrupted && o.interruptWhen?.(stderr)) {
        interrupted = true;
        child.kill('SIGINT');
      }
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`peertrain ${args.join(' ')} timed out after ${o.timeoutMs ?? 120_000} ms\n${stderr}`));
    }, o.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

let cache: string | undefined;
/** One cache dir per test process, so the built-in corpus is prepared at most once per file. */
export function testCacheDir(): string {
  cache ??= mkdtempSync(join(tmpdir(), 'peertrain-cache-'));
  return cache;
}

export function tempDir(prefix = 'peertrain-e2e-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Writes a data file for a test. */
export function writeText(dir: string, name: string, content: string | Uint8Array): string {
  const p = join(dir, name);
  writeFileSync(p, content);
  return p;
}
