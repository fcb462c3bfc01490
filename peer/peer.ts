/**
 * The peer runtime, shared by Node nodes and browser workers: joins a run with its token (join.ts), fetches
 * and verifies the data, syncs the current state, then hands every round to its PeerMode — data-parallel
 * (data-parallel-mode.ts) or one pipeline stage (pipeline/stage-mode.ts). It keeps the heartbeat, routes the
 * coordinator's gossip, runs rounds and state fetches one at a time, and reconnects and resyncs when the
 * coordinator goes away and comes back. stop() undoes start().
 */
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';
import { peerIdFromString } from '@libp2p/peer-id';
import { samplePackedBatch, type BatchSpec, type PackedSequences } from '../engine/data/batches.ts';
import { mixSeed } from '../engine/rng.ts';
import { averagingFactory } from '../net/averaging/allreduce.ts';
import { deadline } from '../net/deadline.ts';
import { sleep } from '../net/sleep.ts';
import { fetchState } from '../net/state-sync.ts';
import type { Clock, GossipMessage, Libp2pLike, Logger, PubSubLike } from '../net/types.ts';
import { decodeMessage, encodeMessage, envelope, TOPIC_CONTROL, TOPIC_PEERS, type Message } from '../protocol/index.ts';
import type { RunConfig } from '../run/config.ts';
import { DataParallelMode, type PeerProgress } from './data-parallel-mode.ts';
import { fetchTrainingData, joinRun, JoinRefusedError, type Welcomed } from './join.ts';
import type { PeerMode, PeerModeContext } from './peer-mode.ts';
import { StageMode, type StageProgress } from './pipeline/stage-mode.ts';
import type { PeerReplica } from './replica.ts';

export { JoinRefusedError } from './join.ts';
export type { PeerProgress } from './data-parallel-mode.ts';
export type { PeerReplica } from './replica.ts';
export type { PubSubLike } from '../net/types.ts';

/** How often a peer tells the coordinator it is alive (and how fast it trains). */
export const HEARTBEAT_MS = 2_000;
/** How long joining (dial, handshake, data, state) may take. */
const JOIN_TIMEOUT_MS = 30_000;
/** How long a resync's state fetch may take. */
const RESYNC_TIMEOUT_MS = 120_000;
/** Pause between attempts to reach a coordinator that went away. */
const RECONNECT_PAUSE_MS = 1_000;
/** Addresses a heartbeat carries at most. */
const MAX_HEARTBEAT_ADDRS = 16;

export interface PeerOptions {
  libp2p: Libp2pLike & { dial(addr: Multiaddr | Multiaddr[], o?: { signal?: AbortSignal }): Promise<unknown> };
  pubsub: PubSubLike;
  coordinatorAddrs: Multiaddr[];
  token: string;
  kind: 'node' | 'browser';
  backend: string;
  makeReplica(config: RunConfig): Promise<PeerReplica>;
  log: Logger;
  clock: Clock;
  onProgress?: (p: PeerProgress) => void;
  /** Pipeline runs: progress of this peer's stage each round. */
  onStageProgress?: (p: StageProgress) => void;
  /** Memory this peer offers for the model (MiB): the pipeline planner gives it a stage that fits. */
  memoryMB?: number;
}

export class PeerRuntime {
  private run?: Welcomed;
  private mode?: PeerMode;
  private train?: PackedSequences;
  private resyncQueued = false;
  private readonly admitted = new Set<string>();
  private queue: Promise<void> = Promise.resolve();
  private readonly stopping = new AbortController();
  private heartbeat?: ReturnType<typeof setInterval>;
  private connected = false;
  private reconnecting?: Promise<void>;
  roundsContributed = 0;
  /** Tokens this peer computed in the rounds it contributed to. */
  tokensContributed = 0;
  private readonly onGossipEvent = (evt: CustomEvent<GossipMessage>) => this.onGossip(evt.detail);
  private readonly onDisconnect = (evt: Event) => {
    if ((evt as CustomEvent).detail.toString() === this.run?.coordinator) this.onCoordinatorLost();
  };

  constructor(private readonly o: PeerOptions) {}

  /** This peer's measured training speed (whole-model tokens/s), as it reports it in heartbeats. */
  get speed(): number {
    return this.mode?.speed ?? 0;
  }

  /** The next round this peer can take part in. */
  get round(): number {
    return this.mode?.round ?? 0;
  }

  get peerId(): string {
    return this.o.libp2p.peerId.toString();
  }

