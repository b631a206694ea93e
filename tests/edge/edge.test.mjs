// The edge end to end: the Worker under `wrangler dev` (workerd) in front of
// a real origin in behind-edge mode, WebSocket devices on the origin.
//
//   node --test tests/edge/          (scripts/test.sh runs it; see harness.mjs for the environment)
//
// (a) a push from the npm `web-push` library through the edge reaches a device, which decrypts it;
// (b) a list is created, amended, read, pushed (JWE per member) and deleted through the edge;
// (c) every rule of docs/protocol.md §3 and §4 broken: the edge answers, as the origin would,
//     and the origin never sees the request (push_app_requests_total);
// (d) the origin refuses requests without a valid mark;
// (e) the edge's rate limits (Durable Object) trip at the configured rate and recover;
// (f) list documents past the edge's cap (MAX_LIST_DOCUMENTS, 1 here) are refused at once;
// and the edge's own routes (health, unknown path, wrong method).
// The edge's ORIGIN_URL names a node that is down before the origin, as in a
// cluster with one node gone: every request reaches the live one.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import http from "node:http";
import zlib from "node:zlib";
import * as jose from "jose";
import webPush from "web-push";
import {
  Device, PROBLEM_JSON, Vapid, b64u, buildEdge, listJwe, mark, originBinary, plainHttpAgentForWebPush,
  request, sleep, startStack, unb64u,
} from "./harness.mjs";

const AGG = "application/push-aggregation+json";
const PATCH = "application/merge-patch+json";
// Limits of this stack: small documents and lists, to reach each limit cheaply.
const LIMITS = { max_list_body_bytes: 16384, max_list_document_bytes: 65536, max_list_members: 20 };
// The edge counts list pushes and creations; the origin's own limits are set
// high so that every 429 seen here is the edge's.
const EDGE_RATE = { list_pushes_per_minute: 3, list_creations_per_minute: 3 };
const ORIGIN_RATE = { list_pushes_per_minute: 1000, list_creations_per_minute: 1000 };
// Seconds per rate window (RATE_WINDOW_SECS), short so that recovery is seen.
const WINDOW = 8;

let stack;
let edge = "";

before(async () => {
  buildEdge();
  originBinary();
  stack = await startStack({
    limits: LIMITS, edgeLimits: EDGE_RATE, originLimits: ORIGIN_RATE,
    vars: { RATE_WINDOW_SECS: String(WINDOW) }, deadOrigins: 1,
  });
  edge = stack.edge.url;
});

after(async () => {
  await stack?.stop();
});

const appRequests = () => stack.origin.metric("push_app_requests_total");

async function devices(n, vapidKey) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const d = await Device.connect(stack.origin.ws);
    d.sub = await d.register(vapidKey);
    out.push(d);
  }
  return out;
}

function assertProblem(r, status, type) {
  assert.equal(r.status, status, r.text);
  assert.equal(r.headers.get("content-type"), PROBLEM_JSON);
  assert.equal(r.json.status, status);
  if (type) assert.equal(r.json.type, type, r.text);
  return r.json;
}

/** Waits until at least `secs` seconds remain in the current rate window. */
async function freshWindow(secs) {
  const into = (Date.now() / 1000) % WINDOW;
  if (WINDOW - into < secs) await sleep((WINDOW - into) * 1000 + 150);
}

describe("edge routes", () => {
  test("GET /health is the edge's own", async () => {
    const before = await appRequests();
    const r = await request(`${edge}/health`);
    assert.equal(r.status, 200);
    assert.deepEqual(r.json, { status: "ok" });
    assert.equal(await appRequests(), before, "nothing reached the origin");
  });

  test("unknown paths, /metrics and wrong methods are answered at the edge", async () => {
    const before = await appRequests();
    assertProblem(await request(`${edge}/no/such/thing`), 404, "/problems/not-found");
    assertProblem(await request(`${edge}/metrics`), 404, "/problems/not-found");
    const r = await request(`${edge}/p/AAAAAAAAAAAAAAAAAAAAAA`);
    assertProblem(r, 405, "/problems/method-not-allowed");
    assert.equal(r.headers.get("allow"), "POST");
    assert.equal(await appRequests(), before);
  });
});

