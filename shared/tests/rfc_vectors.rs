//! The standards' own examples, run through the protocol crate. Each vector
//! is first proven genuine by decrypting or verifying it with independent
//! crypto crates, so a typo in a vector cannot pass silently.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::Aes128Gcm;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use shared::b64;
use shared::ece::Aes128gcmHeader;
use shared::jwe::{Alg, CompactJwe, Enc, JsonJwe, JsonTemplate, JweError};
use shared::push::{validate_push, Payload, PushHeaders};
use shared::vapid::{Credentials, VapidError};
use shared::Limits;

fn d(s: &str) -> Vec<u8> {
    b64::decode(s).unwrap()
}

/// Decrypts an aes128gcm body (RFC 8188) with the input keying material.
fn ece_decrypt(body: &[u8], ikm: &[u8]) -> Vec<u8> {
    let h = Aes128gcmHeader::parse(body).unwrap();
    let prk = Hkdf::<Sha256>::new(Some(h.salt), ikm);
    let mut cek = [0u8; 16];
    let mut nonce = [0u8; 12];
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .unwrap();
    prk.expand(b"Content-Encoding: nonce\0", &mut nonce)
        .unwrap();
    let cipher = Aes128Gcm::new(&cek.into());
    let mut out = Vec::new();
    let records: Vec<&[u8]> = body[h.len..].chunks(h.rs as usize).collect();
    for (seq, rec) in records.iter().enumerate() {
        let mut n = nonce;
        for (i, b) in (seq as u64).to_be_bytes().iter().enumerate() {
            n[4 + i] ^= b;
        }
        let mut plain = cipher.decrypt(&n.into(), *rec).unwrap();
        let last = seq == records.len() - 1;
        while plain.last() == Some(&0) {
            plain.pop();
        }
        assert_eq!(
            plain.pop(),
            Some(if last { 2 } else { 1 }),
            "padding delimiter"
        );
        out.extend_from_slice(&plain);
    }
    out
}

#[test]
fn rfc8188_section_3_1() {
    let body = d("I1BsxtFttlv3u_Oo94xnmwAAEAAA-NAVub2qFgBEuQKRapoZu-IxkIva3MEB1PD-ly8Thjg");
    assert_eq!(
        ece_decrypt(&body, &d("yqdlZ-tYemfogSmv7Ws5PQ")),
        b"I am the walrus"
    );
    // A valid RFC 8188 body, but not a push message (no sender key as key id).
    assert!(Aes128gcmHeader::parse(&body).is_ok());
    assert!(Aes128gcmHeader::parse_webpush(&body).is_err());
}

#[test]
fn rfc8188_section_3_2() {
    let body = d("uNCkWiNYzKTnBN9ji3-qWAAAABkCYTHOG8chz_gnvgOqdGYovxyjuqRyJFjEDyoF1Fvkj6hQPdPHI51OEUKEpgz3SsLWIqS_uA");
    assert_eq!(
        ece_decrypt(&body, &d("BO3ZVPxUlnLORbVGMpbT1Q")),
        b"I am the walrus"
    );
    let h = Aes128gcmHeader::parse(&body).unwrap();
    assert_eq!((h.rs, h.key_id), (25, &b"a1"[..]));
}

/// RFC 8291 §5 and Appendix A.
#[test]
fn rfc8291_appendix_a() {
    use p256::{PublicKey, SecretKey};
    let body = d("DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN");
    let ua_private =
        SecretKey::from_slice(&d("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94")).unwrap();
    let ua_public = d(
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
    );
    let auth = d("BTBZMqHH6r4Tts7J_aSIgg");

    let h = Aes128gcmHeader::parse_webpush(&body).unwrap();
    let as_public = PublicKey::from_sec1_bytes(h.key_id).unwrap();
    let shared = p256::ecdh::diffie_hellman(ua_private.to_nonzero_scalar(), as_public.as_affine());
    let mut info = b"WebPush: info\0".to_vec();
    info.extend_from_slice(&ua_public);
    info.extend_from_slice(h.key_id);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&auth), shared.raw_secret_bytes())
        .expand(&info, &mut ikm)
        .unwrap();
    assert_eq!(
        ece_decrypt(&body, &ikm),
        b"When I grow up, I want to be a watermelon"
    );

    // The whole push request passes the service's validation.
    let headers = PushHeaders {
        ttl: Some("10"),
        content_encoding: Some("aes128gcm"),
        ..Default::default()
    };
    let (_, payload) = validate_push(&headers, &body, &Limits::default()).unwrap();
    assert_eq!(payload, Payload::Aes128gcm);
}

