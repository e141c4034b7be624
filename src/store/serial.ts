/** Runs async steps one after another (one writer per file), keeping the chain alive after a failure. */
export class Serial {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.tail.then(fn);
    this.tail = p.catch(() => undefined);
    return p;
  }

  /** Resolves once every step queued so far has finished (successfully or not). */
  settled(): Promise<unknown> {
    return this.tail;
  }
}