describe("(a) a web-push library push through the edge", () => {
  test("reaches a WebSocket device, encrypted, and the origin vouches the VAPID key", async () => {
    const vapid = webPush.generateVAPIDKeys();
    const [d] = await devices(1, vapid.publicKey);
    try {
      assert.ok(d.sub.endpoint.startsWith(`${edge}/p/`), `endpoint ${d.sub.endpoint} is the edge's`);
      const options = {
        vapidDetails: { subject: "mailto:edge-e2e@example.test", publicKey: vapid.publicKey, privateKey: vapid.privateKey },
        TTL: 120,
        urgency: "high",
        contentEncoding: "aes128gcm",
        agent: plainHttpAgentForWebPush(),
        timeout: 10_000,
      };
      const res = await webPush.sendNotification(d.sub, "hello through the edge", options);
      assert.equal(res.statusCode, 201);
      assert.ok(res.headers.location.startsWith(`${edge}/m/`), res.headers.location);
      assert.equal(res.headers.ttl, "120");
      assert.match(res.headers.link, /rel="urn:ietf:params:push:multi"/);
      const n = await d.notification();
      assert.ok(n, "the device got the message");
      assert.equal(d.decrypt(n), "hello through the edge");
      d.ack(n);

      // The subscription is restricted to that key: another key's push gets
      // past the edge (it cannot know) and the origin refuses it.
      const other = webPush.generateVAPIDKeys();
      await assert.rejects(
        webPush.sendNotification(d.sub, "nope", { ...options, vapidDetails: { ...options.vapidDetails, ...other } }),
        (e) => e.statusCode === 401 && JSON.parse(e.body).errno === 109,
      );
      assert.equal(await d.notification(500), null);
    } finally {
      d.close();
    }
  });

  test("an empty push stored for an offline device, cancelled through the edge", async () => {
    const [d] = await devices(1);
    d.close();
    await sleep(100);
    const r = await request(d.sub.endpoint, { method: "POST", headers: { TTL: "600", Topic: "edge" } });
    assert.equal(r.status, 201, r.text);
    const message = r.headers.get("location");
    assert.ok(message.startsWith(`${edge}/m/`), message);
    assert.equal((await request(message, { method: "DELETE" })).status, 204);
    assertProblem(await request(message, { method: "DELETE" }), 404, "/problems/unknown-message");
  });
});

