/** The demo model shipped with the package (spec §5); `--model demo` resolves to it. */
import { fileURLToPath } from "node:url";

// src/demo and dist/demo are both two levels below the package root.
export const DEMO_MODEL_PATH = fileURLToPath(new URL("../../models/persona-demo.gguf", import.meta.url));
