/**
 * The subset of Python's pickle VM that torch.save emits for tensors and (ordered) dicts. The
 * format on top (torch: storages and tensor rebuilds) comes in through `UnpickleEnv`.
 */
import type { PersonaError } from "../../errors.js";

export type Bad = (why: string) => PersonaError;

export type PyKey = string | number | boolean | null;
export type PyValue =
  | null
  | boolean
  | number
  | string
  | { kind: "tuple"; items: PyValue[] }
  | { kind: "list"; items: PyValue[] }
  | { kind: "dict"; entries: Map<PyKey, PyValue> }
  | { kind: "global"; module: string; name: string }
  | { kind: "storage"; dtype: string; elem: number; key: string; numel: number }
  | { kind: "tensor"; shape: number[]; data: Float32Array };
export type PyObj = Exclude<PyValue, null | boolean | number | string>;

const MARK = Symbol("mark");
type StackItem = PyValue | typeof MARK;

/** What the caller's format adds to the VM: how to call globals (REDUCE) and load persistent ids. */
export interface UnpickleEnv {
  reduce(fn: { module: string; name: string }, args: PyValue[]): PyValue;
  persistentLoad(pid: PyValue): PyValue;
  bad: Bad;
}

export function unpickle(b: Uint8Array, env: UnpickleEnv): PyValue {
  const { bad } = env;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const stack: StackItem[] = [];
  const memo = new Map<number, PyValue>();
  let p = 0;

  const need = (n: number): number => {
    if (p + n > b.length) throw bad("data.pkl is truncated");
    const at = p;
    p += n;
    return at;
  };
  const pop = (): PyValue => {
    const x = stack.pop();
    if (x === undefined || x === MARK) throw bad("pickle stack underflow");
    return x;
  };
  const top = (): PyValue => {
    const x = stack[stack.length - 1];
    if (x === undefined || x === MARK) throw bad("pickle stack underflow");
    return x;
  };
  const popMark = (): PyValue[] => {
    const i = stack.lastIndexOf(MARK);
    if (i < 0) throw bad("pickle MARK missing");
    const items = stack.splice(i) as PyValue[];
    items.shift();
    return items;
  };
  const line = (): string => {
    const end = b.indexOf(0x0a, p);
    if (end < 0) throw bad("data.pkl is truncated");
    const s = new TextDecoder().decode(b.subarray(p, end));
    p = end + 1;
    return s;
  };
  const text = (n: number): string => new TextDecoder().decode(b.subarray(need(n), p));
  const asKey = (k: PyValue): PyKey => {
    if (typeof k === "object" && k !== null) throw bad(`unsupported dict key ${describe(k)}`);
    return k;
  };
  const setItems = (d: PyValue, kv: PyValue[]): void => {
    if (!isObj(d, "dict")) throw bad(`SETITEM on ${describe(d)}`);
    for (let i = 0; i + 1 < kv.length; i += 2) d.entries.set(asKey(kv[i]!), kv[i + 1]!);
  };
  const append = (l: PyValue, items: PyValue[]): void => {
    if (!isObj(l, "list")) throw bad(`APPEND on ${describe(l)}`);
    l.items.push(...items);
  };

  for (;;) {
    const op = b[need(1)]!;
    switch (op) {
      case 0x80: {
        // PROTO
        const proto = b[need(1)]!;
        if (proto > 5) throw bad(`pickle protocol ${proto} is not supported`);
        break;
      }
      case 0x95: // FRAME: framing is only a read-ahead hint
        need(8);
        break;
      case 0x63: // GLOBAL
        stack.push({ kind: "global", module: line(), name: line() });
        break;
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof name !== "string" || typeof module !== "string") throw bad("STACK_GLOBAL needs two strings");
        stack.push({ kind: "global", module, name });
        break;
      }
      case 0x71: // BINPUT
        memo.set(b[need(1)]!, top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(v.getUint32(need(4), true), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
      case 0x6a: {
        // LONG_BINGET
        const idx = op === 0x68 ? b[need(1)]! : v.getUint32(need(4), true);
        if (!memo.has(idx)) throw bad(`pickle memo ${idx} is undefined`);
        stack.push(memo.get(idx)!);
        break;
      }
      case 0x28: // MARK
        stack.push(MARK);
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push({ kind: "tuple", items: [] });
        break;
      case 0x74: // TUPLE
        stack.push({ kind: "tuple", items: popMark() });
        break;
      case 0x85: // TUPLE1
      case 0x86: // TUPLE2
      case 0x87: {
        // TUPLE3
        const n = op - 0x84;
        const items: PyValue[] = [];
        for (let i = 0; i < n; i++) items.unshift(pop());
        stack.push({ kind: "tuple", items });
        break;
      }
      case 0x5d: // EMPTY_LIST
        stack.push({ kind: "list", items: [] });
        break;
      case 0x61: {
        // APPEND
        const x = pop();
        append(top(), [x]);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        append(top(), items);
        break;
      }
      case 0x7d: // EMPTY_DICT
        stack.push({ kind: "dict", entries: new Map() });
        break;
      case 0x73: {
        // SETITEM
        const val = pop();
        const key = pop();
        setItems(top(), [key, val]);
        break;
      }
      case 0x75: {
        // SETITEMS
        const kv = popMark();
        setItems(top(), kv);
        break;
      }
      case 0x4a: // BININT
        stack.push(v.getInt32(need(4), true));
        break;
      case 0x4b: // BININT1
        stack.push(b[need(1)]!);
        break;
      case 0x4d: // BININT2
        stack.push(v.getUint16(need(2), true));
        break;
      case 0x8a: {
        // LONG1: little-endian two's complement of n bytes
        const n = b[need(1)]!;
        const at = need(n);
        let x = 0n;
        for (let i = n - 1; i >= 0; i--) x = (x << 8n) | BigInt(b[at + i]!);
        if (n > 0 && b[at + n - 1]! & 0x80) x -= 1n << BigInt(8 * n);
        if (x > BigInt(Number.MAX_SAFE_INTEGER) || x < BigInt(Number.MIN_SAFE_INTEGER)) throw bad("integer too large");
        stack.push(Number(x));
        break;
      }
      case 0x47: // BINFLOAT (big-endian double)
        stack.push(v.getFloat64(need(8), false));
        break;
      case 0x58: // BINUNICODE
        stack.push(text(v.getUint32(need(4), true)));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(text(b[need(1)]!));
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x30: // POP
        pop();
        break;
      case 0x52: {
        // REDUCE
        const args = pop();
        const fn = pop();
        if (!isObj(args, "tuple")) throw bad("REDUCE arguments are not a tuple");
        if (!isObj(fn, "global")) throw bad(`REDUCE on ${describe(fn)}`);
        stack.push(env.reduce(fn, args.items));
        break;
      }
      case 0x62: {
        // BUILD: instance state (e.g. a state dict's `_metadata`) carries no tensors; drop it.
        pop();
        const obj = top();
        if (!isObj(obj, "dict") && !isObj(obj, "tensor")) throw bad(`BUILD on ${describe(obj)}`);
        break;
      }
      case 0x51: {
        // BINPERSID
        stack.push(env.persistentLoad(pop()));
        break;
      }
      case 0x2e: // STOP
        if (stack.length !== 1) throw bad("pickle stack is not a single value at STOP");
        return pop();
      default:
        throw bad(`unsupported pickle opcode 0x${op.toString(16)} at byte ${p - 1}`);
    }
  }
}

export function isObj<K extends PyObj["kind"]>(x: PyValue | undefined, kind: K): x is Extract<PyObj, { kind: K }> {
  return typeof x === "object" && x !== null && x.kind === kind;
}

export function describe(x: PyValue): string {
  if (x === null) return "None";
  if (typeof x !== "object") return `a ${typeof x}`;
  if (x.kind === "global") return `${x.module}.${x.name}`;
  return `a ${x.kind}`;
}
