/**
 * `peertrain demo` (what `npm start` runs): a coordinator and N node peers as separate processes on this
 * machine, training the built-in corpus together for a few minutes over real libp2p connections; it ends
 * with the validation loss and a generated sample. Every process is stopped on exit or Ctrl-C.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { helpText, parseArgs, type FlagSpec } from './args.ts';
import { UsageError } from '../node/errors.ts';

const FLAGS: Record<string, FlagSpec> = {
  peers: { type: 'int', help: 'node peers to start', min: 1, default: 2 },
  rounds: { type: 'int', help: 'rounds to train', min: 1, default: 200 },
  mode: { type: 'string', help: 'averaging mode', choices: ['sync', 'diloco'], default: 'sync' },
  'run-dir': { type: 'string', help: 'coordinator run directory (default: a new runs/demo-<time>)' },
  json: { type: 'boolean', help: 'print the coordinator\'s JSON summary line on stdout' },
  help: { type: 'boolean', help: 'show this help' },
};

const BIN = fileURLToPath(new URL('../bin/peertrain.js', import.meta.url));

function prefixed(child: ChildProcess, tag: string, withStdout = true): void {
  for (const stream of withStdout ? [child.stdout, child.stderr] : [child.stderr]) {
    let rest = '';
    stream?.on('data', (d: Buffer) => {
      const lines = (rest + d.toString()).split('\n');
      rest = lines.pop() ?? '';
      for (const l of lines) if (l.trim()) process.stderr.write(`${tag} ${l}\n`);
    });
  }
}

export async function demoCommand(argv: string[]): Promise<number> {
  const { flags } = parseArgs(argv, FLAGS);
  if (flags.help) {
    console.log(helpText('usage: peertrain demo [--peers 2] [--rounds 200] [--mode sync|diloco]', FLAGS));
    return 0;
  }
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  const runDir = resolve(String(flags['run-dir'] ?? join('runs', `demo-${stamp}`)));
  if (existsSync(join(runDir, 'run.json'))) throw new UsageError(`${runDir} already holds a run: choose another --run-dir`);
  const children: ChildProcess[] = [];
  const killAll = () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  };
  process.on('exit', killAll);
  process.on('SIGINT', () => {
    killAll();
    process.exit(130);
  });
  const coordinatorArgs = ['coordinator', '--run-dir', runDir, '--http-port', '0', '--rounds', String(flags.rounds), '--mode', String(flags.mode), ...(flags.json ? ['--json'] : [])];
  const coordinator = spawn(process.execPath, [BIN, ...coordinatorArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(coordinator);
  if (flags.json) coordinator.stdout?.on('data', (d: Buffer) => process.stdout.write(d));
  prefixed(coordinator, '[coordinator]', !flags.json);
  const joinFile = join(runDir, 'join.json');
  for (let waited = 0; !existsSync(joinFile); waited += 200) {
    if (coordinator.exitCode !== null) throw new UsageError(`the coordinator exited with code ${coordinator.exitCode} before it was ready`);
    if (waited > 120_000) throw new UsageError('the coordinator did not become ready within 2 minutes');
    await new Promise((r) => setTimeout(r, 200));
  }
  const { multiaddrs, token } = JSON.parse(readFileSync(joinFile, 'utf8')) as { multiaddrs: string[]; token: string };
  const peers = Number(flags.peers);
  // The cores are shared by all peers on this machine: one replica worker each.
  for (let i = 0; i < peers; i++) {
    const node = spawn(process.execPath, [BIN, 'node', '--join', multiaddrs[0], '--token', token, '--workers', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(node);
    prefixed(node, `[node ${i + 1}]`);
  }
  const code = await new Promise<number>((r) => coordinator.on('exit', (c) => r(c ?? 1)));
  killAll();
  process.stderr.write(`run directory: ${runDir} (checkpoint.ptck, run.db)\n`);
  return code;
}
