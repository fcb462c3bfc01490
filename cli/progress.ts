/**
 * Progress display for training: a redrawn bar on a terminal, a plain line every few seconds otherwise.
 * Writes to stderr so stdout stays clean for --json.
 */
export interface ProgressState {
  step: number;
  totalSteps: number;
  loss: number;
  tokensPerSec: number;
  /** Estimated seconds to the last step. */
  etaSeconds: number;
  valLoss?: number;
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

function formatRate(r: number): string {
  return r >= 1000 ? `${(r / 1000).toFixed(1)}k` : r.toFixed(0);
}

export function progressLine(p: ProgressState, width = 24): string {
  const frac = Math.min(1, p.step / Math.max(1, p.totalSteps));
  const filled = Math.round(frac * width);
  const bar = '#'.repeat(filled) + '.'.repeat(width - filled);
  const val = p.valLoss !== undefined ? ` val ${p.valLoss.toFixed(3)}` : '';
  return `step ${p.step}/${p.totalSteps} [${bar}] loss ${p.loss.toFixed(3)}${val} | ${formatRate(p.tokensPerSec)} tok/s | ETA ${formatDuration(p.etaSeconds)}`;
}

export class Progress {
  private lastPlain = 0;
  private readonly tty: boolean;

  constructor(
    private readonly out: NodeJS.WriteStream,
    private readonly quiet = false,
  ) {
    this.tty = Boolean(out.isTTY);
  }

  update(p: ProgressState): void {
    if (this.quiet) return;
    const line = progressLine(p);
    if (this.tty) this.out.write(`\r\x1b[2K${line}`);
    else if (Date.now() - this.lastPlain > 5000 || p.step === p.totalSteps) {
      this.lastPlain = Date.now();
      this.out.write(`${line}\n`);
    }
  }

  /** Prints a message on its own line (keeping the bar intact below it on a terminal). */
  log(message: string): void {
    if (this.quiet) return;
    this.out.write(this.tty ? `\r\x1b[2K${message}\n` : `${message}\n`);
  }

  done(): void {
    if (!this.quiet && this.tty) this.out.write('\n');
  }
}
