/**
 * A data-parallel peer (sync or DiLoCo): holds the whole model in its replica, takes part in every round it
 * is announced in — computing its contribution on batches derived from the run seed, round and its slot,
 * averaging it with the other participants over direct streams, and applying the identical update.
 */
import { peerIdFromString } from '@libp2p/peer-id';
import { hashFloats } from '../engine/averaging.ts';
import type { AllReduce } from '../net/averaging/allreduce.ts';
import { deadline } from '../net/deadline.ts';
import type { RunState } from '../net/state-sync.ts';
import type { Message, RoundAnnounce } from '../protocol/index.ts';
import { localUpdateFor, type Contribution, type LocalUpdate } from './local-update.ts';
import type { PeerMode, PeerModeContext } from './peer-mode.ts';
import type { PeerReplica } from './replica.ts';

export interface PeerProgress {
  round: number;
  loss: number;
  tokensPerSec: number;
  peers: number;
  /** Hash of our parameters after the round (equal on every peer of the run). */
  paramHash: string;
}

export class DataParallelMode implements PeerMode {
  round = 0;
  private tokensPerSec = 0;
  private paramHash = '';
  private allreduce?: AllReduce;
  private readonly update: LocalUpdate;
  private current?: { round: number; attempt: number; abort: AbortController };
  private contribution?: Contribution & { round: number };
  private lastRound: number;

  constructor(
    private readonly c: PeerModeContext,
    private readonly replica: PeerReplica,
    private readonly onProgress?: (p: PeerProgress) => void,
  ) {
    this.update = localUpdateFor(c.config);
    this.lastRound = c.clock.now();
  }

  get speed(): number {
    return this.tokensPerSec;
  }

  async start(): Promise<void> {
    this.allreduce = this.c.averaging((await this.replica.state()).params.length, () => this.round);
    await this.allreduce.start();
  }

  async stop(): Promise<void> {
    this.current?.abort.abort(new Error('stopping'));
    await this.allreduce?.stop();
    await this.replica.stop();
  }

  reset(why: string): void {
    this.current?.abort.abort(new Error(why));
    this.current = undefined;
    this.allreduce?.reset();
  }

  async adopt(s: RunState): Promise<void> {
    await this.update.adopt(this.replica, s);
    this.round = s.round;
    this.paramHash = hashFloats(s.params);
    this.contribution = undefined;
  }

  onControl(msg: Message): void {
    if (msg.type === 'round') this.onAnnounce(msg);
  }

  private onAnnounce(a: RoundAnnounce): void {
    if (a.round < this.round) return; // an old round (or a re-announcement of one we finished)
    const cur = this.current;
    if (cur && cur.round === a.round && cur.attempt >= a.attempt) return; // a re-announcement of what we run
    if (cur && cur.round === a.round && cur.attempt < a.attempt) cur.abort.abort(new Error(`superseded by attempt ${a.attempt}`));
    if (!a.participants.includes(this.c.me)) return;
    const abort = new AbortController();
    this.current = { round: a.round, attempt: a.attempt, abort };
    this.c.enqueue(() => this.runRound(a, abort));
  }

  private batches(round: number, count: number, inner: number) {
    return Array.from({ length: count }, (_, k) => this.c.batchAt(round, inner, k));
  }

  private async runRound(a: RoundAnnounce, abort: AbortController): Promise<void> {
    const { c } = this;
    if (abort.signal.aborted || c.stopping.aborted) return;
    if (a.round !== this.round || a.paramHash !== this.paramHash) {
      // We are not at the state the round starts from: leave (the coordinator retries at once) and rejoin.
      c.log.warn(`round ${a.round} starts from ${a.paramHash}, we hold ${this.paramHash} at round ${this.round}: resyncing`);
      await c.rejoin('out of sync');
      return;
    }
    const index = a.participants.indexOf(c.me);
    const started = c.clock.now();
    if (!this.contribution || this.contribution.round !== a.round) {
      // Computed once per round: a retry (new attempt) averages the same contribution again.
      const micro = a.microBatches[index];
      const contribution = await this.update.contribute(this.replica, (inner) => this.batches(a.round, micro, inner));
      this.contribution = { round: a.round, ...contribution };
    }
    const contribution = this.contribution;
    const limit = deadline(a.deadlineMs, abort.signal, c.stopping);
    try {
      // Connect to the other participants first: a browser cannot be dialled, so it must reach out, and the
      // others then answer on these connections.
      const connected = new Set(c.libp2p.getConnections().map((x) => x.remotePeer.toString()));
      await Promise.allSettled(a.participants.filter((p) => p !== c.me && !connected.has(p)).map((p) => c.libp2p.dial(peerIdFromString(p) as never, { signal: limit.signal })));
      const avg = await this.allreduce!.run(a.round, a.attempt, a.participants, contribution.values, contribution.samples, [c.coordinator()], limit.signal);
      await this.update.apply(this.replica, avg, contribution);
    } finally {
      limit.clear();
    }
    const params = (await this.replica.state()).params;
    this.paramHash = hashFloats(params);
    this.round = a.round + 1;
    this.allreduce!.forgetBefore(this.round);
    this.contribution = undefined;
    const tokens = contribution.samples * c.config.train.seqLen;
    c.contributed(tokens);
    const seconds = Math.max(1e-3, (c.clock.now() - Math.max(started, this.lastRound - 1e9)) / 1000);
    this.tokensPerSec = tokens / seconds;
    this.lastRound = c.clock.now();
    await c.publish({ ...c.envelope(), type: 'done', round: a.round, attempt: a.attempt, paramHash: this.paramHash, loss: contribution.loss, samples: contribution.samples });
    this.onProgress?.({ round: a.round, loss: contribution.loss, tokensPerSec: this.tokensPerSec, peers: a.participants.length, paramHash: this.paramHash });
  }
}
