/**
 * Length-prefixed protocol messages over a libp2p stream: every frame is decoded and validated by protocol/,
 * and a rejected frame is reported (never thrown) so the caller can count it and drop the peer if it persists.
 */
import type { Stream } from '@libp2p/interface';
import { lpStream } from '@libp2p/utils';
import { decodeMessage, encodeMessage, MAX_MESSAGE_BYTES, type DecodeResult, type Message, type ValidationContext } from '../protocol/index.ts';

export interface FramedStream {
  /** Next validated message; undefined at a clean end of stream. Bad frames are results with ok: false. */
  read(signal?: AbortSignal): Promise<DecodeResult | undefined>;
  write(msg: Message, signal?: AbortSignal): Promise<void>;
  close(): Promise<void>;
  abort(err: Error): void;
}

export function framed(stream: Stream, ctx: () => ValidationContext): FramedStream {
  // maxDataLength slightly above ours: an oversized frame is read and rejected as 'size' by decodeMessage
  // rather than breaking the stream mid-frame. Anything larger still errors the stream, which is dropped.
  const lp = lpStream(stream, { maxDataLength: MAX_MESSAGE_BYTES * 2 });
  return {
    async read(signal) {
      let bytes;
      try {
        bytes = await lp.read({ signal });
      } catch (err) {
        // The remote closed its side after its last frame: a normal end.
        if (stream.readStatus === 'closed' || (err as Error).name === 'UnexpectedEOFError') return undefined;
        throw err;
      }
      return decodeMessage(bytes.subarray(), ctx());
    },
    async write(msg, signal) {
      await lp.write(encodeMessage(msg), { signal });
    },
    async close() {
      await stream.close();
    },
    abort(err) {
      stream.abort(err);
    },
  };
}
