import { Option } from "commander";

/** `--split`: which split a lone trait file of no known layout holds (the trait commands share it). */
export function splitOption(): Option {
  return new Option("--split <split>", "for a trait file of no known layout: the split it holds (default: read from the file, else it serves both)").choices([
    "extract",
    "eval",
  ]);
}
