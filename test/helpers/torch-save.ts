/**
 * A minimal torch.save writer, built byte by byte: zip members plus a protocol-2 pickle of a
 * tensor or an OrderedDict of tensors, the way the reference implementation's files look. Used by
 * the .pt import tests and the .pt fuzz target.
 */
import { crc32 as zlibCrc32, deflateRawSync } from "node:zlib";

/** Zip archive with the given members; `deflate` picks the compression per member. */
export function buildZip(members: { name: string; data: Uint8Array; deflate?: boolean }[]): Uint8Array {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const m of members) {
    const name = Buffer.from(m.name);
    const body = m.deflate ? deflateRawSync(m.data) : Buffer.from(m.data);
    const crc = zlibCrc32(m.data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(m.deflate ? 8 : 0, 8);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(body.length, 18);
    local.writeUInt32LE(m.data.length, 22);
    local.writeUInt16LE(name.length, 26);
    const cd = Buffer.alloc(46);
    cd.writeUInt32LE(0x02014b50, 0);
    cd.writeUInt16LE(20, 4);
    cd.writeUInt16LE(20, 6);
    cd.writeUInt16LE(m.deflate ? 8 : 0, 10);
    cd.writeUInt32LE(crc, 16);
    cd.writeUInt32LE(body.length, 20);
    cd.writeUInt32LE(m.data.length, 24);
    cd.writeUInt16LE(name.length, 28);
    cd.writeUInt32LE(offset, 42);
    central.push(cd, name);
    parts.push(local, name, body);
    offset += 30 + name.length + body.length;
  }
  const cdBytes = Buffer.concat(central);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(members.length, 8);
  eocd.writeUInt16LE(members.length, 10);
  eocd.writeUInt32LE(cdBytes.length, 12);
  eocd.writeUInt32LE(offset, 16);
  return Buffer.concat([...parts, cdBytes, eocd]);
}

/** Pickle opcodes as byte builders. */
export const op = {
  proto: () => [0x80, 2],
  global: (mod: string, name: string) => [0x63, ...Buffer.from(`${mod}\n${name}\n`)],
  mark: () => [0x28],
  tuple: () => [0x74],
  tuple2: () => [0x86],
  emptyTuple: () => [0x29],
  emptyDict: () => [0x7d],
  setitems: () => [0x75],
  binput: (i: number) => [0x71, i],
  binget: (i: number) => [0x68, i],
  str: (s: string) => {
    const b = Buffer.from(s);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(b.length);
    return [0x58, ...len, ...b];
  },
  int: (n: number) => {
    if (n < 256) return [0x4b, n];
    if (n < 65536) return [0x4d, n & 0xff, n >> 8];
    const b = Buffer.alloc(4);
    b.writeInt32LE(n);
    return [0x4a, ...b];
  },
  intTuple: (ns: number[]) => [...op.mark(), ...ns.flatMap(op.int), ...op.tuple()],
  newfalse: () => [0x89],
  reduce: () => [0x52],
  build: () => [0x62],
  binpersid: () => [0x51],
  stop: () => [0x2e],
};

export interface TensorSpec {
  storageType: "FloatStorage" | "HalfStorage" | "BFloat16Storage";
  key: string;
  numel: number;
  offset: number;
  size: number[];
  stride: number[];
}

/** `_rebuild_tensor_v2(persistent storage, offset, size, stride, False, OrderedDict())`; memo 0 caches the rebuild global. */
export function tensorOps(t: TensorSpec, first: boolean): number[] {
  return [
    ...(first ? [...op.global("torch._utils", "_rebuild_tensor_v2"), ...op.binput(0)] : op.binget(0)),
    ...op.mark(),
    ...[...op.mark(), ...op.str("storage"), ...op.global("torch", t.storageType), ...op.str(t.key), ...op.str("cpu"), ...op.int(t.numel), ...op.tuple()],
    ...op.binpersid(),
    ...op.int(t.offset),
    ...op.intTuple(t.size),
    ...op.intTuple(t.stride),
    ...op.newfalse(),
    ...op.global("collections", "OrderedDict"),
    ...op.emptyTuple(),
    ...op.reduce(),
    ...op.tuple(),
    ...op.reduce(),
  ];
}

export function singleTensorPickle(t: TensorSpec): Uint8Array {
  return Uint8Array.from([...op.proto(), ...tensorOps(t, true), ...op.stop()]);
}

/** An OrderedDict of tensors, with a BUILD of instance state the way state dicts carry `_metadata`. */
export function dictPickle(entries: [string, TensorSpec][]): Uint8Array {
  return Uint8Array.from([
    ...op.proto(),
    ...op.global("collections", "OrderedDict"),
    ...op.emptyTuple(),
    ...op.reduce(),
    ...op.mark(),
    ...entries.flatMap(([k, t], i) => [...op.str(k), ...tensorOps(t, i === 0)]),
    ...op.setitems(),
    ...op.emptyDict(),
    ...op.build(),
    ...op.stop(),
  ]);
}

export function ptArchive(archive: string, pkl: Uint8Array, storages: Record<string, Uint8Array>, byteorder = "little"): Uint8Array {
  return buildZip([
    { name: `${archive}/data.pkl`, data: pkl },
    { name: `${archive}/byteorder`, data: Buffer.from(byteorder) },
    ...Object.entries(storages).map(([k, data], i) => ({ name: `${archive}/data/${k}`, data, deflate: i % 2 === 1 })),
    { name: `${archive}/version`, data: Buffer.from("3\n") },
  ]);
}

