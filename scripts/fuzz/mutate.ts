/** Mutation primitives shared by the targets: interesting numbers, strings, bytes and JSON edits. */
import type { Rng } from "../../src/demo/corpus/rng.js";

/** Boundary values for a little-endian integer field of `size` bytes, as unsigned bigints. */
export function interestingInt(rng: Rng, size: 1 | 2 | 4 | 8, current: bigint): bigint {
  const bits = BigInt(size * 8);
  const max = (1n << bits) - 1n;
  const half = 1n << (bits - 1n);
  const picks = [0n, 1n, 2n, 3n, max, max - 1n, half, half - 1n, current + 1n, current - 1n, current * 2n, BigInt(rng.int(4096))];
  if (size === 8) picks.push(1n << 31n, (1n << 32n) - 1n, 1n << 32n, (1n << 53n) + 1n, 1n << 40n);
  if (size >= 4) picks.push(0x7fffn, 0x8000n, 0xffffn, 0x10000n, 512n, 513n, 1024n, 1025n);
  return BigInt.asUintN(size * 8, rng.pick(picks));
}

export function writeUint(buf: Uint8Array, at: number, size: 1 | 2 | 4 | 8, v: bigint): void {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (size === 1) view.setUint8(at, Number(v));
  else if (size === 2) view.setUint16(at, Number(v), true);
  else if (size === 4) view.setUint32(at, Number(v), true);
  else view.setBigUint64(at, v, true);
}

export function readUint(buf: Uint8Array, at: number, size: 1 | 2 | 4 | 8): bigint {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (size === 1) return BigInt(view.getUint8(at));
  if (size === 2) return BigInt(view.getUint16(at, true));
  if (size === 4) return BigInt(view.getUint32(at, true));
  return view.getBigUint64(at, true);
}

/** Numbers as a user (or a broken file) might write them. */
export function interestingNumber(rng: Rng): number {
  return rng.pick([
    0, -0, 1, -1, 2, 0.5, -0.5, 1e-45, 1e-300, 1e300, 1e308, -1e308, Infinity, -Infinity, NaN,
    2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 53, 2 ** 53 + 2, -(2 ** 53), Number.MAX_VALUE, Number.MIN_VALUE,
    rng.int(100), rng.next() * 200 - 100, 1000000, 3.4e38, 3.5e38,
  ]);
}

/** Number-ish command-line text: valid, malformed, boundary, exotic notations. */
export function numberText(rng: Rng): string {
  const n = interestingNumber(rng);
  return rng.pick([
    String(n), String(Math.trunc(Number.isFinite(n) ? n : 0)), "", " ", "-", "+", "1e", "0x10", "0b11", "0o7", "1_000", "١٢",
    "1.5.2", "NaN", "Infinity", "-Infinity", "1e309", "-1e309", "00012", " 12 ", "12abc", "--1", "9".repeat(400), "1/2", "½",
    `${rng.int(10)}`, `-${rng.int(10)}`, `${rng.int(1000)}.${rng.int(1000)}`,
  ]);
}

/** Strings that break naive code: empty, huge, control characters, lone surrogates, template syntax. */
export function nastyString(rng: Rng): string {
  return rng.pick([
    "", " ", "\n", "\0", "\u0000\u0001\u001f", "\ud800", "\udfff", "a\ud83d", "😀", "\u202e", "\ufeff", "ｈｉ",
    "a".repeat(rng.pick([100, 4096, 70000])), "{{", "}}", "{%", "%}", "{{ x }}", "{question}", "{answer}",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "[EMPTY_0]", "\\", '"', "'", "%s%n", "../../etc/passwd",
    "null", "true", "0", "-1", "[]", "{}", `${rng.int(1000)}`, "Ġ", "Ċ", "Ġ Ġ", " a b ", "<0x0A>", "<0xZZ>", "<0x",
  ]);
}