describe("(b) a list through the edge", () => {
  test("create (gzip), amend, read, push to every member, status, delete", async () => {
    const vapid = new Vapid();
    const auth = () => vapid.header(edge);
    const members = await devices(3);
    try {
      const keks = members.map(() => crypto.randomBytes(16));
      // The encrypted keys travel in the list; the push carries one ciphertext.
      const text = "one message, three members";
      const jwe = listJwe(text, keks);
      const doc = {
        [members[0].sub.endpoint]: { encrypted_key: jwe.keys[0] },
        [members[1].sub.endpoint]: { encrypted_key: jwe.keys[1], expires: new Date(Date.now() + 3600_000).toISOString() },
      };
      const created = await request(`${edge}/lists/0`, {
        method: "POST",
        headers: { "content-type": AGG, "content-encoding": "gzip", authorization: auth() },
        body: zlib.gzipSync(JSON.stringify(doc)),
      });
      assert.equal(created.status, 201, created.text);
      const list = created.headers.get("location");
      assert.ok(list.startsWith(`${edge}/l/`), list);
      assert.equal(created.headers.get("member-count"), "2");

      // Amend: the third joins; a malformed and an unknown member are reported by the origin.
      const unknown = `${edge}/p/AAAAAAAAAAAAAAAAAAAAAA`;
      const patch = {
        [members[2].sub.endpoint]: { encrypted_key: jwe.keys[2] },
        "ftp://nowhere/p/x": {},
        [unknown]: {},
      };
      const amended = await request(list, {
        method: "PATCH", headers: { "content-type": PATCH, authorization: auth() }, body: JSON.stringify(patch),
      });
      assert.equal(amended.status, 200, amended.text);
      assert.equal(amended.json.members, 3);
      assert.deepEqual(amended.json.rejected.map((r) => r.reason).sort(), ["malformed-uri", "unknown"]);

      // Read: the members as a list document.
      const read = await request(list, { headers: { authorization: auth() } });
      assert.equal(read.status, 200, read.text);
      assert.equal(read.headers.get("member-count"), "3");
      assert.deepEqual(Object.keys(read.json).sort(), members.map((m) => m.sub.endpoint).sort());
      // The owner's key is required: without it, the origin says so.
      assertProblem(await request(list), 401, "/problems/vapid-required");

      // Push: one JWE, each member decrypts its own copy.
      const pushed = await request(list, {
        method: "POST",
        headers: { TTL: "300", "content-type": "application/jose", authorization: auth() },
        body: jwe.body,
      });
      assert.equal(pushed.status, 201, pushed.text);
      assert.equal(pushed.headers.get("member-count"), "3");
      const status = pushed.headers.get("location");
      assert.ok(status.startsWith(`${edge}/lm/`));
      for (const [i, m] of members.entries()) {
        const n = await m.notification();
        assert.ok(n, `member ${i} got its copy`);
        const copy = unb64u(n.data).toString();
        const { plaintext } = await jose.compactDecrypt(copy, keks[i]);
        assert.equal(new TextDecoder().decode(plaintext), text);
        m.ack(n);
      }
      let s;
      for (let i = 0; i < 50; i++) {
        s = await request(status, { headers: { authorization: auth() } });
        if (s.json?.delivered === 3) break;
        await sleep(100);
      }
      assert.equal(s.status, 200);
      assert.equal(s.json.members, 3);
      assert.equal(s.json.delivered, 3);
      // The status of an owned list's message is its owner's.
      assertProblem(await request(status), 401, "/problems/vapid-required");

      const del = await request(list, { method: "DELETE", headers: { authorization: auth() } });
      assert.equal(del.status, 204, del.text);
      assertProblem(await request(list, { headers: { authorization: auth() } }), 404, "/problems/not-found");
    } finally {
      for (const m of members) m.close();
    }
  });

  test("a list without an owner and an empty push", async () => {
    const members = await devices(2);
    try {
      const doc = Object.fromEntries(members.map((m) => [m.sub.endpoint, {}]));
      const created = await request(`${edge}/lists/0`, {
        method: "POST", headers: { "content-type": AGG }, body: JSON.stringify(doc),
      });
      assert.equal(created.status, 201, created.text);
      const pushed = await request(created.headers.get("location"), { method: "POST", headers: { TTL: "60" } });
      assert.equal(pushed.status, 201, pushed.text);
      for (const m of members) {
        const n = await m.notification();
        assert.ok(n);
        assert.equal(n.data, undefined);
      }
    } finally {
      for (const m of members) m.close();
    }
  });
});

describe("(c) bad input is answered at the edge, as the origin would", () => {
  test("every rule of §3 and §4, and nothing reaches the origin", async () => {
    const vapid = new Vapid();
    const [d] = await devices(1);
    try {
      const p = new URL(d.sub.endpoint).pathname;
      // An unowned list for body rules (the origin checks its body before any VAPID),
      // and an owned one for VAPID rules on reads and deletes.
      const mk = async (authz) => {
        const r = await request(`${edge}/lists/0`, {
          method: "POST",
          headers: { "content-type": AGG, ...(authz ? { authorization: authz } : {}) },
          body: JSON.stringify({ [d.sub.endpoint]: {} }),
        });
        assert.equal(r.status, 201, r.text);
        return new URL(r.headers.get("location")).pathname;
      };
      const open = await mk();
      const owned = await mk(vapid.header(edge));
      const cases = badInputs({ edge, vapid, push: p, open, owned });

      const before = await appRequests();
      const answers = [];
      for (const c of cases) {
        const r = await request(`${edge}${c.path}`, { method: c.method, headers: c.headers, body: c.body });
        assertProblem(r, c.status, c.type);
        if (c.errno !== undefined) assert.equal(r.json.errno, c.errno, `${c.what}: ${r.text}`);
        if (c.check) c.check(r);
        answers.push(r);
      }
      assert.equal(await appRequests(), before, "no bad request reached the origin");

      // The origin's own answer to each, asked directly with a valid mark
      // (vouching no key): the edge's answer is the same problem.
      for (const [i, c] of cases.entries()) {
        if (c.edgeOnly) continue;
        const body = c.body === undefined ? Buffer.alloc(0) : Buffer.from(c.body);
        // The mark covers the fields as sent: fetch gives a text body a
        // content-type of its own when the case has none (as it did on
        // the way through the edge).
        const sent = { ...c.headers };
        if (typeof c.body === "string" && !Object.keys(sent).some((k) => k.toLowerCase() === "content-type")) {
          sent["content-type"] = "text/plain;charset=UTF-8";
        }
        const m = mark(stack.secret, c.method, c.path, body, { headers: sent });
        const o = await request(`${stack.origin.url}${c.path}`, {
          method: c.method, headers: { ...sent, "push-edge-mark": m }, body: c.body,
        });
        const e = answers[i];
        assert.equal(o.status, e.status, `${c.what}: origin says ${o.text}`);
        assert.equal(o.headers.get("content-type"), PROBLEM_JSON, c.what);
        for (const k of ["type", "title", "errno", "detail", "members"]) {
          assert.deepEqual(e.json[k], o.json[k], `${c.what}: ${k} (edge ${e.text} / origin ${o.text})`);
        }
      }
      // And nothing was delivered.
      assert.equal(await d.notification(300), null);
    } finally {
      d.close();
    }
  });
});

