/**
 * The peer runtime, shared by Node nodes and (later) browser workers: joins a run with its token, fetches and
 * verifies the data, syncs the current state, then takes part in every round it is announced in —
 * computing gradients (sync) or H local steps (DiLoCo) on batches derived from the run seed, round and its
 * slot, averaging them with the other participants over direct streams, and applying the identical update.
 * It reconnects and resyncs when the coordinator goes away and comes back.
 */
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';
import { peerIdFromString } from '@libp2p/peer-id';
import { hashFloats } from '../engine/averaging.ts';
import { packedSequences, samplePackedBatch, type BatchSpec, type PackedSequences } from '../engine/data/batches.ts';
import { decodeShard } from '../engine/data/shards.ts';
import { OuterNesterov, pseudoGradient } from '../engine/outer-optimizer.ts';
import { mixSeed } from '../engine/rng.ts';
import type { Batch } from '../engine/trainer.ts';
import { decodeMessage, encodeMessage, JOIN_PROTOCOL, PROTOCOL_VERSION, TOPIC_CONTROL, TOPIC_PEERS, type Message, type RoundAnnounce } from '../protocol/index.ts';
import { AllReduce } from '../net/averaging/allreduce.ts';
import { fetchShard } from '../net/data-sync.ts';
import { framed } from '../net/framed.ts';
import { deadline } from '../net/deadline.ts';
import { StagePeer, type StageProgress } from './pipeline/stage-peer.ts';
import { configHash, validateRunConfig, type RunConfig } from '../run/config.ts';
import { fetchState } from '../net/state-sync.ts';
import type { Clock, Libp2pLike, Logger } from '../net/types.ts';

/** What the peer trains with: Node uses its replica workers; a browser its Web Worker. */
export interface PeerReplica {
  gradients(batches: Batch[]): Promise<{ loss: number; grads: Float32Array; samples: number }>;
  apply(grads: Float32Array): Promise<unknown>;
  /** One local optimizer step (DiLoCo's inner steps). */
  step(batches: Batch[]): Promise<{ loss: number }>;
  state(): Promise<{ step: number; params: Float32Array; m: Float32Array; v: Float32Array }>;
  setState(s: { step: number; params: Float32Array; m: Float32Array; v: Float32Array }): Promise<void>;
  stop(): Promise<void>;
}

export interface PubSubLike {
  subscribe(topic: string): void;
  publish(topic: string, data: Uint8Array): Promise<unknown>;
  addEventListener(type: 'message', listener: (evt: CustomEvent<{ topic: string; data: Uint8Array; from?: { toString(): string } }>) => void): void;
}

/** Thrown when the coordinator refuses us or its welcome is unusable. */
export class JoinRefusedError extends Error {
  override name = 'JoinRefusedError' as const;
}

export interface PeerProgress {
  round: number;
  loss: number;
  tokensPerSec: number;
  peers: number;
  /** Hash of our parameters after the round (equal on every peer of the run). */
  paramHash: string;
}

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

const HEARTBEAT_MS = 2_000;

export class PeerRuntime {
  private config?: RunConfig;
  private runId = '';
  private hash = '';
  private slot = 0;
  private shards?: string[];
  private coordinator = '';
  private replica?: PeerReplica;
  private allreduce?: AllReduce;
  /** Pipeline runs: this peer serves one stage instead of holding a replica. */
  private stagePeer?: StagePeer;
  private resyncQueued = false;
  private train?: PackedSequences;
  /** The next round this peer can take part in (its state is that of the start of this round). */
  round = 0;
  private paramHash = '';
  private admitted = new Set<string>();
  private queue: Promise<void> = Promise.resolve();
  private current?: { round: number; attempt: number; abort: AbortController };
  private contribution?: { round: number; values: Float32Array; samples: number; loss: number; global?: Float32Array };
  private outer?: OuterNesterov;
  private readonly stopping = new AbortController();
  private heartbeat?: ReturnType<typeof setInterval>;
  private tokensPerSec = 0;
  private lastRound = Date.now();
  private connected = false;
  private reconnecting?: Promise<void>;
  roundsContributed = 0;
  /** Tokens this peer computed in the rounds it contributed to. */
  tokensContributed = 0;

