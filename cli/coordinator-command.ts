/**
 * `peertrain coordinator`: starts (or restarts, from its run directory) a shared run, prints the multiaddrs and
 * join token to give to nodes and the URL of its page, and writes them to RUN_DIR/join.json.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { DEFAULT_TRAIN, modelConfigFromPreset, presetNames, validateTrainConfig, type ModelConfig } from '../engine/config.ts';
import { ConfigError } from '../engine/errors.ts';
import { consoleLogger } from './console-logger.ts';
import { helpText, parseArgs, type FlagSpec } from './args.ts';
import { BACKENDS, selectBackend } from '../node/backend.ts';
import { resolveData } from '../node/data/data-source.ts';
import { UsageError } from '../node/errors.ts';
import { createPeertrainLibp2p } from '../node/p2p/create-libp2p.ts';
import { parseListen } from '../node/p2p/listen.ts';
import { RUN_DEFAULTS, defaultMaxInFlight } from '../run/defaults.ts';
import { configHash, validatePipelineConfig, validateRunConfig, type PipelineConfig, type RunConfig } from '../run/config.ts';
import { systemClock, type Logger } from '../net/types.ts';
import { Coordinator } from '../coordinator/coordinator.ts';
import { startHttpServer } from '../coordinator/http-server.ts';
import { BROWSER_DIST, browserBuildStale, buildBrowser } from '../browser-client/build.ts';
import { ensureDir, loadOrCreateKey, newRunId, newToken, paths, readRunInfo, writeJoinFile, writeRunInfo } from '../coordinator/run-dir.ts';
import { RunStore } from '../coordinator/run-store.ts';

export const COORDINATOR_FLAGS: Record<string, FlagSpec> = {
  'run-dir': { type: 'string', help: 'run directory (state, checkpoints, join.json); reopened on restart', default: 'runs/coordinator' },
  config: { type: 'string', help: 'JSON run config: { model, train, mode, innerSteps, outer, roundTimeoutSec, evalEvery, checkpointEvery }' },
  data: { type: 'string', help: 'prepared data folder or text file (default: the built-in corpus)' },
  preset: { type: 'string', help: 'model shape', choices: presetNames(), default: 'tiny' },
  mode: { type: 'string', help: 'sync: average gradients every step; diloco: H local steps, then average', choices: ['sync', 'diloco'], default: RUN_DEFAULTS.mode },
  'inner-steps': { type: 'int', help: 'DiLoCo local steps per round', min: 1, default: RUN_DEFAULTS.innerSteps },
  batch: { type: 'int', help: 'sequences per round over all peers (per inner step in diloco)', min: 1, default: RUN_DEFAULTS.batchSize },
  'micro-batch': { type: 'int', help: 'sequences per micro-batch (the unit handed to peers)', min: 1, default: RUN_DEFAULTS.microBatchSize },
  seq: { type: 'int', help: 'tokens per sequence', min: 2, default: RUN_DEFAULTS.seqLen },
  lr: { type: 'number', help: 'peak learning rate', default: RUN_DEFAULTS.lr },
  stages: { type: 'string', help: 'pipeline parallelism: split the model into N stages, or "auto" (fewest that fit the peers\' memory); omit for data parallelism' },
  'activation-dtype': { type: 'string', help: 'pipeline: how activations travel between stages (default float32)', choices: ['float32', 'float16'] },
  'max-in-flight': { type: 'int', help: 'pipeline: micro-batches a first-stage peer keeps in flight (default: 2 x stages)', min: 1 },
  rounds: { type: 'int', help: 'stop after this many rounds (default: run until stopped)', min: 1 },
  'min-peers': { type: 'int', help: 'wait for this many ready peers before the first round', min: 1, default: 1 },
  'round-timeout': { type: 'number', help: 'seconds before a stalled round is retried without its stragglers', default: RUN_DEFAULTS.roundTimeoutSec },
  listen: { type: 'string', help: 'comma-separated multiaddrs to listen on', default: '/ip4/127.0.0.1/tcp/0,/ip4/127.0.0.1/tcp/0/ws' },
  host: { type: 'string', help: 'HTTP host', default: '127.0.0.1' },
  'http-port': { type: 'int', help: 'HTTP port (0: any free port)', min: 0, default: 8080 },
  backend: { type: 'string', help: 'TF.js backend of the coordinator\'s own replica', choices: ['auto', ...BACKENDS], default: 'auto' },
  json: { type: 'boolean', help: 'with --rounds: print one JSON summary line at the end' },
  quiet: { type: 'boolean', help: 'log warnings only' },
  help: { type: 'boolean', help: 'show this help' },
};
const USAGE = 'usage: peertrain coordinator [--config run.json] [--run-dir DIR] [--http-port P] [--rounds N]';

function readJsonConfig(path: string): Record<string, unknown> {
  try {
    const raw = JSON.parse(readFileSync(path, 'utf8'));
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error('not a JSON object');
    return raw as Record<string, unknown>;
  } catch (err) {
    throw new ConfigError(`cannot read config ${path}: ${(err as Error).message}`);
  }
}

async function newRun(flags: Record<string, unknown>, log: Logger): Promise<{ config: RunConfig; dataDir: string }> {
  const file = flags.config ? readJsonConfig(String(flags.config)) : {};
  const allowed = ['model', 'train', 'mode', 'innerSteps', 'outer', 'roundTimeoutSec', 'maxPartNorm', 'evalEvery', 'checkpointEvery', 'pipeline'];
  const unknown = Object.keys(file).find((k) => !allowed.includes(k));
  if (unknown) throw new ConfigError(`${flags.config}: unknown key "${unknown}" (allowed: ${allowed.join(', ')})`, unknown);
  const data = await resolveData(flags.data as string | undefined, (m) => log.info(m));
  const model: ModelConfig = modelConfigFromPreset(String(flags.preset), data.tokenizer.vocabSize, (file.model ?? {}) as Partial<ModelConfig>);
  const seqLen = Math.min(Number(flags.seq), model.blockSize, data.manifest.sequenceLength - 1);
  const rounds = Number(flags.rounds ?? 1000);
  const train = validateTrainConfig(
    { ...DEFAULT_TRAIN, batchSize: flags.batch, microBatchSize: flags['micro-batch'], seqLen, lr: flags.lr, warmupSteps: Math.min(100, Math.max(1, Math.floor(rounds / 10))), totalSteps: rounds, ...((file.train ?? {}) as object) },
    model,
  );
  const config = validateRunConfig({
    model,
    train,
    mode: file.mode ?? flags.mode,
    innerSteps: file.innerSteps ?? flags['inner-steps'],
    outer: file.outer ?? RUN_DEFAULTS.outer,
    roundTimeoutSec: file.roundTimeoutSec ?? flags['round-timeout'],
    maxPartNorm: file.maxPartNorm ?? RUN_DEFAULTS.maxPartNorm,
    evalEvery: file.evalEvery ?? RUN_DEFAULTS.evalEvery,
    checkpointEvery: file.checkpointEvery ?? RUN_DEFAULTS.checkpointEvery,
    data: data.manifest,
    ...pipelineFrom(flags, file, model.nLayer + 2),
  });
  return { config, dataDir: data.dir };
}

/** The pipeline section from --stages (and its companions) or the config file; none: data parallelism. */
function pipelineFrom(flags: Record<string, unknown>, file: Record<string, unknown>, parts: number): { pipeline?: PipelineConfig } {
  const fromFile = file.pipeline as Partial<PipelineConfig> | undefined;
  if (flags.stages === undefined && fromFile === undefined) return {};
  let stages: number | 'auto' | undefined = fromFile?.stages;
  if (flags.stages !== undefined) {
    const raw = String(flags.stages);
    if (raw === 'auto') stages = 'auto';
    else if (/^\d+$/.test(raw)) stages = Number(raw);
    else throw new UsageError(`--stages: expected "auto" or a number of stages, got ${JSON.stringify(raw)}`);
  }
  const n = typeof stages === 'number' ? stages : RUN_DEFAULTS.autoStagesGuess;
  return {
    pipeline: validatePipelineConfig(
      {
        stages: stages ?? 'auto',
        activationDtype: flags['activation-dtype'] ?? fromFile?.activationDtype ?? RUN_DEFAULTS.activationDtype,
        maxInFlight: flags['max-in-flight'] ?? fromFile?.maxInFlight ?? defaultMaxInFlight(n),
      },
      parts,
    ),
  };
}

