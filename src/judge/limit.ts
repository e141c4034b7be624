/** A counting semaphore as a function: `limit(task)` runs at most `n` tasks at once, in arrival order. */
export type Limit = <T>(task: () => Promise<T>) => Promise<T>;

export function limiter(n: number): Limit {
  let active = 0;
  const waiting: (() => void)[] = [];
  return async <T>(task: () => Promise<T>): Promise<T> => {
    if (active >= n) await new Promise<void>((resolve) => waiting.push(resolve));
    else active++;
    try {
      return await task();
    } finally {
      // Hand the slot straight to the next waiter so `active` never dips and a newcomer cannot jump the queue.
      const next = waiting.shift();
      if (next) next();
      else active--;
    }
  };
}
