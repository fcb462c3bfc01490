/**
 * Packing documents into fixed-length sequences: each document's tokens followed by the separator (EOS) form
 * one stream, cut into sequences of `length` tokens (a training window of T = length - 1 inputs and targets).
 * The tail that does not fill a sequence is kept until more text arrives, and dropped at the very end.
 */
export class SequencePacker {
  private buffer: Int32Array;
  private fill = 0;
  /** Tokens dropped by flush() because they did not fill a sequence. */
  dropped = 0;

  constructor(
    readonly length: number,
    private readonly eosId: number,
    private readonly emit: (sequence: Int32Array) => void,
  ) {
    if (!Number.isInteger(length) || length < 2) throw new Error(`sequence length must be an integer >= 2, got ${length}`);
    this.buffer = new Int32Array(length);
  }

  /** Adds one document's tokens and its separator. */
  addDocument(tokens: ArrayLike<number>): void {
    for (let i = 0; i <= tokens.length; i++) {
      this.buffer[this.fill++] = i < tokens.length ? tokens[i] : this.eosId;
      if (this.fill === this.length) {
        this.emit(this.buffer);
        this.buffer = new Int32Array(this.length);
        this.fill = 0;
      }
    }
  }

  flush(): void {
    this.dropped += this.fill;
    this.fill = 0;
  }
}
