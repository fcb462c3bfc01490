/**
 * In-process integration harness of the round protocol: a coordinator and N peers in one process, each with its
 * own real libp2p node on 127.0.0.1 (TCP, noise, yamux, gossipsub: the production factory), the production
 * Coordinator and PeerRuntime, and an in-thread Trainer per peer (trainerReplica). Faults are injected only by
 * wrapping what the parts are given — a peer's libp2p (its streams' frames), its pubsub (its gossip) and its
 * replica (its computation) — never by hooks in production code.
 *
 *   const data = await prepareTinyData(dir);
 *   const c = await Cluster.start({ data, config: tinyRunConfig(data), peers: 3, maxRounds: 4 });
 *   await c.waitFor('4 rounds', () => c.coordinator.round >= 4);
 *   await c.stop();
 *
 * Two shortcuts, each saving a case a second of waiting that no fault needs: every peer is told the others'
 * addresses when it starts (it would learn them from their first heartbeats), and the first peers hear the
 * session's first announcement (PeerRuntime listens for gossip only after its join and state sync, when the
 * coordinator already counts it ready: the first announcement would reach it only when re-announced, a
 * second later; see gatedCoordinatorNode). Both paths are covered end to end by tests/e2e.
 *
 * Every case's log (coordinator and peers, debug included) is kept in memory and its tail printed when a wait
 * times out; IT_SHOW=1 prints each case's whole log, PEERTRAIN_DEBUG=1 prints lines as they come.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Connection, Stream } from '@libp2p/interface';
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';
import * as tf from '@tensorflow/tfjs-core';
import { DEFAULT_TRAIN, modelConfigFromPreset, validateTrainConfig, type ModelConfig } from '../../engine/config.ts';
import { hashFloats } from '../../engine/averaging.ts';
import { DEFAULT_CLEAN } from '../../engine/data/clean.ts';
import { samplePackedBatch } from '../../engine/data/batches.ts';
import { StageTrainer } from '../../engine/stage-trainer.ts';
import type { Batch } from '../../engine/trainer.ts';
import { Coordinator } from '../../coordinator/coordinator.ts';
import { loadOrCreateKey, paths, type RunInfo } from '../../coordinator/run-dir.ts';
import { RunStore } from '../../coordinator/run-store.ts';
import { loadCheckpoint } from '../../node/checkpoint-io.ts';
import { prepareDataset } from '../../node/data/prepare.ts';
import { openShardDataset, type ShardDataset } from '../../node/data/shard-dataset.ts';
import { createPeertrainLibp2p, type PeertrainLibp2p } from '../../node/p2p/create-libp2p.ts';
import { PeerRuntime, type PeerOptions, type PeerProgress, type PeerReplica, type PubSubLike } from '../../peer/peer.ts';
import { trainerReplica } from '../../peer/trainer-replica.ts';
import { decodeMessage, TOPIC_CONTROL, type Message } from '../../protocol/index.ts';
import { RUN_DEFAULTS } from '../../run/defaults.ts';
import { configHash, validateRunConfig, type PipelineConfig, type RunConfig } from '../../run/config.ts';
import { systemClock, type Logger } from '../../net/types.ts';

/** A pipeline stage peer's report of a round (the type PeerRuntime's onStageProgress receives). */
export type StageProgress = Parameters<NonNullable<PeerOptions['onStageProgress']>>[0];

// ---------------------------------------------------------------- data and config

/** A few KB of deterministic text: 80 short documents over a small vocabulary (the char tokenizer sees ~30 symbols). */
function tinyCorpus(): string[] {
  const words = ['the', 'jury', 'said', 'a', 'peer', 'round', 'of', 'model', 'trains', 'with', 'strangers', 'and', 'every', 'gradient', 'is', 'averaged', 'over', 'streams', 'in', 'time'];
  let s = 12345;
  const next = () => ((s = (s * 1103515245 + 12345) >>> 0) >>> 8) % words.length;
  return Array.from({ length: 80 }, (_, d) => {
    const n = 12 + (d % 7);
    const text = Array.from({ length: n }, next).map((i) => words[i]).join(' ');
    return `${text[0].toUpperCase()}${text.slice(1)} (${d}).`;
  });
}

