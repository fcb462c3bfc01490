/**
 * The coordinator of a shared run: admits peers with the join token, announces rounds, observes each round's
 * averaging (it receives every averaged chunk, so its own replica takes the same step as the peers), hands
 * out state to newcomers between rounds, evaluates, checkpoints, and keeps the run state in SQLite.
 *
 * A round: participants are the admitted peers that are connected and in sync; the run's micro-batches are
 * split among them in proportion to their measured speed. If the round's averaging does not complete (a peer
 * died or stalled), the round is retried as a new attempt without the peers that failed: no round is lost.
 */
import { timingSafeEqual } from 'node:crypto';
import type { Connection, Stream } from '@libp2p/interface';
import * as tf from '@tensorflow/tfjs-core';
import { hashFloats } from '../engine/averaging.ts';
import { validationBatches, type BatchSpec } from '../engine/data/batches.ts';
import { generate, heldOutPrompt } from '../engine/generate.ts';
import { buildManifest, sliceFlat } from '../engine/flat.ts';
import { parameterSpecs } from '../engine/model.ts';
import { OuterNesterov } from '../engine/outer-optimizer.ts';
import { Trainer } from '../engine/trainer.ts';
import { saveCheckpoint, loadCheckpoint } from '../node/checkpoint-io.ts';
import type { PeertrainLibp2p } from '../node/p2p/create-libp2p.ts';
import type { ShardDataset } from '../node/data/shard-dataset.ts';
import { decodeMessage, encodeMessage, JOIN_PROTOCOL, PROTOCOL_VERSION, TOPIC_CONTROL, TOPIC_PEERS, type Message, type RejectReason } from '../protocol/index.ts';
import { AllReduce, AllReduceAbortedError } from '../net/averaging/allreduce.ts';
import { framed } from '../net/framed.ts';
import { assignShards, splitMicroBatches, type RunConfig } from '../run/config.ts';
import { serveState, type RunState } from '../net/state-sync.ts';
import type { Clock, Logger } from '../net/types.ts';
import { serveData } from '../net/data-sync.ts';
import { paths, type RunInfo } from './run-dir.ts';
import type { RunStore } from './run-store.ts';
import { PipelineRounds } from './pipeline-rounds.ts';

/** A peer that sends this many rejected messages is banned from the run. */
const BAN_AFTER_REJECTIONS = 20;
/** A peer not heard from for this long (and not connected) leaves the member list. */
const SILENCE_MS = 15_000;
/** Attempt numbers are offset by the coordinator's session (epoch) times this. */
const ATTEMPTS_PER_EPOCH = 1_000_000;
/** Announcements are re-published this often until the round completes (gossip may miss a new subscriber). */
export const REANNOUNCE_MS = 1_000;

export interface Member {
  id: string;
  slot: number;
  kind: 'node' | 'browser';
  backend: string;
  tokensPerSec: number;
  lastSeen: number;
  /** The round this peer's state is known to match; it may participate only in that round. */
  syncedRound: number;
  rejections: number;
  /** Memory it offers for the model (MiB), for the pipeline planner. */
  memoryMB: number;
  /** Pipeline runs: the model parts whose state it was last given. */
  holds?: { from: number; to: number };
}

export interface CoordinatorDeps {
  libp2p: PeertrainLibp2p;
  store: RunStore;
  info: RunInfo;
  configHash: string;
  data: ShardDataset;
  runDir: string;
  log: Logger;
  clock: Clock;
  /** Stop after this round (tests and the demo); undefined runs until stop(). */
  maxRounds?: number;
  /** Wait for this many ready peers before the session's first round (default 1). */
  minPeers?: number;
}

export interface RoundRecord {
  round: number;
  loss: number;
  valLoss?: number;
}

