/**
 * The coordinator of a shared run, as a composition root: it builds membership (admission, silence, bans),
 * the round book (rounds, attempts, reports), the state server, the model replica (checkpoint, evaluate,
 * sample), the control channel and the round driver of the run's parallelism, wires gossip to them, and
 * keeps the loop that runs the driver. Everything it starts, stop() undoes.
 */
import type { PeertrainLibp2p } from '../node/p2p/create-libp2p.ts';
import type { ShardDataset } from '../node/data/shard-dataset.ts';
import type { Clock, GossipMessage, Logger } from '../net/types.ts';
import { averagingFactory } from '../net/averaging/allreduce.ts';
import { Wakeup } from '../net/sleep.ts';
import { decodeMessage, TOPIC_CONTROL, TOPIC_PEERS, type RejectReason } from '../protocol/index.ts';
import type { RunConfig } from '../run/config.ts';
import type { StatusReport } from '../run/status-report.ts';
import { ControlChannel } from './control-channel.ts';
import { DataParallelDriver } from './data-parallel-driver.ts';
import { Membership } from './membership.ts';
import { ModelReplica } from './model-replica.ts';
import { PipelineDriver } from './pipeline-driver.ts';
import { RoundBook, type Contribution } from './round-book.ts';
import type { RoundContext, RoundDriver } from './round-driver.ts';
import type { RunInfo } from './run-dir.ts';
import type { RunStore } from './run-store.ts';
import { StateServer } from './state-server.ts';
import { buildStatus } from './status.ts';

export type { Member } from './membership.ts';
export type { RoundRecord } from './round-book.ts';
export { REANNOUNCE_MS } from './round-driver.ts';

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

export class Coordinator {
  readonly config: RunConfig;
  readonly me: string;
  private readonly events = new EventTarget();
  private readonly membership: Membership;
  private readonly book: RoundBook;
  private readonly states: StateServer;
  private readonly replica: ModelReplica;
  private readonly control: ControlChannel;
  private readonly driver: RoundDriver;
  private readonly wakeup = new Wakeup();
  private abort = new AbortController();
  private loop?: Promise<void>;
  private started = false;
  private lastEvalRound = -1;
  private readonly onGossipEvent = (evt: CustomEvent<GossipMessage>) => this.onGossip(evt.detail);

  constructor(readonly d: CoordinatorDeps) {
    this.config = d.info.config;
    this.me = d.libp2p.peerId.toString();
    const scope = { runId: d.info.runId, configHash: d.configHash, sender: this.me };
    this.control = new ControlChannel(d.libp2p.services.pubsub, scope, d.clock, d.log);
    this.book = new RoundBook({ store: d.store, clock: d.clock, log: d.log, events: this.events });
    this.replica = new ModelReplica({ config: this.config, info: d.info, configHash: d.configHash, data: d.data, runDir: d.runDir, clock: d.clock, log: d.log });
    this.membership = new Membership({
      libp2p: d.libp2p,
      store: d.store,
      info: d.info,
      configHash: d.configHash,
      config: this.config,
      log: d.log,
      clock: d.clock,
      events: this.events,
      admissionRefusal: (join) => this.driver.admissionRefusal(join),
      onLost: (peer, why) => this.book.failParticipant(peer, why),
      currentRound: () => this.book.round,
      onAdmitted: () => this.wakeup.wake(),
    });
    this.states = new StateServer({
      libp2p: d.libp2p,
      runId: d.info.runId,
      configHash: d.configHash,
      data: d.data,
      isMember: (p) => this.membership.has(p),
      reject: (r, f, x) => this.membership.reject(r, f, x),
      log: d.log,
      onRequest: (peer) => {
        this.driver.onStateRequest(peer);
        this.wakeup.wake();
      },
    });
    const context: RoundContext = {
      config: this.config,
      libp2p: d.libp2p,
      log: d.log,
      clock: d.clock,
      members: this.membership,
      book: this.book,
      states: this.states,
      replica: this.replica,
      control: this.control,
      averaging: averagingFactory({
        libp2p: d.libp2p,
        runId: d.info.runId,
        configHash: d.configHash,
        isAdmitted: (p) => this.membership.has(p),
        currentRound: () => this.book.round,
        maxPartNorm: this.config.maxPartNorm,
        onReject: (reason, from, detail) => this.membership.reject(reason, from, detail),
        log: d.log,
      }),
      maxRounds: d.maxRounds,
      enoughToStart: (ready) => this.enoughToStart(ready),
      idle: (ms) => this.wakeup.sleep(ms, this.abort.signal),
      reject: (r, f, x) => this.membership.reject(r, f, x),
      roundFinished: (participants, contributions, tokens) => this.roundFinished(participants, contributions, tokens),
    };
    this.driver = this.config.pipeline ? new PipelineDriver(context) : new DataParallelDriver(context);
  }

  /** Emits 'round:done' (detail: RoundRecord) and 'peer:joined' / 'peer:left' (detail: peer id). */
  get emitter(): EventTarget {
    return this.events;
  }

  /** The round about to run. */
  get round(): number {
    return this.book.round;
  }