/** Prepares the tiny corpus (char tokenizer, sequences of 17 tokens, small shards) into `dir` and opens it. */
export async function prepareTinyData(dir: string): Promise<ShardDataset> {
  const docs = tinyCorpus();
  const out = join(dir, 'data');
  await prepareDataset(
    {
      name: 'tiny-corpus',
      totalBytes: docs.reduce((a, d) => a + d.length, 0),
      async *documents() {
        for (const [i, text] of docs.entries()) yield { text, source: `doc${i}` };
      },
    },
    out,
    { tokenizer: 'char', sequenceLength: 17, valFraction: 0.1, shardTokens: 1024, clean: DEFAULT_CLEAN },
  );
  return openShardDataset(out);
}

export interface TinyRunOptions {
  mode?: 'sync' | 'diloco';
  /** Sequences per round over all peers (micro-batches of one sequence each). */
  batchSize?: number;
  roundTimeoutSec?: number;
  pipeline?: PipelineConfig;
  model?: Partial<ModelConfig>;
  checkpointEvery?: number;
}

/** A run config whose rounds take a few tens of milliseconds on a CPU backend (1 layer × 16 wide, 16 tokens). */
export function tinyRunConfig(data: ShardDataset, o: TinyRunOptions = {}): RunConfig {
  const model = modelConfigFromPreset('tiny', data.tokenizer.vocabSize, { nLayer: 1, nHead: 2, nEmbd: 16, blockSize: 16, ...o.model });
  const train = validateTrainConfig({ ...DEFAULT_TRAIN, batchSize: o.batchSize ?? 6, microBatchSize: 1, seqLen: 16, lr: 3e-3, warmupSteps: 2, totalSteps: 100 }, model);
  return validateRunConfig({
    model,
    train,
    mode: o.mode ?? 'sync',
    innerSteps: 2,
    outer: RUN_DEFAULTS.outer,
    roundTimeoutSec: o.roundTimeoutSec ?? 2,
    maxPartNorm: RUN_DEFAULTS.maxPartNorm,
    // No evaluation and no periodic checkpoint inside the round loop (each costs a round a write and an fsync):
    // a restart resumes from the checkpoint the stopped coordinator writes.
    evalEvery: 1_000_000,
    checkpointEvery: o.checkpointEvery ?? 1_000_000,
    data: data.manifest,
    ...(o.pipeline ? { pipeline: o.pipeline } : {}),
  });
}

// ---------------------------------------------------------------- logs, waiting, holds

export class LogBook {
  readonly lines: string[] = [];
  logger(tag: string): Logger {
    const put = (level: string) => (m: string) => {
      this.lines.push(`${(performance.now() / 1000).toFixed(2)} ${tag} ${level}${m}`);
      if (process.env.PEERTRAIN_DEBUG) console.error(this.lines.at(-1));
    };
    return { info: put(''), warn: put('warning: '), debug: put('debug: ') };
  }
  tail(n = 60): string {
    return this.lines.slice(-n).join('\n');
  }
  grep(re: RegExp): string[] {
    return this.lines.filter((l) => re.test(l));
  }
}

/** Thrown when a bounded wait runs out; the message carries the cluster's state and the log's tail. */
export class WaitTimeoutError extends Error {
  override name = 'WaitTimeoutError' as const;
}

