/**
 * A pipeline stage peer: holds one stage of the model (parameters and AdamW state only for it), serves the
 * micro-batches routed through it, drives its own when it serves the first stage, averages its stage's
 * gradients with the stage's swarm, and applies them when the coordinator commits the round.
 *
 * A round (one attempt of it), for a peer of stage s:
 *   1. the announcement names the routes; the peer knows which micro-batches will pass it;
 *   2. first stage: it samples its micro-batches and sends each forward (up to maxInFlight at once); every
 *      stage computes forward, passes the activations to the route's next peer, waits for the gradient, and
 *      computes backward (recomputing its forward), accumulating its parameter gradients;
 *   3. once all its micro-batches are through, it averages with its swarm (and, first and last stage, the
 *      tied embedding with each other) over direct streams, the coordinator observing;
 *   4. on the coordinator's commit (which carries the global gradient norm for clipping) it applies them.
 * A superseded attempt (a peer died; the coordinator re-planned and re-routed) is dropped whole: nothing is
 * applied without a commit, so no micro-batch is ever half-applied.
 */
import type { Connection, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { hashFloats } from '../../engine/averaging.ts';
import { joinStageGradient, splitStageGradient, tiedPrefix } from '../../engine/pipeline-gradients.ts';
import { StageTrainer, type StageInput } from '../../engine/stage-trainer.ts';
import type { Batch } from '../../engine/trainer.ts';
import { envelope, PIPELINE_PROTOCOL, stageAllreduceProtocol, type ActivationHeader, type Message, type PipelineAnnounce, type PipelineCommit, type RejectReason } from '../../protocol/index.ts';
import type { AllReduce } from '../../net/averaging/allreduce.ts';
import { deadline } from '../../net/deadline.ts';
import { framed } from '../../net/framed.ts';
import { sleep } from '../../net/sleep.ts';
import { waitUntil } from '../../net/wait-until.ts';
import type { RunConfig } from '../../run/config.ts';
import type { RunState } from '../../net/state-sync.ts';
import type { Libp2pLike, Logger } from '../../net/types.ts';
import { PipelineStreamError, readHeader, readValues, writeError, writeTensor, type RunScope } from './activation-io.ts';
import { ActivationLinks } from './activation-links.ts';
import { ComputeQueue } from './compute-queue.ts';
import { attemptChanged, newAttempt, type Attempt } from './stage-attempt.ts';
import { averagingGroups } from '../../run/pipeline-groups.ts';

/** Times a driver sends a micro-batch before giving up on the attempt (the coordinator then re-plans). */
const MICRO_BATCH_TRIES = 3;
/** Pause before a refused or dropped micro-batch is sent again, times the tries so far. */
const RESEND_BACKOFF_MS = 200;
/** How long an inbound pipeline stream may stay open (a micro-batch's whole route beyond us). */
const SERVE_STREAM_TIMEOUT_MS = 600_000;
/** How often a stream from a not-yet-admitted sender looks again whether its announcement came. */
const ADMISSION_POLL_MS = 25;
/** How long dialling the round's other participants may take before the attempt goes on. */
const PRE_DIAL_MS = 2_000;
/** How long a stream for an attempt we have not seen announced waits for the announcement. */
const ANNOUNCE_GRACE_MS = 5_000;

export interface StageProgress {
  round: number;
  stage: number;
  stages: number;
  /** Mean loss of the micro-batches whose loss this peer computed (last stage), else NaN. */
  loss: number;
  microBatches: number;
  /** Time this peer computed, and the time from the announcement to its last micro-batch (bubble = 1 − busy/window). */
  busyMs: number;
  windowMs: number;
  /** Activation and gradient bytes this peer sent in the round. */
  activationBytes: number;
  paramHash: string;
}

export interface StagePeerOptions {
  libp2p: Libp2pLike;
  runId: string;
  configHash: string;
  config: RunConfig;
  coordinator: () => string;
  isAdmitted: (peer: string) => boolean;
  /** The k-th micro-batch this peer drives in `round` (a pure function of seed, round, slot and k). */
  batchAt: (round: number, k: number) => Batch;
  /** Publishes on the peers' topic (done reports). */
  publish: (msg: Message) => Promise<void>;
  /** Our state does not match the round: fetch it again. */
  resync: (why: string) => void;
  /** A micro-batch could not pass `failed` (a peer id, or '' when unknown): tell the coordinator. */
  reportFailure: (a: PipelineAnnounce, failed: string, reason: string) => void;
  /** A new averaging service for one of our groups (vectors of `size`, on `protocol`). */
  averaging: (size: number, round: () => number, protocol: string) => AllReduce;
  onReject: (reason: RejectReason, from: string, detail: string) => void;
  log: Logger;
  onProgress?: (p: StageProgress) => void;
}


export class StagePeer {
  private trainer?: StageTrainer;
  /** The next round this peer's stage state belongs to. */
  round = 0;
  paramHash = '';
  tokensPerSec = 0;
  private current?: Attempt;
  private readonly groups = new Map<number, AllReduce>();
  private readonly groupSizes = new Map<number, number>();
  private readonly queue = new ComputeQueue();
  private readonly commits = new Map<string, number>();
  private readonly abandoned = new Set<string>();
  /** An announcement of the next round that came while we were applying this one. */
  private pending?: PipelineAnnounce;
  private attemptWaiters: Array<() => void> = [];
  private chain: Promise<void> = Promise.resolve();
  private readonly stopping = new AbortController();
  private readonly scope: RunScope;
  private readonly links: ActivationLinks;

  constructor(private readonly o: StagePeerOptions) {
    this.scope = { runId: o.runId, configHash: o.configHash, sender: o.libp2p.peerId.toString() };
    this.links = new ActivationLinks({ libp2p: o.libp2p, runId: o.runId, configHash: o.configHash, config: o.config, isAdmitted: o.isAdmitted, scope: this.scope });
  }

  get range(): { from: number; to: number } | undefined {
    return this.trainer?.range;
  }

  async start(): Promise<void> {
    await this.o.libp2p.handle(PIPELINE_PROTOCOL, (s, c) => void this.serve(s, c), { maxInboundStreams: 256 });
  }

  async stop(): Promise<void> {
    this.stopping.abort(new Error('stopping'));
    this.current?.abort.abort(new Error('stopping'));
    await this.o.libp2p.unhandle(PIPELINE_PROTOCOL).catch(() => {});
    await this.chain.catch(() => {});
    try {
      for (const g of this.groups.values()) await g.stop().catch(() => {});
    } finally {
      this.trainer?.dispose();
    }
  }

  /** Adopts the stage state the coordinator served: its range decides which stage this peer serves. */
  adopt(s: RunState): void {
    const hash = hashFloats(s.params);
    const cur = this.current;
    // The very state we hold and the attempt in flight starts from (a second fetch raced the first): keep going.
    if (cur && this.trainer && cur.a.round === s.round && this.round === s.round && this.paramHash === hash && this.trainer.range.from === s.stageFrom && this.trainer.range.to === s.stageTo) return;
    // Everything is checked (range, sizes) before anything we hold is touched: a bad state leaves us as we were.
    const range = { from: s.stageFrom, to: s.stageTo };
    const c = this.o.config;
    const same = this.trainer && this.trainer.range.from === range.from && this.trainer.range.to === range.to;
    const next = same ? this.trainer! : new StageTrainer(c.model, c.train, range, s.params); // throws on a bad range or size
    const n = next.manifest.totalSize;
    if (s.params.length !== n || s.optimizer.length !== 2 * n) {
      if (!same) next.dispose();
      throw new PipelineStreamError(`stage state for parts [${range.from}, ${range.to}) has ${s.params.length} parameters and ${s.optimizer.length} optimizer values, expected ${n} and ${2 * n}`);
    }
    this.supersede('state replaced');
    if (same) next.importParams(s.params);
    else {
      this.trainer?.dispose();
      this.trainer = next;
    }
    next.optimizer.importState({ step: s.step, m: s.optimizer.subarray(0, n), v: s.optimizer.subarray(n) });
    next.discardGradients();
    this.round = s.round;
    this.paramHash = hash;
    this.o.log.info(`serving stage parts [${range.from}, ${range.to}) from round ${s.round}`);
  }

  onCommit(c: PipelineCommit): void {
    this.commits.set(`${c.round}/${c.attempt}`, c.gradNorm);
    for (const k of this.commits.keys()) if (Number(k.split('/')[0]) < this.round - 1) this.commits.delete(k);
    const cur = this.current;
    if (cur && cur.a.round === c.round && cur.a.attempt === c.attempt) attemptChanged(cur);
  }

  onAnnounce(a: PipelineAnnounce): void {
    if (!this.trainer || a.round < this.round || this.abandoned.has(`${a.round}/${a.attempt}`)) return;
    const cur = this.current;
    if (cur && cur.a.round === a.round && cur.a.attempt >= a.attempt) return; // a re-announcement
    // The next round's announcement repeats the commit of the round before (which gossip may have lost or
    // delivered later): finish that round first, then take this one.
    if (a.previous && a.round === this.round + 1) this.onCommit({ round: this.round, attempt: a.previous.attempt, gradNorm: a.previous.gradNorm } as PipelineCommit);
    // Still finishing the round before (the coordinator can be through it before we have every averaged
    // chunk): take this announcement once that round is applied, or has failed.
    if (cur && cur.a.round === this.round && a.round === this.round + 1 && !cur.abort.signal.aborted) {
      this.pending = a;
      return;
    }
    const me = a.participants.indexOf(this.scope.sender);
    if (me < 0) return;
    const stage = a.stages.findIndex((s) => s.peers.includes(me));
    if (stage < 0) return;
    const r = this.trainer.range;
    if (a.round !== this.round || a.stages[stage].from !== r.from || a.stages[stage].to !== r.to || a.stageHashes[stage] !== this.paramHash) {
      this.supersede('out of sync');
      return this.o.resync(`round ${a.round} expects stage parts [${a.stages[stage].from}, ${a.stages[stage].to}) at ${a.stageHashes[stage]}; we hold [${r.from}, ${r.to}) at ${this.paramHash}, round ${this.round}`);
    }
    this.supersede(`superseded by attempt ${a.attempt}`);
    // Drop what an abandoned attempt accumulated, now, before any micro-batch of this one can arrive: its
    // computations still queued will not start (their signal is aborted), and one already running has
    // accumulated (that happens at once when its backward pass starts).
    this.trainer.discardGradients();
    const att = newAttempt(a, me, stage, this.queue.busyMs);
    this.current = att;
    for (const w of this.attemptWaiters.splice(0)) w();
    this.chain = this.chain
      .then(() => this.runAttempt(att))
      .catch((err) => {
        if (!att.abort.signal.aborted) this.o.log.warn(`round ${a.round} attempt ${a.attempt}: ${(err as Error).name}: ${(err as Error).message}`);
        // Failed (a deadline, a peer gone): it is over, whatever comes next is judged afresh.
        if (this.current === att) this.supersede('failed');
        const next = this.pending;
        this.pending = undefined;
        if (next) this.onAnnounce(next);
      });
  }

  /** Abandons the attempt in flight; its accumulated gradients are dropped once its running compute ends. */
  private supersede(why: string): void {
    const cur = this.current;
    if (!cur) return;
    // Never restarted: its micro-batches may already have passed other peers, which refuse them twice.
    this.abandoned.add(`${cur.a.round}/${cur.a.attempt}`);
    if (this.abandoned.size > 64) this.abandoned.delete(this.abandoned.values().next().value!);
    cur.abort.abort(new Error(why));
    attemptChanged(cur);
    this.current = undefined;
  }

  private wait(att: Attempt, done: () => boolean, signal: AbortSignal): Promise<void> {
    return waitUntil(att.changed, done, signal, (reason) => (reason instanceof Error ? reason : new Error('aborted')));
  }

  /**
   * The averaging service of group g, accepting parts of at most `size` values (the vector this peer averages
   * there): a peer that holds one stage never allocates for more, whatever a part claims.
   */
  private group(g: number, size: number): AllReduce {
    let ar = this.groups.get(g);
    if (ar && this.groupSizes.get(g) !== size) {
      void ar.stop().catch(() => {});
      ar = undefined;
    }
    if (!ar) {
      this.groupSizes.set(g, size);
      ar = this.o.averaging(size, () => this.round, stageAllreduceProtocol(g));
      this.groups.set(g, ar);
      void ar.start().catch((err) => this.o.log.warn(`cannot listen for stage averaging group ${g}: ${(err as Error).message}`));
    }
    return ar;
  }

  // ---------------------------------------------------------------- one attempt

  private async runAttempt(att: Attempt): Promise<void> {
    const limit = deadline(att.a.deadlineMs, att.abort.signal, this.stopping.signal);
    try {
      await this.attempt(att, limit.signal);
    } finally {
      limit.clear();
    }
  }

  private async attempt(att: Attempt, signal: AbortSignal): Promise<void> {
    const { a } = att;
    const S = a.stages.length;
    // Listen on our groups at once (parts may come before we are through), and only on ours.
    const range = this.trainer!.range;
    const tiedLength = tiedPrefix(this.o.config.model, range, S);
    const ownLength = this.trainer!.manifest.totalSize - tiedLength;
    for (const g of [...this.groups.keys()]) {
      if (g !== att.stage && !(tiedLength && g === S)) {
        void this.groups.get(g)!.stop().catch(() => {});
        this.groups.delete(g);
      }
    }
    this.group(att.stage, ownLength);
    if (tiedLength) this.group(S, tiedLength);
    // Connect to the other participants first: a browser cannot be dialled, so it reaches out, and its
    // neighbours then send on these connections.
    const connected = new Set(this.o.libp2p.getConnections().map((c) => c.remotePeer.toString()));
    const others = a.participants.filter((p) => p !== this.scope.sender && !connected.has(p));
    const dials = deadline(PRE_DIAL_MS, signal);
    try {
      await Promise.allSettled(others.map((p) => this.o.libp2p.dial(peerIdFromString(p) as never, { signal: dials.signal })));
    } finally {
      dials.clear();
    }
    if (att.stage === 0) await this.drive(att, signal);
    await this.wait(att, () => att.processed.size === att.expected.size, signal);
    const windowMs = performance.now() - att.started;
    const busyMs = this.queue.busyMs - att.busyAtStart;
    const trainer = this.trainer!;
    const taken = await this.queue.run('backward', () => trainer.takeGradients(), signal);
    if (!taken.values.every(Number.isFinite)) {
      // Poisoned activations or gradients from a neighbour, or a diverged stage: contribute nothing.
      this.o.reportFailure(a, '', `stage ${att.stage} gradient is not finite`);
      throw new PipelineStreamError(`our stage ${att.stage} gradient is not finite: not contributing`);
    }
    const groups = averagingGroups(a);
    const coordinator = [this.o.coordinator()];
    const split = splitStageGradient(this.o.config.model, range, S, taken.values);
    let own = split.own;
    let tied: Float32Array | undefined;
    if (taken.samples > 0) {
      const runs: Array<Promise<Float32Array>> = [this.group(att.stage, ownLength).run(a.round, a.attempt, groups.stages[att.stage], split.own, taken.samples, coordinator, signal)];
      if (split.tied.length) runs.push(this.group(S, tiedLength).run(a.round, a.attempt, groups.tied, split.tied, taken.samples, coordinator, signal));
      [own, tied] = await Promise.all(runs);
    }
    // Without a contribution of our own (no micro-batch routed to us) we cannot take part in the averaging,
    // so we cannot take the step either: fetch the state again after the round.
    if (taken.samples === 0) return this.o.resync(`no micro-batch was routed through us in round ${a.round}`);
    const key = `${a.round}/${a.attempt}`;
    await this.wait(att, () => this.commits.has(key), signal);
    const gradNorm = this.commits.get(key)!;
    const joined = joinStageGradient(this.o.config.model, range, S, own, tied);
    await this.queue.run('backward', async () => {
      signal.throwIfAborted();
      trainer.apply(joined, gradNorm);
    });
    this.paramHash = hashFloats(await trainer.exportParams());
    this.round = a.round + 1;
    if (this.current === att) this.current = undefined;
    const isLast = att.stage === S - 1;
    const tokens = taken.samples * this.o.config.train.seqLen;
    // Reported as whole-model tokens/s (what the planner compares across stages): our stage's rate scaled by
    // the share of the model's parts it holds.
    this.tokensPerSec = busyMs > 0 ? (tokens / busyMs) * 1000 * ((this.o.config.model.nLayer + 2) / Math.max(1, range.to - range.from)) : this.tokensPerSec;
    await this.o.publish({ ...envelope(this.scope, Date.now()), type: 'done', round: a.round, attempt: a.attempt, paramHash: this.paramHash, loss: isLast ? taken.loss : 0, samples: isLast ? taken.samples : 0 });
    const next = this.pending;
    this.pending = undefined;
    if (next && next.round === this.round) queueMicrotask(() => this.onAnnounce(next));
    this.o.onProgress?.({ round: a.round, stage: att.stage, stages: S, loss: isLast ? taken.loss : NaN, microBatches: att.expected.size, busyMs, windowMs, activationBytes: att.bytes, paramHash: this.paramHash });
  }

  /** First stage: sample our micro-batches and push them through the pipeline, maxInFlight at a time. */
  private async drive(att: Attempt, signal: AbortSignal): Promise<void> {
    const mine = [...att.expected];
    let next = 0;
    const worker = async () => {
      while (next < mine.length) {
        const k = next++;
        const m = mine[k];
        const batch = this.o.batchAt(att.a.round, k);
        att.received.add(m);
        for (let tries = 1; ; tries++) {
          try {
            await this.throughStage(att, m, { B: batch.B, T: batch.T, ids: batch.ids }, batch.targets, batch.weights ?? new Float32Array(0), signal);
            break;
          } catch (err) {
            // A stage peer refused or dropped it before accumulating it (a peer that already did refuses a
            // second copy, so a retry can never count a micro-batch twice): send it again, a few times.
            if (signal.aborted) throw err;
            if (tries >= MICRO_BATCH_TRIES) {
              // Tell the coordinator whom to leave out, rather than let the attempt run into its deadline.
              this.o.reportFailure(att.a, err instanceof PipelineStreamError ? err.failed : '', (err as Error).message);
              throw err;
            }
            this.o.log.debug(`micro-batch ${m}: ${(err as Error).message}; sending it again`);
            await sleep(RESEND_BACKOFF_MS * tries, signal);
          }
        }
      }
    };
    const lanes = Math.min(this.o.config.pipeline!.maxInFlight, mine.length);
    // A lane that fails (a stage peer died) leaves its micro-batch unprocessed: the attempt then cannot finish
    // and the coordinator re-plans; the other lanes stop with the attempt's signal.
    await Promise.all(Array.from({ length: lanes }, worker)).catch((err) => {
      if (!signal.aborted) this.o.log.warn(`round ${att.a.round}: a micro-batch failed: ${(err as Error).message}`);
    });
  }

  /**
   * Our part of micro-batch m: forward, the rest of the route, backward. Returns the gradient w.r.t. our
   * input and the loss the last stage reported.
   */
  private async throughStage(att: Attempt, m: number, input: StageInput, targets: Int32Array, weights: Float32Array, signal: AbortSignal): Promise<{ gradInput?: Float32Array; loss: number }> {
    const trainer = this.trainer!;
    const S = att.a.stages.length;
    let out: { gradInput?: Float32Array; loss: number };
    if (att.stage === S - 1) {
      out = await this.queue.run('backward', () => trainer.lastStage(input, { targets, weights }), signal);
    } else {
      const activations = await this.queue.run('forward', () => trainer.forward(input), signal);
      const next = await this.links.hop(att, m, att.stage + 1, activations, input, targets, weights, signal);
      const gradInput = await this.queue.run('backward', () => trainer.backward(input, next.gradient), signal);
      out = { gradInput, loss: next.loss };
    }
    att.processed.add(m);
    attemptChanged(att);
    return out;
  }

  // ---------------------------------------------------------------- serving

  private async attemptFor(round: number, attempt: number): Promise<Attempt | undefined> {
    const deadline = Date.now() + ANNOUNCE_GRACE_MS;
    for (;;) {
      const cur = this.current;
      if (cur && cur.a.round === round && cur.a.attempt === attempt) return cur;
      if ((cur && (cur.a.round > round || (cur.a.round === round && cur.a.attempt > attempt))) || round < this.round || Date.now() > deadline) return undefined;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.attemptWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** A micro-batch from the previous stage's peer: check it is one routed through us, then pass it on. */
  private async serve(stream: Stream, connection: Connection): Promise<void> {
    const from = connection.remotePeer.toString();
    const io = framed(stream, () => ({ runId: this.o.runId, configHash: this.o.configHash, from, isAdmitted: this.o.isAdmitted }), AbortSignal.timeout(SERVE_STREAM_TIMEOUT_MS));
    let head: ActivationHeader | undefined;
    try {
      // The sender may have seen the round's announcement (which admits it) before we did.
      for (const start = Date.now(); !this.o.isAdmitted(from) && Date.now() - start < ANNOUNCE_GRACE_MS && !this.stopping.signal.aborted; ) await sleep(ADMISSION_POLL_MS, this.stopping.signal);
      head = await readHeader(io);
      const att = await this.attemptFor(head.round, head.attempt);
      const refuse = async (why: string) => {
        this.o.onReject('structure', from, why);
        await writeError(io, this.scope, head!.round, head!.attempt, head!.micro, '', why);
        await io.close().catch(() => {});
      };
      if (!att) return await refuse(`no attempt ${head.round}/${head.attempt} here`);
      const c = this.o.config;
      const prev = att.stage > 0 ? att.a.participants[att.a.routes[head.micro]?.[att.stage - 1] ?? -1] : undefined;
      if (head.direction !== 'forward' || head.stage !== att.stage || !att.expected.has(head.micro) || att.received.has(head.micro) || prev !== from) {
        return await refuse(`micro-batch ${head.micro} for stage ${head.stage} is not routed from ${from.slice(-8)} through us`);
      }
      if (head.B > c.train.microBatchSize || head.T !== c.train.seqLen || head.C !== c.model.nEmbd || head.dtype !== c.pipeline!.activationDtype || head.targets.some((t) => t >= c.model.vocabSize)) {
        return await refuse(`micro-batch ${head.micro} has shape ${head.B}x${head.T}x${head.C} ${head.dtype}, the run uses ≤${c.train.microBatchSize}x${c.train.seqLen}x${c.model.nEmbd} ${c.pipeline!.activationDtype}`);
      }
      att.received.add(head.micro);
      const signal = AbortSignal.any([att.abort.signal, this.stopping.signal]);
      const { values } = await readValues(io, head);
      let out: { gradInput?: Float32Array; loss: number };
      try {
        out = await this.throughStage(att, head.micro, { B: head.B, T: head.T, activations: values }, head.targets, head.weights, signal);
      } catch (err) {
        // Nothing of it was accumulated here (that happens last): the driver may send it again.
        if (!att.processed.has(head.micro)) att.received.delete(head.micro);
        const failed = err instanceof PipelineStreamError ? err.failed : '';
        await writeError(io, this.scope, head.round, head.attempt, head.micro, failed, (err as Error).message).catch(() => {});
        await io.close().catch(() => {});
        return;
      }
      att.bytes += await writeTensor(io, this.scope, this.links.header(att, head.micro, att.stage, 'backward', head.B, head.T, out.loss, new Int32Array(0), new Float32Array(0)), out.gradInput!);
      await io.close();
    } catch (err) {
      // A micro-batch whose values never fully arrived was not used: the driver may send it again.
      const cur = this.current;
      if (head && cur && cur.a.round === head.round && cur.a.attempt === head.attempt && !cur.processed.has(head.micro)) cur.received.delete(head.micro);
      this.o.log.debug(`pipeline stream from ${from.slice(-8)}${head ? ` (micro-batch ${head.micro})` : ''}: ${(err as Error).message}`);
      io.abort(err as Error);
    }
  }
}
