// What one push costs an application server that uses the npm `web-push`
// library (the pinned version): CPU time of generateRequestDetails, which
// encrypts the payload for the subscription (RFC 8291: a fresh ECDH key and
// salt) and signs a VAPID JWT (RFC 8292), for a 2 KiB encrypted body as in
// bench scenario e. Prints one JSON line. Compare with pushbench's
// "single_as_apps.tool_cpu_s" / pushes.
//
//   node scripts/webpush-cost.mjs [pushes]
import webpush from "web-push";
import crypto from "node:crypto";

const n = Number(process.argv[2] ?? 3000);
const ua = crypto.createECDH("prime256v1");
ua.generateKeys();
const subscription = {
  endpoint: "http://127.0.0.1:8080/p/x",
  keys: { p256dh: ua.getPublicKey("base64url"), auth: crypto.randomBytes(16).toString("base64url") },
};
const vapid = webpush.generateVAPIDKeys();
// 1945 bytes of plaintext make a 2048-byte aes128gcm body.
const payload = Buffer.alloc(1945, 120);
const options = {
  vapidDetails: { subject: "mailto:bench@example.com", publicKey: vapid.publicKey, privateKey: vapid.privateKey },
  TTL: 60,
};
for (let i = 0; i < 200; i++) webpush.generateRequestDetails(subscription, payload, options);
const cpu0 = process.cpuUsage();
const t0 = process.hrtime.bigint();
for (let i = 0; i < n; i++) webpush.generateRequestDetails(subscription, payload, options);
const wall = Number(process.hrtime.bigint() - t0) / 1e3 / n;
const cpu = process.cpuUsage(cpu0);
console.log(JSON.stringify({
  lib: "web-push",
  version: JSON.parse(await (await import("node:fs/promises")).readFile(new URL("../node_modules/web-push/package.json", import.meta.url))).version,
  pushes: n,
  body_bytes: 2048,
  per_push_wall_us: Math.round(wall),
  per_push_cpu_us: Math.round((cpu.user + cpu.system) / n),
}));