// RFC 7516 Appendix A.3: A128KW with A128CBC-HS256, compact.
const A3_KEY: &str = "GawgguFyGrWKav7AX4VKUg";
const A3_PROTECTED: &str = "eyJhbGciOiJBMTI4S1ciLCJlbmMiOiJBMTI4Q0JDLUhTMjU2In0";
const A3_EK: &str = "6KB707dM9YTIgHtLvtgWQ8mKwboJW3of9locizkDTHzBC2IlrT1oOQ";
const A3_IV: &str = "AxY8DCtDaGlsbGljb3RoZQ";
const A3_CT: &str = "KDlTtXchhZTGufMYmOYGS4HffxPSUrfmqCHXaI9wOGY";
const A3_TAG: &str = "U0m_YmjN04DJvceFICbCVQ";
// Appendix A.4/A.5 share the recipient and ciphertext, with another AAD.
const A4_PROTECTED: &str = "eyJlbmMiOiJBMTI4Q0JDLUhTMjU2In0";
const A4_TAG: &str = "Mz-VPPyU4RlcuYv1IwIvzw";
const A2_EK: &str = "UGhIOguC7IuEvf_NPVaXsGMoLOmwvc1GyqlIKOK1nN94nHPoltGRhWhw7Zx0-kFm1NJn8LE9XShH59_i8J0PH5ZZyNfGy2xGdULU7sHNF6Gp2vPLgNZ__deLKxGHZ7PcHALUzoOegEI-8E66jX2E4zyJKx-YxzZIItRzC5hlRirb6Y5Cl_p-ko3YvkkysZIFNPccxRU7qve1WYPxqbb2Yw8kZqa2rMWI5ng8OtvzlV7elprCbuPhcCdZ6XDP0_F8rkXds2vE4X-ncOIM8hAYHHi29NX0mcKiRaD0-D-ljQTP-cFPgwCp6X-nZZd9OHBv-B3oWh2TbqmScqXMR4gp_A";

/// Unwraps the A.3 CEK and checks an A128CBC-HS256 tag over `aad`.
fn a3_tag_holds(aad: &str, tag: &str) -> bool {
    let kek = aes_kw::KekAes128::new(d(A3_KEY).as_slice().into());
    let cek = kek.unwrap_vec(&d(A3_EK)).unwrap();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&cek[..16]).unwrap();
    mac.update(aad.as_bytes());
    mac.update(&d(A3_IV));
    mac.update(&d(A3_CT));
    mac.update(&((aad.len() as u64) * 8).to_be_bytes());
    mac.finalize().into_bytes()[..16] == d(tag)[..]
}

#[test]
fn rfc7516_a3_compact() {
    assert!(a3_tag_holds(A3_PROTECTED, A3_TAG));
    let text = [A3_PROTECTED, A3_EK, A3_IV, A3_CT, A3_TAG].join(".");
    let jwe = CompactJwe::parse(text.as_bytes(), false).unwrap();
    assert_eq!((jwe.alg, jwe.enc), (Alg::A128kw, Enc::A128cbcHs256));
    // The list form wants the key part empty.
    assert_eq!(
        CompactJwe::parse(text.as_bytes(), true),
        Err(JweError::KeyNotEmpty)
    );
}

