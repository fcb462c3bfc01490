/**
 * `peertrain train`: trains a model on one machine, using every core through replica workers.
 * Progress bar, validation every N steps, atomic checkpoints every N steps and on Ctrl-C, a sample at the
 * end, and with --json one summary line on stdout.
 */
import { availableParallelism } from 'node:os';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { architectureDifference, countParams, DEFAULT_TRAIN, modelConfigFromPreset, presetNames, validateTrainConfig, type ModelConfig, type TrainConfig } from '../engine/config.ts';
import { stepBatches, validationBatches, type BatchSpec } from '../engine/data/batches.ts';
import { heldOutPrompt } from '../engine/generate.ts';
import { describeTokenizer, sameTokenizer, type TokenizerJSON } from '../engine/data/tokenizers/index.ts';
import { ArchitectureMismatchError, ConfigError, DataError } from '../engine/errors.ts';
import { buildManifest } from '../engine/flat.ts';
import { parameterSpecs } from '../engine/model.ts';
import type { Checkpoint } from '../engine/checkpoint.ts';
import { helpText, parseArgs, type FlagSpec } from './args.ts';
import { BACKENDS, selectBackend } from '../node/backend.ts';
import { loadCheckpoint, saveCheckpoint } from '../node/checkpoint-io.ts';
import { ReplicaGroup } from '../node/cluster/replica-group.ts';
import { resolveData } from '../node/data/data-source.ts';
import { UsageError } from '../node/errors.ts';
import { Progress } from './progress.ts';

export const TRAIN_FLAGS: Record<string, FlagSpec> = {
  preset: { type: 'string', help: 'model shape', choices: presetNames(), default: 'tiny' },
  objective: { type: 'string', help: 'causal (next token) or mlm (masked tokens)', choices: ['causal', 'mlm'], default: 'causal' },
  config: { type: 'string', help: 'JSON file: { "model": {nLayer, nHead, nEmbd, blockSize}, "train": {...} } over the preset' },
  data: { type: 'string', help: 'prepared data folder, or a UTF-8 text file (default: the built-in Brown corpus)' },
  from: { type: 'string', help: 'fine-tune: start from this checkpoint\'s weights with a new schedule' },
  steps: { type: 'int', help: 'optimizer steps to reach', min: 1, default: 300 },
  minutes: { type: 'number', help: 'stop after this much training time (the schedule still spans --steps)' },
  backend: { type: 'string', help: 'TF.js backend', choices: ['auto', ...BACKENDS], default: 'auto' },
  workers: { type: 'int', help: 'replica workers (default: one per core on wasm/cpu, 1 on a GPU)', min: 1 },
  out: { type: 'string', help: 'run directory for checkpoints (default: a new runs/<preset>-<time>)' },
  resume: { type: 'boolean', help: 'continue from the checkpoint in --out' },
  batch: { type: 'int', help: 'sequences per optimizer step', min: 1, default: 16 },
  'micro-batch': { type: 'int', help: 'sequences per forward/backward pass (default: batch / workers)', min: 1 },
  seq: { type: 'int', help: 'tokens per sequence (default: the preset context)', min: 2 },
  lr: { type: 'number', help: 'peak learning rate', default: 1e-3 },
  warmup: { type: 'int', help: 'warmup steps', min: 0 },
  'weight-decay': { type: 'number', help: 'AdamW weight decay on 2-D weights', default: 0.1 },
  'grad-clip': { type: 'number', help: 'global gradient-norm clip (0: off)', default: 1 },
  seed: { type: 'int', help: 'seed for init and batches', min: 0, default: 1337 },
  'eval-every': { type: 'int', help: 'validate every N steps', min: 1, default: 50 },
  'eval-batches': { type: 'int', help: 'validation batches per evaluation', min: 1, default: 4 },
  'ckpt-every': { type: 'int', help: 'checkpoint every N steps', min: 1, default: 100 },
  'sample-tokens': { type: 'int', help: 'characters to sample at the end (0: none)', min: 0, default: 200 },
  json: { type: 'boolean', help: 'print one JSON summary line on stdout at the end' },
  quiet: { type: 'boolean', help: 'no progress output' },
  help: { type: 'boolean', help: 'show this help' },
};

export const TRAIN_USAGE = 'usage: peertrain train [--preset tiny] [--data PATH] [--steps N] [--backend B] [--out DIR] [--json]';

