/**
 * safetensors export: an 8-byte little-endian header length, a JSON header of
 * { name: { dtype, shape, data_offsets: [begin, end] } , __metadata__: { string: string } }, then raw bytes.
 * Names follow Hugging Face's GPT-2 layout (transformer.h.0.attn.c_attn.weight …), whose Conv1D weights are
 * [in, out] like ours, so a causal checkpoint loads into GPT2LMHeadModel (tanh GELU, LayerNorm eps 1e-5) as is.
 */
import type { ModelConfig } from '../config.ts';
import type { Manifest } from '../flat.ts';

const HF_NAMES: Array<[RegExp, string]> = [
  [/^wte$/, 'transformer.wte.weight'],
  [/^wpe$/, 'transformer.wpe.weight'],
  [/^h\.(\d+)\.ln1\.gamma$/, 'transformer.h.$1.ln_1.weight'],
  [/^h\.(\d+)\.ln1\.beta$/, 'transformer.h.$1.ln_1.bias'],
  [/^h\.(\d+)\.attn\.wQkv$/, 'transformer.h.$1.attn.c_attn.weight'],
  [/^h\.(\d+)\.attn\.bQkv$/, 'transformer.h.$1.attn.c_attn.bias'],
  [/^h\.(\d+)\.attn\.wProj$/, 'transformer.h.$1.attn.c_proj.weight'],
  [/^h\.(\d+)\.attn\.bProj$/, 'transformer.h.$1.attn.c_proj.bias'],
  [/^h\.(\d+)\.ln2\.gamma$/, 'transformer.h.$1.ln_2.weight'],
  [/^h\.(\d+)\.ln2\.beta$/, 'transformer.h.$1.ln_2.bias'],
  [/^h\.(\d+)\.mlp\.wFc$/, 'transformer.h.$1.mlp.c_fc.weight'],
  [/^h\.(\d+)\.mlp\.bFc$/, 'transformer.h.$1.mlp.c_fc.bias'],
  [/^h\.(\d+)\.mlp\.wProj$/, 'transformer.h.$1.mlp.c_proj.weight'],
  [/^h\.(\d+)\.mlp\.bProj$/, 'transformer.h.$1.mlp.c_proj.bias'],
  [/^lnF\.gamma$/, 'transformer.ln_f.weight'],
  [/^lnF\.beta$/, 'transformer.ln_f.bias'],
];

/** Hugging Face GPT-2 name of one of our parameters. */
export function hfGpt2Name(name: string): string {
  for (const [re, to] of HF_NAMES) if (re.test(name)) return name.replace(re, to);
  throw new Error(`no GPT-2 name for parameter "${name}"`);
}

export function encodeSafetensors(params: Float32Array, manifest: Manifest, model: ModelConfig, metadata: Record<string, string> = {}): Uint8Array {
  const header: Record<string, unknown> = {
    __metadata__: {
      format: 'pt',
      producer: 'peertrain',
      config: JSON.stringify({ n_layer: model.nLayer, n_head: model.nHead, n_embd: model.nEmbd, n_positions: model.blockSize, vocab_size: model.vocabSize, objective: model.objective }),
      ...metadata,
    },
  };
  for (const e of manifest.entries) {
    header[hfGpt2Name(e.name)] = { dtype: 'F32', shape: e.shape, data_offsets: [e.offset * 4, (e.offset + e.size) * 4] };
  }
  let json = JSON.stringify(header);
  // Pad the header with spaces so the data starts 8-byte aligned, as the format recommends.
  json += ' '.repeat((8 - ((8 + new TextEncoder().encode(json).length) % 8)) % 8);
  const headerBytes = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + headerBytes.length + params.byteLength);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  out.set(new Uint8Array(params.buffer, params.byteOffset, params.byteLength), 8 + headerBytes.length);
  return out;
}
