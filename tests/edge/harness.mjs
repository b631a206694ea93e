// The edge's end-to-end harness: a real origin binary behind the edge Worker
// under `wrangler dev` (workerd), both on free loopback ports, stopped always;
// a WebSocket device (docs/protocol.md §2.2) that decrypts what it gets; VAPID
// tokens; the edge mark computed here to talk to the origin directly.
//
// Environment:
//   ORIGIN_BIN=path          the origin binary (default: cargo build -p origin, target/debug/origin)
//   E2E_SKIP_BUILD=1         do not run `cargo build -p origin`
//   EDGE_SMOKE_SKIP_BUILD=1  do not run scripts/build-edge.sh first (wrangler's build command still runs)
//   EDGE_TEST_VERBOSE=1      print wrangler's and the origin's logs at the end
import { spawnSync } from "node:child_process";
import crypto from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import https from "node:https";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import {
  LogTail as Log, freePort, killGroup, originBinary, sleep, startGroup, startOrigin as startJsOrigin,
} from "../js/helpers.mjs";

export { freePort, killGroup, originBinary, sleep };

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const WRANGLER = path.join(ROOT, "node_modules/wrangler/bin/wrangler.js");
const BUILD_TIMEOUT_MS = 15 * 60_000;
const EDGE_READY_MS = 180_000;
export const PROBLEM_JSON = "application/problem+json";

export const b64u = (buf) => Buffer.from(buf).toString("base64url");
export const unb64u = (s) => Buffer.from(s, "base64url");

/** Builds the Worker (skips itself when up to date). */
export function buildEdge() {
  if (process.env.EDGE_SMOKE_SKIP_BUILD === "1") return;
  const b = spawnSync("bash", [path.join(ROOT, "scripts/build-edge.sh")], {
    cwd: ROOT, stdio: ["ignore", "inherit", "inherit"], timeout: BUILD_TIMEOUT_MS,
  });
  if (b.status !== 0) throw new Error(`scripts/build-edge.sh failed (${b.status}, ${b.error ?? "no error"})`);
}

/** The origin behind the edge: it checks the edge's mark with `secret`. */
function startOrigin({ publicUrl, secret, limits, behindEdge }) {
  return startJsOrigin({
    publicUrl,
    logLevel: "warn",
    args: [
      "--edge-secret", secret,
      "--behind-edge", String(behindEdge),
      ...Object.entries(limits).flatMap(([k, v]) => ["--limit", `${k}=${v}`]),
    ],
  });
}

async function startEdge({ port, originUrl, secret, vars, publicUrl }) {
  const persist = await mkdtemp(path.join(tmpdir(), "edge-e2e-wrangler-"));
  const inspectorPort = await freePort();
  const allVars = { ORIGIN_URL: originUrl, EDGE_HMAC_SECRET: secret, ...vars };
  const log = new Log();
  const child = startGroup(process.execPath, [
    WRANGLER, "dev", "--ip", "127.0.0.1", "--port", String(port),
    "--inspector-port", String(inspectorPort), "--show-interactive-dev-session=false",
    "--persist-to", persist,
    // Behind a front (e.g. TLS): the Worker sees request URLs on the front's
    // origin, as a deployed Worker sees its route's, so the VAPID `aud` it
    // checks is the public one.
    ...(publicUrl ? ["--local-upstream", new URL(publicUrl).host, "--upstream-protocol", new URL(publicUrl).protocol.slice(0, -1)] : []),
    ...Object.entries(allVars).flatMap(([k, v]) => ["--var", `${k}:${v}`]),
  ], {
    cwd: ROOT,
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false", NO_COLOR: "1" },
  });
  child.stdout.on("data", (d) => log.push(d));
  child.stderr.on("data", (d) => log.push(d));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + EDGE_READY_MS;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`wrangler dev exited (${child.exitCode}):\n${log}`);
    try {
      const r = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2_000) });
      await r.arrayBuffer();
      if (r.status === 200) break;
    } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`wrangler dev not ready on ${url}:\n${log}`);
    await sleep(300);
  }
  return {
    url,
    log,
    async stop() {
      await killGroup(child);
      await rm(persist, { recursive: true, force: true });
    },
  };
}