/** Polls `cond` every 20 ms until it holds (returns its value) or `ms` pass (throws, with `context()`). */
export async function waitFor<T>(what: string, cond: () => T | undefined | false | Promise<T | undefined | false>, ms: number, context: () => string = () => ''): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() - start > ms) throw new WaitTimeoutError(`timed out after ${ms} ms waiting for ${what}\n${context()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Promises that never settle until released (a stalled computation or write); released at teardown. */
export class Holds {
  private readonly pending = new Set<(err: Error) => void>();
  count = 0;
  hold<T = never>(): Promise<T> {
    this.count++;
    return new Promise<T>((_, reject) => this.pending.add(reject));
  }
  releaseAll(): void {
    for (const r of this.pending) r(new Error('hold released at teardown'));
    this.pending.clear();
  }
}

// ---------------------------------------------------------------- fault injection (wrappers)

export interface FrameInfo {
  /** The stream's protocol. */
  protocol: string;
  /** The peer at the other end. */
  remote: string;
  /** Whether we dialled the stream (false: we answer on a stream the remote opened). */
  outbound: boolean;
  /** The frame, decoded without validation (undefined when it is not one message). */
  msg?: Message;
  /** Frames written on this stream before this one. */
  index: number;
  /** Resolves once this stream's close() has returned (its frames are out). */
  closed: Promise<void>;
}

/**
 * pass: send it; hold: never send it (the write blocks until the stream ends); kill: the peer dies instead;
 * a promise: send it once the promise settles (the write blocks until then).
 */
export type FrameVerdict = 'pass' | 'hold' | 'kill' | Promise<unknown>;
export type PublishVerdict = 'pass' | 'drop' | 'hold' | 'kill';

export interface PeerFaults {
  /**
   * Each replica gradients() (sync) or step() (DiLoCo) call: 'hold' stalls it, 'kill' kills the peer in it, a
   * promise delays it until the promise settles.
   */
  compute?: (round: number) => 'pass' | 'hold' | 'kill' | Promise<unknown>;
  /** Each replica apply() call (sync): a promise delays it until the promise settles. */
  apply?: (round: number) => 'pass' | Promise<unknown>;
  /** Each frame this peer writes on a stream. */
  frame?: (f: FrameInfo) => FrameVerdict;
  /** Each gossip message this peer publishes. */
  publish?: (msg: Message, topic: string) => PublishVerdict;
}

function frameMessage(data: unknown): Message | undefined {
  const bytes: Uint8Array | undefined = data instanceof Uint8Array ? data : typeof (data as { subarray?: unknown })?.subarray === 'function' ? (data as { subarray(): Uint8Array }).subarray() : undefined;
  if (!bytes) return undefined;
  // Strip the varint length prefix of the length-prefixed frame.
  let i = 0;
  while (i < bytes.length && bytes[i] & 0x80) i++;
  const r = decodeMessage(bytes.subarray(i + 1), {});
  return r.ok ? r.msg : undefined;
}

function wrapStream(stream: Stream, protocol: string, remote: string, outbound: boolean, peer: TestPeer): Stream {
  let index = 0;
  let closed!: () => void;
  const closedP = new Promise<void>((r) => (closed = r));
  return new Proxy(stream, {
    get(target, prop) {
      if (prop === 'send') {
        return (data: Parameters<Stream['send']>[0]) => {
          const msg = frameMessage(data);
          if (msg) peer.sent.set(msg.type, (peer.sent.get(msg.type) ?? 0) + 1);
          const verdict = peer.faults.frame?.({ protocol, remote, outbound, msg, index: index++, closed: closedP }) ?? 'pass';
          if (verdict === 'pass') return target.send(data);
          if (typeof verdict !== 'string') {
            // Back-pressure until the promise settles, then the frame goes and the waiting write is released.
            void verdict.finally(() => {
              if (target.status !== 'open') return;
              target.send(data);
              target.dispatchEvent(new Event('drain'));
            });
            return false;
          }
          // Killed just after this write starts waiting for a drain that never comes (the stream's close ends it).
          if (verdict === 'kill') setTimeout(() => void peer.kill(), 0);
          peer.held++;
          return false; // back-pressure that never drains: the write waits until the stream ends
        };
      }
      if (prop === 'close') {
        return async (...args: Parameters<Stream['close']>) => {
          try {
            return await target.close(...args);
          } finally {
            closed();
          }
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

/** The peer's view of its libp2p node: every stream it dials or answers passes its frames through `faults.frame`. */
function faultyLibp2p(node: PeertrainLibp2p, peer: TestPeer): PeertrainLibp2p {
  const dialProtocol = async (to: unknown, protocol: string | string[], o?: unknown) => {
    const stream = await node.dialProtocol(to as never, protocol, o as never);
    return wrapStream(stream, stream.protocol ?? String(protocol), String(to), true, peer);
  };
  const handle = (protocol: string | string[], handler: (s: Stream, c: Connection) => void | Promise<void>, o?: unknown) =>
    node.handle(protocol, (s: Stream, c: Connection) => handler(wrapStream(s, s.protocol ?? String(protocol), c.remotePeer.toString(), false, peer), c), o as never);
  return new Proxy(node, {
    get(target, prop) {
      if (prop === 'dialProtocol') return dialProtocol;
      if (prop === 'handle') return handle;
      return bound(target, prop);
    },
  });
}

function faultyPubsub(pubsub: PubSubLike, peer: TestPeer): PubSubLike {
  const publish = async (topic: string, data: Uint8Array) => {
    const r = decodeMessage(data, {});
    const verdict = r.ok ? (peer.faults.publish?.(r.msg, topic) ?? 'pass') : 'pass';
    if (verdict === 'pass') return pubsub.publish(topic, data);
    if (verdict === 'drop') return undefined;
    if (verdict === 'kill') await peer.kill();
    return peer.holds.hold();
  };
  return new Proxy(pubsub, {
    get(target, prop) {
      if (prop === 'publish') return publish;
      const v = Reflect.get(target, prop, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

function faultyReplica(replica: PeerReplica, peer: TestPeer): PeerReplica {
  const gate = async () => {
    const verdict = peer.faults.compute?.(peer.runtime.round) ?? 'pass';
    if (verdict === 'pass') return;
    if (typeof verdict !== 'string') return void (await verdict);
    if (verdict === 'kill') await peer.kill();
    await peer.holds.hold();
  };
  return {
    ...replica,
    async gradients(batches: Batch[]) {
      await gate();
      return replica.gradients(batches);
    },
    async step(batches: Batch[]) {
      await gate();
      return replica.step(batches);
    },
    async apply(grads: Float32Array) {
      const verdict = peer.faults.apply?.(peer.runtime.round) ?? 'pass';
      if (verdict !== 'pass') await verdict;
      return replica.apply(grads);
    },
  };
}

/**
 * The coordinator's libp2p node, its gossip held back until `ready` resolves. The first peers count as ready
 * (synced) a moment before their PeerRuntime listens for gossip — it subscribes after its join — so a first
 * announcement sent at once would reach them only when re-announced, a second later; the cluster opens the
 * gate once every first peer has started.
 */
function gatedCoordinatorNode(node: PeertrainLibp2p, ready: Promise<void>): PeertrainLibp2p {
  const pubsub = node.services.pubsub;
  const publish = async (topic: string, data: Uint8Array) => {
    await ready;
    return pubsub.publish(topic, data);
  };
  const gatedPubsub = new Proxy(pubsub, {
    get: (target, prop) => (prop === 'publish' ? publish : bound(target, prop)),
  });
  const services = new Proxy(node.services, { get: (target, prop) => (prop === 'pubsub' ? gatedPubsub : Reflect.get(target, prop, target)) });
  return new Proxy(node, { get: (target, prop) => (prop === 'services' ? services : bound(target, prop)) });
}

function bound(target: object, prop: string | symbol): unknown {
  const v = Reflect.get(target, prop, target);
  return typeof v === 'function' ? v.bind(target) : v;
}

// ---------------------------------------------------------------- peers and the cluster

export class TestPeer {
  runtime!: PeerRuntime;
  replica?: PeerReplica;
  readonly progress: PeerProgress[] = [];
  readonly stageProgress: StageProgress[] = [];
  readonly holds = new Holds();
  /** Every message this peer received on the coordinator's control topic (decoded without validation). */
  readonly control: Message[] = [];
  /** Frames written on streams, by message type. */
  readonly sent = new Map<string, number>();
  /** Frames held by `faults.frame`. */
  held = 0;
  killed = false;
  faults: PeerFaults = {};
  private killing?: Promise<void>;

  constructor(
    readonly name: string,
    readonly node: PeertrainLibp2p,
  ) {}

  get id(): string {
    return this.node.peerId.toString();
  }

  /** The replica's parameter hash (data-parallel peers). */
  async paramHash(): Promise<string> {
    return hashFloats((await this.replica!.state()).params);
  }

  /** Dies abruptly: every connection aborted, the node stopped; no 'leave' is sent. */
  kill(): Promise<void> {
    this.killing ??= (async () => {
      this.killed = true;
      for (const c of this.node.getConnections()) c.abort(new Error(`${this.name} killed`));
      await this.node.stop();
    })();
    return this.killing;
  }
}

export interface ClusterOptions {
  data: ShardDataset;
  config: RunConfig;
  /** Peers started with the cluster (the first round waits for all of them). */
  peers: number;
  maxRounds?: number;
}

export class Cluster {
  readonly log = new LogBook();
  readonly peers: TestPeer[] = [];
  coordinator!: Coordinator;
  coordinatorNode!: PeertrainLibp2p;
  store!: RunStore;
  info!: RunInfo;
  hash = '';
  /** The coordinator's listen addresses with its peer id (what peers dial). */
  addrs: Multiaddr[] = [];
  readonly coordinators: Coordinator[] = [];
  private bound: string[] = ['/ip4/127.0.0.1/tcp/0'];
  private gossipGate: Promise<void> = Promise.resolve();
  private stopped = false;

  private constructor(
    readonly o: ClusterOptions,
    readonly runDir: string,
  ) {}

  static async start(o: ClusterOptions, runDir: string): Promise<Cluster> {
    mkdirSync(runDir, { recursive: true });
    const c = new Cluster(o, runDir);
    let open!: () => void;
    c.gossipGate = new Promise<void>((r) => (open = r));
    c.hash = await configHash(o.config);
    c.info = { runId: `it-${Math.random().toString(16).slice(2, 10)}`, token: 'integration-token', config: o.config, dataDir: o.data.dir, listen: [], httpPort: 0, createdAt: new Date().toISOString() };
    try {
      await c.startCoordinator(o.peers);
      await c.addPeers(Array.from({ length: o.peers }, () => undefined));
      open();
    } catch (err) {
      open();
      await c.stop();
      throw err;
    }
    return c;
  }

  /** Starts a coordinator (the first, or a restart on the same run dir, peer id and port). */
  private async startCoordinator(minPeers: number): Promise<void> {
    const log = this.log.logger(`coord#${this.coordinators.length}`);
    const privateKey = await loadOrCreateKey(this.runDir);
    this.coordinatorNode = await createPeertrainLibp2p({ listen: this.bound, privateKey });
    this.bound = this.coordinatorNode.getMultiaddrs().map((a) => a.decapsulateCode(421).toString());
    this.addrs = this.coordinatorNode.getMultiaddrs();
    this.store = new RunStore(paths(this.runDir).db);
    this.coordinator = new Coordinator({
      libp2p: gatedCoordinatorNode(this.coordinatorNode, this.gossipGate),
      store: this.store,
      info: this.info,
      configHash: this.hash,
      data: this.o.data,
      runDir: this.runDir,
      log,
      clock: systemClock,
      maxRounds: this.o.maxRounds,
      minPeers,
    });
    this.coordinators.push(this.coordinator);
    this.coordinator.emitter.addEventListener('round:done', (e) => log.info(`round:done ${(e as CustomEvent<{ round: number }>).detail.round}`));
    await this.coordinator.start();
  }

  /** New peers, each with its own libp2p node, joined to the run (resolves once they have synced). */
  async addPeers(faults: Array<PeerFaults | undefined>): Promise<TestPeer[]> {
    const names = faults.map((_, i) => `peer${this.peers.length + i}`);
    const nodes = await Promise.all(faults.map(() => createPeertrainLibp2p({ listen: ['/ip4/127.0.0.1/tcp/0'] })));
    const fresh = nodes.map((node, i) => {
      const peer = new TestPeer(names[i], node);
      peer.faults = faults[i] ?? {};
      return peer;
    });
    const known = this.live();
    this.peers.push(...fresh);
    for (const peer of fresh) {
      peer.node.services.pubsub.addEventListener('message', (evt) => {
        if (evt.detail.topic !== TOPIC_CONTROL) return;
        const r = decodeMessage(evt.detail.data, {});
        if (r.ok) peer.control.push(r.msg);
      });
    }
    for (const peer of fresh) {
      for (const other of [...known, ...fresh].filter((p) => p !== peer)) {
        await peer.node.peerStore.merge(other.node.peerId, { multiaddrs: other.node.getMultiaddrs() });
        if (known.includes(other)) await other.node.peerStore.merge(peer.node.peerId, { multiaddrs: peer.node.getMultiaddrs() });
      }
    }
    await Promise.all(fresh.map((p) => this.startPeer(p)));
    return fresh;
  }

  async addPeer(faults: PeerFaults = {}): Promise<TestPeer> {
    return (await this.addPeers([faults]))[0];
  }

  private async startPeer(peer: TestPeer): Promise<void> {
    const node = peer.node;
    const libp2p = faultyLibp2p(node, peer);
    peer.runtime = new PeerRuntime({
      libp2p,
      pubsub: faultyPubsub(node.services.pubsub as unknown as PubSubLike, peer),
      coordinatorAddrs: this.addrs.map((a) => multiaddr(a.toString())),
      token: this.info.token,
      kind: 'node',
      backend: tf.getBackend(),
      makeReplica: async (config) => (peer.replica = faultyReplica(trainerReplica(config), peer)),
      log: this.log.logger(peer.name),
      clock: systemClock,
      onProgress: (p) => peer.progress.push(p),
      onStageProgress: (p) => peer.stageProgress.push(p),
    });
    // Subscribed from the start, so the coordinator knows it listens when it sends the first announcement.
    node.services.pubsub.subscribe(TOPIC_CONTROL);
    await peer.runtime.start();
  }

  /**
   * Stops the coordinator (it writes its checkpoint), its libp2p node and its store, then starts a new Coordinator
   * on the same run dir with a libp2p node of the same peer id and port, whose first round waits for `minPeers`
   * ready peers. Peers reconnect by themselves.
   */
  async restartCoordinator(o: { minPeers?: number } = {}): Promise<void> {
    await this.coordinator.stop({ checkpoint: true });
    for (const c of this.coordinatorNode.getConnections()) c.abort(new Error('coordinator restarting'));
    await this.coordinatorNode.stop();
    this.store.close();
    await this.startCoordinator(o.minPeers ?? 1);
  }

  live(): TestPeer[] {
    return this.peers.filter((p) => !p.killed);
  }

  /** A one-paragraph summary of where everything stands (for wait timeouts and failed assertions). */
  describe(): string {
    const c = this.coordinator;
    const members = c
      .status()
      .peers.map((m) => `${this.nameOf(m.id)}${m.synced ? '' : '(unsynced)'}`)
      .join(' ');
    const peers = this.peers.map((p) => `${p.name}${p.killed ? '†' : ''}@${p.runtime.round}`).join(' ');
    return `coordinator round ${c.round}; members ${members}; peers ${peers}\n--- log tail ---\n${this.log.tail()}`;
  }

  nameOf(id: string): string {
    return this.peers.find((p) => p.id === id)?.name ?? (id === this.coordinatorNode.peerId.toString() ? 'coordinator' : id.slice(-6));
  }

  waitFor<T>(what: string, cond: () => T | undefined | false | Promise<T | undefined | false>, ms = 10_000): Promise<T> {
    return waitFor(what, cond, ms, () => this.describe());
  }

  /** Waits for the coordinator to pass `round` rounds, and the given peers to have taken them too. */
  async waitRounds(round: number, peers: TestPeer[] = this.live(), ms = 10_000): Promise<void> {
    await this.waitFor(`round ${round} at the coordinator and ${peers.map((p) => p.name).join(', ')}`, () => this.coordinator.round >= round && peers.every((p) => p.runtime.round >= round), ms);
  }

  /** The coordinator's global parameters as its checkpoint holds them (either mode), and their hash. */
  async coordinatorParams(): Promise<{ round: number; hash: string; params: Float32Array }> {
    await this.coordinator.checkpoint();
    const c = loadCheckpoint(paths(this.runDir).checkpoint);
    return { round: Number(c.dataPosition.round), hash: hashFloats(c.params), params: c.params };
  }

  /** Tears everything down: holds released, peers stopped, coordinator stopped, libp2p nodes stopped, store closed. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const p of this.peers) p.holds.releaseAll();
    const errors: string[] = [];
    const noted = (what: string) => (err: unknown) => void errors.push(`${what}: ${(err as Error)?.stack ?? err}`);
    await Promise.all(this.peers.map((p) => p.runtime?.stop('test over').catch(noted(`${p.name}.stop()`))));
    await this.coordinator?.stop({ checkpoint: false }).catch(noted('coordinator.stop()'));
    // Everything is stopped above: the connections are dropped rather than closed politely (which waits ~0.5 s).
    for (const node of [...this.peers.map((p) => p.node), this.coordinatorNode]) for (const conn of node?.getConnections() ?? []) conn.abort(new Error('test over'));
    await Promise.all([...this.peers.map((p) => Promise.resolve(p.node.stop()).catch(noted(`${p.name} libp2p stop`))), Promise.resolve(this.coordinatorNode?.stop()).catch(noted('coordinator libp2p stop'))]);
    try {
      this.store?.close();
    } catch {
      // closed already (a restart closes the old store)
    }
    rmSync(this.runDir, { recursive: true, force: true });
    this.teardownErrors = errors;
  }

  /** What failed while tearing down (stop() never throws; withCluster reports these). */
  teardownErrors: string[] = [];
}