export const CHECKPOINT_FILE = 'checkpoint.ptck';

export interface TrainSummary {
  step: number;
  trainLoss: number;
  valLoss: number;
  tokensPerSec: number;
  backend: string;
  workers: number;
  params: number;
  checkpoint: string;
  sample?: string;
}

/** A --config file: partial model and train settings layered over the preset and defaults. */
function readRunConfig(path: string): { model: Partial<ModelConfig>; train: Partial<TrainConfig> } {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new ConfigError(`cannot read config ${path}: ${(err as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError(`${path}: a config must be a JSON object`);
  const { model = {}, train = {}, ...rest } = raw as Record<string, unknown>;
  const unknown = Object.keys(rest);
  if (unknown.length) throw new ConfigError(`${path}: unknown key "${unknown[0]}" (expected "model" and/or "train")`, unknown[0]);
  for (const [name, section, allowed] of [['model', model, ['nLayer', 'nHead', 'nEmbd', 'blockSize']], ['train', train, Object.keys(DEFAULT_TRAIN)]] as const) {
    if (typeof section !== 'object' || section === null || Array.isArray(section)) throw new ConfigError(`${path}: "${name}" must be an object`, name);
    const bad = Object.keys(section).find((k) => !(allowed as readonly string[]).includes(k));
    if (bad) throw new ConfigError(`${path}: unknown ${name} key "${bad}" (allowed: ${allowed.join(', ')})`, bad);
  }
  return { model: model as Partial<ModelConfig>, train: train as Partial<TrainConfig> };
}

function describeTokenizerJSON(j: unknown): string {
  const o = j as { kind?: string; chars?: unknown[]; words?: unknown[]; merges?: unknown[] };
  const size = o.kind === 'char' ? o.chars?.length : o.kind === 'word' ? o.words?.length : o.kind === 'bpe' ? (o.merges?.length ?? 0) + 256 : o.kind === 'bpe-gpt2' ? 50256 : undefined;
  return `${o.kind ?? 'unknown'}${size !== undefined ? ` (${size + 2} tokens)` : ''}`;
}

function explicitFlags(argv: string[]): Set<string> {
  return new Set(argv.filter((a) => a.startsWith('--')).map((a) => a.slice(2).split('=')[0]));
}

export async function trainCommand(argv: string[]): Promise<number> {
  const { flags } = parseArgs(argv, TRAIN_FLAGS);
  if (flags.help) {
    console.log(helpText(TRAIN_USAGE, TRAIN_FLAGS));
    return 0;
  }
  const given = explicitFlags(argv);
  if (flags.resume && !given.has('out')) throw new UsageError('--resume needs --out DIR: the run directory to continue');
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  const outDir = resolve(String(flags.out ?? join('runs', `${flags.preset}-${stamp}`)));
  const ckptPath = join(outDir, CHECKPOINT_FILE);
  const progress = new Progress(process.stderr, Boolean(flags.quiet));

  // Resume or start fresh; an existing checkpoint is never overwritten by an unrelated run.
  let resumed: Checkpoint | undefined;
  if (existsSync(ckptPath)) {
    if (!flags.resume) throw new UsageError(`${ckptPath} already exists: pass --resume to continue it, or choose another --out`);
    resumed = loadCheckpoint(ckptPath);
  } else if (flags.resume) {
    throw new UsageError(`--resume: no checkpoint at ${ckptPath}`);
  }

  const fileConfig = flags.config ? readRunConfig(String(flags.config)) : { model: {}, train: {} };
  if (flags.from && flags.resume) throw new UsageError('--from starts a new run from a checkpoint; --resume continues one: pick one');
  const base = flags.from ? loadCheckpoint(String(flags.from)) : undefined;
  const data = await resolveData(flags.data as string | undefined, (m) => progress.log(m));
  const tokenizer = data.tokenizer;
  const source = data.manifest.name;
  const parent = resumed ?? base;
  if (parent && !sameTokenizer(parent.tokenizer as TokenizerJSON, tokenizer.toJSON())) {
    throw new DataError(
      `the data's tokenizer (${describeTokenizer(tokenizer)}) differs from the checkpoint's (${describeTokenizerJSON(parent.tokenizer)}): prepare the data with the checkpoint's tokenizer`,
    );
  }
  let model: ModelConfig;
  if (parent) {
    model = parent.model;
    if (given.has('preset') || given.has('objective')) {
      const wanted = modelConfigFromPreset(String(flags.preset), model.vocabSize, { objective: flags.objective as ModelConfig['objective'] });
      const diff = architectureDifference(model, wanted);
      if (diff) throw new ArchitectureMismatchError(diff.key, diff.a, diff.b);
    }
  } else {
    model = modelConfigFromPreset(String(flags.preset), tokenizer.vocabSize, { ...fileConfig.model, objective: flags.objective as ModelConfig['objective'] });
  }
  if (tokenizer.vocabSize !== model.vocabSize) throw new DataError(`the data has ${tokenizer.vocabSize} tokens but the model expects ${model.vocabSize}`);

  // One probe in this process picks the backend; workers then start exactly that one.
  const probe = await selectBackend(String(flags.backend));
  const cpuLike = probe.name === 'wasm' || probe.name === 'cpu';
  // Precedence for each training setting: an explicit flag, then --config, then the checkpoint being resumed,
  // then the flag's default. Resuming with nothing given thus continues exactly as the run was configured.
  const pick = (flag: string, key: keyof TrainConfig): number | undefined => {
    if (given.has(flag)) return Number(flags[flag]);
    const v = fileConfig.train[key] ?? resumed?.train[key] ?? flags[flag];
    return v === undefined ? undefined : Number(v);
  };
  const steps = Number(flags.steps);
  const batchSize = pick('batch', 'batchSize')!;
  const workers = Number(flags.workers ?? (cpuLike ? Math.min(availableParallelism(), 8, batchSize) : 1));
  const train: TrainConfig = validateTrainConfig(
    {
      ...DEFAULT_TRAIN,
      ...(resumed?.train ?? {}),
      ...fileConfig.train,
      batchSize,
      microBatchSize: pick('micro-batch', 'microBatchSize') ?? Math.max(1, Math.floor(batchSize / workers)),
      seqLen: Math.min(pick('seq', 'seqLen') ?? model.blockSize, model.blockSize, data.manifest.sequenceLength - 1),
      lr: pick('lr', 'lr'),
      warmupSteps: pick('warmup', 'warmupSteps') ?? Math.min(100, Math.max(1, Math.floor(steps / 10))),
      totalSteps: steps,
      weightDecay: pick('weight-decay', 'weightDecay'),
      gradClip: pick('grad-clip', 'gradClip'),
      seed: pick('seed', 'seed'),
    },
    model,
  );
  if (given.has('seq') && train.seqLen < Number(flags.seq)) {
    throw new UsageError(`--seq ${flags.seq} is longer than the data's sequences (${data.manifest.sequenceLength - 1} tokens) or the model's context (${model.blockSize})`);
  }
  const spec: BatchSpec = { B: train.microBatchSize, T: train.seqLen, objective: model.objective, maskProb: train.maskProb, maskId: tokenizer.maskId, eosId: tokenizer.eosId, vocabSize: model.vocabSize };
  const valBatches = validationBatches(data.val, spec, train.seed, Number(flags['eval-batches']));
  const microPerStep = train.batchSize / train.microBatchSize;
  const tokensPerStep = train.batchSize * train.seqLen;
  const startStep = resumed?.step ?? 0;
  if (startStep >= steps) throw new UsageError(`the checkpoint is already at step ${startStep}; pass --steps above it to train further`);

  mkdirSync(outDir, { recursive: true });
  progress.log(`data: ${source} — ${data.manifest.train.tokens.toLocaleString('en-US')} training tokens, ${describeTokenizer(tokenizer)}`);
  progress.log(`model: ${flags.preset} (${model.nLayer} layers, ${model.nHead} heads, ${model.nEmbd} wide, context ${model.blockSize}, ${model.objective}) — ${countParams(model).toLocaleString('en-US')} parameters`);
  progress.log(`backend: ${probe.name} (${probe.detail}) × ${workers} worker${workers > 1 ? 's' : ''}${resumed ? ` — resuming at step ${startStep}` : ''}${base ? ` — fine-tuning ${flags.from} (step ${base.step})` : ''}`);

  const group = await ReplicaGroup.start({
    workers,
    backend: probe.name,
    model,
    train,
    // Resuming restores the optimizer; fine-tuning takes the weights only and starts a new schedule.
    state: resumed ? { step: resumed.step, params: resumed.params, m: resumed.m, v: resumed.v } : base ? { step: 0, params: base.params, m: new Float32Array(base.params.length), v: new Float32Array(base.params.length) } : undefined,
  });
  const history: Array<[number, number, number | null]> = resumed ? [...resumed.history] : [];
  let interrupted = false;
  const onSigint = () => {
    if (interrupted) process.exit(130); // a second Ctrl-C does not wait for the checkpoint
    interrupted = true;
    progress.log('interrupted: saving a checkpoint, then stopping (Ctrl-C again to quit at once)');
  };
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigint);

  const checkpoint = async (step: number) => {
    const s = await group.state();
    saveCheckpoint(ckptPath, {
      model,
      train,
      step: s.step,
      dataPosition: { batchSeed: train.seed, nextStep: step, tokensSeen: step * tokensPerStep },
      tokenizer: tokenizer.toJSON(),
      history,
      info: { backend: probe.name, workers, data: source, dataDir: data.dir, finetunedFrom: flags.from ?? resumed?.info.finetunedFrom, savedAt: new Date().toISOString() },
      manifest: buildManifest(parameterSpecs(model)),
      params: s.params,
      m: s.m,
      v: s.v,
    });
  };

  const deadline = flags.minutes !== undefined ? Date.now() + Number(flags.minutes) * 60_000 : Infinity;
  if (!(Number(flags.minutes ?? 1) > 0)) throw new UsageError(`--minutes must be positive, got ${flags.minutes}`);
  let step = startStep;
  let lastLoss = NaN;
  let valLoss = NaN;
  let timedTokens = 0;
  let timedMs = 0;
  let rate = 0;
  try {
    while (step < steps && !interrupted && Date.now() < deadline) {
      const t0 = performance.now();
      const result = await group.step(stepBatches(data.train, spec, train.seed, step, microPerStep));
      const ms = performance.now() - t0;
      step = result.step;
      lastLoss = result.loss;
      if (!Number.isFinite(lastLoss)) throw new DataError(`loss became ${lastLoss} at step ${step}; lower --lr (checkpoint kept at its last good step)`);
      // The first step compiles kernels and packs weights: leave it out of the rate.
      if (step > startStep + 1) {
        timedTokens += tokensPerStep;
        timedMs += ms;
        rate = timedTokens / (timedMs / 1000);
      } else rate = tokensPerStep / (ms / 1000);
      let val: number | null = null;
      if (step % Number(flags['eval-every']) === 0 || step === steps || Date.now() >= deadline) {
        valLoss = await group.evalLoss(valBatches);
        val = valLoss;
      }
      if (val !== null || step % 10 === 0) history.push([step, lastLoss, val]);
      progress.update({ step, totalSteps: steps, loss: lastLoss, tokensPerSec: rate, etaSeconds: ((steps - step) * tokensPerStep) / Math.max(rate, 1e-9), valLoss: Number.isNaN(valLoss) ? undefined : valLoss });
      if (val !== null) progress.log(`step ${step}: train loss ${lastLoss.toFixed(4)}, val loss ${valLoss.toFixed(4)}`);
      if (step % Number(flags['ckpt-every']) === 0) await checkpoint(step);
    }
    await checkpoint(step);
    progress.done();
    if (interrupted) {
      progress.log(`checkpoint saved at step ${step}: ${ckptPath} (continue with --resume)`);
      return 130;
    }
    if (Number.isNaN(valLoss)) valLoss = await group.evalLoss(valBatches);
    let sample: string | undefined;
    const sampleTokens = Number(flags['sample-tokens']);
    if (sampleTokens > 0 && model.objective === 'causal') {
      const prompt = heldOutPrompt(data.val, tokenizer.eosId);
      const ids = await group.generate(prompt, { maxNewTokens: sampleTokens, temperature: 0.8, topK: 40, topP: 0.95, seed: train.seed }, tokenizer.maskId);
      sample = tokenizer.decode([...prompt, ...ids]);
      progress.log(`sample: ${sample}`);
    }
    progress.log(`done: step ${step}, train loss ${lastLoss.toFixed(4)}, val loss ${valLoss.toFixed(4)}, ${rate.toFixed(0)} tokens/s; checkpoint ${ckptPath}`);
    const summary: TrainSummary = { step, trainLoss: lastLoss, valLoss, tokensPerSec: rate, backend: probe.name, workers, params: countParams(model), checkpoint: ckptPath, sample };
    if (flags.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
    return 0;
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigint);
    await group.stop();
  }
}
