// List Registration Service (docs/protocol.md §4) with JWE group messages, checked
// by an independent JOSE implementation: the npm `jose` library makes the
// keys, the wrapped content keys and the ciphertexts, and each member
// decrypts its own copy with its own key.
//
// Members are small Node WebSocket devices speaking Mozilla's push protocol
// (§2.2) over the npm `ws` client. The application side is plain `fetch`
// against the origin's app listener.
//
//   node --test tests/js/lists-jose.test.mjs   (E2E_SKIP_BUILD=1 to skip cargo build)
//
// Each test has its own origin (fresh data dir, free ports) and closes its
// devices and stops the origin even on failure.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import {
  CompactEncrypt, GeneralEncrypt, compactDecrypt, generalDecrypt, generateKeyPair,
} from "jose";
import { originBinary, sleep, startOrigin, waitUntil, within } from "./helpers.mjs";

const TEST_TIMEOUT_MS = 20_000;
const HTTP_TIMEOUT_MS = 5_000;
const RECV_TIMEOUT_MS = 5_000;
// How long a member that must get nothing is watched after the others got theirs.
const QUIET_MS = 1_000;

const AGGREGATION = "application/push-aggregation+json";
const MERGE_PATCH = "application/merge-patch+json";
const JOSE_COMPACT = "application/jose";
const JOSE_JSON = "application/jose+json";

const te = new TextEncoder();
const td = new TextDecoder();
const b64url = (bytes) => Buffer.from(bytes).toString("base64url");
const random = (n) => crypto.getRandomValues(new Uint8Array(n));

originBinary(); // build once, outside the per-test timeouts

/**
 * A user agent on the origin's WebSocket endpoint: hello, register, receive
 * notifications, ack. Every message received is kept in `received`; `next`
 * takes the first unread one of a type.
 */
