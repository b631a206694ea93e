// The edge benchmark (run by scripts/bench-edge.sh, which builds release
// binaries first): one JSON line per scenario on stdout.
//
//   single-push  POST /p/<token>, 2 KiB aes128gcm body, VAPID-signed, to connected devices
//   list-push    POST /l/<token>, 4 KiB compact JWE, VAPID-signed, to a list of connected devices
//                each twice, side by side: "path":"origin" (straight to the origin's app
//                listener) and "path":"edge" (through the Worker under wrangler dev)
//   edge-validate-cpu  CPU time in workerd of the edge's checks of a 4 KiB JWE list push with
//                a VAPID token (POST /_bench/validate, a Worker built with the bench feature), per iteration
//   edge-floor         GET /health answered by the Worker itself: what `wrangler dev` costs per request
//   edge-wasm-size     the release .wasm, raw and gzip
//
// Environment (defaults in brackets): BENCH_REQUESTS [2000] per path and scenario,
// BENCH_CONCURRENCY [16], BENCH_DEVICES [20], BENCH_LIST_MEMBERS [10],
// BENCH_CPU_ITERATIONS [2000], ORIGIN_BIN (scripts/bench-edge.sh sets the release one).
import { readFileSync } from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { Device, ROOT, Vapid, b64u, request, startStack } from "./harness.mjs";

const N = Number(process.env.BENCH_REQUESTS ?? 2000);
const C = Number(process.env.BENCH_CONCURRENCY ?? 16);
const DEVICES = Number(process.env.BENCH_DEVICES ?? 20);
const MEMBERS = Number(process.env.BENCH_LIST_MEMBERS ?? 10);
const CPU_N = Number(process.env.BENCH_CPU_ITERATIONS ?? 2000);
const MESSAGE_BYTES = 4096;
const HIGH = 1_000_000_000;
const WARMUP = Math.min(200, N);

const log = (...a) => console.error("bench-edge:", ...a);
const emit = (o) => console.log(JSON.stringify(o));

/** `n` requests from `c` concurrent clients; `make(i)` gives { url, init }. */
async function load(n, c, make, ok = 201) {
  const lat = [];
  let next = 0;
  let errors = 0;
  let firstError = null;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: c }, async () => {
    while (next < n) {
      const i = next++;
      const { url, init } = make(i);
      const s = performance.now();
      try {
        const r = await fetch(url, init);
        const text = await r.text();
        if (r.status !== ok) {
          errors++;
          firstError ??= `${r.status} ${text.slice(0, 200)}`;
        }
      } catch (e) {
        errors++;
        firstError ??= String(e);
      }
      lat.push(performance.now() - s);
    }
  }));
  const secs = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
  return {
    requests: n, concurrency: c, errors, rps: Math.round(n / secs),
    p50_ms: +q(0.5).toFixed(2), p99_ms: +q(0.99).toFixed(2), ...(firstError ? { first_error: firstError } : {}),
  };
}

/** A syntactically valid aes128gcm body (RFC 8188 header, one record). */
function aes128gcm(len) {
  const b = Buffer.alloc(len, 0x42);
  b.fill(7, 0, 16);
  b.writeUInt32BE(4096, 16);
  b[20] = 65;
  b[21] = 4;
  return b;
}

/** A compact JWE template (empty key part) of exactly `len` bytes. */
function jweTemplate(len) {
  const head = `${b64u(JSON.stringify({ alg: "A128KW", enc: "A128GCM" }))}..${b64u(Buffer.alloc(12, 1))}.`;
  const tail = `.${b64u(Buffer.alloc(16, 3))}`;
  let ct = Math.floor(((len - head.length - tail.length) * 3) / 4);
  let body;
  do { body = head + b64u(Buffer.alloc(ct--, 2)) + tail; } while (body.length > len);
  return body;
}

