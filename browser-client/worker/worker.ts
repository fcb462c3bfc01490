/**
 * The browser peer, in a Web Worker: the same engine, protocol and peer runtime as a Node peer. It joins over
 * WebSockets (browsers cannot listen, so it dials the other participants of each round itself and they answer
 * on those connections), trains on the fastest backend the browser offers, and reports to the page.
 *
 * Messages: see messages.ts.
 */
import { createLibp2p } from 'libp2p';
import { webSockets } from '@libp2p/websockets';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { identify } from '@libp2p/identify';
import { multiaddr } from '@multiformats/multiaddr';
import { connectionManagerOptions, connectionMonitorOptions, peertrainGossipsub } from '../../net/libp2p-options.ts';
import { PeerRuntime } from '../../peer/peer.ts';
import { trainerReplica } from '../../peer/trainer-replica.ts';
import type { Logger } from '../../net/types.ts';
import { selectBrowserBackend } from './backend.ts';
import type { SelftestFixture, WorkerCommand, WorkerStatus } from './messages.ts';
import { DEFAULT_TRAIN, validateModelConfig } from '../../engine/config.ts';
import { Trainer } from '../../engine/trainer.ts';

const post = (s: Omit<WorkerStatus, 'type'>) => (self as unknown as Worker).postMessage({ type: 'status', ...s });
const log: Logger = {
  info: (m) => post({ state: 'training', message: m }),
  warn: (m) => post({ state: 'training', message: `warning: ${m}` }),
  debug: () => {},
};

let peer: PeerRuntime | undefined;
let stopLibp2p: (() => Promise<void>) | undefined;

async function start(multiaddrs: string[], token: string, preferred: string): Promise<void> {
  post({ state: 'starting', message: 'choosing a backend' });
  const backend = await selectBrowserBackend(preferred);
  post({ state: 'starting', backend: backend.name, backendDetail: backend.detail, message: `backend ${backend.name} (${backend.detail})` });
  const libp2p = await createLibp2p({
    transports: [webSockets()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    // The browser's default gater refuses loopback and private addresses, where runs on a LAN live.
    connectionGater: { denyDialMultiaddr: async () => false },
    connectionManager: connectionManagerOptions,
    connectionMonitor: connectionMonitorOptions,
    services: { identify: identify(), pubsub: peertrainGossipsub() },
  });
  stopLibp2p = async () => libp2p.stop();
  peer = new PeerRuntime({
    libp2p,
    pubsub: libp2p.services.pubsub as never,
    coordinatorAddrs: multiaddrs.map((a) => multiaddr(a)),
    token,
    kind: 'browser',
    backend: backend.name,
    log,
    clock: { now: () => Date.now() },
    makeReplica: async (config) => trainerReplica(config),
    // What the pipeline planner may give this tab: half the device memory it reports (browsers round it and
    // cap it at 8 GiB), within the WASM heap's 4 GiB.
    memoryMB: Math.min(4096, ((navigator as { deviceMemory?: number }).deviceMemory ?? 4) * 512),
    onStageProgress: (p) =>
      post({
        state: 'training',
        round: p.round,
        loss: p.loss,
        tokensPerSec: peer?.speed ?? 0,
        roundsContributed: peer?.roundsContributed,
        tokensContributed: peer?.tokensContributed,
        paramHash: p.paramHash,
      }),
    onProgress: (p) =>
      post({
        state: 'training',
        round: p.round,
        loss: p.loss,
        tokensPerSec: p.tokensPerSec,
        roundsContributed: peer?.roundsContributed,
        tokensContributed: peer?.tokensContributed,
        paramHash: p.paramHash,
      }),
  });
  await peer.start();
  post({ state: 'joined', peerId: libp2p.peerId.toString(), backend: backend.name, backendDetail: backend.detail, round: peer.round, message: `joined at round ${peer.round}` });
}

/**
 * Backend self-test: the loss of a fixed model and batch (the golden fixture, computed by PyTorch) on the
 * chosen backend, so a page or a test can check a backend before trusting it with a run.
 */
async function selftest(backend: string, f: SelftestFixture): Promise<void> {
  const choice = await selectBrowserBackend(backend);
  const model = validateModelConfig(f.config);
  const trainer = new Trainer(model, DEFAULT_TRAIN, Float32Array.from(f.params));
  const B = f.idx.length;
  const T = f.idx[0].length;
  const loss = await trainer.evalLoss([{ B, T, ids: Int32Array.from(f.idx.flat()), targets: Int32Array.from(f.targets.flat()) }]);
  trainer.dispose();
  (self as unknown as Worker).postMessage({ type: 'selftest', backend: choice.name, detail: choice.detail, skipped: choice.skipped, loss });
}

self.onmessage = (evt: MessageEvent) => {
  const msg = evt.data as WorkerCommand;
  if (msg.type === 'selftest') {
    selftest(msg.backend, msg.fixture).catch((err) => (self as unknown as Worker).postMessage({ type: 'selftest', error: `${(err as Error).name}: ${(err as Error).message}` }));
  } else if (msg.type === 'start' && !peer) {
    start(msg.multiaddrs, msg.token, msg.backend).catch((err) => post({ state: 'error', message: `${(err as Error).name}: ${(err as Error).message}` }));
  } else if (msg.type === 'stop') {
    void (async () => {
      await peer?.stop(msg.reason ?? 'stopped by the volunteer').catch(() => {});
      await stopLibp2p?.().catch(() => {});
      peer = undefined;
      post({ state: 'stopped', message: msg.reason ?? 'stopped' });
    })();
  }
};