  async start(): Promise<void> {
    await this.join();
    this.o.pubsub.subscribe(TOPIC_CONTROL);
    this.o.pubsub.subscribe(TOPIC_PEERS);
    this.o.pubsub.addEventListener('message', this.onGossipEvent);
    this.o.libp2p.addEventListener('peer:disconnect', this.onDisconnect);
    this.heartbeat = setInterval(() => void this.sendHeartbeat(), HEARTBEAT_MS);
    void this.sendHeartbeat();
  }

  async stop(reason = 'stopping'): Promise<void> {
    this.stopping.abort(new Error(reason));
    this.mode?.reset(reason);
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.o.pubsub.removeEventListener('message', this.onGossipEvent);
    this.o.libp2p.removeEventListener('peer:disconnect', this.onDisconnect);
    if (this.run && this.connected) await this.publish({ ...this.envelope(), type: 'leave', reason });
    await this.queue.catch(() => {});
    await this.reconnecting?.catch(() => {});
    await this.mode?.stop();
  }

  private envelope() {
    const r = this.run!;
    return envelope({ runId: r.runId, configHash: r.configHash, sender: this.peerId }, this.o.clock.now());
  }

  // ---------------------------------------------------------------- joining

  private async join(): Promise<void> {
    const limit = deadline(JOIN_TIMEOUT_MS, this.stopping.signal);
    try {
      const w = await joinRun(this.o.libp2p, this.o.coordinatorAddrs, { token: this.o.token, kind: this.o.kind, backend: this.o.backend, tokensPerSec: this.speed, memoryMB: this.o.memoryMB }, limit.signal);
      const before = this.run;
      if (before && (w.configHash !== before.configHash || w.runId !== before.runId)) throw new JoinRefusedError('the coordinator now runs a different run or config');
      // Whatever was in flight belongs to the coordinator's previous session.
      this.mode?.reset('rejoined');
      const shardsChanged = !before || before.shards.join() !== w.shards.join();
      this.run = w;
      this.admitted.add(w.coordinator);
      this.connected = true;
      if (!this.mode) {
        this.mode = await this.makeMode(w);
        await this.mode.start();
      }
      if (shardsChanged) this.train = await fetchTrainingData(this.o.libp2p, w, limit.signal, this.o.log);
      await this.sync(limit.signal);
      this.o.log.info(`joined run ${w.runId} (slot ${w.slot}) at round ${this.round}`);
    } finally {
      limit.clear();
    }
  }

  private async makeMode(w: Welcomed): Promise<PeerMode> {
    const ctx: PeerModeContext = {
      libp2p: this.o.libp2p as PeerModeContext['libp2p'],
      config: w.config,
      runId: w.runId,
      configHash: w.configHash,
      me: this.peerId,
      log: this.o.log,
      clock: this.o.clock,
      coordinator: () => this.run!.coordinator,
      isAdmitted: (p) => this.admitted.has(p),
      envelope: () => this.envelope(),
      publish: (m) => this.publish(m),
      enqueue: (task) => this.enqueue(task),
      requestSync: (why) => this.requestSync(why),
      rejoin: (why) => this.rejoin(why),
      batchAt: (round, inner, k) => samplePackedBatch(this.train!, this.batchSpec(), mixSeed(this.run!.config.train.seed, round, this.run!.slot, inner, k)),
      averaging: (size, round, protocol) =>
        averagingFactory({
          libp2p: this.o.libp2p,
          runId: w.runId,
          configHash: w.configHash,
          isAdmitted: (p) => this.admitted.has(p),
          currentRound: round,
          maxPartNorm: w.config.maxPartNorm,
          onReject: (reason, from, detail) => this.o.log.debug(`rejected ${reason} from ${from.slice(-8)}: ${detail}`),
          log: this.o.log,
        })(size, protocol),
      stopping: this.stopping.signal,
      contributed: (tokens) => {
        this.roundsContributed++;
        this.tokensContributed += tokens;
      },
    };
    if (w.config.pipeline) return new StageMode(ctx, this.o.onStageProgress);
    return new DataParallelMode(ctx, await this.o.makeReplica(w.config), this.o.onProgress);
  }

  private batchSpec(): BatchSpec {
    const c = this.run!.config;
    return { B: c.train.microBatchSize, T: c.train.seqLen, objective: c.model.objective, maskProb: c.train.maskProb, maskId: c.data.maskId, eosId: c.data.eosId, vocabSize: c.model.vocabSize };
  }