/** Every class of bad input: { what, method, path, headers, body, status, type, errno }. */
function badInputs({ edge, vapid, push, open, owned }) {
  const aes = (len = 300) => {
    const b = Buffer.alloc(Math.max(len, 103), 0x42);
    b.fill(7, 0, 16);
    b.writeUInt32BE(4096, 16);
    b[20] = 65;
    b[21] = 4;
    return b;
  };
  const shortKeyId = aes();
  shortKeyId[20] = 10;
  const twoRecords = aes();
  twoRecords.writeUInt32BE(100, 16);
  const smallRs = aes();
  smallRs.writeUInt32BE(10, 16);
  const ttl = { TTL: "60" };
  const aesH = { ...ttl, "content-encoding": "aes128gcm" };
  const jose = { ...ttl, "content-type": "application/jose" };
  const joseJson = { ...ttl, "content-type": "application/jose+json" };
  const tokenNow = Math.floor(Date.now() / 1000);
  const sig = vapid.header(edge);
  const broken = sig.replace("vapid t=", "vapid t=x");
  const jwtOnly = vapid.token(edge);
  const template = (header = { alg: "A128KW", enc: "A128GCM" }, key = "") =>
    `${b64u(JSON.stringify(header))}.${key}.${b64u(Buffer.alloc(12, 1))}.${b64u(Buffer.alloc(64, 2))}.${b64u(Buffer.alloc(16, 3))}`;
  const gz = (s) => zlib.gzipSync(Buffer.from(s));
  const many = Object.fromEntries(Array.from({ length: 21 }, (_, i) => [`https://x.example/p/${i}`, {}]));
  const vapidCases = (what, method, path, headers = ttl, body) => [
    { what: `${what}: unknown Authorization scheme`, method, path, headers: { ...headers, authorization: "Basic abc" }, body, status: 401, type: "/problems/invalid-vapid", errno: 109 },
    { what: `${what}: VAPID signature broken`, method, path, headers: { ...headers, authorization: broken }, body, status: 401, type: "/problems/invalid-vapid", errno: 109 },
    { what: `${what}: VAPID aud of another origin`, method, path, headers: { ...headers, authorization: vapid.header("https://other.example") }, body, status: 401, errno: 109 },
    { what: `${what}: VAPID expired`, method, path, headers: { ...headers, authorization: vapid.header(edge, { exp: tokenNow - 10 }) }, body, status: 401, errno: 109 },
    { what: `${what}: VAPID exp over 24 h ahead`, method, path, headers: { ...headers, authorization: vapid.header(edge, { exp: tokenNow + 3 * 86400 }) }, body, status: 401, errno: 109 },
    { what: `${what}: VAPID sub not mailto:/https:`, method, path, headers: { ...headers, authorization: vapid.header(edge, { sub: "ops" }) }, body, status: 401, errno: 109 },
    { what: `${what}: WebPush scheme without Crypto-Key p256ecdsa`, method, path, headers: { ...headers, authorization: `WebPush ${jwtOnly}` }, body, status: 401, errno: 109 },
    { what: `${what}: bad VAPID key`, method, path, headers: { ...headers, authorization: `vapid t=${jwtOnly}, k=AAAA` }, body, status: 401, errno: 109 },
    { what: `${what}: Authorization too long`, method, path, headers: { ...headers, authorization: `vapid t=${"a".repeat(5000)}, k=b` }, body, status: 401, errno: 109 },
  ];
  return [
    // §3: one subscription.
    { what: "missing TTL", method: "POST", path: push, headers: {}, status: 400, type: "/problems/missing-ttl", errno: 111 },
    { what: "TTL not a number", method: "POST", path: push, headers: { TTL: "soon" }, status: 400, type: "/problems/invalid-ttl", errno: 112 },
    { what: "negative TTL", method: "POST", path: push, headers: { TTL: "-5" }, status: 400, errno: 112 },
    { what: "bad Urgency", method: "POST", path: push, headers: { ...ttl, urgency: "asap" }, status: 400, type: "/problems/invalid-urgency" },
    { what: "Topic too long", method: "POST", path: push, headers: { ...ttl, topic: "a".repeat(33) }, status: 400, errno: 113 },
    { what: "Topic outside base64url", method: "POST", path: push, headers: { ...ttl, topic: "a+b" }, status: 400, errno: 113 },
    { what: "body without content coding", method: "POST", path: push, headers: ttl, body: "plain text", status: 400, type: "/problems/missing-encoding", errno: 110 },
    { what: "unknown content coding", method: "POST", path: push, headers: { ...ttl, "content-encoding": "gzip" }, body: aes(), status: 415, errno: 110 },
    { what: "aes128gcm key id not 65 bytes", method: "POST", path: push, headers: aesH, body: shortKeyId, status: 400, type: "/problems/invalid-aes128gcm", errno: 110 },
    { what: "aes128gcm over one record", method: "POST", path: push, headers: aesH, body: twoRecords, status: 400, errno: 110 },
    { what: "aes128gcm record size below 18", method: "POST", path: push, headers: aesH, body: smallRs, status: 400, errno: 110 },
    { what: "aes128gcm truncated header", method: "POST", path: push, headers: aesH, body: Buffer.alloc(30, 1), status: 400, errno: 110 },
    { what: "aesgcm without Encryption salt", method: "POST", path: push, headers: { ...ttl, "content-encoding": "aesgcm" }, body: Buffer.alloc(30, 1), status: 400, errno: 101 },
    { what: "compact JWE with 3 parts", method: "POST", path: push, headers: jose, body: "a.b.c", status: 400, type: "/problems/invalid-jwe", errno: 110 },
    { what: "compact JWE with a disallowed alg", method: "POST", path: push, headers: jose, body: template({ alg: "RSA1_5", enc: "A128GCM" }, b64u(Buffer.alloc(256))), status: 400, type: "/problems/invalid-jwe" },
    { what: "JSON JWE that is not an object", method: "POST", path: push, headers: joseJson, body: "[1]", status: 400, type: "/problems/invalid-jwe" },
    { what: "body over the limit", method: "POST", path: push, headers: aesH, body: aes(6000), status: 413, type: "/problems/payload-too-large", errno: 104 },
    ...vapidCases("push", "POST", push),
    // §4: create.
    { what: "create: wrong Content-Type", method: "POST", path: "/lists/0", headers: { "content-type": "application/json" }, body: "{}", status: 415, type: "/problems/unsupported-media-type" },
    { what: "create: content coding other than gzip", method: "POST", path: "/lists/0", headers: { "content-type": AGG, "content-encoding": "br" }, body: "{}", status: 415, type: "/problems/unsupported-encoding" },
    { what: "create: corrupt gzip", method: "POST", path: "/lists/0", headers: { "content-type": AGG, "content-encoding": "gzip" }, body: "not gzip", status: 400, type: "/problems/invalid-gzip" },
    { what: "create: body over max_list_body_bytes", method: "POST", path: "/lists/0", headers: { "content-type": AGG }, body: " ".repeat(LIMITS.max_list_body_bytes + 1), status: 413, type: "/problems/list-too-large", errno: 104 },
    { what: "create: gzip over max_list_document_bytes", method: "POST", path: "/lists/0", headers: { "content-type": AGG, "content-encoding": "gzip" }, body: gz(" ".repeat(LIMITS.max_list_document_bytes + 10)), status: 413, type: "/problems/list-too-large" },
    { what: "create: not JSON", method: "POST", path: "/lists/0", headers: { "content-type": AGG }, body: "{", status: 400, type: "/problems/invalid-list-document" },
    { what: "create: not an object", method: "POST", path: "/lists/0", headers: { "content-type": AGG }, body: "[]", status: 400, type: "/problems/invalid-list-document" },
    { what: "create: too many members", method: "POST", path: "/lists/0", headers: { "content-type": AGG }, body: JSON.stringify(many), status: 413, type: "/problems/too-many-members" },
    {
      what: "create: members refused (uri, expires, key, header, value, duplicate)",
      method: "POST", path: "/lists/0", headers: { "content-type": AGG },
      body: `{"ftp://x/p":{},"https://nohost":{},"https://x.example/p/1":{"expires":"yesterday"},` +
        `"https://x.example/p/2":{"expires":"2001-01-01T00:00:00Z"},"https://x.example/p/3":{"encrypted_key":"a+b="},` +
        `"https://x.example/p/4":{"header":{"alg":"RSA1_5"}},"https://x.example/p/5":7,` +
        `"https://x.example/p/6":{},"https://x.example/p/6":{}}`,
      status: 422, type: "/problems/members-rejected",
      check: (r) => assert.deepEqual(
        r.json.members.map((m) => m.reason).sort(),
        ["bad-encrypted-key", "bad-expires", "bad-expires", "bad-header", "duplicate", "malformed-uri", "malformed-uri", "not-an-object"],
      ),
    },
    ...vapidCases("create", "POST", "/lists/0", { "content-type": AGG }, "{}"),
    // §4: amend.
    { what: "amend: wrong Content-Type", method: "PATCH", path: open, headers: { "content-type": AGG }, body: "{}", status: 415, type: "/problems/unsupported-media-type" },
    { what: "amend: corrupt gzip", method: "PATCH", path: open, headers: { "content-type": PATCH, "content-encoding": "gzip" }, body: "x", status: 400, type: "/problems/invalid-gzip" },
    { what: "amend: not JSON", method: "PATCH", path: open, headers: { "content-type": PATCH }, body: "nope", status: 400, type: "/problems/invalid-list-document" },
    { what: "amend: too many entries", method: "PATCH", path: open, headers: { "content-type": PATCH }, body: JSON.stringify(many), status: 413, type: "/problems/too-many-members" },
    ...vapidCases("amend", "PATCH", owned, { "content-type": PATCH }, "{}"),
    // §4: read and delete of an owned list.
    ...vapidCases("read", "GET", owned, {}).slice(0, 3),
    ...vapidCases("delete", "DELETE", owned, {}).slice(0, 3),
    // §4: list push.
    { what: "list push: missing TTL", method: "POST", path: open, headers: {}, status: 400, errno: 111 },
    { what: "list push: bad Topic", method: "POST", path: open, headers: { ...ttl, topic: "?" }, status: 400, errno: 113 },
    { what: "list push: aes128gcm body", method: "POST", path: open, headers: aesH, body: aes(), status: 415, type: "/problems/list-push-not-jwe" },
    { what: "list push: body with no JWE type", method: "POST", path: open, headers: ttl, body: "hello", status: 415, type: "/problems/list-push-not-jwe" },
    { what: "list push: compact JWE with a key part", method: "POST", path: open, headers: jose, body: template(undefined, b64u(Buffer.alloc(24))), status: 400, type: "/problems/invalid-jwe" },
    { what: "list push: compact JWE without enc", method: "POST", path: open, headers: jose, body: template({ alg: "A128KW" }), status: 400, type: "/problems/invalid-jwe" },
    { what: "list push: ECDH-ES without epk", method: "POST", path: open, headers: jose, body: template({ alg: "ECDH-ES+A128KW", enc: "A128GCM" }), status: 400, type: "/problems/invalid-jwe" },
    { what: "list push: JSON JWE not JSON", method: "POST", path: open, headers: joseJson, body: "{", status: 400, type: "/problems/invalid-jwe" },
    { what: "list push: body over the limit", method: "POST", path: open, headers: jose, body: "a".repeat(6000), status: 413, errno: 104 },
    ...vapidCases("list push", "POST", open, jose, template()),
  ];
}

