import { PersonaError } from "../errors.js";

/** One CSV record and the (1-based) line it starts on. */
export interface CsvRow {
  fields: string[];
  line: number;
}

/**
 * RFC 4180 CSV as pandas writes it (the reference's rollout files): quoted fields may hold commas,
 * doubled quotes and newlines; rows end with LF or CRLF. Incremental: text goes in as chunks of
 * any size (a quote or CRLF may be split between two), complete rows come out.
 */
export class CsvParser {
  private row: string[] = [];
  private field = "";
  private inQuotes = false;
  /** A quote just closed inside a quoted field: a following quote is an escaped one. */
  private quotePending = false;
  private lastWasCR = false;
  private first = true;
  private line = 1;
  private rowLine = 1;

  push(text: string): CsvRow[] {
    const out: CsvRow[] = [];
    let i = 0;
    // Skip a UTF-8 byte-order mark, which some spreadsheet tools add.
    if (this.first && text.length > 0) {
      this.first = false;
      if (text.charCodeAt(0) === 0xfeff) i = 1;
    }
    for (; i < text.length; i++) {
      const c = text[i]!;
      const afterCR = this.lastWasCR;
      this.lastWasCR = false;
      if (this.quotePending) {
        this.quotePending = false;
        if (c === '"') {
          this.field += '"';
          continue;
        }
        this.inQuotes = false;
      }
      if (this.inQuotes) {
        if (c === '"') this.quotePending = true;
        else {
          if (c === "\n") this.line++;
          this.field += c;
        }
      } else if (c === '"') this.inQuotes = true;
      else if (c === ",") {
        this.row.push(this.field);
        this.field = "";
      } else if (c === "\n" || c === "\r") {
        if (c === "\n" && afterCR) continue; // the LF of a CRLF
        this.lastWasCR = c === "\r";
        this.row.push(this.field);
        out.push({ fields: this.row, line: this.rowLine });
        this.row = [];
        this.field = "";
        this.line++;
        this.rowLine = this.line;
      } else this.field += c;
    }
    return out;
  }

  /** The last row when the text does not end with a newline; throws inside an open quoted field. */
  end(): CsvRow[] {
    if (this.inQuotes && !this.quotePending) {
      throw new PersonaError("E_BAD_FORMAT", `CSV ends inside a quoted field (the row starting on line ${this.rowLine})`);
    }
    if (this.field === "" && this.row.length === 0 && !this.quotePending) return [];
    this.row.push(this.field);
    const last = { fields: this.row, line: this.rowLine };
    this.row = [];
    this.field = "";
    return [last];
  }
}

export function parseCsv(text: string): string[][] {
  const p = new CsvParser();
  return [...p.push(text), ...p.end()].map((r) => r.fields);
}

/** Rows as objects keyed by the header row; every row must have the header's width. */
export function parseCsvRecords(text: string): Record<string, string>[] {
  const [header, ...rows] = parseCsv(text);
  if (!header) return [];
  return rows.map((r, i) => {
    if (r.length !== header.length) {
      throw new PersonaError("E_BAD_FORMAT", `CSV row ${i + 2} has ${r.length} fields, the header has ${header.length}`);
    }
    return Object.fromEntries(header.map((h, j) => [h, r[j] ?? ""]));
  });
}
