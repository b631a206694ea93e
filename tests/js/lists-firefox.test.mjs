// List Registration Service (docs/protocol.md §4) with real browsers: three
// headless Firefox ESR processes, each with its own profile and its own
// page-server origin, subscribe through the origin's WebSocket endpoint
// (§2.2); the application puts the three push endpoints in one list and
// sends one message without a body to the list; the `push` event fires in
// each of the three service workers, once.
//
// The subscriptions are restricted to an application server key (as sites
// normally make them), so the list must be owned by that key: every list
// request carries a VAPID token made by the npm `web-push` library.
//
//   node --test tests/js/lists-firefox.test.mjs   (E2E_SKIP_BUILD=1 to skip cargo build)
//
// Everything (origin, page servers, profiles, the three Firefox process
// groups) is torn down by t.after even on failure.
import { test } from "node:test";
import assert from "node:assert/strict";
import webPush from "web-push";
import { originBinary, sleep, startOrigin, waitUntil } from "./helpers.mjs";
import {
  EMPTY_MARKER, firefoxBinary, interestingLines, launchFirefox, makeProfile, receivedPushMessages, startPageServer,
} from "../firefox/firefox.mjs";

const FIREFOX = firefoxBinary();
const SKIP = FIREFOX ? false : "no firefox-esr/firefox binary (set FIREFOX=…)";
const BROWSERS = 3;
// Three browsers starting at once on a busy 2-core machine: normally about
// 10 s until all have subscribed.
const TEST_TIMEOUT_MS = 80_000;
const SUBSCRIBE_TIMEOUT_MS = 50_000;
const DELIVERY_TIMEOUT_MS = 15_000;
const HTTP_TIMEOUT_MS = 5_000;
const QUIET_MS = 1_500;
const SUBJECT = "mailto:e2e@example.test";

if (!SKIP) originBinary(); // build once, outside the per-test timeouts

/** Origin + one page server, profile and Firefox per browser, torn down by t.after. */
async function setup(t, { applicationServerKey }) {
  const env = { browsers: [] };
  const cleanups = [];
  t.after(async () => {
    for (const c of cleanups.reverse()) {
      try { await c(); } catch (e) { console.error("cleanup:", e); }
    }
  });
  env.origin = await startOrigin();
  cleanups.push(() => env.origin.stop());
  env.base = `http://${env.origin.app}`;

  for (let i = 0; i < BROWSERS; i++) {
    const b = { i, firefox: null };
    env.browsers.push(b);
    // This browser's push service is up once its own log shows the
    // origin's hello reply (the origin's device count cannot tell the three
    // apart).
    b.page = await startPageServer({
      config: { applicationServerKey, subscribe: true, readyTimeoutMs: SUBSCRIBE_TIMEOUT_MS - 10_000, callTimeoutMs: 10_000 },
      pushReady: async () => !!b.firefox && receivedPushMessages(b.firefox.log, "hello").length > 0,
    });
    cleanups.push(() => b.page.stop());
    b.profile = await makeProfile(`ws://${env.origin.ws}/`);
    cleanups.push(() => b.profile.remove());
  }
  // Registered last so it runs first: every Firefox is gone before its profile.
  cleanups.push(() => Promise.all(env.browsers.map((b) => b.firefox?.stop())));
  env.startAll = () => {
    for (const b of env.browsers) b.firefox = launchFirefox({ binary: FIREFOX, profile: b.profile, url: b.page.url });
  };
  return env;
}

/** Runs `body`; on failure, adds the browsers' reports and log tails and the origin's log tail. */
async function withLogs(env, body) {
  try {
    await body();
  } catch (e) {
    const tail = (s, n = 3000) => String(s ?? "").slice(-n);
    for (const b of env.browsers) {
      e.message += `\n--- firefox ${b.i}: page/sw reports:\n${JSON.stringify(b.page?.events ?? [])}` +
        `\n--- firefox ${b.i}: push log (tail):\n${tail(interestingLines(b.firefox?.log))}`;
    }
    e.message += `\n--- origin log (tail):\n${tail(env.origin?.log, 6000)}`;
    throw e;
  }
}

async function http(method, url, { headers = {}, body } = {}) {
  const r = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
  const text = await r.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: r.status, headers: r.headers, text, json };
}