/** Raw byte-level damage: flips, interesting bytes, truncation, duplication of a slice, junk append. */
export function mutateBytes(rng: Rng, input: Uint8Array, region?: [number, number]): { bytes: Uint8Array; what: string } {
  const hi = Math.min(region?.[1] ?? input.length, input.length);
  const lo = Math.min(region?.[0] ?? 0, hi);
  if (hi === lo) return { bytes: Uint8Array.from([...input, rng.int(256)]), what: "append a byte" };
  const span = hi - lo;
  const at = lo + rng.int(span);
  switch (rng.int(6)) {
    case 0: {
      const out = Uint8Array.from(input);
      const n = 1 + rng.int(8);
      for (let i = 0; i < n; i++) {
        const k = lo + rng.int(span);
        out[k] = out[k]! ^ (1 << rng.int(8));
      }
      return { bytes: out, what: `flip ${n} bits in [${lo}, ${hi})` };
    }
    case 1: {
      const out = Uint8Array.from(input);
      out[at] = rng.pick([0, 0xff, 0x7f, 0x80, 0x20, 0x0a]);
      return { bytes: out, what: `byte ${at} = ${out[at]}` };
    }
    case 2:
      return { bytes: input.slice(0, at), what: `truncate at ${at}` };
    case 3: {
      const len = Math.min(input.length - at, 1 + rng.int(64));
      const out = new Uint8Array(input.length + len);
      out.set(input.subarray(0, at + len));
      out.set(input.subarray(at), at + len);
      return { bytes: out, what: `duplicate ${len} bytes at ${at}` };
    }
    case 4: {
      const junk = Uint8Array.from({ length: 1 + rng.int(32) }, () => rng.int(256));
      const out = new Uint8Array(input.length + junk.length);
      out.set(input);
      out.set(junk, input.length);
      return { bytes: out, what: `append ${junk.length} junk bytes` };
    }
    default: {
      const len = Math.min(input.length - at, 1 + rng.int(16));
      const out = new Uint8Array(input.length - len);
      out.set(input.subarray(0, at));
      out.set(input.subarray(at + len), at);
      return { bytes: out, what: `delete ${len} bytes at ${at}` };
    }
  }
}

/** `text` as it is, or (with probability `p`) with raw byte damage, noted in `notes`. */
export function sometimesDamaged(rng: Rng, text: string, notes: string[], p = 0.2): Uint8Array | string {
  if (!rng.chance(p)) return text;
  const r = mutateBytes(rng, Buffer.from(text));
  notes.push(r.what);
  return r.bytes;
}

/** A replacement for a JSON value: another type, a boundary number, a nasty string, a deep structure. */
export function jsonValue(rng: Rng): unknown {
  switch (rng.int(8)) {
    case 0:
      return null;
    case 1:
      return rng.chance(0.5);
    case 2:
      return interestingNumber(rng);
    case 3:
      return nastyString(rng);
    case 4:
      return [];
    case 5:
      return {};
    case 6:
      return [nastyString(rng), interestingNumber(rng)];
    default: {
      let v: unknown = 1;
      for (let i = 0, n = 1 + rng.int(2000); i < n; i++) v = [v];
      return v;
    }
  }
}

/** Edits one node of a parsed JSON document in place (or returns a replacement root). */
export function mutateJson(rng: Rng, doc: unknown): { doc: unknown; what: string } {
  const nodes: { parent: Record<string, unknown> | unknown[]; key: string | number; path: string }[] = [];
  // Only the top levels: the deep arrays jsonValue makes would overflow the stack here.
  const walk = (v: unknown, path: string, depth: number): void => {
    if (depth > 32) return;
    if (Array.isArray(v)) v.forEach((x, i) => (nodes.push({ parent: v, key: i, path: `${path}[${i}]` }), walk(x, `${path}[${i}]`, depth + 1)));
    else if (v && typeof v === "object") {
      for (const [k, x] of Object.entries(v)) {
        nodes.push({ parent: v as Record<string, unknown>, key: k, path: `${path}.${k}` });
        walk(x, `${path}.${k}`, depth + 1);
      }
    }
  };
  walk(doc, "$", 0);
  if (nodes.length === 0 || rng.chance(0.05)) return { doc: jsonValue(rng), what: "replace the whole document" };
  const n = rng.pick(nodes);
  const parent = n.parent as Record<string | number, unknown>;
  switch (rng.int(4)) {
    case 0:
      if (Array.isArray(n.parent)) n.parent.splice(n.key as number, 1);
      else delete parent[n.key];
      return { doc, what: `delete ${n.path}` };
    case 1:
      if (Array.isArray(n.parent)) n.parent.push(structuredClone(parent[n.key]));
      else parent[`${String(n.key)}_${rng.int(3)}`] = jsonValue(rng);
      return { doc, what: `grow around ${n.path}` };
    case 2:
      if (Array.isArray(n.parent)) n.parent.length = 0;
      else parent[n.key] = typeof parent[n.key] === "string" ? nastyString(rng) : jsonValue(rng);
      return { doc, what: `empty or retype ${n.path}` };
    default:
      parent[n.key] = jsonValue(rng);
      return { doc, what: `set ${n.path}` };
  }
}

/** Applies 1..max mutations from `ops`, each chosen uniformly; returns what was done. */
export function applySome(rng: Rng, max: number, ops: readonly (() => string)[]): string {
  const done: string[] = [];
  for (let i = 0, n = 1 + rng.int(max); i < n; i++) done.push(rng.pick(ops)());
  return done.join("; ");
}