describe("(d) the origin behind the edge", () => {
  test("a node that refuses connections is passed over", async () => {
    const [d] = await devices(1);
    try {
      const before = await appRequests();
      // Each request starts at a random node: about half try the dead one first.
      for (let i = 0; i < 12; i++) {
        const r = await request(d.sub.endpoint, { method: "POST", headers: { TTL: "60" } });
        assert.equal(r.status, 201, r.text);
        const n = await d.notification();
        assert.ok(n, `push ${i} delivered`);
        d.ack(n);
      }
      assert.equal(await appRequests(), before + 12, "each reached the origin once");
    } finally {
      d.close();
    }
  });

  test("refuses requests without a valid mark, and takes a valid one", async () => {
    const [d] = await devices(1);
    try {
      const p = new URL(d.sub.endpoint).pathname;
      const url = `${stack.origin.url}${p}`;
      const refusedBefore = await stack.origin.metric("push_edge_refused_total");
      const now = Math.floor(Date.now() / 1000);
      const ttl = { TTL: "60" };
      const bad = {
        "no mark": undefined,
        "mark under another secret": mark("not-the-secret", "POST", p, undefined, { headers: ttl }),
        "mark for another path": mark(stack.secret, "POST", "/p/AAAAAAAAAAAAAAAAAAAAAA", undefined, { headers: ttl }),
        "mark for another method": mark(stack.secret, "DELETE", p, undefined, { headers: ttl }),
        "mark over another body": mark(stack.secret, "POST", p, Buffer.from("x"), { headers: ttl }),
        "mark over other fields": mark(stack.secret, "POST", p, undefined, { headers: { TTL: "2419200" } }),
        "mark without the fields": mark(stack.secret, "POST", p),
        "stale mark": mark(stack.secret, "POST", p, undefined, { time: now - 3600, headers: ttl }),
        "malformed mark": "t=1",
      };
      for (const [what, m] of Object.entries(bad)) {
        const r = await request(url, { method: "POST", headers: { TTL: "60", ...(m ? { "push-edge-mark": m } : {}) } });
        assertProblem(r, 403, "/problems/edge-mark");
        assert.ok(r.json.detail, what);
      }
      assert.equal(await stack.origin.metric("push_edge_refused_total"), refusedBefore + Object.keys(bad).length);
      assert.equal(await d.notification(300), null, "nothing delivered");
      // A list create and read without a mark: refused too.
      assertProblem(await request(`${stack.origin.url}/lists/0`, { method: "POST", headers: { "content-type": AGG }, body: "{}" }), 403);
      // A valid mark is taken.
      const ok = await request(url, { method: "POST", headers: { TTL: "60", "push-edge-mark": mark(stack.secret, "POST", p, undefined, { headers: ttl }) } });
      assert.equal(ok.status, 201, ok.text);
      assert.ok(await d.notification());
      // Health stays open.
      assert.equal((await request(`${stack.origin.url}/health`)).status, 200);
    } finally {
      d.close();
    }
  });
});