export async function coordinatorCommand(argv: string[]): Promise<number> {
  const { flags } = parseArgs(argv, COORDINATOR_FLAGS);
  if (flags.help) {
    console.log(helpText(USAGE, COORDINATOR_FLAGS));
    return 0;
  }
  const log = consoleLogger(Boolean(flags.quiet));
  const runDir = resolve(String(flags['run-dir']));
  ensureDir(runDir);
  let info = readRunInfo(runDir);
  let dataDir: string;
  if (info) {
    if (flags.config || flags.data || flags.stages !== undefined) throw new UsageError(`${runDir} already holds run ${info.runId}; its config and data cannot change (start a new run with another --run-dir)`);
    dataDir = info.dataDir;
    log.info(`restarting run ${info.runId} from ${runDir}`);
  } else {
    const fresh = await newRun(flags, log);
    dataDir = fresh.dataDir;
    info = { runId: newRunId(), token: newToken(), config: fresh.config, dataDir, listen: parseListen(String(flags.listen)), httpPort: Number(flags['http-port']), createdAt: new Date().toISOString() };
  }
  const data = await resolveData(dataDir, (m) => log.info(m));
  const hash = await configHash(info.config);
  const backend = await selectBackend(String(flags.backend));
  log.info(`coordinator replica on ${backend.name} (${backend.detail})`);

  const privateKey = await loadOrCreateKey(runDir);
  const libp2p = await createPeertrainLibp2p({ listen: info.listen, privateKey });
  // Remember the ports actually bound, so a restarted coordinator is found at the same addresses.
  const bound = libp2p.getMultiaddrs().map((a) => a.decapsulateCode(421).toString());
  if (info.listen.some((a) => /\/tcp\/0(\/|$)/.test(a))) info = { ...info, listen: bound };
  const store = new RunStore(paths(runDir).db);
  const coordinator = new Coordinator({ libp2p, store, info, configHash: hash, data, runDir, log, clock: systemClock, maxRounds: flags.rounds as number | undefined, minPeers: Number(flags['min-peers']) });
  await coordinator.start();
  if (browserBuildStale()) {
    log.info('building the browser client (dist/browser)');
    await buildBrowser();
  }
  const wsAddrs = () => libp2p.getMultiaddrs().map((a) => a.toString()).filter((a) => a.includes('/ws'));
  const http = await startHttpServer({
    host: String(flags.host),
    port: info.httpPort,
    status: () => coordinator.status(),
    joinInfo: () => ({ multiaddrs: wsAddrs(), token: info!.token }),
    staticDir: BROWSER_DIST,
  });
  if (info.httpPort === 0) info = { ...info, httpPort: Number(new URL(http.url).port) };
  writeRunInfo(runDir, info);
  const multiaddrs = libp2p.getMultiaddrs().map((a) => a.toString());
  writeJoinFile(runDir, multiaddrs, info.token, http.url);
  const parallelism = info.config.pipeline ? `pipeline, ${info.config.pipeline.stages} stages, ${info.config.pipeline.activationDtype} activations` : info.config.mode;
  console.error(`run ${info.runId} (${parallelism}, ${info.config.model.nLayer} layers × ${info.config.model.nEmbd}) — config ${hash.slice(0, 12)}`);
  console.error(`join with:\n${multiaddrs.map((a) => `  peertrain node --join ${a} --token ${info!.token}`).join('\n')}`);
  console.error(`status: ${http.url}api/status (also written to ${paths(runDir).join})`);
  coordinator.emitter.addEventListener('round:done', (e) => {
    const r = (e as CustomEvent<{ round: number; loss: number; valLoss?: number }>).detail;
    log.info(`round ${r.round}: loss ${r.loss.toFixed(4)}${r.valLoss !== undefined ? `, val ${r.valLoss.toFixed(4)}` : ''} — ${coordinator.members.size} peer(s)`);
  });

  let stopping = false;
  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    await coordinator.stop({ checkpoint: true });
    await new Promise<void>((r) => http.server.close(() => r()));
    await libp2p.stop();
    store.close();
    process.exit(code);
  };
  process.on('SIGINT', () => void stop(130));
  process.on('SIGTERM', () => void stop(143));

  if (flags.rounds !== undefined) {
    await coordinator.finished();
    await coordinator.settle(5_000);
    const valLoss = await coordinator.evaluate(coordinator.round - 1);
    const sample = await coordinator.sample(200);
    console.error(`done: ${coordinator.round} rounds, validation loss ${valLoss.toFixed(4)}`);
    console.error(`sample: ${sample}`);
    if (flags.json) console.log(JSON.stringify({ rounds: coordinator.round, valLoss, sample, runId: info.runId, tokensTrained: store.tokensTrained() }));
    await stop(0);
  }
  await new Promise(() => {}); // serve until a signal
  return 0;
}
