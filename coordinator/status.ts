/** GET /api/status from the coordinator's collaborators: one StatusReport (run/status-report.ts). */
import type { ShardDataset } from '../node/data/shard-dataset.ts';
import type { RunConfig } from '../run/config.ts';
import type { PipelineReport, StatusReport } from '../run/status-report.ts';
import type { Membership } from './membership.ts';
import type { RunStore } from './run-store.ts';

export interface StatusSources {
  runId: string;
  configHash: string;
  config: RunConfig;
  round: number;
  lastEvalRound: number;
  store: RunStore;
  members: Membership;
  data: ShardDataset;
  multiaddrs: string[];
  pipeline?: PipelineReport;
}

export function buildStatus(s: StatusSources): StatusReport {
  const online = new Set(s.members.ids());
  const manifest = s.data.manifest;
  return {
    runId: s.runId,
    configHash: s.configHash,
    mode: s.config.mode,
    round: s.round,
    tokensTrained: s.store.tokensTrained(),
    model: s.config.model,
    data: { name: manifest.name, tokenizer: manifest.tokenizer.kind, vocabSize: manifest.vocabSize, trainTokens: manifest.train.tokens },
    history: s.store.history().map((h) => ({ round: h.round, loss: h.loss, ...(h.valLoss !== null ? { valLoss: h.valLoss } : {}), participants: h.participants })),
    peers: s.store
      .peers()
      .filter((r) => online.has(r.id))
      .map((r) => {
        const m = s.members.get(r.id);
        return {
          id: r.id,
          kind: r.kind,
          backend: r.backend,
          shards: r.shards ? (JSON.parse(r.shards) as string[]).length : 0,
          tokensPerSec: m?.tokensPerSec ?? r.tokensPerSec,
          roundsContributed: r.roundsContributed,
          lastSeen: new Date(m?.lastSeen ?? r.lastSeen).toISOString(),
          synced: m?.syncedRound === s.round,
        };
      }),
    rejected: s.store.rejections(),
    lastEvalRound: s.lastEvalRound,
    multiaddrs: s.multiaddrs,
    ...(s.pipeline ? { pipeline: s.pipeline } : {}),
  };
}
