/**
 * `peertrain node --join MULTIADDR --token T`: a peer on this machine. It connects, receives the run config,
 * fetches and verifies the data, syncs the current parameters, measures its speed and contributes to every
 * round, using all cores through replica workers on CPU backends.
 */
import { availableParallelism, totalmem } from 'node:os';
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';
import { PeerRuntime, type PeerReplica } from '../peer/peer.ts';
import type { RunConfig } from '../run/config.ts';
import { systemClock } from '../net/types.ts';
import { consoleLogger } from './console-logger.ts';
import { helpText, parseArgs, type FlagSpec } from './args.ts';
import { BACKENDS, selectBackend } from '../node/backend.ts';
import { ReplicaGroup } from '../node/cluster/replica-group.ts';
import { UsageError } from '../node/errors.ts';
import { createPeertrainLibp2p } from '../node/p2p/create-libp2p.ts';
import { parseListen } from '../node/p2p/listen.ts';

const FLAGS: Record<string, FlagSpec> = {
  join: { type: 'string', help: 'the coordinator\'s multiaddr (repeat with commas for several)' },
  token: { type: 'string', help: 'the run\'s join token (or the PEERTRAIN_TOKEN environment variable)' },
  backend: { type: 'string', help: 'TF.js backend', choices: ['auto', ...BACKENDS], default: 'auto' },
  workers: { type: 'int', help: 'replica workers (default: one per core on wasm/cpu, 1 on a GPU)', min: 1 },
  memory: { type: 'int', help: 'memory offered for the model in MiB (pipeline runs give this peer a stage that fits; default: a quarter of RAM, at most 4096 on wasm)', min: 1 },
  listen: { type: 'string', help: 'comma-separated multiaddrs to listen on', default: '/ip4/127.0.0.1/tcp/0,/ip4/127.0.0.1/tcp/0/ws' },
  quiet: { type: 'boolean', help: 'log warnings only' },
  help: { type: 'boolean', help: 'show this help' },
};
const USAGE = 'usage: peertrain node --join MULTIADDR --token T [--backend B] [--workers N]';

/** The Node replica: worker threads behind the PeerReplica interface. */
function groupReplica(group: ReplicaGroup): PeerReplica {
  return {
    gradients: (b) => group.gradients(b),
    apply: (g) => group.apply(g),
    step: (b) => group.step(b),
    state: () => group.state(),
    setState: (s) => group.setState(s),
    stop: () => group.stop(),
  };
}

export async function nodeCommand(argv: string[]): Promise<number> {
  const { flags } = parseArgs(argv, FLAGS);
  if (flags.help) {
    console.log(helpText(USAGE, FLAGS));
    return 0;
  }
  if (typeof flags.join !== 'string') throw new UsageError(`node needs --join MULTIADDR\n${USAGE}`);
  const token = (flags.token as string | undefined) ?? process.env.PEERTRAIN_TOKEN;
  if (!token) throw new UsageError('node needs --token T (or PEERTRAIN_TOKEN): the join token the coordinator printed');
  let addrs: Multiaddr[];
  try {
    addrs = String(flags.join)
      .split(',')
      .map((a) => multiaddr(a.trim()));
  } catch (err) {
    throw new UsageError(`--join: not a multiaddr (${(err as Error).message})`);
  }
  if (!addrs.every((a) => a.getComponents().some((c) => c.name === 'p2p'))) throw new UsageError('--join: the multiaddr must end in /p2p/<peer id> (copy it as the coordinator printed it)');

  const probe = await selectBackend(String(flags.backend));
  const cpuLike = probe.name === 'wasm' || probe.name === 'cpu';
  const workers = Number(flags.workers ?? (cpuLike ? Math.min(availableParallelism(), 8) : 1));
  // The wasm heap cannot grow past 4 GiB, whatever the machine has.
  const memoryMB = Number(flags.memory ?? Math.min(Math.floor(totalmem() / 4 / 2 ** 20), cpuLike ? 4096 : Infinity));
  const libp2p = await createPeertrainLibp2p({ listen: parseListen(String(flags.listen)) });
  const log = consoleLogger(Boolean(flags.quiet), `[${libp2p.peerId.toString().slice(-6)}]`);
  log.info(`backend ${probe.name} (${probe.detail}) × ${workers} worker${workers > 1 ? 's' : ''}`);

  const peer = new PeerRuntime({
    libp2p,
    pubsub: libp2p.services.pubsub as never,
    coordinatorAddrs: addrs,
    token,
    kind: 'node',
    backend: probe.name,
    log,
    clock: systemClock,
    makeReplica: async (config: RunConfig) => {
      return groupReplica(await ReplicaGroup.start({ workers, backend: probe.name, model: config.model, train: config.train }));
    },
    memoryMB,
    onStageProgress: (p) =>
      log.info(
        `round ${p.round} | stage ${p.stage + 1}/${p.stages}${Number.isNaN(p.loss) ? '' : ` | loss ${p.loss.toFixed(4)}`} | ${p.microBatches} micro-batches | busy ${p.busyMs.toFixed(0)} of ${p.windowMs.toFixed(0)} ms | sent ${(p.activationBytes / 1024).toFixed(1)} KiB | params ${p.paramHash}`,
      ),
    onProgress: (p) => log.info(`round ${p.round} | loss ${p.loss.toFixed(4)} | ${p.tokensPerSec >= 1000 ? `${(p.tokensPerSec / 1000).toFixed(1)}k` : p.tokensPerSec.toFixed(0)} tok/s | ${p.peers} peer${p.peers > 1 ? 's' : ''} in the round | params ${p.paramHash}`),
  });

  let stopping = false;
  const stop = async (code: number) => {
    if (stopping) process.exit(code);
    stopping = true;
    await peer.stop('node stopped').catch(() => {});
    await Promise.resolve(libp2p.stop()).catch(() => {});
    process.exit(code);
  };
  process.on('SIGINT', () => void stop(130));
  process.on('SIGTERM', () => void stop(143));
  await peer.start();
  await new Promise(() => {});
  return 0;
}