export class Coordinator {
  readonly members = new Map<string, Member>();
  round = 0;
  // Fields and methods without `private` are shared with pipeline-rounds.ts (the pipeline's round loop).
  readonly config: RunConfig;
  readonly me: string;
  private readonly allreduce: AllReduce;
  readonly trainer: Trainer;
  private outer?: OuterNesterov;
  /** DiLoCo's global parameters (sync mode keeps them in the trainer). */
  private globalParams?: Float32Array;
  private paramHash = '';
  private readonly hashAfter = new Map<number, string>();
  readonly doneLosses = new Map<number, Array<{ loss: number; samples: number }>>();
  /** Participants of recently finished rounds, and their validation losses, until every report is in. */
  readonly participantsOf = new Map<number, number>();
  private readonly valLossOf = new Map<number, number>();
  private readonly stateQueue: Array<{ peer: string; resolve: (s: RunState) => void; reject: (e: Error) => void }> = [];
  readonly abort = new AbortController();
  roundAbort?: AbortController;
  currentParticipants: string[] = [];
  /** Participants named as the cause when the round in flight was abandoned. */
  readonly failedPeers = new Set<string>();
  private loop?: Promise<void>;
  private wake?: () => void;
  private lastEvalRound = -1;
  /** How many times this run's coordinator has started (persisted): keeps attempt numbers unique. */
  private epoch = 0;
  nextAttempt = 0;
  /** Pipeline runs: planning, routing and the round loop. */
  private readonly pipeline?: PipelineRounds;
  private readonly events = new EventTarget();

  constructor(readonly d: CoordinatorDeps) {
    this.config = d.info.config;
    this.me = d.libp2p.peerId.toString();
    this.trainer = new Trainer(this.config.model, this.config.train);
    this.allreduce = new AllReduce({
      libp2p: d.libp2p,
      runId: d.info.runId,
      configHash: d.configHash,
      size: this.trainer.manifest.totalSize,
      isAdmitted: (p) => this.members.has(p),
      currentRound: () => this.round,
      maxPartNorm: this.config.maxPartNorm,
      onReject: (reason, from, detail) => this.reject(reason, from, detail),
      log: d.log,
    });
    if (this.config.pipeline) this.pipeline = new PipelineRounds(this);
  }

  /** Emits 'round:done' (detail: RoundRecord) and 'peer:joined' / 'peer:left' (detail: peer id). */
  get emitter(): EventTarget {
    return this.events;
  }

  get isDiloco(): boolean {
    return this.config.mode === 'diloco';
  }

  async start(): Promise<void> {
    const { libp2p } = this.d;
    await this.restore();
    await this.allreduce.start();
    await libp2p.handle(JOIN_PROTOCOL, (s, c) => this.onJoin(s, c), { maxInboundStreams: 64 });
    const ids = { runId: this.d.info.runId, configHash: this.d.configHash };
    await serveState(libp2p, ids, (p) => this.members.has(p), (p) => this.queueState(p), (r, f, d) => this.reject(r, f, d));
    await serveData(libp2p, ids, this.d.data, (p) => this.members.has(p), (r, f, d) => this.reject(r, f, d));
    libp2p.services.pubsub.subscribe(TOPIC_PEERS);
    libp2p.services.pubsub.subscribe(TOPIC_CONTROL);
    libp2p.services.pubsub.addEventListener('message', (evt) => this.onGossip(evt.detail));
    libp2p.addEventListener('peer:disconnect', (evt) => this.onDisconnect(evt.detail.toString()));
    this.pipeline?.start();
    this.loop = this.runLoop().catch((err) => this.d.log.warn(`round loop stopped: ${(err as Error).stack ?? err}`));
  }

  /** Stops the round loop (a round in flight is abandoned, never half-applied), then writes a checkpoint. */
  async stop(o: { checkpoint?: boolean } = { checkpoint: true }): Promise<void> {
    this.abort.abort(new Error('coordinator stopping'));
    this.roundAbort?.abort(new Error('coordinator stopping'));
    this.wake?.();
    for (const q of this.stateQueue.splice(0)) q.reject(new Error('coordinator stopping'));
    await this.loop;
    if (o.checkpoint) await this.checkpoint();
    await this.allreduce.stop();
    await this.pipeline?.stop();
    this.trainer.dispose();
  }

  /** Waits (up to `ms`) for the participants' loss reports of the rounds already finished. */
  async settle(ms: number): Promise<void> {
    for (const start = Date.now(); this.participantsOf.size > 0 && Date.now() - start < ms; ) await new Promise((r) => setTimeout(r, 50));
  }

  /** Resolves when the loop has finished (maxRounds reached or stopped). */
  finished(): Promise<void> {
    return this.loop ?? Promise.resolve();
  }

  // ---------------------------------------------------------------- state, checkpoints

