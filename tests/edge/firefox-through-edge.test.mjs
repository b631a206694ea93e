// Through `wrangler dev`: the npm `web-push` library sends through the edge
// to a Firefox subscriber, which decrypts it.
//
//   node --test tests/edge/firefox-through-edge.test.mjs   (see harness.mjs for the environment)
//
//   web-push ──https──▶ TLS front ──http──▶ edge (wrangler dev) ──mark──▶ origin ──ws──▶ Firefox
//
// The TLS front stands where Cloudflare's TLS stands in production (web-push
// only speaks https). The origin's --public-url is the front's https URL, so
// the endpoints Firefox gets, and the VAPID `aud` web-push signs, are the
// front's; the edge runs with that URL as its public origin
// (`wrangler dev --local-upstream`, see startStack's publicUrl), so the aud
// it checks is the same. The origin must see the push only via the edge.
import { test } from "node:test";
import assert from "node:assert/strict";
import https from "node:https";
import webPush from "web-push";
import { buildEdge, mark, originBinary, request, sleep, startStack } from "./harness.mjs";
import { startTlsFront } from "../js/helpers.mjs";
import { firefoxBinary, interestingLines, launchFirefox, makeProfile, startPageServer } from "../firefox/firefox.mjs";

const FIREFOX = firefoxBinary();

/** A bodiless POST over https with `agent` (the TLS front's); answers { status, text }. */
function httpsPost(url, headers, agent) {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method: "POST", headers: { "content-length": "0", ...headers }, agent, timeout: 10_000 }, (res) => {
      let text = "";
      res.on("data", (d) => { text += d; });
      res.on("end", () => resolve({ status: res.statusCode, text }));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end();
  });
}
const SKIP = FIREFOX ? false : "no firefox-esr/firefox binary (set FIREFOX=…)";
// Normally ~15-25 s, most of it wrangler dev starting: the file stays < 60 s.
const TEST_TIMEOUT_MS = 55_000;
const SUBSCRIBE_TIMEOUT_MS = 20_000;
const DELIVERY_TIMEOUT_MS = 10_000;
const SUBJECT = "mailto:edge-e2e@example.test";

if (!SKIP) {
  buildEdge();      // no-op when up to date (EDGE_SMOKE_SKIP_BUILD=1 skips it)
  originBinary();   // outside the test's timeout
}

