/**
 * The shape of GET /api/status: what a coordinator says about its run. Written once, here, because three
 * parties read it — the coordinator builds it (coordinator/status.ts), the page shows it, and tests and the
 * bench poll it.
 */
import type { ModelConfig } from '../engine/config.ts';
import type { AveragingMode, PipelineConfig } from './config.ts';

export interface StageReport {
  stage: number;
  parts: string[];
  peers: string[];
}

export interface PipelineReport {
  requestedStages: PipelineConfig['stages'];
  activationDtype: PipelineConfig['activationDtype'];
  maxInFlight: number;
  parts: string[];
  stages: StageReport[];
  /** Why no round can start now (e.g. a stage without peers), or null. */
  waiting: string | null;
  replans: Array<{ round: number; reason: string; stages: StageReport[] }>;
  failedAttempts: number;
  reroutedMicroBatches: number;
}

export interface PeerReport {
  id: string;
  kind: string;
  backend: string;
  shards: number;
  tokensPerSec: number;
  roundsContributed: number;
  lastSeen: string;
  /** Whether its state matches the round about to start. */
  synced: boolean;
}

export interface HistoryEntry {
  round: number;
  loss: number | null;
  valLoss?: number;
  participants: number;
}

export interface StatusReport {
  runId: string;
  configHash: string;
  mode: AveragingMode;
  round: number;
  tokensTrained: number;
  model: ModelConfig;
  data: { name: string; tokenizer: string; vocabSize: number; trainTokens: number };
  history: HistoryEntry[];
  peers: PeerReport[];
  /** Rejected messages by reason. */
  rejected: Record<string, number>;
  lastEvalRound: number;
  multiaddrs: string[];
  pipeline?: PipelineReport;
}
