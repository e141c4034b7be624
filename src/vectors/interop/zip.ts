/**
 * A zip reader for torch files: central directory → members; stored and deflated members, zip64
 * sizes, every member CRC-checked. `bad` builds the error for a malformed archive.
 */
import { inflateRawSync } from "node:zlib";
import type { PersonaError } from "../../errors.js";

export function readZip(b: Uint8Array, bad: (why: string) => PersonaError): Map<string, Uint8Array> {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  // The end-of-central-directory record is 22 bytes plus a comment of up to 65535 bytes.
  let eocd = -1;
  for (let i = b.length - 22; i >= Math.max(0, b.length - 22 - 0xffff); i--) {
    if (v.getUint32(i, true) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw bad("not a zip archive (no end of central directory)");
  let count = v.getUint16(eocd + 10, true);
  let cdOffset = v.getUint32(eocd + 16, true);
  if (count === 0xffff || cdOffset === 0xffffffff) {
    const loc = eocd - 20;
    if (loc < 0 || v.getUint32(loc, true) !== 0x07064b50) throw bad("zip64 locator missing");
    const z64 = num(v.getBigUint64(loc + 8, true));
    if (z64 + 56 > b.length || v.getUint32(z64, true) !== 0x06064b50) throw bad("zip64 end of central directory missing");
    count = num(v.getBigUint64(z64 + 32, true));
    cdOffset = num(v.getBigUint64(z64 + 48, true));
  }

  const entries = new Map<string, Uint8Array>();
  let p = cdOffset;
  for (let i = 0; i < count; i++) {
    if (p + 46 > b.length || v.getUint32(p, true) !== 0x02014b50) throw bad(`corrupt central directory entry ${i}`);
    const flags = v.getUint16(p + 8, true);
    const method = v.getUint16(p + 10, true);
    const crc = v.getUint32(p + 16, true);
    let compSize = v.getUint32(p + 20, true);
    let size = v.getUint32(p + 24, true);
    const nameLen = v.getUint16(p + 28, true);
    const extraLen = v.getUint16(p + 30, true);
    const commentLen = v.getUint16(p + 32, true);
    let local = v.getUint32(p + 42, true);
    if (p + 46 + nameLen + extraLen + commentLen > b.length) throw bad(`central directory entry ${i} runs past the end of the file`);
    const name = new TextDecoder().decode(b.subarray(p + 46, p + 46 + nameLen));
    // Zip64 extra field: the 64-bit values appear in this order, only for fields saturated at 0xffffffff.
    for (let e = p + 46 + nameLen; e + 4 <= p + 46 + nameLen + extraLen; ) {
      const id = v.getUint16(e, true);
      const len = v.getUint16(e + 2, true);
      if (id === 0x0001) {
        let q = e + 4;
        const next = (): number => {
          if (q + 8 > e + 4 + len) throw bad(`member "${name}" has a truncated zip64 extra field`);
          const x = num(v.getBigUint64(q, true));
          q += 8;
          return x;
        };
        if (size === 0xffffffff) size = next();
        if (compSize === 0xffffffff) compSize = next();
        if (local === 0xffffffff) local = next();
      }
      e += 4 + len;
    }
    p += 46 + nameLen + extraLen + commentLen;

    if (flags & 1) throw bad(`member "${name}" is encrypted`);
    if (local + 30 > b.length || v.getUint32(local, true) !== 0x04034b50) throw bad(`member "${name}" has no local header`);
    const start = local + 30 + v.getUint16(local + 26, true) + v.getUint16(local + 28, true);
    if (start + compSize > b.length) throw bad(`member "${name}" runs past the end of the file`);
    const raw = b.subarray(start, start + compSize);
    let data: Uint8Array;
    if (method === 0) data = raw;
    else if (method === 8) {
      try {
        data = inflateRawSync(raw);
      } catch {
        throw bad(`member "${name}" does not inflate`);
      }
    } else throw bad(`member "${name}" uses unsupported compression method ${method}`);
    if (data.length !== size) throw bad(`member "${name}" is ${data.length} bytes, directory says ${size}`);
    if (crc32(data) !== crc) throw bad(`member "${name}" fails its CRC check`);
    entries.set(name, data);
  }
  return entries;
}

function num(x: bigint): number {
  if (x > BigInt(Number.MAX_SAFE_INTEGER)) return Number.MAX_SAFE_INTEGER;
  return Number(x);
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