test("one list push without a body fires the push event in three Firefox service workers",
  { skip: SKIP, timeout: TEST_TIMEOUT_MS }, async (t) => {
    const vapid = webPush.generateVAPIDKeys();
    const env = await setup(t, { applicationServerKey: vapid.publicKey });
    const auth = () => webPush.getVapidHeaders(env.base, SUBJECT, vapid.publicKey, vapid.privateKey, "aes128gcm").Authorization;
    await withLogs(env, async () => {
      const started = Date.now();
      env.startAll();
      const subs = await Promise.all(env.browsers.map(async (b) => {
        const ev = await b.page.waitFor((e) => e.kind === "subscription",
          { timeoutMs: SUBSCRIBE_TIMEOUT_MS, what: `firefox ${b.i}'s subscription` });
        for (const e of b.page.find((e) => e.kind === "step" && /failed/.test(e.step))) t.diagnostic(`firefox ${b.i}: ${e.step}`);
        assert.equal(ev.existing, false, `firefox ${b.i} made a new subscription`);
        return ev.subscription;
      }));
      t.diagnostic(`three Firefox subscriptions in ${Date.now() - started} ms`);
      const endpoints = subs.map((s) => s.endpoint);
      for (const e of endpoints) assert.ok(e.startsWith(`${env.base}/p/`), `endpoint ${e} is a push resource of the origin`);
      assert.equal(new Set(endpoints).size, BROWSERS, "three distinct subscriptions");
      assert.equal(await env.origin.metric("push_connected_devices"), BROWSERS);

      // The list, owned by the key the subscriptions are restricted to.
      const doc = Object.fromEntries(endpoints.map((e) => [e, {}]));
      const created = await http("POST", `${env.base}/lists/0`, {
        headers: { "content-type": "application/push-aggregation+json", authorization: auth() },
        body: JSON.stringify(doc),
      });
      assert.equal(created.status, 201, `create answered ${created.status}: ${created.text}`);
      assert.equal(created.headers.get("member-count"), String(BROWSERS));
      const list = created.headers.get("location");
      assert.match(list ?? "", new RegExp(`^${env.base}/l/[A-Za-z0-9_-]{16,}$`));
      const read = await http("GET", list, { headers: { authorization: auth() } });
      assert.equal(read.status, 200, read.text);
      assert.deepEqual(Object.keys(read.json).sort(), [...endpoints].sort());

      // Without the owner's VAPID token nothing is sent.
      const refused = await http("POST", list, { headers: { ttl: "60" } });
      assert.equal(refused.status, 401, `unauthenticated list push answered ${refused.status}: ${refused.text}`);

      // One push, no body.
      const pushed = await http("POST", list, { headers: { ttl: "60", authorization: auth() } });
      assert.equal(pushed.status, 201, `list push answered ${pushed.status}: ${pushed.text}`);
      assert.equal(pushed.headers.get("ttl"), "60");
      assert.equal(pushed.headers.get("member-count"), String(BROWSERS));
      const statusUrl = pushed.headers.get("location");
      assert.match(statusUrl ?? "", new RegExp(`^${env.base}/lm/[A-Za-z0-9_-]{16,}$`));

      await Promise.all(env.browsers.map((b) => b.page.waitFor((e) => e.kind === "push",
        { timeoutMs: DELIVERY_TIMEOUT_MS, what: `firefox ${b.i}'s push event` })));

      // Each service worker acknowledged through Firefox: delivered 3.
      let status;
      await waitUntil(async () => {
        status = (await http("GET", statusUrl, { headers: { authorization: auth() } })).json;
        return status?.delivered === BROWSERS && status.fanout_finished;
      }, { timeoutMs: 10_000, what: "the list message status to show 3 delivered" }).catch((e) => {
        e.message += ` — last status: ${JSON.stringify(status)}`;
        throw e;
      });
      assert.equal(status.members, BROWSERS);
      assert.deepEqual([status.stored, status.expired, status.failed], [0, 0, 0], JSON.stringify(status));

      // Exactly once each, as an empty push message; one notification frame
      // without data in each Firefox's push log.
      await sleep(QUIET_MS);
      for (const b of env.browsers) {
        assert.deepEqual(b.page.find((e) => e.kind === "push").map((e) => e.text), [EMPTY_MARKER],
          `firefox ${b.i}'s service worker reports one push event without data`);
        const frames = await waitUntil(() => {
          const f = receivedPushMessages(b.firefox.log, "notification");
          return f.length >= 1 && f;
        }, { timeoutMs: 3_000, what: `the notification in firefox ${b.i}'s push log` });
        assert.equal(frames.length, 1, `firefox ${b.i}: one notification frame`);
        assert.equal(frames[0].data, undefined, "no body, no data");
      }
      assert.equal((await http("GET", statusUrl, { headers: { authorization: auth() } })).json.delivered, BROWSERS);
      // An owned list's messages are its owner's to read.
      assert.equal((await http("GET", statusUrl)).status, 401);
    });
  });