/** Runs `body` with a cluster and tears it down afterwards; asserts no TF.js tensor outlived the case. */
export async function withCluster(o: ClusterOptions, runDir: string, body: (c: Cluster) => Promise<void>): Promise<void> {
  const before = tf.memory().numTensors;
  const c = await Cluster.start(o, runDir);
  let failure: unknown;
  try {
    await body(c);
  } catch (err) {
    failure = err;
    // Where everything stood when the case failed (a wait's timeout already says so).
    if (err instanceof Error && !(err instanceof WaitTimeoutError)) {
      try {
        err.message += `\n${c.describe()}`;
      } catch {
        failure = new Error(`${err.name}: ${err.message}\n${c.describe()}`, { cause: err });
      }
    }
  } finally {
    await c.stop();
    if (process.env.IT_SHOW) console.log(c.log.lines.join('\n'));
  }
  if (failure) throw failure;
  if (c.teardownErrors.length) throw new Error(`teardown failed:\n${c.teardownErrors.join('\n')}`);
  const after = tf.memory().numTensors;
  if (after !== before) throw new Error(`TF.js tensors leaked: ${before} before the case, ${after} after everything stopped`);
}

/**
 * Compiles the kernels of the tiny model once (the whole model, and each stage of a pipeline run), so no case's
 * first round pays for it: rounds have deadlines of a second or two.
 */