  private async restore(): Promise<void> {
    this.epoch = Number(this.d.store.getMeta('epoch') ?? -1) + 1;
    this.d.store.setMeta('epoch', String(this.epoch));
    this.nextAttempt = this.epoch * ATTEMPTS_PER_EPOCH;
    const p = paths(this.d.runDir).checkpoint;
    const { existsSync } = await import('node:fs');
    if (existsSync(p)) {
      const c = loadCheckpoint(p);
      const round = Number(c.dataPosition.round ?? c.step);
      this.trainer.importParams(c.params);
      if (this.isDiloco) {
        this.globalParams = Float32Array.from(c.params);
        this.outer = new OuterNesterov(this.config.outer, c.params.length, c.m);
      } else this.trainer.optimizer.importState(c);
      this.round = round;
      this.d.store.truncateAfter(round - 1);
      this.d.log.info(`resumed from ${p} at round ${round}`);
    } else if (this.isDiloco) {
      this.globalParams = await this.trainer.exportParams();
      this.outer = new OuterNesterov(this.config.outer, this.globalParams.length);
    }
    this.paramHash = hashFloats(await this.currentParams());
  }

  private async currentParams(): Promise<Float32Array> {
    return this.isDiloco ? this.globalParams! : this.trainer.exportParams();
  }

  private async currentState(): Promise<RunState> {
    const params = await this.currentParams();
    const whole = { stageFrom: 0, stageTo: this.config.model.nLayer + 2 };
    if (this.isDiloco) return { round: this.round, step: this.round, params, optimizer: this.outer!.velocity, ...whole };
    const s = await this.trainer.optimizer.exportState();
    const optimizer = new Float32Array(s.m.length + s.v.length);
    optimizer.set(s.m);
    optimizer.set(s.v, s.m.length);
    return { round: this.round, step: s.step, params, optimizer, ...whole };
  }

  async checkpoint(): Promise<void> {
    const s = await this.currentState();
    const n = s.params.length;
    const history: Array<[number, number, number | null]> = this.d.store.history().map((h) => [h.round, h.loss ?? NaN, h.valLoss]);
    saveCheckpoint(paths(this.d.runDir).checkpoint, {
      model: this.config.model,
      train: this.config.train,
      step: s.step,
      dataPosition: { round: this.round, mode: this.config.mode },
      tokenizer: this.d.data.manifest.tokenizer,
      history,
      info: { runId: this.d.info.runId, configHash: this.d.configHash, dataDir: this.d.data.dir, savedAt: new Date(this.d.clock.now()).toISOString() },
      manifest: buildManifest(parameterSpecs(this.config.model)),
      params: s.params,
      // DiLoCo keeps its outer momentum where AdamW keeps m; v stays zero.
      m: this.isDiloco ? s.optimizer : s.optimizer.subarray(0, n),
      v: this.isDiloco ? new Float32Array(n) : s.optimizer.subarray(n),
    });
  }

  /** Whether `peer` asked for the state and waits for the next round boundary to get it. */
  awaitingState(peer: string): boolean {
    return this.stateQueue.some((q) => q.peer === peer);
  }

  private queueState(peer: string): Promise<RunState> {
    // A stage peer that asks for state cannot finish the round in flight: retry it now, not at its deadline.
    if (this.pipeline) this.failParticipant(peer, 'is fetching its state');
    return new Promise((resolve, reject) => {
      this.stateQueue.push({ peer, resolve, reject });
      this.wake?.();
    });
  }

  /** Hands out state between rounds: the peer then holds exactly the state of the round about to start. */
  async serveQueuedState(): Promise<void> {
    if (this.stateQueue.length === 0) return;
    if (this.pipeline) {
      // Each stage peer gets the stage the plan gives it.
      for (const q of this.stateQueue.splice(0)) {
        try {
          const state = await this.pipeline.stateFor(q.peer);
          const m = this.members.get(q.peer);
          if (m) m.syncedRound = this.round;
          q.resolve(state);
        } catch (err) {
          this.d.log.warn((err as Error).message);
          q.reject(err as Error);
        }
      }
      return;
    }
    const state = await this.currentState();
    for (const q of this.stateQueue.splice(0)) {
      const m = this.members.get(q.peer);
      if (m) m.syncedRound = this.round;
      q.resolve(state);
    }
  }

  // ---------------------------------------------------------------- membership

