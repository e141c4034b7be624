/** `redis://HOST:PORT[/DB]`, the address of the job queue, checked before anything connects. */
import { PersonaError } from "../errors.js";

export interface QueueAddress {
  host: string;
  port: number;
  db: number;
  /** The URL as given, for messages. */
  url: string;
}

export function parseQueueUrl(url: string): QueueAddress {
  const bad = (why: string) => new PersonaError("E_BAD_INPUT", `--queue ${url}: ${why}; expected redis://HOST:PORT[/DB]`);
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw bad("not a URL");
  }
  if (u.protocol !== "redis:") throw bad(`the scheme is ${u.protocol.replace(/:$/, "")}, not redis`);
  if (u.hostname === "") throw bad("no host");
  if (u.username !== "" || u.password !== "" || u.search !== "" || u.hash !== "") throw bad("credentials, queries and fragments are not supported");
  const port = u.port === "" ? 6379 : Number(u.port);
  const dbText = u.pathname.replace(/^\//, "");
  if (dbText !== "" && !/^\d{1,2}$/.test(dbText)) throw bad(`the database ${JSON.stringify(dbText)} is not a number 0-99`);
  // URL keeps IPv6 hosts bracketed; the Redis client wants them bare.
  return { host: u.hostname.replace(/^\[(.*)\]$/, "$1"), port, db: dbText === "" ? 0 : Number(dbText), url };
}
