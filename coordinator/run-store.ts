/**
 * The coordinator's run state in SQLite (better-sqlite3 v12): peers and their statistics, every round's
 * contributions, the metric history and rejection counts. A restarted coordinator reads it back, so the loss
 * curve and the peer list survive. Writes are small and synchronous; WAL keeps readers (the status endpoint)
 * from blocking the round loop.
 */
import Database from 'better-sqlite3';

export interface PeerRow {
  id: string;
  kind: 'node' | 'browser';
  backend: string;
  tokensPerSec: number;
  roundsContributed: number;
  slot: number;
  joinedAt: number;
  lastSeen: number;
  banned: number;
  /** JSON list of the training shards assigned to the peer. */
  shards: string | null;
}

export interface HistoryRow {
  round: number;
  /** Mean training loss the participants reported; null until their reports arrive. */
  loss: number | null;
  valLoss: number | null;
  tokens: number;
  participants: number;
  at: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS peers (
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, backend TEXT NOT NULL, tokensPerSec REAL NOT NULL,
  roundsContributed INTEGER NOT NULL DEFAULT 0, slot INTEGER NOT NULL, joinedAt INTEGER NOT NULL,
  lastSeen INTEGER NOT NULL, banned INTEGER NOT NULL DEFAULT 0, shards TEXT);
CREATE TABLE IF NOT EXISTS contributions (
  round INTEGER NOT NULL, peer TEXT NOT NULL, samples INTEGER NOT NULL, loss REAL, at INTEGER NOT NULL,
  stage INTEGER, PRIMARY KEY (round, peer));
CREATE TABLE IF NOT EXISTS history (
  round INTEGER PRIMARY KEY, loss REAL, valLoss REAL, tokens INTEGER NOT NULL,
  participants INTEGER NOT NULL, at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rejections (reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
`;

export class RunStore {
  private readonly db: Database.Database;

  constructor(path: string) {
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(SCHEMA);
    // Run directories made before pipeline stages were recorded get the column (null: data parallelism).
    const columns = this.db.prepare('PRAGMA table_info(contributions)').all() as Array<{ name: string }>;
    if (!columns.some((c) => c.name === 'stage')) this.db.exec('ALTER TABLE contributions ADD COLUMN stage INTEGER');
  }

  getMeta(key: string): string | undefined {
    return (this.db.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined)?.value;
  }

  setMeta(key: string, value: string): void {
    this.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value);
  }

  setShards(id: string, shards: string[]): void {
    this.db.prepare('UPDATE peers SET shards = ? WHERE id = ?').run(JSON.stringify(shards), id);
  }

  upsertPeer(p: Omit<PeerRow, 'roundsContributed' | 'banned' | 'shards'>): PeerRow {
    this.db
      .prepare(
        `INSERT INTO peers (id, kind, backend, tokensPerSec, slot, joinedAt, lastSeen) VALUES (@id, @kind, @backend, @tokensPerSec, @slot, @joinedAt, @lastSeen)
         ON CONFLICT(id) DO UPDATE SET kind = excluded.kind, backend = excluded.backend, tokensPerSec = excluded.tokensPerSec, lastSeen = excluded.lastSeen`,
      )
      .run(p);
    return this.peer(p.id)!;
  }

  peer(id: string): PeerRow | undefined {
    return this.db.prepare('SELECT * FROM peers WHERE id = ?').get(id) as PeerRow | undefined;
  }

  peers(): PeerRow[] {
    return this.db.prepare('SELECT * FROM peers ORDER BY slot').all() as PeerRow[];
  }

  nextSlot(): number {
    return ((this.db.prepare('SELECT MAX(slot) AS s FROM peers').get() as { s: number | null }).s ?? -1) + 1;
  }

  touchPeer(id: string, at: number, tokensPerSec?: number): void {
    if (tokensPerSec === undefined) this.db.prepare('UPDATE peers SET lastSeen = ? WHERE id = ?').run(at, id);
    else this.db.prepare('UPDATE peers SET lastSeen = ?, tokensPerSec = ? WHERE id = ?').run(at, tokensPerSec, id);
  }

  banPeer(id: string): void {
    this.db.prepare('UPDATE peers SET banned = 1 WHERE id = ?').run(id);
  }

  /** Records a finished round: one row per contributor, the metrics, and the contributors' counters. */
  recordRound(round: number, contributions: Array<{ peer: string; samples: number; loss: number | null; stage?: number }>, h: Omit<HistoryRow, 'round'>): void {
    const tx = this.db.transaction(() => {
      const ins = this.db.prepare('INSERT OR REPLACE INTO contributions (round, peer, samples, loss, at, stage) VALUES (?, ?, ?, ?, ?, ?)');
      const inc = this.db.prepare('UPDATE peers SET roundsContributed = roundsContributed + 1 WHERE id = ?');
      for (const c of contributions) {
        ins.run(round, c.peer, c.samples, c.loss, h.at, c.stage ?? null);
        inc.run(c.peer);
      }
      this.db
        .prepare('INSERT OR REPLACE INTO history (round, loss, valLoss, tokens, participants, at) VALUES (?, ?, ?, ?, ?, ?)')
        .run(round, h.loss, h.valLoss, h.tokens, h.participants, h.at);
    });
    tx();
  }

  setLoss(round: number, loss: number): void {
    this.db.prepare('UPDATE history SET loss = ? WHERE round = ?').run(loss, round);
  }

  setValLoss(round: number, valLoss: number): void {
    this.db.prepare('UPDATE history SET valLoss = ? WHERE round = ?').run(valLoss, round);
  }

  history(): HistoryRow[] {
    return this.db.prepare('SELECT * FROM history ORDER BY round').all() as HistoryRow[];
  }

  /** Drops history after `round` (a restart from an older checkpoint replays those rounds). */
  truncateAfter(round: number): void {
    this.db.prepare('DELETE FROM history WHERE round > ?').run(round);
    this.db.prepare('DELETE FROM contributions WHERE round > ?').run(round);
    // Counters follow the contributions that remain (replayed rounds are counted again when they rerun).
    this.db.prepare('UPDATE peers SET roundsContributed = (SELECT COUNT(*) FROM contributions c WHERE c.peer = peers.id)').run();
  }

  contributions(round: number): Array<{ peer: string; samples: number; loss: number | null }> {
    return this.db.prepare('SELECT peer, samples, loss FROM contributions WHERE round = ? ORDER BY peer').all(round) as Array<{ peer: string; samples: number; loss: number | null }>;
  }

  countRejection(reason: string): void {
    this.db.prepare('INSERT INTO rejections (reason, count) VALUES (?, 1) ON CONFLICT(reason) DO UPDATE SET count = count + 1').run(reason);
  }

  rejections(): Record<string, number> {
    const rows = this.db.prepare('SELECT reason, count FROM rejections').all() as Array<{ reason: string; count: number }>;
    return Object.fromEntries(rows.map((r) => [r.reason, r.count]));
  }

  tokensTrained(): number {
    return (this.db.prepare('SELECT COALESCE(SUM(tokens), 0) AS t FROM history').get() as { t: number }).t;
  }

  close(): void {
    this.db.close();
  }
}
