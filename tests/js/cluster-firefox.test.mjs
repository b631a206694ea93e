// Firefox and npm `web-push` against two origin nodes on one Redis
// Cluster (3 masters, 3 replicas, every write waiting for a replica):
// Firefox holds its WebSocket on node A, web-push sends through node B,
// and the service worker decrypts what B forwarded to A.
//
//   node --test tests/js/cluster-firefox.test.mjs
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import webPush from "web-push";
import { originBinary, startOrigin, startRedisCluster, startTlsFront } from "./helpers.mjs";
import { firefoxBinary, interestingLines, launchFirefox, makeProfile, startPageServer } from "../firefox/firefox.mjs";

const FIREFOX = firefoxBinary();
const REDIS = spawnSync("redis-server", ["--version"]).status === 0;
const SKIP = !FIREFOX ? "no firefox-esr/firefox binary (set FIREFOX=…)" : !REDIS ? "no redis-server" : false;
const TEST_TIMEOUT_MS = 60_000;
const SUBSCRIBE_TIMEOUT_MS = 25_000;
const DELIVERY_TIMEOUT_MS = 10_000;

if (!SKIP) originBinary();

test("Firefox on node A decrypts what web-push sent through node B of a Redis Cluster",
  { skip: SKIP, timeout: TEST_TIMEOUT_MS }, async (t) => {
    const cleanups = [];
    t.after(async () => {
      for (const c of cleanups.reverse()) {
        try { await c(); } catch (e) { console.error("cleanup:", e); }
      }
    });
    const vapid = webPush.generateVAPIDKeys();
    const redis = await startRedisCluster();
    cleanups.push(() => redis.stop());
    const front = await startTlsFront();
    cleanups.push(() => front.stop());
    const prefix = `e2e${Date.now().toString(36)}`;
    const nodes = {};
    for (const id of ["a", "b"]) {
      nodes[id] = await startOrigin({
        publicUrl: front.url,
        args: ["--store", redis.url, "--redis-prefix", prefix, "--node-id", id, "--redis-wait-replicas", "1"],
      });
      const n = nodes[id];
      cleanups.push(() => n.stop());
    }
    // Applications reach node B; Firefox reaches node A.
    front.setTarget(nodes.b.app);
    const page = await startPageServer({
      config: { applicationServerKey: vapid.publicKey, subscribe: true },
      pushReady: async () => (await nodes.a.metric("push_connected_devices")) >= 1,
    });
    cleanups.push(() => page.stop());
    const profile = await makeProfile(`ws://${nodes.a.ws}/`);
    cleanups.push(() => profile.remove());
    let firefox = null;
    cleanups.push(() => firefox?.stop());
    try {
      firefox = launchFirefox({ binary: FIREFOX, profile, url: page.url });
      const ev = await page.waitFor((e) => e.kind === "subscription", { timeoutMs: SUBSCRIBE_TIMEOUT_MS, what: "subscription" });
      const sub = ev.subscription;
      assert.ok(sub.endpoint.startsWith(`${front.url}/p/`), `endpoint ${sub.endpoint}`);
      const options = {
        vapidDetails: { subject: "mailto:e2e@example.test", publicKey: vapid.publicKey, privateKey: vapid.privateKey },
        TTL: 60,
        contentEncoding: "aes128gcm",
        agent: front.agent,
        timeout: 10_000,
      };
      const text = `across nodes ${Date.now()} ✓`;
      const res = await webPush.sendNotification(sub, text, options);
      assert.equal(res.statusCode, 201, `push answered ${res.statusCode}: ${res.body}`);
      await page.waitFor((e) => e.kind === "push" && e.text === text, { timeoutMs: DELIVERY_TIMEOUT_MS, what: `push "${text}"` });
      // Written by node A, forwarded there by node B without being stored.
      assert.ok((await nodes.b.metric("push_cluster_forwarded_total")) >= 1, "node B forwarded it");
      assert.equal(await nodes.a.metric("push_connected_devices"), 1);
      assert.equal(await nodes.b.metric("push_connected_devices"), 0);
    } catch (e) {
      const tail = (s, n = 6000) => String(s ?? "").slice(-n);
      e.message += `\n--- page/sw reports:\n${JSON.stringify(page.events)}` +
        `\n--- firefox push log (tail):\n${tail(interestingLines(firefox?.log))}` +
        `\n--- node a log (tail):\n${tail(nodes.a.log)}\n--- node b log (tail):\n${tail(nodes.b.log)}`;
      throw e;
    }
  });