  private async onJoin(stream: Stream, connection: Connection): Promise<void> {
    const from = connection.remotePeer.toString();
    const io = framed(stream, () => ({ from }), AbortSignal.timeout(10_000));
    try {
      const r = await io.read();
      if (!r) return;
      const refuse = async (reason: string) => {
        await io.write({ v: PROTOCOL_VERSION, type: 'refused', reason });
        await io.close();
      };
      if (!r.ok || r.msg.type !== 'join') {
        this.reject(r.ok ? 'structure' : r.reason, from, r.ok ? `expected join, got ${r.msg.type}` : r.detail);
        return await refuse('malformed join request');
      }
      const join = r.msg;
      const row = this.d.store.peer(from);
      if (row?.banned) return await refuse('banned from this run');
      const a = Buffer.from(join.token);
      const b = Buffer.from(this.d.info.token);
      if (a.length !== b.length || !timingSafeEqual(a, b)) {
        this.d.store.countRejection('token');
        this.d.log.warn(`refused ${from}: wrong join token`);
        return await refuse('wrong join token');
      }
      const tooSmall = this.pipeline?.memoryRefusal(join.memoryMB);
      if (tooSmall) {
        this.d.log.warn(`refused ${from.slice(-8)}: ${tooSmall}`);
        return await refuse(tooSmall);
      }
      const now = this.d.clock.now();
      const slot = row?.slot ?? this.d.store.nextSlot();
      this.d.store.upsertPeer({ id: from, kind: join.kind, backend: join.backend, tokensPerSec: join.tokensPerSec, slot, joinedAt: row?.joinedAt ?? now, lastSeen: now });
      const others = [...this.members.values()].filter((m) => m.id !== from).map((m) => m.tokensPerSec);
      const shards = assignShards(this.config.data.shards.filter((x) => x.split === 'train'), slot, join.tokensPerSec, others);
      this.d.store.setShards(from, shards);
      // A rejoin keeps its rejection count: no dodging a ban by rejoining.
      const before = this.members.get(from);
      this.members.set(from, { id: from, slot, kind: join.kind, backend: join.backend, tokensPerSec: join.tokensPerSec, lastSeen: now, syncedRound: -1, rejections: before?.rejections ?? 0, memoryMB: join.memoryMB });
      await io.write({ v: PROTOCOL_VERSION, type: 'welcome', runId: this.d.info.runId, configHash: this.d.configHash, sender: this.me, ts: now, config: this.config as unknown as Record<string, unknown>, round: this.round, slot, shards });
      await io.close();
      this.d.log.info(`peer ${from.slice(-8)} joined (slot ${slot}, ${join.kind}, ${join.backend}, ${join.tokensPerSec.toFixed(0)} tok/s, ${shards.length} shard(s))`);
      this.events.dispatchEvent(new CustomEvent('peer:joined', { detail: from }));
      this.wake?.();
    } catch (err) {
      io.abort(err as Error);
    }
  }

  private onDisconnect(peer: string): void {
    const m = this.members.get(peer);
    if (!m) return;
    // Closing a connection does not end membership (it may reconnect), but it cannot finish this round.
    this.failParticipant(peer, 'disconnected');
  }

  /** Abandons the round in flight when `peer` takes part in it (and only then), naming it as the cause. */
  private failParticipant(peer: string, why: string): void {
    if (!this.currentParticipants.includes(peer)) return;
    this.failedPeers.add(peer);
    this.roundAbort?.abort(new Error(`participant ${peer.slice(-8)} ${why}`));
  }

  isConnected(peer: string): boolean {
    return this.d.libp2p.getConnections().some((c) => c.remotePeer.toString() === peer && c.status === 'open');
  }

  reject(reason: RejectReason | string, from: string, detail: string): void {
    this.d.store.countRejection(reason);
    this.d.log.debug(`rejected ${reason} from ${from.slice(-8)}: ${detail}`);
    const m = this.members.get(from);
    if (!m) return;
    m.rejections++;
    if (m.rejections >= BAN_AFTER_REJECTIONS) {
      this.d.log.warn(`banning ${from.slice(-8)} after ${m.rejections} rejected messages`);
      this.d.store.banPeer(from);
      this.members.delete(from);
      this.failParticipant(from, 'was banned');
      for (const c of this.d.libp2p.getConnections()) if (c.remotePeer.toString() === from) void c.close().catch(() => {});
    }
  }

