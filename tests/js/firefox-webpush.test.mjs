// Firefox ↔ origin ↔ npm `web-push`, end to end with real clients.
//
// A headless Firefox subscribes through the origin's WebSocket endpoint
// (Mozilla's push protocol, docs/protocol.md §2.2); the npm `web-push` library
// sends VAPID-signed encrypted messages to the push resource (§3) through a
// local TLS front (web-push only speaks https); the service worker reports
// the text it decrypted to the test's page server.
//
//   node --test tests/js/            (E2E_SKIP_BUILD=1 to skip cargo build)
//
// Each test has its own origin (fresh data dir, free ports), TLS front, page
// server and Firefox profile, and tears them all down even on failure.
import { test } from "node:test";
import assert from "node:assert/strict";
import webPush from "web-push";
import { originBinary, sleep, startOrigin, startTlsFront, waitUntil } from "./helpers.mjs";
import {
  EMPTY_MARKER, firefoxBinary, interestingLines, launchFirefox, makeProfile, receivedPushMessages, startPageServer,
} from "../firefox/firefox.mjs";

const FIREFOX = firefoxBinary();
const SKIP = FIREFOX ? false : "no firefox-esr/firefox binary (set FIREFOX=…)";
// Each test normally takes 5-10 s; these bound the whole file to < 2 min.
const TEST_TIMEOUT_MS = 35_000;
const SUBSCRIBE_TIMEOUT_MS = 25_000;
const DELIVERY_TIMEOUT_MS = 10_000;
const QUIET_MS = 2_500;
const SUBJECT = "mailto:e2e@example.test";

if (!SKIP) originBinary(); // build once, outside the per-test timeouts

/**
 * Origin + TLS front + page server + profile + Firefox, for one test.
 * Everything is torn down by t.after, in reverse order, whatever happens.
 */
async function setup(t, { applicationServerKey }) {
  const env = { t, firefox: null };
  const cleanups = [];
  t.after(async () => {
    for (const c of cleanups.reverse()) {
      try { await c(); } catch (e) { console.error("cleanup:", e); }
    }
  });

  env.front = await startTlsFront();
  cleanups.push(() => env.front.stop());
  env.origin = await startOrigin({ publicUrl: env.front.url });
  cleanups.push(() => env.origin.stop());
  env.front.setTarget(env.origin.app);

  env.page = await startPageServer({
    config: { applicationServerKey, subscribe: true },
    pushReady: async () => (await env.origin.metric("push_connected_devices")) >= 1,
  });
  cleanups.push(() => env.page.stop());
  env.profile = await makeProfile(`ws://${env.origin.ws}/`);
  cleanups.push(() => env.profile.remove());
  // Registered last so it runs first: Firefox must be gone before its profile.
  cleanups.push(() => env.firefox?.stop());

  env.startFirefox = (url = env.page.url) => {
    env.firefox = launchFirefox({ binary: FIREFOX, profile: env.profile, url });
    return env.firefox;
  };
  env.pushOptions = (vapid, extra = {}) => ({
    vapidDetails: { subject: SUBJECT, publicKey: vapid.publicKey, privateKey: vapid.privateKey },
    TTL: 60,
    contentEncoding: "aes128gcm",
    agent: env.front.agent,
    timeout: 10_000,
    ...extra,
  });
  return env;
}

/** Runs `body`; on failure, adds the tails of Firefox's and the origin's logs. */
async function withLogs(env, body) {
  try {
    await body();
  } catch (e) {
    const tail = (s, n = 6000) => String(s ?? "").slice(-n);
    e.message += `\n--- page/sw reports:\n${JSON.stringify(env.page?.events ?? [])}` +
      `\n--- firefox push log (tail):\n${tail(interestingLines(env.firefox?.log))}` +
      `\n--- origin log (tail):\n${tail(env.origin?.log)}`;
    throw e;
  }
}