  /** The admitted members (a read-only view for the CLI and tests). */
  get members(): Pick<Membership, 'size' | 'has' | 'get' | 'ids' | 'values' | 'all'> {
    return this.membership;
  }

  async start(): Promise<void> {
    const { libp2p } = this.d;
    this.abort = new AbortController();
    this.book.openSession();
    const resumed = await this.replica.restore();
    if (resumed !== undefined) this.book.resumeAt(resumed);
    await this.driver.start();
    await this.membership.start();
    await this.states.start();
    libp2p.services.pubsub.subscribe(TOPIC_PEERS);
    libp2p.services.pubsub.subscribe(TOPIC_CONTROL);
    libp2p.services.pubsub.addEventListener('message', this.onGossipEvent);
    this.loop = this.driver.run(this.abort.signal).catch((err) => this.d.log.warn(`round loop stopped: ${(err as Error).stack ?? err}`));
  }

  /** Stops the round loop (a round in flight is abandoned, never half-applied), then writes a checkpoint. */
  async stop(o: { checkpoint?: boolean } = { checkpoint: true }): Promise<void> {
    this.abort.abort(new Error('coordinator stopping'));
    this.book.abortAttempt('coordinator stopping');
    this.wakeup.wake();
    await this.states.stop();
    await this.loop;
    const { pubsub } = this.d.libp2p.services;
    pubsub.removeEventListener('message', this.onGossipEvent);
    pubsub.unsubscribe(TOPIC_PEERS);
    pubsub.unsubscribe(TOPIC_CONTROL);
    await this.membership.stop();
    if (o.checkpoint) await this.checkpoint();
    await this.driver.stop();
    this.replica.dispose();
  }

  /** Waits (up to `ms`) for the participants' loss reports of the rounds already finished. */
  settle(ms: number): Promise<void> {
    return this.book.settle(ms);
  }

  /** Resolves when the loop has finished (maxRounds reached or stopped). */
  finished(): Promise<void> {
    return this.loop ?? Promise.resolve();
  }

  checkpoint(): Promise<void> {
    const history: Array<[number, number, number | null]> = this.d.store.history().map((h) => [h.round, h.loss ?? NaN, h.valLoss]);
    return this.replica.checkpoint(this.book.round, history);
  }

  /** Validation loss of the global model, recorded for `round`. */
  async evaluate(round: number): Promise<number> {
    const valLoss = await this.replica.evaluate();
    this.book.recordValLoss(round, valLoss);
    this.lastEvalRound = round;
    return valLoss;
  }

  /** A sample from the current global model (causal models). */
  sample(maxNewTokens: number): Promise<string> {
    return this.replica.sample(maxNewTokens);
  }

  /** The JSON of GET /api/status. */
  status(): StatusReport {
    return buildStatus({
      runId: this.d.info.runId,
      configHash: this.d.configHash,
      config: this.config,
      round: this.book.round,
      lastEvalRound: this.lastEvalRound,
      store: this.d.store,
      members: this.membership,
      data: this.d.data,
      multiaddrs: this.d.libp2p.getMultiaddrs().map((a) => a.toString()),
      pipeline: this.driver.status(),
    });
  }

  private enoughToStart(ready: number): boolean {
    if (!this.started && ready < (this.d.minPeers ?? 1)) return false;
    this.started = true;
    return true;
  }

  /**
   * Book-keeping of a round whose step is taken (data-parallel or pipeline): the next round, who is in sync for
   * it, the round's record, evaluation and checkpoint when due.
   */
  private async roundFinished(participants: string[], contributions: Contribution[], tokens: number): Promise<void> {
    const round = this.book.finish(contributions, tokens, participants.length);
    for (const id of participants) {
      const m = this.membership.get(id);
      if (m) m.syncedRound = this.book.round;
    }
    if ((round + 1) % this.config.evalEvery === 0) await this.evaluate(round);
    if ((round + 1) % this.config.checkpointEvery === 0) await this.checkpoint();
  }

  private onGossip(msg: GossipMessage): void {
    if (msg.topic !== TOPIC_PEERS) return;
    const from = msg.from?.toString() ?? '';
    const r = decodeMessage(msg.data, { runId: this.d.info.runId, configHash: this.d.configHash, from, isAdmitted: (p) => this.membership.has(p) });
    if (!r.ok) return this.reject(r.reason, from, r.detail);
    const m = this.membership.heard(from)!;
    switch (r.msg.type) {
      case 'heartbeat':
        m.tokensPerSec = r.msg.tokensPerSec;
        this.d.store.touchPeer(from, m.lastSeen, r.msg.tokensPerSec);
        break;
      case 'done':
        this.book.recordLoss(r.msg.round, r.msg.loss, r.msg.samples);
        this.driver.onDone(r.msg, from);
        break;
      case 'pipe-error':
        this.driver.onPipeError(r.msg, from);
        break;
      case 'leave':
        this.membership.left(from);
        break;
      default:
        this.reject('structure', from, `unexpected ${r.msg.type} on ${TOPIC_PEERS}`);
    }
  }

  private reject(reason: RejectReason | string, from: string, detail: string): void {
    this.membership.reject(reason, from, detail);
  }
}
