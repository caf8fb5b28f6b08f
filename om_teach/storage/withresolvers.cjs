// Promise.withResolvers (ES2024) for Node 20: js-ipfs 0.66's dependencies call it.
// Preloaded with NODE_OPTIONS=--require by om_teach.storage.ipfs_daemon.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function withResolvers() {
    let resolve;
    let reject;
    const promise = new this((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}
