import { PersonaError } from "../errors.js";

/**
 * RFC 4180 CSV as pandas writes it (the reference's rollout files): quoted fields may hold commas,
 * doubled quotes and newlines; rows end with LF or CRLF.
 */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = "";
  let inQuotes = false;
  let i = 0;
  // Skip a UTF-8 byte-order mark, which some spreadsheet tools add.
  if (text.charCodeAt(0) === 0xfeff) i = 1;
  for (; i < text.length; i++) {
    const c = text[i];
    if (inQuotes) {
      if (c !== '"') field += c;
      else if (text[i + 1] === '"') {
        field += '"';
        i++;
      } else inQuotes = false;
    } else if (c === '"') inQuotes = true;
    else if (c === ",") {
      row.push(field);
      field = "";
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
    } else field += c;
  }
  if (inQuotes) throw new PersonaError("E_BAD_FORMAT", "CSV ends inside a quoted field");
  if (field !== "" || row.length > 0) {
    row.push(field);
    rows.push(row);
  }
  return rows;
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
