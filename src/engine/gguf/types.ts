/**
 * GGUF/ggml constants shared by the reader, the writer and the engine's validation: the ggml
 * tensor type table (block size and bytes per block, from ggml.c `type_traits` of the ggml build
 * we ship), the GGUF metadata value types, and half-precision conversion.
 */
import { PersonaError } from "../../errors.js";

export const GGUF_MAGIC = "GGUF";
/** Newest GGUF version this build of llama.cpp writes and reads (gguf.h `GGUF_VERSION`). */
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** ggml.h `GGML_MAX_DIMS`. */
export const GGML_MAX_DIMS = 4;
/** ggml.h `GGML_MAX_NAME`: tensor names must be shorter than this many bytes. */
export const GGML_MAX_NAME = 64;

/** GGUF metadata value types (gguf.h `enum gguf_type`). */
export const GgufValueType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;
export type GgufValueType = (typeof GgufValueType)[keyof typeof GgufValueType];

/** Byte size of fixed-size GGUF value types; strings and arrays are variable. */
export const GGUF_VALUE_SIZE: Readonly<Record<number, number>> = {
  [GgufValueType.UINT8]: 1,
  [GgufValueType.INT8]: 1,
  [GgufValueType.UINT16]: 2,
  [GgufValueType.INT16]: 2,
  [GgufValueType.UINT32]: 4,
  [GgufValueType.INT32]: 4,
  [GgufValueType.FLOAT32]: 4,
  [GgufValueType.BOOL]: 1,
  [GgufValueType.UINT64]: 8,
  [GgufValueType.INT64]: 8,
  [GgufValueType.FLOAT64]: 8,
};

export function isGgufValueType(t: number): t is GgufValueType {
  return Number.isInteger(t) && t >= 0 && t <= 12;
}

/** ggml tensor types (ggml.h `enum ggml_type`); gaps are types removed from ggml. */
export const GgmlType = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q8_1: 9,
  Q2_K: 10,
  Q3_K: 11,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  Q8_K: 15,
  IQ2_XXS: 16,
  IQ2_XS: 17,
  IQ3_XXS: 18,
  IQ1_S: 19,
  IQ4_NL: 20,
  IQ3_S: 21,
  IQ2_S: 22,
  IQ4_XS: 23,
  I8: 24,
  I16: 25,
  I32: 26,
  I64: 27,
  F64: 28,
  IQ1_M: 29,
  BF16: 30,
  TQ1_0: 34,
  TQ2_0: 35,
  MXFP4: 39,
  NVFP4: 40,
  Q1_0: 41,
  Q2_0: 42,
} as const;
export type GgmlType = (typeof GgmlType)[keyof typeof GgmlType];

export interface GgmlTypeInfo {
  name: string;
  /** Elements per block; ne[0] must be a multiple of it. */
  blockSize: number;
  /** Bytes per block. */
  typeSize: number;
}

const QK_K = 256;

// [blockSize, typeSize] per type, matching ggml-common.h's static_asserts.
const TRAITS: Record<keyof typeof GgmlType, [number, number]> = {
  F32: [1, 4],
  F16: [1, 2],
  Q4_0: [32, 2 + 16],
  Q4_1: [32, 2 + 2 + 16],
  Q5_0: [32, 2 + 4 + 16],
  Q5_1: [32, 2 + 2 + 4 + 16],
  Q8_0: [32, 2 + 32],
  Q8_1: [32, 4 + 32],
  Q2_K: [QK_K, 2 + 2 + QK_K / 16 + QK_K / 4],
  Q3_K: [QK_K, 2 + QK_K / 4 + QK_K / 8 + 12],
  Q4_K: [QK_K, 2 + 2 + QK_K / 2 + 12],
  Q5_K: [QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12],
  Q6_K: [QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16],
  Q8_K: [QK_K, 4 + QK_K + (QK_K / 16) * 2],
  IQ2_XXS: [QK_K, 2 + QK_K / 4],
  IQ2_XS: [QK_K, 2 + QK_K / 4 + QK_K / 32],
  IQ3_XXS: [QK_K, 2 + (3 * QK_K) / 8],
  IQ1_S: [QK_K, 2 + QK_K / 8 + QK_K / 16],
  IQ4_NL: [32, 2 + 16],
  IQ3_S: [QK_K, 2 + 13 * (QK_K / 32) + QK_K / 64],
  IQ2_S: [QK_K, 2 + QK_K / 4 + QK_K / 16],
  IQ4_XS: [QK_K, 2 + 2 + QK_K / 64 + QK_K / 2],
  I8: [1, 1],
  I16: [1, 2],
  I32: [1, 4],
  I64: [1, 8],
  F64: [1, 8],
  IQ1_M: [QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32],
  BF16: [1, 2],
  TQ1_0: [QK_K, 2 + QK_K / 64 + (QK_K - (4 * QK_K) / 64) / 5],
  TQ2_0: [QK_K, 2 + QK_K / 4],
  MXFP4: [32, 1 + 16],
  NVFP4: [64, 64 / 16 + 64 / 2],
  Q1_0: [128, 2 + 128 / 8],
  Q2_0: [64, 2 + 64 / 4],
};

const TYPE_INFO = new Map<number, GgmlTypeInfo>(
  (Object.keys(GgmlType) as (keyof typeof GgmlType)[]).map((name) => {
    const [blockSize, typeSize] = TRAITS[name];
    return [GgmlType[name], { name, blockSize, typeSize }];
  }),
);

/** Block/type size of a ggml type, or undefined for ids this ggml build does not know. */
export function ggmlTypeInfo(type: number): GgmlTypeInfo | undefined {
  return TYPE_INFO.get(type);
}

export function ggmlTypeName(type: number): string {
  return TYPE_INFO.get(type)?.name ?? `unknown(${type})`;
}

/** Product of the dimensions. */
export function nElements(ne: readonly number[]): number {
  return ne.reduce((a, b) => a * b, 1);
}

/**
 * Bytes a contiguous tensor of this type and shape occupies (ggml_nbytes). Throws
 * E_BAD_MODEL for an unknown type or a row length that is not a whole number of blocks.
 */
export function tensorBytes(type: number, ne: readonly number[]): number {
  const info = TYPE_INFO.get(type);
  if (!info) throw new PersonaError("E_BAD_MODEL", `unknown ggml type ${type}`);
  const ne0 = ne[0] ?? 1;
  if (ne0 % info.blockSize !== 0) {
    throw new PersonaError(
      "E_BAD_MODEL",
      `row length ${ne0} of a ${info.name} tensor is not a multiple of its block size ${info.blockSize}`,
    );
  }
  return (nElements(ne) / info.blockSize) * info.typeSize;
}

export function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE half bits -> number. */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** number -> IEEE half bits, round to nearest even (as ggml's F16C path does). */
export function f32ToF16(x: number): number {
  f32Scratch[0] = x;
  const bits = u32Scratch[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent, up to infinity.
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

/** bfloat16 bits -> number. */
export function bf16ToF32(h: number): number {
  u32Scratch[0] = h << 16;
  return f32Scratch[0]!;
}
