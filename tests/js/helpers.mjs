// Shared pieces of the end-to-end tests (tests/js and tests/edge): the origin
// binary on free loopback ports, process groups that are always stopped, a
// TLS front for the origin (the npm `web-push` library only speaks https),
// metrics, polling.
//
//   ORIGIN_BIN=path      use that binary instead of building target/debug/origin
//   E2E_SKIP_BUILD=1     do not run `cargo build -p origin` first
import { spawn, spawnSync, execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer as createHttpsServer, Agent as HttpsAgent } from "node:https";
import { request as httpRequest } from "node:http";
import { createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { scrapeMetrics } from "./metrics.mjs";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const BUILD_TIMEOUT_MS = 15 * 60_000;
const READY_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 5_000;
const LOG_LIMIT = 2_000_000;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Races `promise` against a timer of `ms`; resolves with `onTimeout` if the
 * timer wins. Unlike racing sleep(), the timer is cleared when the promise
 * wins, so it does not keep the process alive.
 */
export function within(promise, ms, onTimeout = "timeout") {
  let timer;
  const timeout = new Promise((r) => { timer = setTimeout(() => r(onTimeout), ms); });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `fn` until it returns a truthy value; throws after `timeoutMs`. */
export async function waitUntil(fn, { timeoutMs = 10_000, intervalMs = 100, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last})`);
    await sleep(intervalMs);
  }
}

/** Keeps the last LOG_LIMIT characters written to it. */
export class LogTail {
  constructor() { this.text = ""; }
  push(chunk) {
    this.text += chunk.toString();
    if (this.text.length > LOG_LIMIT) this.text = this.text.slice(-LOG_LIMIT);
  }
  toString() { return this.text; }
}

let originBin = null;

/** The origin binary, built once per process unless ORIGIN_BIN / E2E_SKIP_BUILD say otherwise. */
export function originBinary() {
  if (originBin) return originBin;
  if (process.env.ORIGIN_BIN) {
    originBin = path.resolve(process.env.ORIGIN_BIN);
  } else {
    if (process.env.E2E_SKIP_BUILD !== "1") {
      const b = spawnSync("cargo", ["build", "-p", "origin", "--quiet"], {
        cwd: ROOT,
        stdio: ["ignore", "inherit", "inherit"],
        timeout: BUILD_TIMEOUT_MS,
      });
      if (b.status !== 0) throw new Error(`cargo build -p origin failed (status ${b.status}, ${b.error ?? "no error"})`);
    }
    originBin = path.join(ROOT, "target/debug/origin");
  }
  if (!existsSync(originBin)) throw new Error(`no origin binary at ${originBin} (cargo build -p origin)`);
  return originBin;
}

/** Kills a detached child's whole process group and waits for the child. */
export async function killGroup(child, { signal = "SIGTERM", timeoutMs = STOP_TIMEOUT_MS } = {}) {
  if (!child || child.exitCode !== null || child.signalCode !== null) {
    try { process.kill(-child.pid, "SIGKILL"); } catch { /* gone */ }
    return;
  }
  const exited = new Promise((resolve) => child.once("exit", resolve));
  try { process.kill(-child.pid, signal); } catch { /* gone */ }
  if ((await within(exited, timeoutMs)) === "timeout") {
    try { process.kill(-child.pid, "SIGKILL"); } catch { /* gone */ }
    await within(exited, timeoutMs);
  }
  try { process.kill(-child.pid, "SIGKILL"); } catch { /* gone */ }
}

// Every detached group we started, killed if the runner exits early.
const groups = new Set();
export function track(child) {
  groups.add(child);
  child.once("exit", () => groups.delete(child));
}
function killAll() {
  for (const c of groups) {
    try { process.kill(-c.pid, "SIGKILL"); } catch { /* gone */ }
  }
}
process.on("exit", killAll);
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.once(sig, () => {
    killAll();
    process.exit(128 + (sig === "SIGINT" ? 2 : 15));
  });
}

/** Starts `cmd` in a process group of its own, piped and tracked. */
export function startGroup(cmd, args, opts) {
  const child = spawn(cmd, args, { ...opts, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  track(child);
  return child;
}

/** A free TCP port on 127.0.0.1 (free when asked). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createNetServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts the origin on free loopback ports (it binds port 0 and reports the
 * real ones) with a fresh data dir. Returns { app, ws, h2, metricsAddr, url,
 * dataDir, log, metrics(), metric(name), stop() }. `logLevel` is ORIGIN_LOG's default.
 */
export async function startOrigin({ publicUrl, args = [], logLevel = "info" } = {}) {
  const bin = originBinary();
  const dataDir = await mkdtemp(path.join(tmpdir(), "origin-e2e-"));
  const argv = [
    "--app-listen", "127.0.0.1:0",
    "--ws-listen", "127.0.0.1:0",
    "--h2-listen", "127.0.0.1:0",
    "--metrics-listen", "127.0.0.1:0",
    // The tests make lists without a VAPID key too (off by default).
    "--keyless-lists",
    "--keyless-list-creations-per-address-per-minute", "1000000",
    "--data-dir", dataDir,
    ...(publicUrl ? ["--public-url", publicUrl] : []),
    ...args,
  ];
  const log = new LogTail();
  const child = startGroup(bin, argv, {
    cwd: dataDir,
    env: { ...process.env, NO_COLOR: "1", ORIGIN_LOG: process.env.ORIGIN_LOG ?? logLevel },
  });
  child.stderr.on("data", (d) => log.push(d));

  const ready = await new Promise((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error(`origin not ready in ${READY_TIMEOUT_MS} ms:\n${log}`)), READY_TIMEOUT_MS);
    child.stdout.on("data", (d) => {
      log.push(d);
      buf += d.toString();
      const m = /^origin ready app=(\S+) ws=(\S+) h2=(\S+) metrics=(\S+)$/m.exec(buf);
      if (m) {
        clearTimeout(timer);
        resolve({ app: m[1], ws: m[2], h2: m[3], metricsAddr: m[4] });
      }
    });
    child.once("exit", (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`origin exited (${code ?? sig}) before ready:\n${log}`));
    });
  });

  const origin = {
    ...ready,
    url: `http://${ready.app}`,
    dataDir,
    log,
    child,
    /** /metrics as { name: number }: each sample, and each family's sum. */
    async metrics() {
      return scrapeMetrics(ready.metricsAddr);
    },
    async metric(name) {
      const v = (await origin.metrics())[name];
      if (v === undefined) throw new Error(`no metric ${name}`);
      return v;
    },
    async stop() {
      await killGroup(child);
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  return origin;
}

/** A self-signed certificate for 127.0.0.1 and localhost, made with the openssl CLI. */
export async function makeCertificate() {
  const dir = await mkdtemp(path.join(tmpdir(), "e2e-cert-"));
  try {
    execFileSync("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
      "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem"),
      "-days", "2", "-subj", "/CN=127.0.0.1",
      "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
    ], { stdio: ["ignore", "ignore", "pipe"], timeout: 20_000 });
    return {
      key: await readFile(path.join(dir, "key.pem")),
      cert: await readFile(path.join(dir, "cert.pem")),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * A TLS-terminating reverse proxy on a free loopback port, standing where
 * the edge stands in production: the npm `web-push` library sends with
 * `https.request` only. `setTarget("127.0.0.1:port")` names the origin's app
 * listener. `agent` trusts the certificate (pass it to web-push).
 */
export async function startTlsFront() {
  const { key, cert } = await makeCertificate();
  let target = null;
  const server = createHttpsServer({ key, cert }, (req, res) => {
    if (!target) {
      res.writeHead(503).end("no target");
      return;
    }
    const [host, port] = target.split(":");
    const up = httpRequest({ host, port: Number(port), method: req.method, path: req.url, headers: req.headers }, (ur) => {
      res.writeHead(ur.statusCode, ur.rawHeaders);
      ur.pipe(res);
    });
    up.on("error", (e) => {
      if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
      res.end(`front: ${e.message}`);
    });
    req.pipe(up);
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address();
  const agent = new HttpsAgent({ ca: cert, keepAlive: false });
  return {
    url: `https://127.0.0.1:${port}`,
    agent,
    setTarget(t) { target = t; },
    async stop() {
      agent.destroy();
      server.closeAllConnections?.();
      await new Promise((r) => server.close(r));
    },
  };
}

/** Runs `redis-cli -p port …args`; its output, or null if it failed. */
function redisCli(port, ...args) {
  const r = spawnSync("redis-cli", ["-p", String(port), ...args], { encoding: "utf8", timeout: 20_000 });
  return r.status === 0 ? r.stdout : null;
}

/**
 * A Redis Cluster of 3 masters and 3 replicas on free loopback ports (AOF
 * with `appendfsync always`), in sync before it returns. Returns
 * { url: "redis-cluster://…", stop() }.
 */
export async function startRedisCluster() {
  const dir = await mkdtemp(path.join(tmpdir(), "redis-cluster-e2e-"));
  const ports = [];
  const children = [];
  for (let i = 0; i < 6; i++) {
    const port = await freePort();
    ports.push(port);
    children.push(startGroup("redis-server", [
      "--port", String(port), "--bind", "127.0.0.1", "--dir", dir,
      "--cluster-enabled", "yes", "--cluster-config-file", `nodes-${port}.conf`,
      "--cluster-node-timeout", "2000", "--appendonly", "yes", "--appendfsync", "always",
      "--appendfilename", `aof-${port}.aof`, "--appenddirname", `aof-${port}`, "--save", "",
    ], { cwd: dir }));
  }
  const stop = async () => {
    for (const c of children) await killGroup(c);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    for (const p of ports) await waitUntil(() => redisCli(p, "ping")?.includes("PONG"), { what: `redis on ${p}` });
    const seeds = ports.map((p) => `127.0.0.1:${p}`);
    const created = redisCli(ports[0], "--cluster", "create", ...seeds, "--cluster-replicas", "1", "--cluster-yes");
    if (created === null) throw new Error("redis-cli --cluster create failed");
    for (const p of ports) {
      await waitUntil(() => redisCli(p, "cluster", "info")?.includes("cluster_state:ok"), { what: `cluster state on ${p}` });
      await waitUntil(() => /role:slave[\s\S]*master_link_status:up|role:master[\s\S]*state=online/.test(redisCli(p, "info", "replication") ?? ""),
        { what: `replication on ${p}` });
    }
    return { url: `redis-cluster://${seeds.join(",")}`, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