  private onGossip(msg: { topic: string; data: Uint8Array; from?: { toString(): string }; type?: string }): void {
    if (msg.topic !== TOPIC_PEERS) return;
    const from = msg.from?.toString() ?? '';
    const r = decodeMessage(msg.data, { runId: this.d.info.runId, configHash: this.d.configHash, from, isAdmitted: (p) => this.members.has(p) });
    if (!r.ok) return this.reject(r.reason, from, r.detail);
    const m = this.members.get(from)!;
    m.lastSeen = this.d.clock.now();
    switch (r.msg.type) {
      case 'heartbeat':
        m.tokensPerSec = r.msg.tokensPerSec;
        this.d.store.touchPeer(from, m.lastSeen, r.msg.tokensPerSec);
        break;
      case 'done': {
        const done = r.msg;
        this.recordLoss(done.round, done.loss, done.samples);
        if (this.pipeline) {
          this.pipeline.checkHash(done.round, from, done.paramHash);
          break;
        }
        const expected = this.hashAfter.get(done.round);
        if (expected && expected !== done.paramHash) this.resync(from, `parameter hash ${done.paramHash} after round ${done.round}, expected ${expected}`);
        break;
      }
      case 'pipe-error': {
        // A stage peer names the peer its micro-batches could not pass (or itself, when it cannot contribute):
        // leave that one out of the retry rather than wait out the round's deadline.
        const e = r.msg;
        if (!this.pipeline || e.round !== this.round) break;
        const culprit = e.failed && this.currentParticipants.includes(e.failed) ? e.failed : from;
        this.d.log.warn(`round ${e.round}: ${from.slice(-8)} reports ${culprit === from ? 'it cannot contribute' : `${culprit.slice(-8)} failed`}: ${e.reason}`);
        this.failParticipant(culprit, 'failed a micro-batch');
        break;
      }
      case 'leave':
        this.members.delete(from);
        this.events.dispatchEvent(new CustomEvent('peer:left', { detail: from }));
        this.failParticipant(from, 'left');
        break;
      default:
        this.reject('structure', from, `unexpected ${r.msg.type} on ${TOPIC_PEERS}`);
    }
  }

  resync(peer: string, reason: string): void {
    const m = this.members.get(peer);
    if (m) m.syncedRound = -1;
    this.d.log.warn(`peer ${peer.slice(-8)} out of sync (${reason}): asking it to resync`);
    void this.publish({ v: PROTOCOL_VERSION, type: 'resync', runId: this.d.info.runId, configHash: this.d.configHash, sender: this.me, ts: this.d.clock.now(), target: peer, reason });
  }

  async publish(msg: Message): Promise<void> {
    try {
      await this.d.libp2p.services.pubsub.publish(TOPIC_CONTROL, encodeMessage(msg));
    } catch (err) {
      this.d.log.debug(`publish failed: ${(err as Error).message}`);
    }
  }

  // ---------------------------------------------------------------- rounds

  private started = false;

