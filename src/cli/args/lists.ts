/** Comma-separated flag values (`--trait evil,sycophantic`). */
import { InvalidArgumentError } from "commander";

export function listArg(s: string): string[] {
  const items = s.split(",").map((x) => x.trim());
  if (items.some((x) => x === "")) throw new InvalidArgumentError("expected a comma-separated list without empty items");
  return items;
}

/** `all`, or a comma list of layers and ranges (`4,6-9`); checked against n_layer later. */
export function parseLayerList(text: string): "all" | number[] {
  if (text.trim() === "all") return "all";
  const out: number[] = [];
  for (const part of text.split(",")) {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
    if (!m) throw new InvalidArgumentError(`expected "all" or layers like 4,6-9, got "${part}"`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new InvalidArgumentError(`range ${part} runs backwards`);
    for (let l = a; l <= b; l++) if (!out.includes(l)) out.push(l);
  }
  return out;
}

/** Comma-separated coefficients, e.g. `-2,-1,0,1,2`. */
export function parseCoefList(text: string): number[] {
  const out = text.split(",").map((s) => {
    const n = Number(s);
    if (s.trim() === "" || !Number.isFinite(n)) throw new InvalidArgumentError(`expected numbers like 0.5,1,2, got "${s}"`);
    return n;
  });
  if (new Set(out).size !== out.length) throw new InvalidArgumentError("coefficients repeat");
  return out;
}
