/**
 * Protocol versions, names and limits. Every peer (Node process or browser tab) must agree on these, so they
 * live here and nowhere else; changing one changes the wire format, and PROTOCOL_VERSION with it.
 */

/** Version carried in every message's `v`. Bumped on any incompatible change; peers drop other versions. */
export const PROTOCOL_VERSION = 2;

// --- gossipsub topics --------------------------------------------------------------------------------------

/** Coordinator announcements (`round`, `resync`): one writer, every peer reads. Versioned like the protocol. */
export const TOPIC_CONTROL = 'peertrain/control/1';

/** Peer status (`heartbeat`, `done`, `leave`): every peer writes, the coordinator and peers read. */
export const TOPIC_PEERS = 'peertrain/peers/1';

// --- stream protocol ids -----------------------------------------------------------------------------------

/** Joining: `join` from the peer, then `welcome` or `refused` from the coordinator. */
export const JOIN_PROTOCOL = '/peertrain/join/1.0.0';

/** All-reduce between participants of a round: `part` frames with phase `reduce` then `gather`. */
export const ALLREDUCE_PROTOCOL = '/peertrain/allreduce/1.0.0';

/** State transfer to a (re)joining peer: `state-request`, then `state` followed by `part` frames (phase `state`). */
export const STATE_PROTOCOL = '/peertrain/state/1.0.0';

/** Training data shards for peers that have none locally. */
export const DATA_PROTOCOL = '/peertrain/data/1.0.0';

/**
 * Pipeline: one stream per micro-batch and hop; `activation` + `act-part` frames forward, the same backward
 * (or a `pipe-error`) on the way back.
 */
export const PIPELINE_PROTOCOL = '/peertrain/pipeline/1.0.0';

/**
 * Averaging inside one pipeline stage's swarm (group = stage index; the group after the last stage averages
 * the tied token embedding between the first and the last stage). One protocol id per group, so the
 * coordinator can observe every stage's averaging of a round at once.
 */
export function stageAllreduceProtocol(group: number): string {
  return `/peertrain/stage-allreduce/1.0.0/${group}`;
}

/** Most pipeline stages (bounds announcements and planning). */
export const MAX_STAGES = 256;

/** Largest magnitude of an activation or activation gradient on the pipeline stream: float16's largest value. */
export const MAX_ACTIVATION_ABS = 65504;

/** Largest micro-batch tensor on the pipeline stream (elements of B·T·C), whatever its frames. */
export const MAX_ACTIVATION_ELEMENTS = 1 << 28;

/** Largest B·T of a micro-batch: its targets and weights ride in one activation header, within MAX_MESSAGE_BYTES. */
export const MAX_MICRO_TOKENS = 1 << 16;

// --- size limits -------------------------------------------------------------------------------------------

/**
 * Most float32 elements in one `part` frame: 1 MiB of payload. Tensors are split into frames this size so
 * no frame needs an unbounded buffer, a receiver can reject a frame before reading the next, and one slow
 * frame does not hold a whole tensor hostage.
 */
export const MAX_PART_ELEMENTS = 256 * 1024;

/** Largest encoded message a receiver accepts: a full `part` frame plus 64 KiB for its header fields. */
export const MAX_MESSAGE_BYTES = MAX_PART_ELEMENTS * 4 + 64 * 1024;

/**
 * Our cap on gossip payloads. Gossipsub refuses to send more than ~4 MiB; our own cap must sit below that,
 * never above, so an oversized message fails here with a clear error rather than silently inside gossipsub.
 */
export const GOSSIP_MAX_BYTES = 1024 * 1024;

// --- field limits (structure checks) -----------------------------------------------------------------------

/** Longest peer id string (`sender`, `target`, `participants`): libp2p's are about 50 characters; room to spare. */
export const MAX_PEER_ID_LENGTH = 128;

/** Longest `runId` or `configHash`: ids and hex digests of any common hash fit. */
export const MAX_ID_LENGTH = 128;

/** Longest join `token`: enough for any bearer token; bounded so a join cannot carry a payload. */
export const MAX_TOKEN_LENGTH = 256;

/** Longest `backend` name ('tensorflow', 'webgpu', 'wasm', …), with room for a version suffix. */
export const MAX_BACKEND_LENGTH = 64;

/** Longest `refused` or `resync` reason: a human-readable sentence, not a document. */
export const MAX_REASON_LENGTH = 512;

/** Longest `leave` reason. */
export const MAX_LEAVE_REASON_LENGTH = 256;

/** Most participants in one round: bounds every per-participant loop and the announcement's size. */
export const MAX_PARTICIPANTS = 1024;

/** Most micro-batches one participant may be assigned in a round. */
export const MAX_MICRO_BATCHES = 4096;

/**
 * How many rounds ahead of the receiver a message may be. A peer that is one or two rounds behind (it missed
 * an announcement, or is finishing the previous round) must still accept the next round's traffic; anything
 * further ahead is more likely forged than real.
 */
export const MAX_FUTURE_ROUNDS = 2;

/** Listen addresses a heartbeat may advertise, and the length of each. */
export const MAX_LISTEN_ADDRS = 16;
export const MAX_ADDR_LENGTH = 256;

/** Shards a welcome may assign. */
export const MAX_SHARDS = 65_536;

/** Bytes of a shard per data frame (bounded frames, like tensor parts). */
export const MAX_DATA_BYTES = 1024 * 1024;

/** Shard file names: what manifest.json allows (no path separators). */
export const MAX_FILE_NAME_LENGTH = 128;

/** Limits on a welcome's `config`, so a hostile JSON-like value cannot cost unbounded time to check. */
export const MAX_CONFIG_DEPTH = 16;
export const MAX_CONFIG_NODES = 1_000_000;
