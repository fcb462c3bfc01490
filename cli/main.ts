/**
 * peertrain's command line. Each command returns an exit code; errors with a known `name` print one line
 * naming the problem and exit non-zero, anything else prints its stack (a bug).
 */
import { coordinatorCommand } from './coordinator-command.ts';
import { nodeCommand } from './node-command.ts';
import { demoCommand } from './demo-command.ts';
import { prepareCommand } from './prepare-command.ts';
import { evalCommand, generateCommand } from './eval-command.ts';
import { exportCommand } from './export-command.ts';
import { trainCommand } from './train-command.ts';

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<number>; help: string }> = {
  prepare: { run: prepareCommand, help: 'clean, tokenize and shard text into a verifiable data folder' },
  train: { run: trainCommand, help: 'train a model on this machine (all cores), or fine-tune one (--from)' },
  eval: { run: evalCommand, help: 'score a checkpoint: loss, perplexity, bits/char, BLEU, diversity' },
  generate: { run: generateCommand, help: 'continue a prompt with a checkpoint' },
  coordinator: { run: coordinatorCommand, help: 'start (or restart) a shared run that peers join' },
  node: { run: nodeCommand, help: 'join a shared run and train with it' },
  demo: { run: demoCommand, help: 'a coordinator and two nodes on this machine training together (npm start)' },
  export: { run: exportCommand, help: 'write a checkpoint\'s weights as safetensors' },
};

/** Errors that describe bad input (flags, files, configs), not bugs: one line, exit code 2 for usage, 1 otherwise. */
const EXPECTED = new Set(['UsageError', 'ConfigError', 'CheckpointError', 'ArchitectureMismatchError', 'DataError', 'ManifestError', 'BackendUnavailableError', 'JoinRefusedError', 'StateSyncError', 'DataSyncError']);

function usage(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.help}`);
  return `peertrain — train a transformer language model together\n\nusage: peertrain <command> [flags]   (peertrain <command> --help)\n\n${lines.join('\n')}`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === 'help') {
    console.log(usage());
    return name ? 0 : 2;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    console.error(`peertrain: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  try {
    return await cmd.run(rest);
  } catch (err) {
    const e = err as Error;
    if (EXPECTED.has(e.name)) {
      console.error(`peertrain ${name}: ${e.message}`);
      return e.name === 'UsageError' ? 2 : 1;
    }
    throw err;
  }
}

// Exit explicitly: a WebGPU (Dawn) instance keeps the event loop alive after the work is done.
// stdout and stderr are synchronous for files and pipes on Linux, so nothing printed is lost.
process.exit(await main(process.argv.slice(2)));