/**
 * Origin (behind the edge: --edge-secret, --behind-edge true, --public-url
 * = the edge's URL) and edge (wrangler dev) on free ports. `limits` go to
 * both; `edgeLimits` / `originLimits` override one side. `publicUrl`
 * (default: the edge's own URL) is where clients reach the edge, e.g. a TLS
 * front forwarding to `edge.url`: the origin's --public-url and the edge's
 * request origin. `deadOrigins` URLs where nothing listens are listed
 * before the origin in the edge's ORIGIN_URL, as nodes that are down.
 * Returns { edge, origin, secret, limits, deadOrigins, stop() }.
 */
export async function startStack({ limits = {}, edgeLimits = {}, originLimits = {}, vars = {}, behindEdge = true, publicUrl, deadOrigins = 0 } = {}) {
  const secret = `e2e-${crypto.randomBytes(12).toString("hex")}`;
  const port = await freePort();
  const edgeUrl = `http://127.0.0.1:${port}`;
  const stack = { secret, limits: { ...limits, ...edgeLimits }, edge: null, origin: null };
  stack.stop = async () => {
    const logs = [stack.edge?.log, stack.origin?.log];
    await Promise.allSettled([stack.edge?.stop(), stack.origin?.stop()]);
    if (process.env.EDGE_TEST_VERBOSE === "1") console.log(`---- wrangler\n${logs[0]}\n---- origin\n${logs[1]}`);
  };
  try {
    stack.origin = await startOrigin({ publicUrl: publicUrl ?? edgeUrl, secret, limits: { ...limits, ...originLimits }, behindEdge });
    stack.deadOrigins = [];
    for (let i = 0; i < deadOrigins; i++) stack.deadOrigins.push(`http://127.0.0.1:${await freePort()}`);
    stack.edge = await startEdge({
      port, originUrl: [...stack.deadOrigins, stack.origin.url].join(","), secret, publicUrl,
      vars: { LIMITS: JSON.stringify({ ...limits, ...edgeLimits }), ...vars },
    });
  } catch (e) {
    await stack.stop();
    throw e;
  }
  return stack;
}

// ---------------------------------------------------------------- HTTP ---

/** A request; answers { status, headers, text, json }. */
export async function request(url, { method = "GET", headers = {}, body } = {}) {
  const r = await fetch(url, { method, headers, body, redirect: "manual", signal: AbortSignal.timeout(15_000) });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, text, json };
}

// --------------------------------------------------------------- VAPID ---

/** An application server's VAPID key pair (P-256), signing tokens with any claims. */
export class Vapid {
  constructor() {
    const ecdh = crypto.createECDH("prime256v1");
    ecdh.generateKeys();
    this.publicKey = b64u(ecdh.getPublicKey());
    this.privateKey = b64u(ecdh.getPrivateKey());
    this.key = crypto.createPrivateKey({
      key: { kty: "EC", crv: "P-256", d: this.privateKey,
        x: b64u(ecdh.getPublicKey().subarray(1, 33)), y: b64u(ecdh.getPublicKey().subarray(33)) },
      format: "jwk",
    });
  }
  /** A JWT with these claims (default: aud, exp in 1 h, a mailto: sub). */
  token(aud, claims = {}) {
    const header = b64u(JSON.stringify({ typ: "JWT", alg: "ES256" }));
    const body = b64u(JSON.stringify({
      aud, exp: Math.floor(Date.now() / 1000) + 3600, sub: "mailto:edge-e2e@example.test", ...claims,
    }));
    const sig = crypto.sign("sha256", Buffer.from(`${header}.${body}`), { key: this.key, dsaEncoding: "ieee-p1363" });
    return `${header}.${body}.${b64u(sig)}`;
  }
  /** `Authorization: vapid t=…, k=…`. */
  header(aud, claims) {
    return `vapid t=${this.token(aud, claims)}, k=${this.publicKey}`;
  }
}

