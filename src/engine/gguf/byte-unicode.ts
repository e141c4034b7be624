/**
 * GPT-2's reversible byte <-> printable-unicode mapping, which byte-level BPE vocabularies
 * (tokenizer.ggml.model = "gpt2") use to store arbitrary bytes as token text.
 */
const BYTE_TO_CHAR: string[] = (() => {
  const keep: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) keep.push(b);
  for (let b = 0xa1; b <= 0xac; b++) keep.push(b);
  for (let b = 0xae; b <= 0xff; b++) keep.push(b);
  const map: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    map[b] = keep.includes(b) ? String.fromCodePoint(b) : String.fromCodePoint(256 + extra++);
  }
  return map;
})();

export function bytesToUnicode(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += BYTE_TO_CHAR[b]!;
  return s;
}

/** The 256 single-byte tokens, in byte order. */
export function byteTokens(): string[] {
  return [...BYTE_TO_CHAR];
}
