// Cross-checks of pushclient's crypto with independent implementations:
// node:crypto (RFC 8291 decryption written out here), npm web-push (RFC 8291
// encryption) and npm jose (JWE). Reads one JSON object on stdin, writes one
// on stdout. Driven by client/tests/interop.rs.
import { readFileSync } from 'node:fs';
import crypto from 'node:crypto';
import webpush from 'web-push';
import * as jose from 'jose';

const unb64 = (s) => Buffer.from(s, 'base64url');
const b64 = (b) => Buffer.from(b).toString('base64url');
const input = JSON.parse(readFileSync(0, 'utf8'));
const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');

// A P-256 JWK from an uncompressed point (and optionally the private scalar).
function jwk(publicB64, privateB64) {
  const p = unb64(publicB64);
  const k = { kty: 'EC', crv: 'P-256', x: b64(p.subarray(1, 33)), y: b64(p.subarray(33, 65)) };
  if (privateB64) k.d = privateB64;
  return k;
}

// RFC 8291 / RFC 8188 decryption with node:crypto only.
function eceDecrypt(body, privateKey, auth) {
  const salt = body.subarray(0, 16);
  const idlen = body[20];
  const senderPublic = body.subarray(21, 21 + idlen);
  const ecdh = crypto.createECDH('prime256v1');
  ecdh.setPrivateKey(privateKey);
  const secret = ecdh.computeSecret(senderPublic);
  const info = Buffer.concat([Buffer.from('WebPush: info\0'), ecdh.getPublicKey(), senderPublic]);
  const ikm = Buffer.from(crypto.hkdfSync('sha256', secret, auth, info, 32));
  const cek = Buffer.from(crypto.hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: aes128gcm\0'), 16));
  const nonce = Buffer.from(crypto.hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: nonce\0'), 12));
  const record = body.subarray(21 + idlen);
  const d = crypto.createDecipheriv('aes-128-gcm', cek, nonce);
  d.setAuthTag(record.subarray(record.length - 16));
  const plain = Buffer.concat([d.update(record.subarray(0, record.length - 16)), d.final()]);
  let end = plain.length - 1;
  while (end >= 0 && plain[end] === 0) end--;
  if (plain[end] !== 2) throw new Error('no final-record delimiter');
  return plain.subarray(0, end);
}

switch (process.argv[2]) {
  case 'ece-decrypt': {
    const text = eceDecrypt(unb64(input.body), unb64(input.private_key), unb64(input.auth));
    out({ text: text.toString('utf8') });
    break;
  }
  case 'webpush-encrypt': {
    const r = webpush.encrypt(input.p256dh, input.auth, input.text, 'aes128gcm');
    out({ body: b64(r.cipherText) });
    break;
  }
  case 'jose-decrypt': {
    const key = await jose.importJWK(jwk(input.public_key, input.private_key), 'ECDH-ES+A128KW');
    const jwe = input.jwe;
    const r = typeof jwe === 'string'
      ? await jose.compactDecrypt(jwe, key)
      : jwe.recipients
        ? await jose.generalDecrypt(jwe, key)
        : await jose.flattenedDecrypt(jwe, key);
    out({ text: new TextDecoder().decode(r.plaintext) });
    break;
  }
  case 'jose-encrypt': {
    const pt = new TextEncoder().encode(input.text);
    const alg = 'ECDH-ES+A128KW';
    const keys = await Promise.all(input.recipients.map((p) => jose.importJWK(jwk(p), alg)));
    let jwe;
    if (input.form === 'general') {
      const e = new jose.GeneralEncrypt(pt).setProtectedHeader({ enc: 'A128GCM' });
      for (const k of keys) e.addRecipient(k).setUnprotectedHeader({ alg });
      jwe = await e.encrypt();
    } else if (input.form === 'flattened') {
      jwe = await new jose.FlattenedEncrypt(pt).setProtectedHeader({ enc: 'A128GCM' })
        .setUnprotectedHeader({ alg }).encrypt(keys[0]);
    } else {
      jwe = await new jose.CompactEncrypt(pt).setProtectedHeader({ alg, enc: 'A128GCM' }).encrypt(keys[0]);
    }
    out({ jwe });
    break;
  }
  default:
    throw new Error(`unknown command ${process.argv[2]}`);
}
