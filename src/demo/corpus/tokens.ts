/**
 * The word-level view of text shared by the grammar analysis and the demo judge: lower-cased
 * words (with inner apostrophes), every number as `<num>`, every run of `.`, `!`, `?` as `.`, and
 * every other non-space symbol as its own token.
 */
const TOKEN_RE = /\p{L}+(?:'\p{L}+)*|\p{N}+|[.!?]+|[^\s\p{L}\p{N}]/gu;

export const NUM = "<num>";
export const STOP = ".";

export function wordTokens(text: string): string[] {
  const out: string[] = [];
  for (const m of text.toLowerCase().matchAll(TOKEN_RE)) {
    const t = m[0];
    if (/^\p{N}/u.test(t)) out.push(NUM);
    else if (/^[.!?]/.test(t)) out.push(STOP);
    else out.push(t);
  }
  return out;
}

/** True for tokens that are words or numbers rather than punctuation. */
export function isWord(token: string): boolean {
  return token === NUM || /^\p{L}/u.test(token);
}
