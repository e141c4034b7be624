import { main } from "./main.js";

// exitCode rather than exit(): exit() can cut off output still queued for a pipe.
main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