async function main() {
  const stack = await startStack({
    limits: {
      subscription_messages_per_minute: HIGH, list_pushes_per_minute: HIGH, list_creations_per_minute: HIGH,
      max_message_bytes: MESSAGE_BYTES,
    },
    // Straight requests to the origin must be allowed: it checks marks when present.
    behindEdge: false,
  });
  const devices = [];
  try {
    const edge = stack.edge.url;
    const origin = stack.origin.url;
    for (let i = 0; i < Math.max(DEVICES, MEMBERS); i++) {
      const d = await Device.connect(stack.origin.ws);
      d.sub = await d.register();
      d.autoAck();
      devices.push(d);
    }
    const vapid = new Vapid();
    const auth = vapid.header(edge); // the resources' origin is the edge's URL, for both paths
    const paths = devices.map((d) => new URL(d.sub.endpoint).pathname);

    // The floor of `wrangler dev` itself: the edge's own /health, no checks, no origin.
    const health = () => ({ url: `${edge}/health`, init: {} });
    await load(WARMUP, C, health, 200);
    emit({ scenario: "edge-floor", path: "edge", what: "GET /health answered by the Worker", ...(await load(N, C, health, 200)) });

    // Single pushes.
    const body = aes128gcm(2048);
    const single = (base) => (i) => ({
      url: `${base}${paths[i % paths.length]}`,
      init: { method: "POST", headers: { TTL: "60", "content-encoding": "aes128gcm", authorization: auth }, body },
    });
    for (const [name, base] of [["origin", origin], ["edge", edge]]) {
      await load(WARMUP, C, single(base));
      emit({ scenario: "single-push", path: name, body_bytes: body.length, vapid: true, ...(await load(N, C, single(base))) });
    }

    // List pushes to an owned list of MEMBERS connected devices.
    const doc = Object.fromEntries(devices.slice(0, MEMBERS).map((d) => [d.sub.endpoint, { encrypted_key: b64u(Buffer.alloc(24, 5)) }]));
    const created = await request(`${edge}/lists/0`, {
      method: "POST",
      headers: { "content-type": "application/push-aggregation+json", authorization: auth },
      body: JSON.stringify(doc),
    });
    if (created.status !== 201) throw new Error(`list create: ${created.status} ${created.text}`);
    const listPath = new URL(created.headers.get("location")).pathname;
    const jwe = jweTemplate(MESSAGE_BYTES);
    const listPush = (base) => () => ({
      url: `${base}${listPath}`,
      init: { method: "POST", headers: { TTL: "60", "content-type": "application/jose", authorization: auth }, body: jwe },
    });
    for (const [name, base] of [["origin", origin], ["edge", edge]]) {
      await load(Math.min(WARMUP, 50), C, listPush(base));
      emit({
        scenario: "list-push", path: name, body_bytes: jwe.length, members: MEMBERS, vapid: true,
        ...(await load(Math.max(1, Math.floor(N / 4)), C, listPush(base))),
      });
    }

    // CPU in workerd: the checks of a 4 KiB JWE list push with VAPID, N times in one request.
    const cpu = async (n) => {
      const t0 = performance.now();
      const r = await request(`${edge}/_bench/validate?n=${n}`, {
        method: "POST", headers: { TTL: "60", "content-type": "application/jose", authorization: auth }, body: jwe,
      });
      if (r.status !== 200) throw new Error(`bench route: ${r.status} ${r.text}`);
      return { report: r.json, wall: performance.now() - t0 };
    };
    await cpu(50);
    const base = await cpu(0);
    const full = await cpu(CPU_N);
    const r = full.report;
    emit({
      scenario: "edge-validate-cpu", body_bytes: r.body_bytes, iterations: r.iterations,
      check_us: r.check.per_iter_us, framing_us: r.framing.per_iter_us, mark_us: r.mark.per_iter_us,
      // The same from outside: wall time of n iterations of all three parts, less an empty request.
      all_parts_wall_us: +(((full.wall - base.wall) * 1000) / CPU_N).toFixed(1),
      target_us: 1000,
    });
  } finally {
    for (const d of devices) d.close();
    await stack.stop();
  }
  const wasm = readFileSync(path.join(ROOT, "edge/build/index_bg.wasm"));
  emit({ scenario: "edge-wasm-size", bytes: wasm.length, gzip_bytes: zlib.gzipSync(wasm, { level: 9 }).length });
}

main().catch((e) => {
  log(e.stack ?? e);
  process.exit(1);
});