// ----------------------------------------------------------- edge mark ---

/** The header fields a mark covers (shared::headers::READ_FIELDS, in order). */
const MARKED_FIELDS = ["ttl", "urgency", "topic", "content-encoding", "content-type", "encryption",
  "crypto-key", "authorization", "push-receipt", "prefer"];

/**
 * The edge's mark (shared::mark::sign), for requests straight to the origin:
 * over the request line, time, key, body and the fields of `headers` it covers.
 */
export function mark(secret, method, pathAndQuery, body = Buffer.alloc(0), { key = "", time, headers = {} } = {}) {
  const t = time ?? Math.floor(Date.now() / 1000);
  const h = b64u(crypto.createHash("sha256").update(body ?? Buffer.alloc(0)).digest());
  const mac = crypto.createHmac("sha256", secret);
  for (const part of ["v2", method, pathAndQuery, String(t), key, h]) mac.update(`${part}\n`);
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), String(v)]));
  for (const name of MARKED_FIELDS) {
    mac.update(name in lower ? `${name}=${lower[name].trim()}\n` : `${name}!\n`);
  }
  return `t=${t}; k=${key}; h=${h}; s=${b64u(mac.digest())}`;
}

// --------------------------------------------------------------- device ---

/**
 * A user agent speaking Mozilla's WebSocket push protocol (docs/protocol.md §2.2)
 * straight to the origin's device listener, with a P-256 key pair and auth
 * secret per channel (RFC 8291) to decrypt aes128gcm messages.
 */
export class Device {
  static async connect(wsAddr) {
    const d = new Device();
    d.ws = new WebSocket(`ws://${wsAddr}/`, "push-notification");
    d.queue = [];
    d.waiters = [];
    d.channels = new Map();
    d.received = 0;
    d.ws.on("message", (data) => {
      const msg = JSON.parse(data.toString());
      if (d.acking && msg.messageType === "notification") {
        d.received++;
        d.ack(msg);
        return;
      }
      const w = d.waiters.shift();
      if (w) w(msg); else d.queue.push(msg);
    });
    await new Promise((resolve, reject) => {
      d.ws.once("open", resolve);
      d.ws.once("error", reject);
    });
    d.send({ messageType: "hello", use_webpush: true });
    const hello = await d.next();
    if (hello?.messageType !== "hello" || hello.status !== 200) throw new Error(`bad hello: ${JSON.stringify(hello)}`);
    d.uaid = hello.uaid;
    return d;
  }

  send(msg) { this.ws.send(JSON.stringify(msg)); }