test("web-push → TLS → edge (wrangler dev) → origin → Firefox: 201, decrypted by the service worker, the origin reached only via the edge",
  { skip: SKIP, timeout: TEST_TIMEOUT_MS }, async (t) => {
    const cleanups = [];
    t.after(async () => {
      for (const c of cleanups.reverse()) {
        try { await c(); } catch (e) { console.error("cleanup:", e); }
      }
    });
    const env = {};
    try {
      env.front = await startTlsFront();
      cleanups.push(() => env.front.stop());
      env.stack = await startStack({ publicUrl: env.front.url });
      cleanups.push(() => env.stack.stop());
      env.front.setTarget(new URL(env.stack.edge.url).host);
      const { origin } = env.stack;

      const vapid = webPush.generateVAPIDKeys();
      env.page = await startPageServer({
        config: { applicationServerKey: vapid.publicKey, subscribe: true },
        pushReady: async () => (await origin.metric("push_connected_devices")) >= 1,
      });
      cleanups.push(() => env.page.stop());
      env.profile = await makeProfile(`ws://${origin.ws}/`);
      cleanups.push(() => env.profile.remove());
      // Registered last so it runs first: Firefox must be gone before its profile.
      cleanups.push(() => env.firefox?.stop());
      env.firefox = launchFirefox({ binary: FIREFOX, profile: env.profile, url: env.page.url });

      const ev = await env.page.waitFor((e) => e.kind === "subscription",
        { timeoutMs: SUBSCRIBE_TIMEOUT_MS, what: "subscription" });
      const sub = { endpoint: ev.subscription.endpoint, keys: ev.subscription.keys };
      assert.ok(sub.endpoint.startsWith(`${env.front.url}/p/`), `endpoint ${sub.endpoint} is the edge's, via the TLS front`);

      const appBefore = await origin.metric("push_app_requests_total");
      const text = `through the edge to Firefox ${Date.now()} ✓`;
      const res = await webPush.sendNotification(sub, text, {
        vapidDetails: { subject: SUBJECT, publicKey: vapid.publicKey, privateKey: vapid.privateKey },
        TTL: 60,
        contentEncoding: "aes128gcm",
        agent: env.front.agent,
        timeout: 10_000,
      });
      assert.equal(res.statusCode, 201, `push answered ${res.statusCode}: ${res.body}`);
      // The origin's Location is on the front's origin, but `wrangler dev`'s
      // proxy rewrites upstream URLs in response headers towards its own
      // address (and mangles the port of a --local-upstream host:port), so
      // only the message resource's path is checked here.
      assert.match(String(res.headers.location), /\/m\/[A-Za-z0-9_-]+$/, `Location ${res.headers.location}`);
      assert.equal(res.headers.ttl, "60");

      const got = await env.page.waitFor((e) => e.kind === "push" && e.text === text,
        { timeoutMs: DELIVERY_TIMEOUT_MS, what: `push "${text}"` });
      assert.equal(got.text, text, "the service worker decrypted what was sent");
      // The push reached the origin (+1, and +1 for the scrape reading it).
      assert.equal(await origin.metric("push_app_requests_total"), appBefore + 1, "one push reached the origin");

      // The edge checks the public (https, front) aud: a token for the edge's
      // own http address is refused there, before the origin.
      const appBeforeWrongAud = await origin.metric("push_app_requests_total");
      const wrongAud = webPush.getVapidHeaders(env.stack.edge.url, SUBJECT, vapid.publicKey, vapid.privateKey, "aes128gcm");
      const refused = await httpsPost(sub.endpoint, { TTL: "60", authorization: wrongAud.Authorization }, env.front.agent);
      assert.equal(refused.status, 401, refused.text);
      assert.equal(await origin.metric("push_app_requests_total"), appBeforeWrongAud, "nothing reached the origin");

      // Only via the edge: the same push straight to the origin, without the
      // edge's mark (but with a valid VAPID header), is refused.
      const refusedBefore = await origin.metric("push_edge_refused_total");
      const path = new URL(sub.endpoint).pathname;
      const details = webPush.getVapidHeaders(env.front.url, SUBJECT, vapid.publicKey, vapid.privateKey, "aes128gcm");
      const direct = await request(`${origin.url}${path}`, {
        method: "POST", headers: { TTL: "60", authorization: details.Authorization },
      });
      assert.equal(direct.status, 403, direct.text);
      assert.equal(direct.json?.type, "/problems/edge-mark", direct.text);
      // A wrong mark too; the edge's mark is what the origin wants.
      const forged = await request(`${origin.url}${path}`, {
        method: "POST", headers: { TTL: "60", authorization: details.Authorization, "push-edge-mark": mark("not-the-secret", "POST", path) },
      });
      assert.equal(forged.status, 403, forged.text);
      assert.equal(await origin.metric("push_edge_refused_total"), refusedBefore + 2);
      // Nothing more arrived in Firefox.
      await sleep(1_000);
      assert.deepEqual(env.page.find((e) => e.kind === "push").map((e) => e.text), [text], "exactly the one message arrived");
    } catch (e) {
      const tail = (s, n = 6000) => String(s ?? "").slice(-n);
      e.message += `\n--- page/sw reports:\n${JSON.stringify(env.page?.events ?? [])}` +
        `\n--- firefox push log (tail):\n${tail(interestingLines(env.firefox?.log))}` +
        `\n--- origin log (tail):\n${tail(env.stack?.origin?.log)}` +
        `\n--- wrangler log (tail):\n${tail(env.stack?.edge?.log)}`;
      throw e;
    }
  });
