/**
 * A small, strict command-line parser: every flag is declared with its type; unknown flags, missing values and
 * malformed numbers are UsageErrors that name the flag.
 */
import { UsageError } from '../node/errors.ts';

export type FlagType = 'string' | 'int' | 'number' | 'boolean';

export interface FlagSpec {
  type: FlagType;
  /** One line for --help. */
  help: string;
  default?: string | number | boolean;
  /** Allowed values for string flags. */
  choices?: readonly string[];
  /** Inclusive lower bound for numbers. */
  min?: number;
}

export type Flags = Record<string, string | number | boolean | undefined>;

export interface Parsed {
  flags: Flags;
  positionals: string[];
}

function convert(name: string, spec: FlagSpec, raw: string): string | number {
  if (spec.type === 'string') {
    if (spec.choices && !spec.choices.includes(raw)) throw new UsageError(`--${name} must be one of ${spec.choices.join(', ')}, got "${raw}"`);
    return raw;
  }
  const value = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(value)) throw new UsageError(`--${name} needs a number, got "${raw}"`);
  if (spec.type === 'int' && !Number.isInteger(value)) throw new UsageError(`--${name} needs an integer, got "${raw}"`);
  if (spec.min !== undefined && value < spec.min) throw new UsageError(`--${name} must be at least ${spec.min}, got ${raw}`);
  return value;
}

export function parseArgs(argv: string[], specs: Record<string, FlagSpec>): Parsed {
  const flags: Flags = {};
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq >= 0 ? eq : undefined);
    const spec = specs[name];
    if (!spec) throw new UsageError(`unknown flag --${name}`);
    if (spec.type === 'boolean') {
      if (eq >= 0) throw new UsageError(`--${name} takes no value`);
      flags[name] = true;
      continue;
    }
    const raw = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
    if (raw === undefined || (eq < 0 && raw.startsWith('--'))) throw new UsageError(`--${name} needs a value`);
    flags[name] = convert(name, spec, raw);
  }
  for (const [name, spec] of Object.entries(specs)) if (flags[name] === undefined && spec.default !== undefined) flags[name] = spec.default;
  return { flags, positionals };
}

export function helpText(usage: string, specs: Record<string, FlagSpec>): string {
  const lines = Object.entries(specs).map(([name, s]) => {
    const value = s.type === 'boolean' ? '' : s.choices ? ` ${s.choices.join('|')}` : ` ${s.type === 'string' ? 'VALUE' : 'N'}`;
    const def = s.default !== undefined && s.type !== 'boolean' ? ` (default ${s.default})` : '';
    return `  --${name}${value}`.padEnd(34) + s.help + def;
  });
  return `${usage}\n\n${lines.join('\n')}`;
}