export async function warmUp(data: ShardDataset, config: RunConfig): Promise<void> {
  const spec = { B: config.train.microBatchSize, T: config.train.seqLen, objective: config.model.objective };
  const batch = (i: number) => samplePackedBatch(data.train, spec, i);
  const replica = trainerReplica(config);
  for (let i = 0; i < 3; i++) {
    const g = await replica.gradients([batch(i), batch(i + 7)]);
    await replica.apply(g.grads);
  }
  await replica.stop();
  if (!config.pipeline) return;
  const parts = config.model.nLayer + 2;
  const cut = Math.ceil(parts / 2);
  const first = new StageTrainer(config.model, config.train, { from: 0, to: cut });
  const last = new StageTrainer(config.model, config.train, { from: cut, to: parts });
  try {
    for (let i = 0; i < 3; i++) {
      const b = batch(i);
      const x = { B: b.B, T: b.T, ids: b.ids };
      const activations = await first.forward(x);
      const back = await last.lastStage({ B: b.B, T: b.T, activations }, { targets: b.targets, weights: b.weights ?? new Float32Array(0) });
      await first.backward(x, back.gradInput!);
      for (const t of [first, last]) t.apply((await t.takeGradients()).values, 1);
    }
  } finally {
    first.dispose();
    last.dispose();
  }
}
