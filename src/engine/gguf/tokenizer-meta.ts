/**
 * Writes a byte-level BPE tokenizer (llama.cpp's "gpt2" vocab type) into GGUF metadata, and
 * builds the small ChatML vocabulary the tests and synthetic models use.
 */
import { PersonaError } from "../../errors.js";
import { byteTokens } from "./byte-unicode.js";
import type { GgufWriter } from "./writer.js";

/** llama.cpp `llama_token_type` values stored in tokenizer.ggml.token_type. */
export const TokenType = {
  UNDEFINED: 0,
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

export interface ByteBpeTokenizerSpec {
  /** Token texts in byte-unicode form (GPT-2 mapping), index = token id. */
  tokens: string[];
  /** Merge rules "left right", highest priority first. */
  merges: string[];
  /** One llama_token_type per token. Defaults to NORMAL, and CONTROL for bos/eos/eot/pad and `<|...|>` tokens. */
  tokenTypes?: number[];
  bos: number;
  eos: number;
  eot: number;
  pad?: number;
  /** tokenizer.ggml.pre, a pre-tokenizer name llama-vocab.cpp knows. Defaults to "gpt-2". */
  pre?: string;
  chatTemplate?: string;
  /** tokenizer.ggml.add_bos_token. Defaults to false. */
  addBos?: boolean;
}

export const CHATML_TEMPLATE =
  "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}" +
  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/** A few frequent English merges (byte-unicode: "Ġ" is a space), each built from earlier tokens. */
export const DEFAULT_MERGES: readonly string[] = [
  "Ġ t", "h e", "Ġt he", "i n", "e r", "a n", "Ġ a", "o n", "r e", "Ġ s", "a t", "e n", "o r",
  "Ġ w", "Ġ o", "e s", "i s", "i t", "Ġ c", "in g", "Ġ b", "e d", "n d", "Ġ f", "o u", "Ġ p",
  "a r", "Ġ m", "Ġ h", "Ġ i", "Ġ in", "Ġt o", "Ġa nd", "Ġo f", "Ġi s", "Ġ y", "Ġy ou", "l l",
  "Ġ d", "Ġ I", "Ġ e", "Ġ l", "Ġ n", "Ġ g", "Ġ r", "Ġ T", "Ġ S", "Ġ A", "Ġ W", "Ġ H", "Ġw h",
  "Ġwh at", "Ġh e", "Ġb e", "Ġc an", "Ġa re", "Ġs o", "Ġt h", "Ġth at", "Ġi t", "l e", "Ġf or",
  "Ġw it", "Ġwit h", "o t", "Ġn ot", "Ġ u", "Ġm e", "Ġm y", "v e", "Ġh a", "Ġha ve", "c h", "Ġ Ċ", "Ċ Ċ",
  ". Ċ", "? Ċ",
];

function isControlText(t: string): boolean {
  return /^<\|[^|]*\|>$/.test(t);
}

/** Writes tokenizer.ggml.* and tokenizer.chat_template; validates ids and merges first. */
export function writeByteBpeTokenizer(w: GgufWriter, tok: ByteBpeTokenizerSpec): void {
  const n = tok.tokens.length;
  const index = new Map<string, number>();
  tok.tokens.forEach((t, i) => {
    if (t === "") throw new PersonaError("E_BAD_INPUT", `token ${i} is empty`);
    if (index.has(t)) throw new PersonaError("E_BAD_INPUT", `token ${JSON.stringify(t)} appears twice (ids ${index.get(t)} and ${i})`);
    index.set(t, i);
  });
  for (const m of tok.merges) {
    const parts = m.split(" ");
    if (parts.length !== 2 || !parts[0] || !parts[1]) throw new PersonaError("E_BAD_INPUT", `merge ${JSON.stringify(m)} is not "left right"`);
    if (!index.has(parts[0]) || !index.has(parts[1]) || !index.has(parts[0] + parts[1])) {
      throw new PersonaError("E_BAD_INPUT", `merge ${JSON.stringify(m)} uses or produces a token missing from the vocabulary`);
    }
  }
  const ids: [string, number | undefined][] = [
    ["bos", tok.bos],
    ["eos", tok.eos],
    ["eot", tok.eot],
    ["pad", tok.pad],
  ];
  for (const [what, id] of ids) {
    if (id !== undefined && (!Number.isInteger(id) || id < 0 || id >= n)) {
      throw new PersonaError("E_BAD_INPUT", `${what} token id ${id} is outside the vocabulary of ${n}`);
    }
  }
  const special = new Set(ids.map(([, id]) => id).filter((id): id is number => id !== undefined));
  const types = tok.tokenTypes ?? tok.tokens.map((t, i) => (special.has(i) || isControlText(t) ? TokenType.CONTROL : TokenType.NORMAL));
  if (types.length !== n) throw new PersonaError("E_BAD_INPUT", `${types.length} token types for ${n} tokens`);

  w.setString("tokenizer.ggml.model", "gpt2");
  w.setString("tokenizer.ggml.pre", tok.pre ?? "gpt-2");
  w.setStringArray("tokenizer.ggml.tokens", tok.tokens);
  w.setI32Array("tokenizer.ggml.token_type", types);
  w.setStringArray("tokenizer.ggml.merges", tok.merges);
  w.setU32("tokenizer.ggml.bos_token_id", tok.bos);
  w.setU32("tokenizer.ggml.eos_token_id", tok.eos);
  w.setU32("tokenizer.ggml.eot_token_id", tok.eot);
  if (tok.pad !== undefined) w.setU32("tokenizer.ggml.padding_token_id", tok.pad);
  w.setBool("tokenizer.ggml.add_bos_token", tok.addBos ?? false);
  w.setBool("tokenizer.ggml.add_eos_token", false);
  if (tok.chatTemplate !== undefined) w.setString("tokenizer.chat_template", tok.chatTemplate);
}

/**
 * The default test vocabulary: 256 byte tokens, one token per merge, then `<|endoftext|>`
 * (bos, pad), `<|im_start|>`, `<|im_end|>` (eos, eot), with a ChatML template.
 */
export function chatmlTokenizer(merges: readonly string[] = DEFAULT_MERGES): ByteBpeTokenizerSpec {
  const tokens = byteTokens();
  const seen = new Set(tokens);
  for (const m of merges) {
    const merged = m.replace(" ", "");
    if (!seen.has(merged)) {
      seen.add(merged);
      tokens.push(merged);
    }
  }
  const bos = tokens.push("<|endoftext|>") - 1;
  tokens.push("<|im_start|>");
  const imEnd = tokens.push("<|im_end|>") - 1;
  return {
    tokens,
    merges: [...merges],
    bos,
    eos: imEnd,
    eot: imEnd,
    pad: bos,
    pre: "gpt-2",
    chatTemplate: CHATML_TEMPLATE,
    addBos: false,
  };
}
