/** Comma-separated flag values (`--trait evil,sycophantic`). */
import { InvalidArgumentError } from "commander";

export function listArg(s: string): string[] {
  const items = s.split(",").map((x) => x.trim());
  if (items.some((x) => x === "")) throw new InvalidArgumentError("expected a comma-separated list without empty items");
  return items;
}