  constructor(private readonly o: PeerOptions) {}

  /** This peer's measured training speed (whole-model tokens/s), as it reports it in heartbeats. */
  get speed(): number {
    return this.stagePeer ? this.stagePeer.tokensPerSec : this.tokensPerSec;
  }

  get peerId(): string {
    return this.o.libp2p.peerId.toString();
  }

  async start(): Promise<void> {
    await this.join();
    this.o.pubsub.subscribe(TOPIC_CONTROL);
    this.o.pubsub.subscribe(TOPIC_PEERS);
    this.o.pubsub.addEventListener('message', (evt) => this.onGossip(evt.detail));
    this.o.libp2p.addEventListener('peer:disconnect', (evt) => {
      if ((evt as CustomEvent).detail.toString() === this.coordinator) this.onCoordinatorLost();
    });
    this.heartbeat = setInterval(() => void this.sendHeartbeat(), HEARTBEAT_MS);
    void this.sendHeartbeat();
  }

  async stop(reason = 'stopping'): Promise<void> {
    this.stopping.abort(new Error(reason));
    this.current?.abort.abort(new Error(reason));
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.config && this.connected) await this.publish({ ...this.scoped(), type: 'leave', reason });
    await this.queue.catch(() => {});
    await this.allreduce?.stop();
    await this.replica?.stop();
    await this.stagePeer?.stop();
  }

  private scoped() {
    return { v: PROTOCOL_VERSION, runId: this.runId, configHash: this.hash, sender: this.peerId, ts: this.o.clock.now() };
  }

  // ---------------------------------------------------------------- joining

  private async join(): Promise<void> {
    const signal = AbortSignal.any([AbortSignal.timeout(30_000), this.stopping.signal]);
    const conn = (await this.o.libp2p.dial(this.o.coordinatorAddrs, { signal })) as { remotePeer: { toString(): string } };
    const coordinator = conn.remotePeer.toString();
    const stream = await this.o.libp2p.dialProtocol(peerIdFromString(coordinator), JOIN_PROTOCOL, { signal });
    const io = framed(stream, () => ({ from: coordinator }), signal);
    await io.write({ v: PROTOCOL_VERSION, type: 'join', token: this.o.token, kind: this.o.kind, backend: this.o.backend, tokensPerSec: this.tokensPerSec, memoryMB: this.o.memoryMB ?? 4096, sender: this.peerId });
    const r = await io.read();
    await io.close().catch(() => {});
    if (!r) throw new JoinRefusedError('the coordinator closed the join stream without an answer');
    if (!r.ok) throw new JoinRefusedError(`the coordinator's answer was rejected (${r.reason}: ${r.detail})`);
    if (r.msg.type === 'refused') throw new JoinRefusedError(`the coordinator refused to admit us: ${r.msg.reason}`);
    if (r.msg.type !== 'welcome') throw new JoinRefusedError(`expected a welcome, got ${r.msg.type}`);
    const welcome = r.msg;
    const config = validateRunConfig(welcome.config);
    const hash = await configHash(config);
    if (hash !== welcome.configHash) throw new JoinRefusedError(`the welcome's config does not match its hash ${welcome.configHash}`);
    if (this.config && (hash !== this.hash || welcome.runId !== this.runId)) throw new JoinRefusedError('the coordinator now runs a different run or config');
    const first = !this.config;
    // Whatever was in flight belongs to the coordinator's previous session.
    this.current?.abort.abort(new Error('rejoined'));
    this.current = undefined;
    this.allreduce?.reset();
    this.config = config;
    this.runId = welcome.runId;
    this.hash = hash;
    this.slot = welcome.slot;
    const shardsChanged = !this.shards || this.shards.join() !== welcome.shards.join();
    this.shards = welcome.shards;
    this.coordinator = coordinator;
    this.admitted.add(coordinator);
    this.connected = true;
    if (first && config.pipeline) {
      this.stagePeer = new StagePeer({
        libp2p: this.o.libp2p,
        runId: this.runId,
        configHash: this.hash,
        config,
        coordinator: () => this.coordinator,
        isAdmitted: (p) => this.admitted.has(p),
        batchAt: (round, k) => samplePackedBatch(this.train!, this.batchSpec(), mixSeed(this.config!.train.seed, round, this.slot, 0, k)),
        publish: (m) => this.publish(m),
        resync: (why) => this.requestSync(why),
        reportFailure: (a, failed, reason) =>
          void this.publish({ ...this.scoped(), type: 'pipe-error', round: a.round, attempt: a.attempt, micro: 0, failed, reason: reason.slice(0, 500) }),
        onReject: (reason, from, detail) => this.o.log.debug(`rejected ${reason} from ${from.slice(-8)}: ${detail}`),
        log: this.o.log,
        onProgress: (p) => {
          this.round = this.stagePeer!.round;
          this.roundsContributed++;
          this.o.onStageProgress?.(p);
        },
      });
      await this.stagePeer.start();
    } else if (first) {
      this.replica = await this.o.makeReplica(config);
      this.allreduce = new AllReduce({
        libp2p: this.o.libp2p,
        runId: this.runId,
        configHash: this.hash,
        size: (await this.replica.state()).params.length,
        isAdmitted: (p) => this.admitted.has(p),
        currentRound: () => this.round,
        maxPartNorm: config.maxPartNorm,
        onReject: (reason, from, detail) => this.o.log.debug(`rejected ${reason} from ${from.slice(-8)}: ${detail}`),
        log: this.o.log,
      });
      await this.allreduce.start();
    }
    if (shardsChanged) await this.fetchData(signal);
    await this.sync(signal);
    this.o.log.info(`joined run ${this.runId} (slot ${this.slot}) at round ${this.round}`);
  }

  private async fetchData(signal: AbortSignal): Promise<void> {
    const m = this.config!.data;
    const ids = { runId: this.runId, configHash: this.hash };
    const parts: Int32Array[] = [];
    for (const s of m.shards.filter((x) => x.split === 'train' && this.shards!.includes(x.file))) {
      const bytes = await fetchShard(this.o.libp2p, ids, this.coordinator, m, s.file, signal);
      parts.push(decodeShard(bytes, m, s.file));
    }
    const data = new Int32Array(parts.reduce((a, p) => a + p.length, 0));
    let off = 0;
    for (const p of parts) {
      data.set(p, off);
      off += p.length;
    }
    this.train = packedSequences(data, m.sequenceLength);
    this.o.log.info(`verified ${parts.length} shard(s): ${data.length.toLocaleString('en-US')} tokens`);
  }

  /** Fetches the coordinator's state (between its rounds) and adopts it. */
  private async sync(signal: AbortSignal): Promise<void> {
    const s = await fetchState(this.o.libp2p, { runId: this.runId, configHash: this.hash }, this.coordinator, signal);
    if (this.stagePeer) {
      this.stagePeer.adopt(s);
      this.round = s.round;
      return;
    }
    const replicaState = await this.replica!.state();
    const n = s.params.length;
    if (this.config!.mode === 'diloco') {
      this.outer = new OuterNesterov(this.config!.outer, n, s.optimizer.length === n ? s.optimizer : undefined);
      await this.replica!.setState({ ...replicaState, params: s.params });
    } else {
      await this.replica!.setState({ step: s.step, params: s.params, m: s.optimizer.subarray(0, n), v: s.optimizer.subarray(n) });
    }
    this.round = s.round;
    this.paramHash = hashFloats(s.params);
    this.contribution = undefined;
  }

  private onCoordinatorLost(): void {
    if (this.stopping.signal.aborted || this.reconnecting) return;
    this.connected = false;
    this.current?.abort.abort(new Error('coordinator disconnected'));
    this.o.log.warn('lost the coordinator; reconnecting');
    this.reconnecting = (async () => {
      while (!this.stopping.signal.aborted) {
        try {
          await this.join();
          return;
        } catch (err) {
          this.o.log.debug(`reconnect failed: ${(err as Error).message}`);
          await new Promise((r) => setTimeout(r, 1_000));
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
    if (!this.config || !this.connected) return;
    const step = this.config.mode === 'sync' ? this.round : this.round * this.config.innerSteps;
    if (this.stagePeer) this.tokensPerSec = this.stagePeer.tokensPerSec;
    const addrs = this.o.libp2p
      .getMultiaddrs()
      .map((a) => a.toString().replace(/\/p2p\/[^/]+$/, ''))
      .slice(0, 16);
    await this.publish({ ...this.scoped(), type: 'heartbeat', round: this.round, step, tokensPerSec: this.tokensPerSec, kind: this.o.kind, backend: this.o.backend, addrs });
  }

  private onGossip(evt: { topic: string; data: Uint8Array; from?: { toString(): string } }): void {
    if (!this.config) return;
    const from = evt.from?.toString() ?? '';
    if (evt.topic === TOPIC_PEERS) return this.onPeerGossip(evt.data, from);
    if (evt.topic !== TOPIC_CONTROL) return;
    const r = decodeMessage(evt.data, { runId: this.runId, configHash: this.hash, from, isAdmitted: (p) => p === this.coordinator });
    if (!r.ok) return this.o.log.debug(`rejected control message (${r.reason}): ${r.detail}`);
    const msg = r.msg;
    if (msg.type === 'resync' && msg.target === this.peerId) {
      this.requestSync(`the coordinator asks us to: ${msg.reason}`);
    } else if (msg.type === 'round' && !this.stagePeer) this.onAnnounce(msg);
    else if (msg.type === 'pipe-round' && this.stagePeer) {
      for (const p of msg.participants) this.admitted.add(p);
      this.stagePeer.onAnnounce(msg);
    } else if (msg.type === 'pipe-commit' && this.stagePeer) this.stagePeer.onCommit(msg);
  }

  /** Heartbeats of other peers tell us where to reach them for averaging. */
  private onPeerGossip(data: Uint8Array, from: string): void {
    const r = decodeMessage(data, { runId: this.runId, configHash: this.hash, from });
    if (!r.ok || r.msg.type !== 'heartbeat' || from === this.peerId) return;
    const addrs: Multiaddr[] = [];
    for (const a of r.msg.addrs) {
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
      const limit = deadline(120_000, this.stopping.signal);
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

  private onAnnounce(a: RoundAnnounce): void {
    if (a.round < this.round) return; // an old round (or a re-announcement of one we finished)
    for (const p of a.participants) this.admitted.add(p);
    const cur = this.current;
    if (cur && cur.round === a.round && cur.attempt >= a.attempt) return; // a re-announcement of what we run
    if (cur && cur.round === a.round && cur.attempt < a.attempt) cur.abort.abort(new Error(`superseded by attempt ${a.attempt}`));
    if (!a.participants.includes(this.peerId)) return;
    const abort = new AbortController();
    this.current = { round: a.round, attempt: a.attempt, abort };
    this.enqueue(() => this.runRound(a, abort));
  }

  // ---------------------------------------------------------------- rounds

  private batchSpec(): BatchSpec {
    const c = this.config!;
    return { B: c.train.microBatchSize, T: c.train.seqLen, objective: c.model.objective, maskProb: c.train.maskProb, maskId: c.data.maskId, eosId: c.data.eosId, vocabSize: c.model.vocabSize };
  }

  /** The micro-batches of this peer in a round (and inner step): a pure function of seed, round and slot. */
  batches(round: number, count: number, inner = 0): Batch[] {
    const spec = this.batchSpec();
    return Array.from({ length: count }, (_, k) => samplePackedBatch(this.train!, spec, mixSeed(this.config!.train.seed, round, this.slot, inner, k)));
  }

  private async computeContribution(a: RoundAnnounce, micro: number): Promise<{ values: Float32Array; samples: number; loss: number; global?: Float32Array }> {
    const c = this.config!;
    if (c.mode === 'sync') {
      const g = await this.replica!.gradients(this.batches(a.round, micro));
      return { values: g.grads, samples: g.samples, loss: g.loss };
    }
    const start = await this.replica!.state();
    const global = Float32Array.from(start.params);
    let loss = 0;
    for (let h = 0; h < c.innerSteps; h++) loss += (await this.replica!.step(this.batches(a.round, micro, h))).loss;
    const local = await this.replica!.state();
    return { values: pseudoGradient(global, local.params), samples: micro * c.train.microBatchSize * c.innerSteps, loss: loss / c.innerSteps, global };
  }

  private async runRound(a: RoundAnnounce, abort: AbortController): Promise<void> {
    if (abort.signal.aborted || this.stopping.signal.aborted) return;
    if (a.round !== this.round || a.paramHash !== this.paramHash) {
      // We are not at the state the round starts from: leave (the coordinator retries at once) and rejoin.
      this.o.log.warn(`round ${a.round} starts from ${a.paramHash}, we hold ${this.paramHash} at round ${this.round}: resyncing`);
      await this.publish({ ...this.scoped(), type: 'leave', reason: 'out of sync' });
      await this.join();
      return;
    }
    const index = a.participants.indexOf(this.peerId);
    const started = Date.now();
    if (!this.contribution || this.contribution.round !== a.round) {
      // Computed once per round: a retry (new attempt) averages the same contribution again.
      const c = await this.computeContribution(a, a.microBatches[index]);
      this.contribution = { round: a.round, ...c };
    }
    const contribution = this.contribution;
    const signal = AbortSignal.any([abort.signal, AbortSignal.timeout(a.deadlineMs), this.stopping.signal]);
    // Connect to the other participants first: a browser cannot be dialled, so it must reach out, and the
    // others then answer on these connections.
    const connected = new Set(this.o.libp2p.getConnections().map((c) => c.remotePeer.toString()));
    await Promise.allSettled(a.participants.filter((p) => p !== this.peerId && !connected.has(p)).map((p) => this.o.libp2p.dial(peerIdFromString(p) as never, { signal })));
    const avg = await this.allreduce!.run(a.round, a.attempt, a.participants, contribution.values, contribution.samples, [this.coordinator], signal);
    if (this.config!.mode === 'sync') {
      await this.replica!.apply(avg);
    } else {
      // The outer step starts from the exact global parameters of the round's start (kept, not rebuilt from
      // local + Δ, which rounds differently on each peer); the inner optimizer state stays local.
      const s = await this.replica!.state();
      const global = Float32Array.from(contribution.global!);
      this.outer!.step(global, avg);
      await this.replica!.setState({ ...s, params: global });
    }
    const params = (await this.replica!.state()).params;
    this.paramHash = hashFloats(params);
    this.round = a.round + 1;
    this.allreduce!.forgetBefore(this.round);
    this.contribution = undefined;
    this.roundsContributed++;
    this.tokensContributed += contribution.samples * this.config!.train.seqLen;
    const seconds = Math.max(1e-3, (Date.now() - Math.max(started, this.lastRound - 1e9)) / 1000);
    this.tokensPerSec = (contribution.samples * this.config!.train.seqLen) / seconds;
    this.lastRound = Date.now();
    await this.publish({ ...this.scoped(), type: 'done', round: a.round, attempt: a.attempt, paramHash: this.paramHash, loss: contribution.loss, samples: contribution.samples });
    this.o.onProgress?.({ round: a.round, loss: contribution.loss, tokensPerSec: this.tokensPerSec, peers: a.participants.length, paramHash: this.paramHash });
  }
}
