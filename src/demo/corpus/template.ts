import { PersonaError } from "../../errors.js";
import type { Rng } from "./rng.js";

/**
 * The corpus grammar's template language. A template is text with
 *   `[a|b|c]`  one alternative, chosen uniformly (may be empty: `[|, sadly]`; may nest),
 *   `{name}`   one option of the rule `name`, itself a template.
 * Alternatives and references must sit on word boundaries, so that the grammar's vocabulary
 * and word bigrams can be enumerated exactly (see `lexicon.ts`).
 */
export type Rules = Readonly<Record<string, readonly string[]>>;

export type TemplateNode =
  | { t: "text"; text: string }
  | { t: "alt"; options: TemplateNode[][] }
  | { t: "ref"; name: string };

const parsed = new Map<string, TemplateNode[]>();

export function parseTemplate(src: string): TemplateNode[] {
  const hit = parsed.get(src);
  if (hit) return hit;
  let i = 0;
  const seq = (inAlt: boolean): TemplateNode[] => {
    const out: TemplateNode[] = [];
    let text = "";
    const flush = () => {
      if (text) out.push({ t: "text", text });
      text = "";
    };
    while (i < src.length) {
      const c = src[i]!;
      if (c === "[") {
        flush();
        i++;
        const options: TemplateNode[][] = [seq(true)];
        while (src[i] === "|") {
          i++;
          options.push(seq(true));
        }
        if (src[i] !== "]") throw new PersonaError("E_INTERNAL", `unclosed [ in template: ${src}`);
        i++;
        out.push({ t: "alt", options });
      } else if (c === "{") {
        flush();
        const end = src.indexOf("}", i);
        if (end < 0) throw new PersonaError("E_INTERNAL", `unclosed { in template: ${src}`);
        out.push({ t: "ref", name: src.slice(i + 1, end) });
        i = end + 1;
      } else if (c === "|" || c === "]") {
        if (!inAlt) throw new PersonaError("E_INTERNAL", `stray ${c} in template: ${src}`);
        break;
      } else {
        text += c;
        i++;
      }
    }
    flush();
    return out;
  };
  const nodes = seq(false);
  parsed.set(src, nodes);
  return nodes;
}

export function ruleOptions(rules: Rules, name: string): readonly string[] {
  const options = rules[name];
  if (!options || options.length === 0) throw new PersonaError("E_INTERNAL", `unknown grammar rule {${name}}`);
  return options;
}

function expandNodes(nodes: readonly TemplateNode[], rules: Rules, rng: Rng): string {
  let out = "";
  for (const n of nodes) {
    if (n.t === "text") out += n.text;
    else if (n.t === "alt") out += expandNodes(rng.pick(n.options), rules, rng);
    else out += expandNodes(parseTemplate(rng.pick(ruleOptions(rules, n.name))), rules, rng);
  }
  return out;
}

/** Expands a template and tidies it into finished text (spacing, a/an, sentence capitals). */
export function expand(template: string, rules: Rules, rng: Rng): string {
  return finishText(expandNodes(parseTemplate(template), rules, rng));
}

export function expandRule(name: string, rules: Rules, rng: Rng): string {
  return expand(rng.pick(ruleOptions(rules, name)), rules, rng);
}

/** The article fix both the expander and the lexicon analysis apply: "a" before a vowel is "an". */
export function articleFor(next: string): "a" | "an" {
  return /^[aeiou]/i.test(next) ? "an" : "a";
}

export function finishText(raw: string): string {
  return raw
    .replace(/\s+/g, " ")
    .replace(/ ([,.!?:])/g, "$1")
    .replace(/\b([Aa]) (\p{L})/gu, (_m, a: string, next: string) => {
      const art = articleFor(next);
      return `${a === "A" ? art[0]!.toUpperCase() + art.slice(1) : art} ${next}`;
    })
    .replace(/(^|[.!?] )(\p{Ll})/gu, (_m, pre: string, ch: string) => pre + ch.toUpperCase())
    .trim();
}