  /** Fetches the coordinator's state (between its rounds) and hands it to the mode. */
  private async sync(signal: AbortSignal): Promise<void> {
    const r = this.run!;
    const s = await fetchState(this.o.libp2p, { runId: r.runId, configHash: r.configHash }, r.coordinator, signal);
    await this.mode!.adopt(s);
  }

  private async rejoin(why: string): Promise<void> {
    await this.publish({ ...this.envelope(), type: 'leave', reason: why });
    await this.join();
  }

  private onCoordinatorLost(): void {
    if (this.stopping.signal.aborted || this.reconnecting) return;
    this.connected = false;
    this.mode?.reset('coordinator disconnected');
    this.o.log.warn('lost the coordinator; reconnecting');
    this.reconnecting = (async () => {
      while (!this.stopping.signal.aborted) {
        try {
          await this.join();
          return;
        } catch (err) {
          this.o.log.debug(`reconnect failed: ${(err as Error).message}`);
          await sleep(RECONNECT_PAUSE_MS, this.stopping.signal);
        }
      }
    })().finally(() => (this.reconnecting = undefined));
  }

  // ---------------------------------------------------------------- gossip

  private async publish(msg: Message): Promise<void> {
    try {
      await this.o.pubsub.publish(TOPIC_PEERS, encodeMessage(msg));
    } catch (err) {
      this.o.log.debug(`publish failed: ${(err as Error).message}`);
    }
  }

  private async sendHeartbeat(): Promise<void> {
    const r = this.run;
    if (!r || !this.connected) return;
    const step = r.config.mode === 'sync' ? this.round : this.round * r.config.innerSteps;
    const addrs = this.o.libp2p
      .getMultiaddrs()
      .map((a) => a.toString().replace(/\/p2p\/[^/]+$/, ''))
      .slice(0, MAX_HEARTBEAT_ADDRS);
    await this.publish({ ...this.envelope(), type: 'heartbeat', round: this.round, step, tokensPerSec: this.speed, kind: this.o.kind, backend: this.o.backend, addrs });
  }

  private onGossip(evt: GossipMessage): void {
    const r = this.run;
    if (!r) return;
    const from = evt.from?.toString() ?? '';
    if (evt.topic === TOPIC_PEERS) return this.onPeerGossip(evt.data, from);
    if (evt.topic !== TOPIC_CONTROL) return;
    const d = decodeMessage(evt.data, { runId: r.runId, configHash: r.configHash, from, isAdmitted: (p) => p === r.coordinator });
    if (!d.ok) return this.o.log.debug(`rejected control message (${d.reason}): ${d.detail}`);
    const msg = d.msg;
    if (msg.type === 'resync') {
      if (msg.target === this.peerId) this.requestSync(`the coordinator asks us to: ${msg.reason}`);
      return;
    }
    // The participants of an announced round may send us parts.
    if ((msg.type === 'round' || msg.type === 'pipe-round') && msg.round >= this.round) for (const p of msg.participants) this.admitted.add(p);
    this.mode?.onControl(msg);
  }

  /** Heartbeats of other peers tell us where to reach them for averaging. */
  private onPeerGossip(data: Uint8Array, from: string): void {
    const r = this.run!;
    const d = decodeMessage(data, { runId: r.runId, configHash: r.configHash, from });
    if (!d.ok || d.msg.type !== 'heartbeat' || from === this.peerId) return;
    const addrs: Multiaddr[] = [];
    for (const a of d.msg.addrs) {
      try {
        addrs.push(multiaddr(a));
      } catch {
        // an address we cannot parse is simply not used
      }
    }
    if (addrs.length) void this.o.libp2p.peerStore.merge(peerIdFromString(from), { multiaddrs: addrs }).catch(() => {});
  }

  /** Fetches the state again; requests while one is queued or running add nothing (announcements repeat). */
  private requestSync(why: string): void {
    if (this.resyncQueued) return;
    this.resyncQueued = true;
    this.o.log.warn(`resyncing: ${why}`);
    this.enqueue(async () => {
      const limit = deadline(RESYNC_TIMEOUT_MS, this.stopping.signal);
      try {
        await this.sync(limit.signal);
      } finally {
        limit.clear();
        this.resyncQueued = false;
      }
    });
  }

  private enqueue(task: () => Promise<void>): void {
    this.queue = this.queue.then(task).catch((err) => {
      if (!this.stopping.signal.aborted) this.o.log.warn(`${(err as Error).name}: ${(err as Error).message}`);
    });
  }
}
