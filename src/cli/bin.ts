import { main } from "./main.js";

// A reader that stops early (`persona sweep --help | head`) closes the pipe; like other Unix
// tools, stop quietly instead of dying on an unhandled EPIPE with a stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(0);
    throw err;
  });
}

// exitCode rather than exit(): exit() can cut off output still queued for a pipe.
main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