fn a4_general() -> String {
    serde_json::json!({
        "protected": A4_PROTECTED,
        "unprotected": {"jku": "https://server.example.com/keys.jwks"},
        "recipients": [
            {"header": {"alg": "RSA1_5", "kid": "2011-04-29"}, "encrypted_key": A2_EK},
            {"header": {"alg": "A128KW", "kid": "7"}, "encrypted_key": A3_EK}
        ],
        "iv": A3_IV, "ciphertext": A3_CT, "tag": A4_TAG
    })
    .to_string()
}

#[test]
fn rfc7516_a4_general_json() {
    assert!(a3_tag_holds(A4_PROTECTED, A4_TAG));
    // RSA1_5 is refused for a single push; for a list the recipients are replaced.
    assert_eq!(
        JsonJwe::parse(a4_general().as_bytes(), false),
        Err(JweError::AlgNotAllowed("RSA1_5".into()))
    );
    let t = JsonTemplate::parse(a4_general().as_bytes()).unwrap();
    let mut copy = Vec::new();
    t.write_member(
        Some(A3_EK),
        Some(r#"{"alg":"A128KW","kid":"7"}"#),
        &mut copy,
    );
    // The member's copy is exactly A.5's flattened message, as a general one.
    let jwe = JsonJwe::parse(&copy, false).unwrap();
    assert_eq!(jwe.object["tag"], A4_TAG);
    assert_eq!(jwe.object["recipients"][0]["encrypted_key"], A3_EK);
}

#[test]
fn rfc7516_a5_flattened_json() {
    let text = serde_json::json!({
        "protected": A4_PROTECTED,
        "unprotected": {"jku": "https://server.example.com/keys.jwks"},
        "header": {"alg": "A128KW", "kid": "7"},
        "encrypted_key": A3_EK,
        "iv": A3_IV, "ciphertext": A3_CT, "tag": A4_TAG
    })
    .to_string();
    let jwe = JsonJwe::parse(text.as_bytes(), false).unwrap();
    assert_eq!(jwe.enc, Enc::A128cbcHs256);
}

/// RFC 8292 §2.4: the example token verifies under the example key.
#[test]
fn rfc8292_example_token() {
    let auth = "vapid t=eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9.eyJhdWQiOiJodHRwczovL3B1c2guZXhhbXBsZS5uZXQiLCJleHAiOjE0NTM1MjM3NjgsInN1YiI6Im1haWx0bzpwdXNoQGV4YW1wbGUuY29tIn0.i3CYb7t4xfxCDquptFOepC9GAu_HLGkMlMuCGSK2rpiUfnK9ojFwDXb1JrErtmysazNjjvW2L9OkSSHzvoD1oA, k=BA1Hxzyi1RUM1b5wjxsn7nGxAszw2u61m164i3MrAIxHF6YK5h4SDYic-dRuU_RCPCfA5aq9ojSwk5Y2EmClBPs";
    let l = Limits::default();
    let c = Credentials::parse(Some(auth), None, &l).unwrap().unwrap();
    let exp = 1_453_523_768;
    let claims = c
        .verify("https://push.example.net", exp - 3600, &l)
        .unwrap();
    assert_eq!(claims.sub.as_deref(), Some("mailto:push@example.com"));
    assert_eq!(
        c.verify("https://push.example.net", exp, &l),
        Err(VapidError::Expired(exp))
    );
    assert!(matches!(
        c.verify("https://other.example.net", exp - 3600, &l),
        Err(VapidError::Audience { .. })
    ));
    // One changed claim: the signature no longer holds.
    let forged = auth.replace(
        "eyJhdWQiOiJodHRwczovL3B1c2gu",
        "eyJhdWQiOiJodHRwczovL3B1c2hu",
    );
    let c = Credentials::parse(Some(&forged), None, &l)
        .unwrap()
        .unwrap();
    assert_eq!(
        c.verify("https://push.example.net", exp - 3600, &l),
        Err(VapidError::Signature)
    );
}