describe("(e) rate limits at the edge", () => {
  test("list pushes per list per window: 429 with Retry-After, other lists unaffected, recovery", async () => {
    const [d] = await devices(1);
    try {
      const mk = async () => {
        const r = await request(`${edge}/lists/0`, {
          method: "POST", headers: { "content-type": AGG }, body: JSON.stringify({ [d.sub.endpoint]: {} }),
        });
        assert.equal(r.status, 201, r.text);
        return r.headers.get("location");
      };
      const [a, b] = [await mk(), await mk()];
      const push = (l) => request(l, { method: "POST", headers: { TTL: "60" } });
      await freshWindow(4);
      for (let i = 0; i < EDGE_RATE.list_pushes_per_minute; i++) {
        const r = await push(a);
        assert.equal(r.status, 201, `push ${i + 1}: ${r.text}`);
      }
      const before = await appRequests();
      const limited = await push(a);
      const at = Date.now() / 1000;
      const p = assertProblem(limited, 429, "/problems/rate-limited");
      assert.match(p.detail, /this list/);
      const retry = Number(limited.headers.get("retry-after"));
      const expected = WINDOW - Math.floor(at % WINDOW);
      assert.ok(retry >= 1 && retry <= WINDOW && Math.abs(retry - expected) <= 1, `Retry-After ${retry}, window ends in ${expected}`);
      assert.equal(await appRequests(), before, "the refused push never reached the origin");
      // Another list has its own count.
      assert.equal((await push(b)).status, 201);
      // So has each VAPID key on this list: requests the origin would refuse
      // (an owned list pushed without its key) cannot use up the owner's.
      const signed = await request(a, { method: "POST", headers: { TTL: "60", authorization: new Vapid().header(edge) } });
      assert.equal(signed.status, 201, signed.text);
      // After Retry-After, the list takes pushes again.
      await sleep(retry * 1000 + 200);
      const again = await push(a);
      assert.equal(again.status, 201, again.text);
    } finally {
      d.close();
    }
  });

  test("list creations per VAPID key per window; another key unaffected", async () => {
    const [d] = await devices(1);
    try {
      const k1 = new Vapid();
      const k2 = new Vapid();
      const create = (k) => request(`${edge}/lists/0`, {
        method: "POST",
        headers: { "content-type": AGG, authorization: k.header(edge) },
        body: JSON.stringify({ [d.sub.endpoint]: {} }),
      });
      await freshWindow(4);
      for (let i = 0; i < EDGE_RATE.list_creations_per_minute; i++) {
        const r = await create(k1);
        assert.equal(r.status, 201, `create ${i + 1}: ${r.text}`);
      }
      const before = await appRequests();
      const limited = await create(k1);
      const p = assertProblem(limited, 429, "/problems/rate-limited");
      assert.match(p.detail, /list creations by this VAPID key/);
      assert.ok(Number(limited.headers.get("retry-after")) >= 1);
      assert.equal(await appRequests(), before, "the refused creation never reached the origin");
      assert.equal((await create(k2)).status, 201);
      // Creations without VAPID are not counted per key.
      const anon = await request(`${edge}/lists/0`, {
        method: "POST", headers: { "content-type": AGG }, body: JSON.stringify({ [d.sub.endpoint]: {} }),
      });
      assert.equal(anon.status, 201);
    } finally {
      d.close();
    }
  });
});