/** Waits for the page's subscription report; checks its shape. */
async function subscription(env, { from = 0, existing } = {}) {
  const ev = await env.page.waitFor((e) => e.kind === "subscription", { from, timeoutMs: SUBSCRIBE_TIMEOUT_MS, what: "subscription" });
  // A retried getSubscription()/subscribe() is worth knowing about.
  for (const e of env.page.find((e) => e.kind === "step" && /failed/.test(e.step), from)) env.t.diagnostic(e.step);
  if (existing !== undefined) assert.equal(ev.existing, existing, "existing subscription?");
  const sub = ev.subscription;
  assert.ok(sub.endpoint.startsWith(`${env.front.url}/p/`), `endpoint ${sub.endpoint} is a push resource under ${env.front.url}`);
  assert.match(sub.keys.p256dh, /^[A-Za-z0-9_-]{87}$/);
  assert.match(sub.keys.auth, /^[A-Za-z0-9_-]{22}$/);
  return { endpoint: sub.endpoint, keys: { p256dh: sub.keys.p256dh, auth: sub.keys.auth } };
}

/** Sends with web-push and expects 201 Created. */
async function send(env, sub, text, options) {
  const res = await webPush.sendNotification(sub, text, options);
  assert.equal(res.statusCode, 201, `push answered ${res.statusCode}: ${res.body}`);
  assert.ok(res.headers.location, "201 carries a Location");
  assert.equal(res.headers.ttl, String(options.TTL), "201 echoes the TTL used");
  return res;
}

/**
 * The first `n` protocol messages of `messageType` in Firefox's push log.
 * Firefox logs a frame before it handles it, but its output pipe and the
 * service worker's report reach this process separately: wait a little.
 */
function loggedMessages(firefox, messageType, n) {
  return waitUntil(() => {
    const all = receivedPushMessages(firefox.log, messageType);
    return all.length >= n && all;
  }, { timeoutMs: 3_000, what: `${n} "${messageType}" messages in Firefox's push log` });
}

/** Waits until the service worker reports a push whose text is `text`. */
function delivered(env, text, from = 0) {
  return env.page.waitFor((e) => e.kind === "push" && e.text === text, { from, timeoutMs: DELIVERY_TIMEOUT_MS, what: `push "${text}"` });
}

test("Firefox receives VAPID-signed aes128gcm messages from web-push; another key is refused (401, errno 109)",
  { skip: SKIP, timeout: TEST_TIMEOUT_MS }, async (t) => {
    const vapid = webPush.generateVAPIDKeys();
    const other = webPush.generateVAPIDKeys();
    const env = await setup(t, { applicationServerKey: vapid.publicKey });
    await withLogs(env, async () => {
      env.startFirefox();
      const sub = await subscription(env, { existing: false });

      const first = `hello Firefox ${Date.now()} ✓`;
      await send(env, sub, first, env.pushOptions(vapid));
      await delivered(env, first);

      const mark = env.page.events.length;
      const second = `second message ${Math.random().toString(36).slice(2)}`;
      await send(env, sub, second, env.pushOptions(vapid));
      await delivered(env, second, mark);

      // A message without a body (no encryption needed) arrives as an empty push.
      const res = await webPush.sendNotification(sub, null, env.pushOptions(vapid));
      assert.equal(res.statusCode, 201, `empty push answered ${res.statusCode}: ${res.body}`);
      await delivered(env, EMPTY_MARKER);

      // What the origin sent on the socket (Firefox's own push log).
      const frames = await loggedMessages(env.firefox, "notification", 3);
      assert.deepEqual(frames.map((f) => f.headers?.encoding ?? null), ["aes128gcm", "aes128gcm", null]);
      assert.equal(frames[2].data, undefined, "an empty message has no data");
      assert.equal(new Set(frames.map((f) => f.version)).size, 3, "each message has its own version");

      // The subscription is restricted to `vapid`: a message signed by
      // another key is refused and never reaches the browser.
      const err = await webPush.sendNotification(sub, "must not arrive", env.pushOptions(other)).then(
        (res) => assert.fail(`push signed by another key answered ${res.statusCode}: ${res.body}`),
        (e) => e,
      );
      assert.equal(err.name, "WebPushError", String(err));
      assert.equal(err.statusCode, 401, `status ${err.statusCode}: ${err.body}`);
      assert.match(String(err.headers["content-type"]), /^application\/problem\+json/);
      const problem = JSON.parse(err.body);
      assert.equal(problem.errno, 109, `problem: ${err.body}`);
      assert.equal(problem.status, 401);
      for (const member of ["type", "title", "detail"]) assert.equal(typeof problem[member], "string", `problem.${member}: ${err.body}`);
      await sleep(QUIET_MS);
      assert.deepEqual(env.page.find((e) => e.kind === "push").map((e) => e.text), [first, second, EMPTY_MARKER],
        "each message arrived once, in order, and the refused one never");
      assert.equal(await env.origin.metric("push_stored_messages"), 0, "nothing stored for the refused message");
    });
  });

