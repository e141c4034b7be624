// ESLint flat config: typescript-eslint's recommended rules (syntax only, no type information, so
// the whole tree lints in seconds) plus the project's own rules from CONTRIBUTING.md.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", ".cache/", "models/", "runs/", "bench/.peer/", ".scratch/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: "readonly", console: "readonly", Buffer: "readonly" } },
    rules: {
      "@typescript-eslint/no-explicit-any": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrors: "none" }],
      "no-constant-condition": ["error", { checkLoops: false }],
    },
  },
  {
    // Library code raises PersonaError (src/errors.ts), whose code the CLI and the server map.
    files: ["src/**/*.ts"],
    rules: {
      "no-restricted-syntax": [
        "error",
        { selector: "ThrowStatement > NewExpression[callee.name=/^(Error|TypeError|RangeError)$/]", message: "throw a PersonaError with a code" },
      ],
      "no-restricted-imports": ["error", { paths: [{ name: "koffi", message: "only src/engine/ffi/llama.ts talks to koffi" }] }],
    },
  },
  { files: ["src/engine/ffi/llama.ts"], rules: { "no-restricted-imports": "off" } },
);