describe("(f) list documents past the edge's cap", () => {
  test("a document while another is being uploaded: 503 too-many-documents at once, none after", async () => {
    const d = await Device.connect(stack.origin.ws);
    d.sub = await d.register();
    const doc = JSON.stringify({ [d.sub.endpoint]: {} });
    try {
      // An upload that stalls halfway holds the isolate's one place.
      const url = new URL(`${edge}/lists/0`);
      let answer;
      const answered = new Promise((resolve, reject) => { answer = { resolve, reject }; });
      const slow = http.request({
        host: url.hostname, port: url.port, path: url.pathname, method: "POST",
        headers: { "content-type": AGG, "transfer-encoding": "chunked" },
      }, (res) => {
        let text = "";
        res.on("data", (c) => { text += c; });
        res.on("end", () => answer.resolve({ status: res.statusCode, text }));
      });
      slow.on("error", (e) => answer.reject(e));
      slow.write(doc.slice(0, 10));
      await sleep(500);

      const before = await appRequests();
      const t0 = Date.now();
      const refused = await request(`${edge}/lists/0`, {
        method: "POST", headers: { "content-type": AGG }, body: doc,
      });
      const p = assertProblem(refused, 503, "/problems/too-many-documents");
      assert.equal(p.detail, "1 list documents or patches are being read already; retry shortly");
      assert.equal(refused.headers.get("retry-after"), "1");
      assert.ok(Date.now() - t0 < 2000, "refused without waiting");
      assert.equal(await appRequests(), before, "nothing reached the origin");
      // A push is no document: it goes through meanwhile.
      const push = await request(d.sub.endpoint, { method: "POST", headers: { TTL: "60" } });
      assert.equal(push.status, 201, push.text);
      assert.ok(await d.notification(), "the push arrived");

      // The stalled upload ends; its place comes back.
      slow.end(doc.slice(10));
      const first = await answered;
      assert.equal(first.status, 201, first.text);
      const again = await request(`${edge}/lists/0`, {
        method: "POST", headers: { "content-type": AGG }, body: doc,
      });
      assert.equal(again.status, 201, again.text);
    } finally {
      d.close();
    }
  });
});
