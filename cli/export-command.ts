/** `peertrain export CKPT --format safetensors [--out FILE]`: weights in a format other tools read. */
import { encodeSafetensors } from '../engine/export/safetensors.ts';
import { helpText, parseArgs, type FlagSpec } from './args.ts';
import { loadCheckpoint, writeFileAtomic } from '../node/checkpoint-io.ts';
import { UsageError } from '../node/errors.ts';

const FLAGS: Record<string, FlagSpec> = {
  format: { type: 'string', help: 'output format', choices: ['safetensors'], default: 'safetensors' },
  out: { type: 'string', help: 'output file (default: the checkpoint path with .safetensors)' },
  help: { type: 'boolean', help: 'show this help' },
};
const USAGE = 'usage: peertrain export CKPT --format safetensors [--out FILE]';

export async function exportCommand(argv: string[]): Promise<number> {
  const { flags, positionals } = parseArgs(argv, FLAGS);
  if (flags.help) {
    console.log(helpText(USAGE, FLAGS));
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`export needs exactly one checkpoint path\n${USAGE}`);
  const ckptPath = positionals[0];
  const ckpt = loadCheckpoint(ckptPath);
  const out = String(flags.out ?? ckptPath.replace(/(\.ptck)?$/, '.safetensors'));
  const bytes = encodeSafetensors(ckpt.params, ckpt.manifest, ckpt.model, { step: String(ckpt.step), tokenizer: JSON.stringify(ckpt.tokenizer) });
  writeFileAtomic(out, bytes);
  console.log(`wrote ${out} (${ckpt.manifest.entries.length} tensors, ${(bytes.length / 1e6).toFixed(1)} MB, step ${ckpt.step})`);
  return 0;
}