  /** The next message, or null after `timeoutMs`. */
  next(timeoutMs = 5_000) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    return new Promise((resolve) => {
      const w = (m) => { clearTimeout(timer); resolve(m); };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        resolve(null);
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  /** The next notification (pings skipped), or null. */
  async notification(timeoutMs = 5_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = await this.next(Math.max(1, deadline - Date.now()));
      if (!m) return null;
      if (m.messageType === "notification") return m;
    }
  }

  /**
   * Registers a channel (optionally restricted to a VAPID key). Returns
   * { channelID, endpoint, keys: { p256dh, auth } } (a PushSubscription's JSON).
   */
  async register(vapidKey) {
    const channelID = crypto.randomUUID();
    const msg = { messageType: "register", channelID };
    if (vapidKey) msg.key = vapidKey;
    this.send(msg);
    const r = await this.next();
    if (r?.messageType !== "register" || r.status !== 200) throw new Error(`bad register: ${JSON.stringify(r)}`);
    const ecdh = crypto.createECDH("prime256v1");
    ecdh.generateKeys();
    const auth = crypto.randomBytes(16);
    this.channels.set(channelID, { ecdh, auth });
    return { channelID, endpoint: r.pushEndpoint, keys: { p256dh: b64u(ecdh.getPublicKey()), auth: b64u(auth) } };
  }

  /** From now on, acknowledges and counts notifications instead of queueing them. */
  autoAck() { this.acking = true; }

  ack(n) {
    this.send({ messageType: "ack", updates: [{ channelID: n.channelID, version: n.version, code: 100 }] });
  }

  /** Decrypts an aes128gcm notification for its channel (RFC 8291, RFC 8188). */
  decrypt(n) {
    if (n.headers?.encoding !== "aes128gcm") throw new Error(`not aes128gcm: ${JSON.stringify(n.headers)}`);
    const { ecdh, auth } = this.channels.get(n.channelID);
    return decryptAes128gcm(unb64u(n.data), ecdh, auth);
  }

  close() { this.ws.close(); }
}

const hmac = (key, data) => crypto.createHmac("sha256", key).update(data).digest();

/** RFC 8291 §3.4 key derivation and RFC 8188 decryption of one record. */
export function decryptAes128gcm(body, ecdh, authSecret) {
  const salt = body.subarray(0, 16);
  const idlen = body[20];
  const asPublic = body.subarray(21, 21 + idlen);
  const ciphertext = body.subarray(21 + idlen);
  const ecdhSecret = ecdh.computeSecret(asPublic);
  const prkKey = hmac(authSecret, ecdhSecret);
  const keyInfo = Buffer.concat([Buffer.from("WebPush: info\0"), ecdh.getPublicKey(), asPublic, Buffer.from([1])]);
  const ikm = hmac(prkKey, keyInfo);
  const prk = hmac(salt, ikm);
  const cek = hmac(prk, Buffer.from("Content-Encoding: aes128gcm\0\x01")).subarray(0, 16);
  const nonce = hmac(prk, Buffer.from("Content-Encoding: nonce\0\x01")).subarray(0, 12);
  const d = crypto.createDecipheriv("aes-128-gcm", cek, nonce);
  d.setAuthTag(ciphertext.subarray(ciphertext.length - 16));
  const padded = Buffer.concat([d.update(ciphertext.subarray(0, ciphertext.length - 16)), d.final()]);
  let end = padded.length - 1;
  while (end >= 0 && padded[end] === 0) end--;
  if (padded[end] !== 2) throw new Error("aes128gcm: last record has no 0x02 delimiter");
  return padded.subarray(0, end).toString("utf8");
}

// ------------------------------------------------------------------ JWE ---

/**
 * One compact JWE (A128KW + A128GCM) for many members: a shared content key
 * wrapped under each member's own key-encryption key. Returns the list push
 * body (`header..iv.ciphertext.tag`) and each member's `encrypted_key`.
 */
export function listJwe(plaintext, keks) {
  const cek = crypto.randomBytes(16);
  const iv = crypto.randomBytes(12);
  const header = b64u(JSON.stringify({ alg: "A128KW", enc: "A128GCM" }));
  const c = crypto.createCipheriv("aes-128-gcm", cek, iv);
  c.setAAD(Buffer.from(header, "ascii"));
  const ct = Buffer.concat([c.update(Buffer.from(plaintext)), c.final()]);
  const wrap = (kek) => {
    const w = crypto.createCipheriv("id-aes128-wrap", kek, Buffer.from("A6A6A6A6A6A6A6A6", "hex"));
    return b64u(Buffer.concat([w.update(cek), w.final()]));
  };
  return { body: `${header}..${b64u(iv)}.${b64u(ct)}.${b64u(c.getAuthTag())}`, keys: keks.map(wrap) };
}

// ----------------------------------------------------------- web-push ---

/**
 * An agent for the npm `web-push` library's sendNotification, which always
 * calls https.request (and takes only an https.Agent): its connections are
 * plain TCP, so the library's own request reaches `wrangler dev` on
 * loopback HTTP, byte for byte as it would send it over TLS.
 */
export function plainHttpAgentForWebPush() {
  const agent = new https.Agent({ keepAlive: false });
  agent.createConnection = (options, callback) => net.createConnection(options, callback);
  return agent;
}