class Device {
  static async connect(wsAddr) {
    const ws = new WebSocket(`ws://${wsAddr}/`, "push-notification", { handshakeTimeout: HTTP_TIMEOUT_MS });
    const d = new Device(ws);
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("WebSocket open timed out")), HTTP_TIMEOUT_MS);
      ws.once("open", () => { clearTimeout(timer); resolve(); });
      ws.once("error", (e) => { clearTimeout(timer); reject(e); });
    });
    assert.equal(ws.protocol, "push-notification", "the server chose the push-notification subprotocol");
    d.send({ messageType: "hello", use_webpush: true });
    const hello = await d.next("hello");
    assert.equal(hello.status, 200, JSON.stringify(hello));
    assert.equal(hello.use_webpush, true);
    assert.match(hello.uaid, /^[0-9a-f-]{32,36}$/i);
    d.uaid = hello.uaid;
    return d;
  }

  constructor(ws) {
    this.ws = ws;
    this.received = [];
    this.unread = [];
    this.waiters = new Set();
    this.closed = false;
    ws.on("message", (data, isBinary) => {
      if (isBinary) return;
      let msg;
      try { msg = JSON.parse(data.toString()); } catch { return; }
      this.received.push(msg);
      this.unread.push(msg);
      for (const w of this.waiters) w();
    });
    ws.on("close", () => {
      this.closed = true;
      for (const w of this.waiters) w();
    });
    ws.on("error", () => { /* reported through close */ });
  }

  send(obj) {
    this.ws.send(JSON.stringify(obj));
  }

  /** The first unread message of `messageType`, removed from `unread`. */
  next(messageType, { timeoutMs = RECV_TIMEOUT_MS } = {}) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const i = this.unread.findIndex((m) => m.messageType === messageType);
        if (i >= 0) {
          done();
          resolve(this.unread.splice(i, 1)[0]);
        } else if (this.closed) {
          done();
          reject(new Error(`socket closed while waiting for "${messageType}"`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no "${messageType}" within ${timeoutMs} ms (received: ${JSON.stringify(this.received).slice(0, 2000)})`));
      }, timeoutMs);
      const done = () => { clearTimeout(timer); this.waiters.delete(check); };
      this.waiters.add(check);
      check();
    });
  }

  /** Unread messages of a type. */
  pending(messageType) {
    return this.unread.filter((m) => m.messageType === messageType);
  }

  /** Registers a channel; returns { channelID, endpoint }. */
  async register() {
    const channelID = crypto.randomUUID();
    this.send({ messageType: "register", channelID });
    const r = await this.next("register");
    assert.equal(r.status, 200, JSON.stringify(r));
    assert.equal(r.channelID, channelID);
    assert.equal(typeof r.pushEndpoint, "string");
    return { channelID, endpoint: r.pushEndpoint };
  }

  ack(n) {
    this.send({ messageType: "ack", updates: [{ channelID: n.channelID, version: n.version }] });
  }

  async close() {
    if (this.closed) return;
    const gone = new Promise((r) => this.ws.once("close", r));
    this.ws.close();
    await within(gone, 1_000);
    this.ws.terminate();
  }
}

/**
 * One origin and `n` registered devices for one test; torn down by t.after.
 * Returns { origin, base, members: [{ device, channelID, endpoint }], fail }.
 */
async function setup(t, n) {
  const env = { origin: null, members: [] };
  t.after(async () => {
    for (const m of env.members) {
      try { await m.device.close(); } catch (e) { console.error("cleanup:", e); }
    }
    try { await env.origin?.stop(); } catch (e) { console.error("cleanup:", e); }
  });
  env.origin = await startOrigin();
  env.base = `http://${env.origin.app}`;
  for (let i = 0; i < n; i++) {
    const device = await Device.connect(env.origin.ws);
    // Pushed to by index: keep the order.
    env.members.push({ device, ...(await device.register()) });
  }
  for (const m of env.members) assert.ok(m.endpoint.startsWith(`${env.base}/p/`), m.endpoint);
  return env;
}

/** Runs `body`; on failure, adds the tail of the origin's log. */
async function withLog(env, body) {
  try {
    await body();
  } catch (e) {
    e.message += `\n--- origin log (tail):\n${String(env.origin?.log ?? "").slice(-6000)}`;
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

/** Creates a list from a document; returns its URL. */
async function createList(env, doc) {
  const r = await http("POST", `${env.base}/lists/0`, {
    headers: { "content-type": AGGREGATION },
    body: JSON.stringify(doc),
  });
  assert.equal(r.status, 201, `create answered ${r.status}: ${r.text}`);
  const location = r.headers.get("location");
  assert.match(location ?? "", new RegExp(`^${env.base}/l/[A-Za-z0-9_-]{16,}$`), `Location ${location}`);
  assert.equal(r.headers.get("member-count"), String(Object.keys(doc).length));
  return location;
}

/** Pushes to a list; returns the list message status URL. */
async function pushList(list, body, contentType, members) {
  const headers = { ttl: "60" };
  if (contentType) headers["content-type"] = contentType;
  const r = await http("POST", list, { headers, body });
  assert.equal(r.status, 201, `list push answered ${r.status}: ${r.text}`);
  assert.equal(r.headers.get("ttl"), "60");
  assert.equal(r.headers.get("member-count"), String(members));
  const location = r.headers.get("location");
  assert.match(location ?? "", /\/lm\/[A-Za-z0-9_-]{16,}$/, `Location ${location}`);
  return location;
}

/** Amends a list with a merge patch; returns the report. */
async function patchList(list, patch) {
  const r = await http("PATCH", list, { headers: { "content-type": MERGE_PATCH }, body: JSON.stringify(patch) });
  assert.equal(r.status, 200, `PATCH answered ${r.status}: ${r.text}`);
  return r.json;
}

/** Waits until the list message's status matches `want` (a subset). */
async function statusIs(url, want) {
  let last;
  try {
    return await waitUntil(async () => {
      const r = await http("GET", url);
      last = r.text;
      if (r.status !== 200) return false;
      return Object.entries(want).every(([k, v]) => r.json[k] === v) && r.json;
    }, { timeoutMs: 5_000, what: `list message status ${JSON.stringify(want)}` });
  } catch (e) {
    e.message += ` — last status: ${last}`;
    throw e;
  }
}

/** A member's next notification: checks its framing, acks it, returns the copy's text. */
async function receiveCopy(member, contentType) {
  const n = await member.device.next("notification");
  assert.equal(n.channelID, member.channelID);
  assert.equal(typeof n.version, "string");
  assert.equal(n.headers?.content_type, contentType, `notification headers: ${JSON.stringify(n.headers)}`);
  assert.equal(n.headers?.encoding, undefined, "a JWE copy has no Content-Encoding");
  assert.match(n.data, /^[A-Za-z0-9_-]+$/, "data is base64url");
  member.device.ack(n);
  return Buffer.from(n.data, "base64url").toString("utf8");
}

/** Asserts that `member` got no notification (beyond those already read). */
function assertNothingFor(member, what) {
  assert.deepEqual(member.device.pending("notification"), [], `${what} must receive nothing`);
}

/**
 * Compact JWEs of `text` for each key, all with the same protected header,
 * CEK and IV (and so the same ciphertext and tag): only the encrypted key
 * differs. Returns { template (key part empty), keys: [encrypted key…] }.
 */
async function compactForAll({ text, header, cek, iv, keys, keyManagement }) {
  const jwes = [];
  for (const key of keys) {
    const enc = new CompactEncrypt(te.encode(text))
      .setProtectedHeader(header)
      .setContentEncryptionKey(cek)
      .setInitializationVector(iv);
    if (keyManagement) enc.setKeyManagementParameters(keyManagement);
    jwes.push(await enc.encrypt(key));
  }
  const parts = jwes.map((j) => j.split("."));
  for (const p of parts) {
    assert.equal(p.length, 5);
    assert.deepEqual([p[0], p[2], p[3], p[4]], [parts[0][0], parts[0][2], parts[0][3], parts[0][4]],
      "same protected header, IV, ciphertext and tag for every member");
  }
  assert.equal(new Set(parts.map((p) => p[1])).size, keys.length, "each member's encrypted key differs");
  return { template: [parts[0][0], "", ...parts[0].slice(2)].join("."), keys: parts.map((p) => p[1]) };
}

/** Checks a compact copy: the template with `key` spliced in; returns its plaintext. */
async function decryptCompactCopy(copy, template, key, memberKey) {
  const [h, , iv, c, tag] = template.split(".");
  assert.equal(copy, [h, key, iv, c, tag].join("."), "the copy is the template with the member's encrypted key");
  const { plaintext, protectedHeader } = await compactDecrypt(copy, memberKey);
  return { text: td.decode(plaintext), protectedHeader };
}

for (const [alg, enc, keyBytes, cekBytes] of [["A128KW", "A128GCM", 16, 16], ["A256KW", "A256GCM", 32, 32]]) {
  test(`compact JWE (${alg}/${enc}): each member decrypts its copy with its own key; a member removed by PATCH gets nothing after`,
    { timeout: TEST_TIMEOUT_MS }, async (t) => {
      const env = await setup(t, 3);
      await withLog(env, async () => {
        const { members } = env;
        // Keys the application shared with each member beforehand, and one
        // content key for the list.
        const memberKeys = members.map(() => random(keyBytes));
        const cek = random(cekBytes);
        const header = { alg, enc };

        const first = `group message 1 (${alg}) ✓ ${Date.now()}`;
        const one = await compactForAll({ text: first, header, cek, iv: random(12), keys: memberKeys });
        const doc = Object.fromEntries(members.map((m, i) => [m.endpoint, { encrypted_key: one.keys[i] }]));
        const list = await createList(env, doc);

        // The list document reads back as created.
        const read = await http("GET", list);
        assert.equal(read.status, 200, read.text);
        assert.match(read.headers.get("content-type") ?? "", /^application\/push-aggregation\+json/);
        assert.equal(read.headers.get("member-count"), "3");
        assert.deepEqual(read.json, doc);

        const status1 = await pushList(list, one.template, JOSE_COMPACT, 3);
        for (const [i, m] of members.entries()) {
          const copy = await receiveCopy(m, JOSE_COMPACT);
          const { text, protectedHeader } = await decryptCompactCopy(copy, one.template, one.keys[i], memberKeys[i]);
          assert.equal(text, first, `member ${i} decrypts the message`);
          assert.deepEqual(protectedHeader, header);
          // Another member's key cannot unwrap this member's content key.
          await assert.rejects(compactDecrypt(copy, memberKeys[(i + 1) % 3]), `member ${(i + 1) % 3}'s key must not open member ${i}'s copy`);
        }
        const s1 = await statusIs(status1, { delivered: 3, fanout_finished: true });
        assert.deepEqual([s1.members, s1.stored, s1.expired, s1.failed], [3, 0, 0, 0], JSON.stringify(s1));

        // Member 1 leaves. The content key stays (the draft's "if push
        // messages do not require confidentiality from the removed devices,
        // the same keys can be used"): the next message needs a new IV only.
        const report = await patchList(list, { [members[1].endpoint]: null });
        assert.deepEqual(report, { members: 2, applied: 1, rejected: [], refused: 0 });
        const after = await http("GET", list);
        assert.deepEqual(Object.keys(after.json).sort(), [members[0].endpoint, members[2].endpoint].sort());

        const second = `group message 2 (${alg}) ${Math.random().toString(36).slice(2)}`;
        const two = await compactForAll({ text: second, header, cek, iv: random(12), keys: memberKeys });
        assert.deepEqual(two.keys, one.keys, "AES key wrap is deterministic: the list's keys still fit");
        const status2 = await pushList(list, two.template, JOSE_COMPACT, 2);
        for (const i of [0, 2]) {
          const copy = await receiveCopy(members[i], JOSE_COMPACT);
          const { text } = await decryptCompactCopy(copy, two.template, two.keys[i], memberKeys[i]);
          assert.equal(text, second, `member ${i} decrypts the second message`);
        }
        const s2 = await statusIs(status2, { delivered: 2, fanout_finished: true });
        assert.deepEqual([s2.members, s2.stored, s2.failed], [2, 0, 0], JSON.stringify(s2));
        await sleep(QUIET_MS);
        assertNothingFor(members[1], "the removed member");
        for (const i of [0, 2]) assertNothingFor(members[i], `member ${i} (exactly one copy)`);
        assert.equal(members[1].device.received.filter((m) => m.messageType === "notification").length, 1,
          "the removed member got the first message only");
      });
    });
}

test("compact JWE (ECDH-ES+A128KW, one epk for all members): each member decrypts with its own private key",
  { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const env = await setup(t, 3);
    await withLog(env, async () => {
      const { members } = env;
      const alg = "ECDH-ES+A128KW";
      const memberPairs = await Promise.all(members.map(() => generateKeyPair(alg)));
      // One ephemeral key: its public half sits in the shared protected header.
      const ephemeral = await generateKeyPair(alg, { extractable: true });
      const header = { alg, enc: "A128GCM" };
      const text = `ECDH group message ${Date.now()} ✓`;
      const jwe = await compactForAll({
        text, header, cek: random(16), iv: random(12),
        keys: memberPairs.map((p) => p.publicKey), keyManagement: { epk: ephemeral.privateKey },
      });
      const protectedHeader = JSON.parse(Buffer.from(jwe.template.split(".")[0], "base64url").toString());
      assert.equal(protectedHeader.epk?.crv, "P-256", "the shared epk is in the protected header");

      const list = await createList(env,
        Object.fromEntries(members.map((m, i) => [m.endpoint, { encrypted_key: jwe.keys[i] }])));
      const status = await pushList(list, jwe.template, JOSE_COMPACT, 3);
      for (const [i, m] of members.entries()) {
        const copy = await receiveCopy(m, JOSE_COMPACT);
        const got = await decryptCompactCopy(copy, jwe.template, jwe.keys[i], memberPairs[i].privateKey);
        assert.equal(got.text, text, `member ${i} decrypts the message`);
        assert.deepEqual(got.protectedHeader.epk, protectedHeader.epk);
      }
      const s = await statusIs(status, { delivered: 3, fanout_finished: true });
      assert.deepEqual([s.members, s.stored, s.failed], [3, 0, 0], JSON.stringify(s));
    });
  });

/**
 * A general JSON JWE of `text` for members with mixed key management: the
 * protected header holds only `enc`; each recipient's `alg`, `kid` (and
 * for ECDH its `epk`) travel in its per-recipient header.
 */
async function generalForAll(text, recipients) {
  const enc = new GeneralEncrypt(te.encode(text)).setProtectedHeader({ enc: "A256GCM" });
  for (const r of recipients) enc.addRecipient(r.encryptKey).setUnprotectedHeader({ alg: r.alg, kid: r.kid });
  const jwe = await enc.encrypt();
  assert.equal(jwe.recipients.length, recipients.length);
  for (const [i, r] of jwe.recipients.entries()) {
    assert.equal(r.header?.alg, recipients[i].alg);
    assert.equal(r.header?.kid, recipients[i].kid);
  }
  return jwe;
}

test("JSON JWE (A128KW, A256KW, ECDH-ES+A256KW per-member headers): each copy carries only its member's recipient; rekey and removal by PATCH",
  { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const env = await setup(t, 3);
    await withLog(env, async () => {
      const { members } = env;
      const ecdh = await generateKeyPair("ECDH-ES+A256KW");
      const recipients = [
        { alg: "A128KW", kid: "member-0", encryptKey: random(16) },
        { alg: "A256KW", kid: "member-1", encryptKey: random(32) },
        { alg: "ECDH-ES+A256KW", kid: "member-2", encryptKey: ecdh.publicKey, decryptKey: ecdh.privateKey },
      ];
      for (const r of recipients) r.decryptKey ??= r.encryptKey;

      const first = `JSON group message ${Date.now()} ✓`;
      const jwe = await generalForAll(first, recipients);
      const entry = (r) => ({ encrypted_key: r.encrypted_key, header: r.header });
      const doc = Object.fromEntries(members.map((m, i) => [m.endpoint, entry(jwe.recipients[i])]));
      const list = await createList(env, doc);
      assert.deepEqual((await http("GET", list)).json, doc, "the list keeps each member's key and header");

      // Pushed as jose wrote it: the service replaces `recipients` per member.
      const status1 = await pushList(list, JSON.stringify(jwe), JOSE_JSON, 3);
      const shared = { ...jwe };
      delete shared.recipients;
      for (const [i, m] of members.entries()) {
        const copy = JSON.parse(await receiveCopy(m, JOSE_JSON));
        assert.deepEqual(copy.recipients, [entry(jwe.recipients[i])], `member ${i}'s copy has its recipient only`);
        const rest = { ...copy };
        delete rest.recipients;
        assert.deepEqual(rest, shared, "the shared members are unchanged");
        const { plaintext, protectedHeader, unprotectedHeader } = await generalDecrypt(copy, recipients[i].decryptKey);
        assert.equal(td.decode(plaintext), first, `member ${i} decrypts the message`);
        assert.deepEqual(protectedHeader, { enc: "A256GCM" });
        assert.equal(unprotectedHeader?.kid, recipients[i].kid);
        // Another member's key does not open it.
        await assert.rejects(generalDecrypt(copy, recipients[(i + 1) % 3].decryptKey));
      }
      const s1 = await statusIs(status1, { delivered: 3, fanout_finished: true });
      assert.deepEqual([s1.members, s1.stored, s1.failed], [3, 0, 0], JSON.stringify(s1));

      // Member 1 leaves, and the others are rekeyed in the same PATCH (a new
      // content key, so the removed member could not read later messages).
      const second = `after rekey ${Math.random().toString(36).slice(2)}`;
      const stay = [recipients[0], recipients[2]];
      const jwe2 = await generalForAll(second, stay);
      const report = await patchList(list, {
        [members[1].endpoint]: null,
        [members[0].endpoint]: entry(jwe2.recipients[0]),
        [members[2].endpoint]: entry(jwe2.recipients[1]),
      });
      assert.deepEqual(report, { members: 2, applied: 3, rejected: [], refused: 0 });
      assert.deepEqual((await http("GET", list)).json, {
        [members[0].endpoint]: entry(jwe2.recipients[0]),
        [members[2].endpoint]: entry(jwe2.recipients[1]),
      });

      const status2 = await pushList(list, JSON.stringify(jwe2), JOSE_JSON, 2);
      for (const [j, i] of [0, 2].entries()) {
        const copy = JSON.parse(await receiveCopy(members[i], JOSE_JSON));
        assert.deepEqual(copy.recipients, [entry(jwe2.recipients[j])]);
        const { plaintext } = await generalDecrypt(copy, recipients[i].decryptKey);
        assert.equal(td.decode(plaintext), second, `member ${i} decrypts the message after the rekey`);
      }
      const s2 = await statusIs(status2, { delivered: 2, fanout_finished: true });
      assert.deepEqual([s2.members, s2.stored, s2.failed], [2, 0, 0], JSON.stringify(s2));
      await sleep(QUIET_MS);
      assertNothingFor(members[1], "the removed member");
      for (const i of [0, 2]) assertNothingFor(members[i], `member ${i} (exactly one copy)`);
    });
  });

// docs/protocol.md §4: "a member with no `encrypted_key` receives a JWE message
// with an empty key".
test("compact JWE: a member without encrypted_key receives the message with an empty key part",
  { timeout: TEST_TIMEOUT_MS },
  async (t) => {
    const env = await setup(t, 2);
    await withLog(env, async () => {
      const [keyed, keyless] = env.members;
      const memberKey = random(16);
      const text = `keyless ${Date.now()}`;
      const jwe = await compactForAll({ text, header: { alg: "A128KW", enc: "A128GCM" }, cek: random(16), iv: random(12), keys: [memberKey] });
      const list = await createList(env, { [keyed.endpoint]: { encrypted_key: jwe.keys[0] }, [keyless.endpoint]: {} });
      const status = await pushList(list, jwe.template, JOSE_COMPACT, 2);
      const copy = await receiveCopy(keyed, JOSE_COMPACT);
      assert.equal((await decryptCompactCopy(copy, jwe.template, jwe.keys[0], memberKey)).text, text);
      const n = await keyless.device.next("notification", { timeoutMs: 2_000 });
      assert.equal(Buffer.from(n.data, "base64url").toString(), jwe.template, "the copy has an empty encrypted-key part");
      keyless.device.ack(n);
      await statusIs(status, { delivered: 2, failed: 0, fanout_finished: true });
    });
  });
