/**
 * `peertrain eval CKPT [--data DIR] [--json]`: validation loss, perplexity per token, bits per character,
 * BLEU-4 of greedy continuations of held-out prompts against their true continuations, and distinct-2 and
 * repetition rate of sampled continuations. `peertrain generate CKPT --prompt TEXT` samples text.
 */
import { availableParallelism } from 'node:os';
import { validationBatches, type BatchSpec } from '../engine/data/batches.ts';
import { describeTokenizer, loadTokenizer, sameTokenizer, type TokenizerJSON } from '../engine/data/tokenizers/index.ts';
import { DataError } from '../engine/errors.ts';
import { validateSampleOptions } from '../engine/generate.ts';
import { bitsPerCharacter, corpusBleu, distinctN, repetitionRate, wordTokens } from '../engine/eval/metrics.ts';
import { helpText, parseArgs, type FlagSpec } from './args.ts';
import { BACKENDS, selectBackend } from '../node/backend.ts';
import { loadCheckpoint } from '../node/checkpoint-io.ts';
import { ReplicaGroup } from '../node/cluster/replica-group.ts';
import { resolveData } from '../node/data/data-source.ts';
import { UsageError } from '../node/errors.ts';

const EVAL_FLAGS: Record<string, FlagSpec> = {
  data: { type: 'string', help: 'prepared data folder or text file (default: the data the checkpoint trained on, else the built-in corpus)' },
  batches: { type: 'int', help: 'validation batches for the loss', min: 1, default: 16 },
  prompts: { type: 'int', help: 'held-out prompts for BLEU and samples', min: 1, default: 16 },
  'prompt-tokens': { type: 'int', help: 'prompt length in tokens', min: 1, default: 32 },
  'continuation-tokens': { type: 'int', help: 'tokens generated (and compared) per prompt', min: 1, default: 32 },
  backend: { type: 'string', help: 'TF.js backend', choices: ['auto', ...BACKENDS], default: 'auto' },
  json: { type: 'boolean', help: 'print one JSON line' },
  help: { type: 'boolean', help: 'show this help' },
};

export async function evalCommand(argv: string[]): Promise<number> {
  const { flags, positionals } = parseArgs(argv, EVAL_FLAGS);
  const usage = 'usage: peertrain eval CKPT [--data DIR] [--json]';
  if (flags.help) {
    console.log(helpText(usage, EVAL_FLAGS));
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`eval needs exactly one checkpoint path\n${usage}`);
  const ckpt = loadCheckpoint(positionals[0]);
  const log = (m: string) => (flags.json ? undefined : console.error(m));
  const dataArg = (flags.data as string | undefined) ?? (typeof ckpt.info.dataDir === 'string' ? ckpt.info.dataDir : undefined);
  const data = await resolveData(dataArg, log);
  if (!sameTokenizer(ckpt.tokenizer as TokenizerJSON, data.tokenizer.toJSON())) {
    throw new DataError(`the data's tokenizer (${describeTokenizer(data.tokenizer)}) differs from the checkpoint's: evaluate on data prepared with the checkpoint's tokenizer`);
  }
  const tokenizer = data.tokenizer;
  const model = ckpt.model;
  const T = Math.min(model.blockSize, data.manifest.sequenceLength - 1);
  const probe = await selectBackend(String(flags.backend));
  const workers = probe.name === 'wasm' || probe.name === 'cpu' ? Math.min(availableParallelism(), 8) : 1;
  const group = await ReplicaGroup.start({
    workers,
    backend: probe.name,
    model,
    train: ckpt.train,
    state: { step: ckpt.step, params: ckpt.params, m: ckpt.m, v: ckpt.v },
  });
  try {
    const spec: BatchSpec = { B: 8, T, objective: model.objective, maskProb: ckpt.train.maskProb, maskId: tokenizer.maskId, eosId: tokenizer.eosId, vocabSize: model.vocabSize };
    const valLoss = await group.evalLoss(validationBatches(data.val, spec, 0xe7a1, Number(flags.batches)));
    const perplexity = Math.exp(valLoss);
    const bitsPerChar = bitsPerCharacter(valLoss, data.manifest.val.tokens, data.manifest.val.characters);
    const result: Record<string, number | string> = { checkpoint: positionals[0], step: ckpt.step, valLoss, perplexity, bitsPerChar };
    if (model.objective === 'causal') {
      // Held-out prompts: the opening of evenly spaced validation sequences; the reference is what followed.
      const P = Number(flags['prompt-tokens']);
      const C = Number(flags['continuation-tokens']);
      if (P + C > data.val.length) throw new UsageError(`--prompt-tokens + --continuation-tokens (${P + C}) exceeds the data's sequence length ${data.val.length}`);
      const count = Math.min(Number(flags.prompts), data.val.count);
      const greedy: string[][] = [];
      const refs: string[][] = [];
      const sampled: string[][] = [];
      for (let i = 0; i < count; i++) {
        const k = Math.floor((i * data.val.count) / count);
        const seq = Array.from(data.val.data.subarray(k * data.val.length, k * data.val.length + P + C));
        const prompt = seq.slice(0, P);
        const g = await group.generate(prompt, { maxNewTokens: C, temperature: 0, topK: 0, topP: 1, seed: i }, tokenizer.maskId);
        const s = await group.generate(prompt, { maxNewTokens: C, temperature: 0.8, topK: 40, topP: 0.95, seed: i }, tokenizer.maskId);
        greedy.push(wordTokens(tokenizer.decode(g)));
        refs.push(wordTokens(tokenizer.decode(seq.slice(P))));
        sampled.push(wordTokens(tokenizer.decode(s)));
      }
      const bleu = corpusBleu(greedy, refs);
      Object.assign(result, { bleu: bleu.bleu, bleuBrevityPenalty: bleu.brevityPenalty, distinct2: distinctN(sampled, 2), repetitionRate: repetitionRate(sampled) });
    }
    if (flags.json) console.log(JSON.stringify(result));
    else for (const [k, v] of Object.entries(result)) console.log(`${k.padEnd(20)} ${typeof v === 'number' ? v.toFixed(4) : v}`);
    return 0;
  } finally {
    await group.stop();
  }
}

