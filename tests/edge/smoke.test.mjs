// Edge smoke test: builds the Worker, runs it under `wrangler dev` on a free
// loopback port and checks its routes over real HTTP.
//
//   node --test tests/edge/          (scripts/test.sh runs it after setup)
//
// EDGE_SMOKE_SKIP_BUILD=1 uses edge/build/ as it is (wrangler's own build
// command still runs, and skips itself when the build is up to date).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import path from "node:path";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const WRANGLER = path.join(ROOT, "node_modules/wrangler/bin/wrangler.js");
const BUILD_TIMEOUT_MS = 15 * 60_000;
const READY_TIMEOUT_MS = 180_000;
const REQUEST_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 10_000;
const PROBLEM_JSON = "application/problem+json";

let wrangler = null;
let base = "";
let log = "";

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function request(pathname, init = {}) {
  return fetch(base + pathname, { ...init, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
}

function stopWrangler() {
  if (!wrangler || wrangler.exitCode !== null || wrangler.signalCode !== null) return Promise.resolve();
  const child = wrangler;
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      // Still there: end its whole process group (wrangler runs workerd as a child).
      try { process.kill(-child.pid, "SIGKILL"); } catch { /* already gone */ }
      resolve();
    }, STOP_TIMEOUT_MS);
    child.once("exit", () => {
      clearTimeout(timer);
      // workerd may outlive wrangler for a moment; make sure the group is gone.
      try { process.kill(-child.pid, "SIGKILL"); } catch { /* already gone */ }
      resolve();
    });
    try { process.kill(-child.pid, "SIGTERM"); } catch { resolve(); }
  });
}

// Last resort if the runner dies between before() and after().
process.on("exit", () => {
  if (wrangler && wrangler.exitCode === null) {
    try { process.kill(-wrangler.pid, "SIGKILL"); } catch { /* gone */ }
  }
});

before(async () => {
  if (process.env.EDGE_SMOKE_SKIP_BUILD !== "1") {
    const b = spawnSync("bash", [path.join(ROOT, "scripts/build-edge.sh")], {
      cwd: ROOT,
      stdio: ["ignore", "inherit", "inherit"],
      timeout: BUILD_TIMEOUT_MS,
    });
    assert.equal(b.status, 0, `scripts/build-edge.sh failed (status ${b.status}, ${b.error ?? "no error"})`);
  }

  const port = await freePort();
  const inspectorPort = await freePort();
  base = `http://127.0.0.1:${port}`;
  wrangler = spawn(
    process.execPath,
    [
      WRANGLER, "dev",
      "--ip", "127.0.0.1",
      "--port", String(port),
      "--inspector-port", String(inspectorPort),
      "--show-interactive-dev-session=false",
      "--var", "EDGE_HMAC_SECRET:dev-only-smoke-test-secret",
    ],
    {
      cwd: ROOT,
      detached: true, // own process group, so stopWrangler() ends workerd too
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        ...process.env,
        WRANGLER_SEND_METRICS: "false",
        CLOUDFLARE_CF_FETCH_ENABLED: "false",
        NO_COLOR: "1",
      },
    },
  );
  wrangler.stdout.on("data", (d) => { log += d; });
  wrangler.stderr.on("data", (d) => { log += d; });

  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (wrangler.exitCode !== null) {
      throw new Error(`wrangler dev exited with ${wrangler.exitCode} before it was ready:\n${log}`);
    }
    try {
      const res = await fetch(base + "/health", { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      if (res.status === 200) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      throw new Error(`wrangler dev not ready on ${base} after ${READY_TIMEOUT_MS} ms:\n${log}`);
    }
    await sleep(500);
  }
});

after(async () => {
  await stopWrangler();
  if (process.env.EDGE_SMOKE_VERBOSE === "1") console.log(log);
});

async function problem(res, status, type) {
  assert.equal(res.status, status);
  assert.equal(res.headers.get("content-type"), PROBLEM_JSON);
  const body = await res.json();
  assert.equal(body.status, status);
  assert.equal(typeof body.title, "string");
  assert.equal(typeof body.detail, "string");
  if (type) assert.equal(body.type, type);
  return body;
}

test("GET /health is 200 {status: ok}", async () => {
  const res = await request("/health");
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /^application\/json/);
  assert.deepEqual(await res.json(), { status: "ok" });
});

test("POST /validate/ttl echoes a good TTL", async () => {
  const res = await request("/validate/ttl", { method: "POST", headers: { TTL: "3600" } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("ttl"), "3600");
  assert.deepEqual(await res.json(), { ttl: 3600 });
});

test("POST /validate/ttl lowers a TTL above the maximum", async () => {
  const res = await request("/validate/ttl", { method: "POST", headers: { TTL: "999999999999" } });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { ttl: 30 * 24 * 3600 });
});

test("POST /validate/ttl without TTL is a 400 problem", async () => {
  const res = await request("/validate/ttl", { method: "POST" });
  const body = await problem(res, 400, "/problems/missing-ttl");
  assert.equal(body.errno, 111);
});

test("POST /validate/ttl with a garbage TTL is a 400 problem", async () => {
  const res = await request("/validate/ttl", { method: "POST", headers: { TTL: "soon" } });
  const body = await problem(res, 400, "/problems/invalid-ttl");
  assert.equal(body.errno, 112);
});

test("an unknown path is a 404 problem", async () => {
  await problem(await request("/no/such/thing"), 404, "/problems/not-found");
});

test("a wrong method is a 405 problem with Allow", async () => {
  const res = await request("/validate/ttl");
  assert.equal(res.headers.get("allow"), "POST");
  await problem(res, 405, "/problems/method-not-allowed");
});