test("a message sent while Firefox is off is stored and delivered when it reconnects with the same uaid",
  { skip: SKIP, timeout: TEST_TIMEOUT_MS }, async (t) => {
    const vapid = webPush.generateVAPIDKeys();
    const env = await setup(t, { applicationServerKey: vapid.publicKey });
    await withLogs(env, async () => {
      env.startFirefox();
      const sub = await subscription(env, { existing: false });
      const online = `online ${Date.now()}`;
      await send(env, sub, online, env.pushOptions(vapid));
      await delivered(env, online);

      // Firefox dies at once on a signal (no clean quit), so wait until it
      // has written its uaid to prefs.js (its subscription is in IndexedDB
      // before subscribe() resolves), then kill it and wait until the origin
      // has seen the socket close.
      const uaid = await waitUntil(() => env.profile.savedPref("dom.push.userAgentID"),
        { timeoutMs: 10_000, what: "Firefox to save dom.push.userAgentID in prefs.js" });
      assert.match(String(uaid), /^[0-9a-f-]{32,36}$/i);
      await env.firefox.stop();
      await waitUntil(async () => (await env.origin.metric("push_connected_devices")) === 0,
        { timeoutMs: 10_000, what: "the origin to see Firefox disconnect" });

      const offline = `sent while offline ${Date.now()}`;
      await send(env, sub, offline, env.pushOptions(vapid));
      assert.ok(await env.origin.metric("push_stored_messages") >= 1, "the message is stored");

      const mark = env.page.events.length;
      const again = env.startFirefox(`${env.page.url}?restarted`);
      await delivered(env, offline, mark);
      // The page found the old subscription (a new uaid would have dropped
      // it): same endpoint, no new subscribe().
      const found = await subscription(env, { from: mark, existing: true });
      assert.equal(found.endpoint, sub.endpoint);
      assert.deepEqual(env.page.find((e) => e.kind === "push").map((e) => e.text), [online, offline],
        "each message arrives once, in order");
      // Firefox's push log: its hello carried the saved uaid and the origin
      // answered with the same one.
      const hellos = await loggedMessages(again, "hello", 1);
      assert.deepEqual(hellos.map((h) => h.uaid), [uaid], "one hello reply, with the saved uaid");
      assert.doesNotMatch(String(again.log), /Received new UAID/);
      await waitUntil(async () => (await env.origin.metric("push_stored_messages")) === 0,
        { timeoutMs: 10_000, what: "the acknowledged message to leave the store" });
    });
  });

test("Firefox decrypts an aesgcm (draft) message from web-push",
  { skip: SKIP, timeout: TEST_TIMEOUT_MS }, async (t) => {
    const vapid = webPush.generateVAPIDKeys();
    const env = await setup(t, { applicationServerKey: vapid.publicKey });
    await withLogs(env, async () => {
      env.startFirefox();
      const sub = await subscription(env, { existing: false });
      const text = `aesgcm ${Date.now()} ✓`;
      await send(env, sub, text, env.pushOptions(vapid, { contentEncoding: "aesgcm" }));
      await delivered(env, text);
      // The origin handed Firefox the Encryption and Crypto-Key values.
      const [frame] = await loggedMessages(env.firefox, "notification", 1);
      assert.equal(frame.headers.encoding, "aesgcm");
      assert.match(frame.headers.encryption, /salt=/);
      assert.match(frame.headers.crypto_key, /dh=/);
    });
  });