const GENERATE_FLAGS: Record<string, FlagSpec> = {
  prompt: { type: 'string', help: 'text to continue' },
  'max-tokens': { type: 'int', help: 'tokens to generate', min: 1, default: 200 },
  temperature: { type: 'number', help: 'sampling temperature (0: greedy)', default: 0.8 },
  'top-k': { type: 'int', help: 'keep the k most likely tokens (0: all)', min: 0, default: 40 },
  'top-p': { type: 'number', help: 'nucleus: keep tokens up to this cumulative probability', default: 0.95 },
  seed: { type: 'int', help: 'sampling seed', min: 0, default: 1 },
  backend: { type: 'string', help: 'TF.js backend', choices: ['auto', ...BACKENDS], default: 'auto' },
  help: { type: 'boolean', help: 'show this help' },
};

export async function generateCommand(argv: string[]): Promise<number> {
  const { flags, positionals } = parseArgs(argv, GENERATE_FLAGS);
  const usage = 'usage: peertrain generate CKPT --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K] [--top-p P]';
  if (flags.help) {
    console.log(helpText(usage, GENERATE_FLAGS));
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`generate needs exactly one checkpoint path\n${usage}`);
  if (typeof flags.prompt !== 'string' || flags.prompt === '') throw new UsageError(`generate needs --prompt TEXT\n${usage}`);
  const ckpt = loadCheckpoint(positionals[0]);
  if (ckpt.model.objective !== 'causal') throw new UsageError('generate needs a causal model; this checkpoint was trained with the mlm objective');
  const tokenizer = await loadTokenizer(ckpt.tokenizer);
  const prompt = Array.from(tokenizer.encodeLenient(flags.prompt));
  if (prompt.length === 0) throw new UsageError('the prompt has no character the model knows');
  const options = { maxNewTokens: Number(flags['max-tokens']), temperature: Number(flags.temperature), topK: Number(flags['top-k']), topP: Number(flags['top-p']), seed: Number(flags.seed) };
  validateSampleOptions(options);
  const probe = await selectBackend(String(flags.backend));
  const group = await ReplicaGroup.start({ workers: 1, backend: probe.name, model: ckpt.model, train: ckpt.train, state: { step: ckpt.step, params: ckpt.params, m: ckpt.m, v: ckpt.v } });
  try {
    const ids = await group.generate(prompt, options, tokenizer.maskId);
    console.log(tokenizer.decode([...prompt, ...ids]));
    return 0;
  } finally {
    await group.stop();
  }
}
