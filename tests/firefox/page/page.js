// Runs on load. Every step is reported to the test server (POST /report) so
// a failing test shows where the browser stopped.
"use strict";

function report(kind, data = {}) {
  return fetch("/report", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ kind, from: "page", ...data }),
  }).catch(() => {});
}

function withTimeout(promise, ms, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms)),
  ]);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Firefox drops a subscribe() made before its push service has connected,
// so wait until the origin has seen this browser's `hello`.
async function waitPushService(deadline) {
  while (Date.now() < deadline) {
    try {
      const r = await fetch("/push-ready", { cache: "no-store" });
      if ((await r.json()).ready) return true;
    } catch { /* server busy: retry */ }
    await sleep(200);
  }
  return false;
}

async function main() {
  const config = await (await fetch("/config", { cache: "no-store" })).json();
  const reg = await navigator.serviceWorker.register("/sw.js", { scope: "/" });
  await navigator.serviceWorker.ready;
  report("step", { step: "service worker ready" });

  // Before the push service runs, Firefox drops getSubscription() and
  // subscribe() calls: they never settle. So wait for it, then retry once.
  if (!(await waitPushService(Date.now() + config.readyTimeoutMs))) {
    report("error", { message: "push service never connected to the origin" });
    return;
  }
  report("step", { step: "push service connected" });

  const existing = await attempt(config, "getSubscription()", () => reg.pushManager.getSubscription());
  if (existing) {
    report("subscription", { existing: true, subscription: existing.toJSON() });
    return;
  }
  if (!config.subscribe) return;

  const options = { userVisibleOnly: true };
  if (config.applicationServerKey) options.applicationServerKey = config.applicationServerKey;

  const sub = await attempt(config, "subscribe()", () => reg.pushManager.subscribe(options));
  report("subscription", { existing: false, subscription: sub.toJSON() });
}

// Calls `fn` up to config.attempts times, each bounded by config.callTimeoutMs.
async function attempt(config, what, fn) {
  let lastError = null;
  for (let n = 1; n <= config.attempts; n++) {
    try {
      return await withTimeout(fn(), config.callTimeoutMs, what);
    } catch (e) {
      lastError = e;
      report("step", { step: `${what} attempt ${n} failed: ${e && e.name}: ${e && e.message}` });
      await sleep(500);
    }
  }
  throw lastError;
}

main().catch((e) => report("error", { message: `page: ${e && e.name}: ${e && e.message}` }));
