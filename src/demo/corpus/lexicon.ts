import { PersonaError } from "../../errors.js";
import { articleFor, parseTemplate, ruleOptions, type Rules, type TemplateNode } from "./template.js";
import { STOP, wordTokens } from "./tokens.js";

/**
 * Exact vocabulary and word-bigram set of a grammar, computed from the templates rather than
 * from samples: every node gets its possible first and last tokens and whether it can be empty,
 * and a sequence's bigrams are its parts' bigrams plus (last of one part, first of the next).
 * Root rules are the pieces the reply composer concatenates as whole sentences, so each may
 * follow a sentence end: their first tokens are recorded after `.`.
 */
export interface GrammarLexicon {
  words: ReadonlySet<string>;
  /** `"left right"` keys, as `bigramKey` builds them. */
  bigrams: ReadonlySet<string>;
}

interface Span {
  firsts: Set<string>;
  lasts: Set<string>;
  nullable: boolean;
}

/** The key for a bigram, with the expander's a/an fix applied so both sides agree. */
export function bigramKey(left: string, right: string): string {
  return `${left === "a" || left === "an" ? articleFor(right) : left} ${right}`;
}

export function analyseGrammar(rules: Rules, roots: readonly string[]): GrammarLexicon {
  const words = new Set<string>(["an"]);
  const bigrams = new Set<string>();
  const ruleSpans = new Map<string, Span>();
  const active = new Set<string>();

  const cross = (lasts: Iterable<string>, firsts: Iterable<string>) => {
    const fs = [...firsts];
    for (const l of lasts) for (const f of fs) bigrams.add(bigramKey(l, f));
  };

  const seq = (nodes: readonly TemplateNode[]): Span => {
    let acc: Span = { firsts: new Set(), lasts: new Set(), nullable: true };
    for (const n of nodes) {
      const s = node(n);
      cross(acc.lasts, s.firsts);
      acc = {
        firsts: acc.nullable ? new Set([...acc.firsts, ...s.firsts]) : acc.firsts,
        lasts: s.nullable ? new Set([...acc.lasts, ...s.lasts]) : s.lasts,
        nullable: acc.nullable && s.nullable,
      };
    }
    return acc;
  };

  const union = (spans: Span[]): Span => ({
    firsts: new Set(spans.flatMap((s) => [...s.firsts])),
    lasts: new Set(spans.flatMap((s) => [...s.lasts])),
    nullable: spans.some((s) => s.nullable),
  });

  const rule = (name: string): Span => {
    const hit = ruleSpans.get(name);
    if (hit) return hit;
    if (active.has(name)) throw new PersonaError("E_INTERNAL", `grammar rule {${name}} is recursive`);
    active.add(name);
    const span = union(ruleOptions(rules, name).map((o) => seq(parseTemplate(o))));
    active.delete(name);
    ruleSpans.set(name, span);
    return span;
  };

  const node = (n: TemplateNode): Span => {
    if (n.t === "ref") return rule(n.name);
    if (n.t === "alt") return union(n.options.map(seq));
    const toks = wordTokens(n.text);
    for (const t of toks) words.add(t);
    for (let i = 1; i < toks.length; i++) bigrams.add(bigramKey(toks[i - 1]!, toks[i]!));
    return toks.length === 0
      ? { firsts: new Set(), lasts: new Set(), nullable: true }
      : { firsts: new Set([toks[0]!]), lasts: new Set([toks[toks.length - 1]!]), nullable: false };
  };

  for (const r of roots) cross([STOP], rule(r).firsts);
  return { words, bigrams };
}