  /** Whether a round may start with `ready` peers: the session's first waits for --min-peers of them. */
  enoughToStart(ready: number): boolean {
    if (!this.started && ready < (this.d.minPeers ?? 1)) return false;
    this.started = true;
    return true;
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  readyParticipants(): Member[] {
    const now = this.d.clock.now();
    for (const m of [...this.members.values()]) {
      if (!this.isConnected(m.id) && now - m.lastSeen > SILENCE_MS) {
        this.members.delete(m.id);
        this.d.log.info(`peer ${m.id.slice(-8)} dropped (silent for ${((now - m.lastSeen) / 1000).toFixed(0)} s)`);
        this.events.dispatchEvent(new CustomEvent('peer:left', { detail: m.id }));
      }
    }
    return [...this.members.values()].filter((m) => m.syncedRound === this.round && this.isConnected(m.id)).sort((a, b) => a.slot - b.slot);
  }

  private async runLoop(): Promise<void> {
    if (this.pipeline) return this.pipeline.loop();
    while (!this.abort.signal.aborted && (this.d.maxRounds === undefined || this.round < this.d.maxRounds)) {
      await this.serveQueuedState();
      let participants = this.readyParticipants();
      if (participants.length === 0 || !this.enoughToStart(participants.length)) {
        await this.sleep(250);
        continue;
      }
      const totalMicro = this.config.train.batchSize / this.config.train.microBatchSize;
      // Attempt numbers never repeat — not within a session (a round retried after everyone failed is a new
      // attempt), not across restarts: a peer may still hold parts of an earlier attempt.
      while (participants.length > 0 && !this.abort.signal.aborted) {
        const attempt = this.nextAttempt++;
        const ids = participants.map((m) => m.id);
        const micro = splitMicroBatches(totalMicro, participants.map((m) => m.tokensPerSec));
        const avg = await this.runAttempt(attempt, ids, micro);
        if (avg) {
          await this.finishRound(participants, micro, avg);
          break;
        }
        // Retry without the peers that failed: those that left, were banned or disconnected, else the owners of
        // the chunks that never arrived.
        const gathered = new Set(this.allreduce.gatheredChunks(this.round, attempt, ids));
        let failed = participants.filter((m) => this.failedPeers.has(m.id) || !this.isConnected(m.id) || !this.members.has(m.id));
        if (failed.length === 0) failed = participants.filter((_, j) => !gathered.has(j));
        if (failed.length === 0) failed = participants; // nothing arrived at all: start over with whoever is ready
        for (const m of failed) m.syncedRound = -1;
        this.d.log.warn(`round ${this.round} attempt ${attempt} failed; retrying without ${failed.map((m) => m.id.slice(-8)).join(', ')}`);
        participants = participants.filter((m) => !failed.includes(m));
      }
    }
  }

  private async runAttempt(attempt: number, participants: string[], micro: number[]): Promise<Float32Array | undefined> {
    const round = this.round;
    this.currentParticipants = participants;
    this.failedPeers.clear();
    this.participantsOf.set(round, participants.length);
    this.participantsOf.delete(round - 16);
    this.doneLosses.delete(round); // reports of an earlier, failed attempt do not count
    this.roundAbort = new AbortController();
    const deadline = AbortSignal.timeout(this.config.roundTimeoutSec * 1000);
    const signal = AbortSignal.any([deadline, this.roundAbort.signal, this.abort.signal]);
    const announce = () =>
      this.publish({
        v: PROTOCOL_VERSION,
        type: 'round',
        runId: this.d.info.runId,
        configHash: this.d.configHash,
        sender: this.me,
        ts: this.d.clock.now(),
        round,
        attempt,
        participants,
        microBatches: micro,
        deadlineMs: this.config.roundTimeoutSec * 1000,
        paramHash: this.paramHash,
      });
    await announce();
    const timer = setInterval(() => void announce(), REANNOUNCE_MS);
    try {
      return await this.allreduce.observe(round, attempt, participants, signal);
    } catch (err) {
      // Any failure of an attempt (a deadline, or a malformed chunk a peer managed to send) fails the attempt,
      // never the round loop.
      if (err instanceof AllReduceAbortedError) this.d.log.debug(`round ${round} attempt ${attempt}: ${err.message}`);
      else this.d.log.warn(`round ${round} attempt ${attempt} failed: ${(err as Error).message}`);
      return undefined;
    } finally {
      clearInterval(timer);
      this.currentParticipants = [];
    }
  }

  private async finishRound(participants: Member[], micro: number[], avg: Float32Array): Promise<void> {
    const round = this.round;
    if (this.isDiloco) {
      this.outer!.step(this.globalParams!, avg);
    } else {
      const views = sliceFlat(avg, this.trainer.manifest);
      const grads = Object.fromEntries(this.trainer.manifest.entries.map((e) => [e.name, tf.tensor(views.get(e.name)!, e.shape, 'float32')]));
      await this.trainer.applyGradients(grads);
    }
    this.paramHash = hashFloats(await this.currentParams());
    this.hashAfter.set(round, this.paramHash);
    this.hashAfter.delete(round - 8);
    this.allreduce.forgetBefore(round + 1);
    const seqPerMicro = this.config.train.microBatchSize * (this.isDiloco ? this.config.innerSteps : 1);
    const contributions = participants.map((m, i) => ({ peer: m.id, samples: micro[i] * seqPerMicro, loss: null }));
    await this.roundFinished(participants, contributions, contributions.reduce((a, c) => a + c.samples, 0) * this.config.train.seqLen);
  }

  /**
   * Book-keeping of a round whose step is taken (data-parallel or pipeline): the next round, who is in sync for
   * it, the round's record (with the loss of the reports that beat us here), evaluation and checkpoint.
   */
  async roundFinished(participants: Member[], contributions: Array<{ peer: string; samples: number; loss: null; stage?: number }>, tokens: number): Promise<void> {
    const round = this.round;
    this.round = round + 1;
    for (const m of participants) if (this.members.has(m.id)) m.syncedRound = this.round;
    const early = this.doneLosses.get(round) ?? [];
    const earlySamples = early.reduce((a, r) => a + r.samples, 0);
    const earlyLoss = earlySamples ? early.reduce((a, r) => a + r.loss * r.samples, 0) / earlySamples : null;
    this.d.store.recordRound(round, contributions, { loss: earlyLoss, valLoss: null, tokens, participants: participants.length, at: this.d.clock.now() });
    if ((round + 1) % this.config.evalEvery === 0) await this.evaluate(round);
    if ((round + 1) % this.config.checkpointEvery === 0) await this.checkpoint();
  }

  /**
   * A finished round's training loss is the sample-weighted mean of its participants' reports, which arrive
   * just after the round; 'round:done' fires when the last one is in.
   */
  private recordLoss(round: number, loss: number, samples: number): void {
    const expected = this.participantsOf.get(round);
    if (expected === undefined) return; // not a round we finished (or one long gone)
    const reports = this.doneLosses.get(round) ?? [];
    reports.push({ loss, samples });
    this.doneLosses.set(round, reports);
    const total = reports.reduce((a, r) => a + r.samples, 0);
    const mean = reports.reduce((a, r) => a + r.loss * r.samples, 0) / Math.max(1, total);
    this.d.store.setLoss(round, mean);
    if (reports.length === expected) {
      this.doneLosses.delete(round);
      this.participantsOf.delete(round);
      this.events.dispatchEvent(new CustomEvent('round:done', { detail: { round, loss: mean, valLoss: this.valLossOf.get(round) } satisfies RoundRecord }));
    }
  }

  async evaluate(round: number): Promise<number> {
    if (this.isDiloco) this.trainer.importParams(this.globalParams!);
    const c = this.config;
    const tok = this.d.data.tokenizer;
    const spec: BatchSpec = { B: c.train.microBatchSize, T: c.train.seqLen, objective: c.model.objective, maskProb: c.train.maskProb, maskId: tok.maskId, eosId: tok.eosId, vocabSize: c.model.vocabSize };
    const valLoss = await this.trainer.evalLoss(validationBatches(this.d.data.val, spec, c.train.seed, 4));
    this.d.store.setValLoss(round, valLoss);
    this.valLossOf.set(round, valLoss);
    this.valLossOf.delete(round - 64);
    this.lastEvalRound = round;
    return valLoss;
  }

  /** A sample from the current global model (causal models). */
  async sample(maxNewTokens: number): Promise<string> {
    if (this.config.model.objective !== 'causal') return '';
    if (this.isDiloco) this.trainer.importParams(this.globalParams!);
    const tok = this.d.data.tokenizer;
    const prompt = heldOutPrompt(this.d.data.val, tok.eosId);
    const ids = await generate(this.config.model, this.trainer.params, prompt, { maxNewTokens, temperature: 0.8, topK: 40, topP: 0.95, seed: 1 }, tok.maskId);
    return tok.decode([...prompt, ...ids]);
  }

  /** The JSON of GET /api/status. */
  status(): Record<string, unknown> {
    const rows = this.d.store.peers();
    const online = new Set(this.members.keys());
    return {
      runId: this.d.info.runId,
      configHash: this.d.configHash,
      mode: this.config.mode,
      round: this.round,
      tokensTrained: this.d.store.tokensTrained(),
      model: this.config.model,
      data: { name: this.d.data.manifest.name, tokenizer: this.d.data.manifest.tokenizer.kind, vocabSize: this.d.data.manifest.vocabSize, trainTokens: this.d.data.manifest.train.tokens },
      history: this.d.store.history().map((h) => ({ round: h.round, loss: h.loss, ...(h.valLoss !== null ? { valLoss: h.valLoss } : {}), participants: h.participants })),
      peers: rows
        .filter((r) => online.has(r.id))
        .map((r) => ({ id: r.id, kind: r.kind, backend: r.backend, shards: r.shards ? (JSON.parse(r.shards) as string[]).length : 0, tokensPerSec: this.members.get(r.id)?.tokensPerSec ?? r.tokensPerSec, roundsContributed: r.roundsContributed, lastSeen: new Date(this.members.get(r.id)?.lastSeen ?? r.lastSeen).toISOString(), synced: this.members.get(r.id)?.syncedRound === this.round })),
      rejected: this.d.store.rejections(),
      lastEvalRound: this.lastEvalRound,
      multiaddrs: this.d.libp2p.getMultiaddrs().map((a) => a.toString()),
      ...(this.pipeline ? { pipeline: this.pipeline.status() } : {}),
    };
  }
}
