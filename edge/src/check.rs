//! The checks the edge makes before the origin sees a request, all of them
//! `shared`'s rules, in the order the origin applies them
//! (origin/src/app/{push,list}.rs), so that a bad request gets the answer the
//! origin would give.
//!
//! What the edge cannot know (whether a subscription or list exists, who owns
//! a list, a member's subscription) is left to the origin.

use crate::limiter::RateKey;
use crate::reply::{EdgeError, Refusal};
use crate::route::AppRoute;
use shared::list::{self, ListError};
use shared::push::{validate_list_push, validate_push, PushFields};
use shared::vapid::{Credentials, VapidError};
use shared::Limits;
use std::borrow::Cow;
use std::future::Future;

/// Verifies VAPID credentials (signature and claims) for an audience.
///
/// [`SharedVerifier`] is `shared`'s own verification, everything in wasm
/// (native tests use it); the Worker's runtime hands the ECDSA step to the
/// platform's crypto (WebCrypto) and keeps `shared`'s form and claims rules.
pub trait Verifier {
    /// Verifies `c` for `audience` at `now`.
    fn verify(
        &self,
        c: &Credentials,
        audience: &str,
        now: u64,
        limits: &Limits,
    ) -> impl Future<Output = Result<(), VapidError>>;
}

/// `shared::vapid::Credentials::verify`, as is.
#[derive(Clone, Copy, Debug, Default)]
pub struct SharedVerifier;

impl Verifier for SharedVerifier {
    fn verify(
        &self,
        c: &Credentials,
        audience: &str,
        now: u64,
        limits: &Limits,
    ) -> impl Future<Output = Result<(), VapidError>> {
        std::future::ready(c.verify(audience, now, limits).map(|_| ()))
    }
}

/// The request header fields the checks read, owned: read and checked as
/// text by [`PushFields::read_text`], borrowed for the push rules by
/// [`PushFields::as_headers`].
pub type Fields = PushFields<String>;

/// A request to check.
#[derive(Clone, Copy, Debug)]
pub struct Inbound<'a> {
    /// Which resource.
    pub route: &'a AppRoute,
    /// Its header fields.
    pub fields: &'a Fields,
    /// Its body, as read (at most one byte over the route's limit).
    pub body: &'a [u8],
    /// The origin of the request's URL: the VAPID `aud` the resources have.
    pub audience: &'a str,
    /// Unix seconds.
    pub now: u64,
}

/// A request that passed the checks so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked<'a> {
    /// The VAPID key whose token the edge verified (base64url), for the mark.
    pub vapid_key: Option<String>,
    /// The rate limit the request counts against, if any.
    pub rate: Option<RateKey>,
    /// A check that comes after the rate limit, as at the origin.
    pub after_rate: Option<Deferred<'a>>,
}

/// A check the origin makes after counting the request against its rate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deferred<'a> {
    /// A list document's members (the body of a create, decoded).
    Members(Cow<'a, [u8]>),
}

impl Deferred<'_> {
    /// Runs the check.
    pub fn run(&self, now: u64, limits: &Limits) -> Result<(), Refusal> {
        match self {
            Deferred::Members(doc) => {
                let parsed = list::parse_document(doc, now as i64, limits)?;
                if parsed.rejected.is_empty() {
                    Ok(())
                } else {
                    Err(Refusal::List(
                        ListError::Rejected(parsed.rejected.len()),
                        parsed.rejected,
                    ))
                }
            }
        }
    }
}

/// Verifies VAPID credentials, if the request has any; the verified key.
async fn vapid(
    req: &Inbound<'_>,
    limits: &Limits,
    v: &impl Verifier,
) -> Result<Option<String>, Refusal> {
    let f = req.fields;
    let creds = Credentials::parse(f.authorization.as_deref(), f.crypto_key.as_deref(), limits)?;
    verified(creds.as_ref(), req, limits, v).await
}

async fn verified(
    c: Option<&Credentials>,
    req: &Inbound<'_>,
    limits: &Limits,
    v: &impl Verifier,
) -> Result<Option<String>, Refusal> {
    let Some(c) = c else { return Ok(None) };
    v.verify(c, req.audience, req.now, limits).await?;
    Ok(Some(c.key.to_b64()))
}

/// Reads a list document or patch: its type, size and content coding.
fn document<'a>(
    req: &Inbound<'a>,
    content_type: &'static str,
    limits: &Limits,
) -> Result<Cow<'a, [u8]>, Refusal> {
    let f = req.fields;
    list::check_content_type(f.content_type.as_deref(), content_type)?;
    Ok(list::decode_body(
        f.content_encoding.as_deref(),
        req.body,
        limits,
    )?)
}

/// Checks an application request. Every rule is `shared`'s; VAPID
/// credentials, wherever sent, must verify for the edge's own origin.
pub async fn check<'a>(
    req: &Inbound<'a>,
    limits: &Limits,
    v: &impl Verifier,
) -> Result<Checked<'a>, Refusal> {
    let plain = |vapid_key| Checked {
        vapid_key,
        rate: None,
        after_rate: None,
    };
    match req.route {
        AppRoute::Push => {
            let (meta, _) = validate_push(&req.fields.as_headers(), req.body, limits)?;
            Ok(plain(verified(meta.vapid.as_ref(), req, limits, v).await?))
        }
        AppRoute::PushList { list } => {
            // A malformed list name is no list, and counts against nothing:
            // refused before anything else, as the origin words it.
            let token = shared::b64::token(list)
                .ok_or_else(|| Refusal::Edge(EdgeError::NotFound("no such list".into())))?;
            let (meta, _) = validate_list_push(&req.fields.as_headers(), req.body, limits)?;
            let vapid_key = verified(meta.vapid.as_ref(), req, limits, v).await?;
            Ok(Checked {
                // One counting object per list, by its canonical token.
                rate: Some(RateKey::ListPush {
                    list: shared::b64::encode(&token),
                    key: vapid_key.clone(),
                }),
                vapid_key,
                after_rate: None,
            })
        }
        AppRoute::CreateList => {
            let key = vapid(req, limits, v).await?;
            let doc = document(req, list::CONTENT_TYPE, limits)?;
            Ok(Checked {
                rate: key.clone().map(RateKey::ListCreation),
                vapid_key: key,
                after_rate: Some(Deferred::Members(doc)),
            })
        }
        AppRoute::AmendList => {
            let key = vapid(req, limits, v).await?;
            let doc = document(req, list::MERGE_PATCH_CONTENT_TYPE, limits)?;
            // Document-level errors only: members are the origin's to report.
            list::parse_patch(&doc, req.now as i64, limits)?;
            Ok(plain(key))
        }
        AppRoute::ReadList | AppRoute::DeleteList => Ok(plain(vapid(req, limits, v).await?)),
        AppRoute::CancelMessage | AppRoute::ListMessageStatus => Ok(plain(None)),
    }
}

/// Runs every check of a request, rate limit aside: what the benchmark times.
pub async fn check_all(
    req: &Inbound<'_>,
    limits: &Limits,
    v: &impl Verifier,
) -> Result<Option<String>, Refusal> {
    let c = check(req, limits, v).await?;
    if let Some(d) = &c.after_rate {
        d.run(req.now, limits)?;
    }
    Ok(c.vapid_key)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::{Signature, SigningKey};
    use serde_json::{json, Value};
    use shared::b64;
    use shared::headers::name;
    use shared::problem::ProblemSource;
    use std::io::Write;

    /// Polls a future that never waits to completion.
    pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
        use std::task::{Context, Poll, Waker};
        let mut f = std::pin::pin!(f);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    pub(crate) const AUD: &str = "http://127.0.0.1:8787";
    pub(crate) const NOW: u64 = 1_700_000_000;

    /// `Authorization: vapid …` for `aud`, signed with a key made from `seed`; and the key.
    pub(crate) fn vapid_header(seed: u8, aud: &str, exp: u64) -> (String, String) {
        let sk = SigningKey::from_slice(&[seed; 32]).unwrap();
        let pk = b64::encode(sk.verifying_key().to_encoded_point(false).as_bytes());
        let input = format!(
            "{}.{}",
            b64::encode(br#"{"typ":"JWT","alg":"ES256"}"#),
            b64::encode(
                json!({"aud": aud, "exp": exp, "sub": "mailto:ops@example.com"})
                    .to_string()
                    .as_bytes()
            )
        );
        let sig: Signature = sk.sign(input.as_bytes());
        (
            format!("vapid t={input}.{}, k={pk}", b64::encode(&sig.to_bytes())),
            pk,
        )
    }

    pub(crate) fn compact_template(ct_len: usize) -> String {
        format!(
            "{}..{}.{}.{}",
            b64::encode(br#"{"alg":"A128KW","enc":"A128GCM"}"#),
            b64::encode(&[1; 12]),
            b64::encode(&vec![2; ct_len]),
            b64::encode(&[3; 16])
        )
    }

    fn aes128gcm(len: usize) -> Vec<u8> {
        let mut b = vec![1u8; 16];
        b.extend_from_slice(&4096u32.to_be_bytes());
        b.push(65);
        b.push(4);
        b.resize(len, 0);
        b
    }

    fn run(route: AppRoute, fields: Fields, body: &[u8]) -> Result<Checked<'_>, Refusal> {
        let l = Limits::default();
        let req = Inbound {
            route: &route,
            fields: &fields,
            body,
            audience: AUD,
            now: NOW,
        };
        block_on(check(&req, &l, &SharedVerifier)).map(|c| Checked {
            vapid_key: c.vapid_key,
            rate: c.rate,
            after_rate: c
                .after_rate
                .map(|Deferred::Members(d)| Deferred::Members(Cow::Owned(d.into_owned()))),
        })
    }

    fn status(r: Result<Checked<'_>, Refusal>) -> (u16, Value) {
        let reply = r.unwrap_err().reply();
        (reply.status, serde_json::from_str(&reply.body).unwrap())
    }

    fn ttl60() -> Fields {
        Fields {
            ttl: Some("60".into()),
            ..Fields::default()
        }
    }

    #[test]
    fn fields_are_read_by_the_shared_text_rule() {
        let read = |topic: &str| {
            let topic = topic.to_owned();
            Fields::read_text(move |n| (n == name::TOPIC).then(|| topic.clone()))
        };
        assert_eq!(read("abc").unwrap().topic.as_deref(), Some("abc"));
        let e = read("t\u{e9}st").unwrap_err();
        assert_eq!(e, shared::headers::HeaderError::NotText(name::TOPIC));
        let (s, p) = status(Err(Refusal::Push(e.into())));
        assert_eq!(
            (s, p["type"].as_str()),
            (400, Some("/problems/header-not-text"))
        );
    }

    #[test]
    fn push_rules_are_shared() {
        let ok = run(AppRoute::Push, ttl60(), b"").unwrap();
        assert_eq!(ok.vapid_key, None);
        assert_eq!(ok.rate, None);
        let (s, p) = status(run(AppRoute::Push, Fields::default(), b""));
        assert_eq!((s, &p["errno"]), (400, &json!(111)));
        let f = Fields {
            content_encoding: Some("aes128gcm".into()),
            ..ttl60()
        };
        assert!(run(AppRoute::Push, f.clone(), &aes128gcm(200)).is_ok());
        let (s, p) = status(run(AppRoute::Push, f.clone(), &aes128gcm(5631)));
        assert_eq!((s, &p["errno"]), (413, &json!(104)));
        let (s, _) = status(run(AppRoute::Push, ttl60(), b"plain"));
        assert_eq!(s, 400);
    }

    #[test]
    fn vapid_is_verified_for_the_edge_origin() {
        let (auth, key) = vapid_header(7, AUD, NOW + 600);
        let f = Fields {
            authorization: Some(auth.clone()),
            ..ttl60()
        };
        assert_eq!(run(AppRoute::Push, f, b"").unwrap().vapid_key, Some(key));
        let (other, _) = vapid_header(7, "https://elsewhere.example", NOW + 600);
        let f = Fields {
            authorization: Some(other),
            ..ttl60()
        };
        let (s, p) = status(run(AppRoute::Push, f, b""));
        assert_eq!((s, &p["errno"]), (401, &json!(109)));
        let broken = Fields {
            authorization: Some(auth.replace("vapid t=", "vapid t=x")),
            ..ttl60()
        };
        assert_eq!(status(run(AppRoute::Push, broken.clone(), b"")).0, 401);
        // Reads and deletes of lists verify credentials too.
        assert_eq!(status(run(AppRoute::ReadList, broken.clone(), b"")).0, 401);
        // Message resources take none.
        assert!(run(AppRoute::CancelMessage, broken, b"").is_ok());
    }

    #[test]
    fn list_push_counts_per_list() {
        let f = Fields {
            content_type: Some("application/jose".into()),
            ..ttl60()
        };
        let body = compact_template(100);
        let list = "AAECAwQFBgcICQoLDA0ODw";
        let c = run(
            AppRoute::PushList { list: list.into() },
            f.clone(),
            body.as_bytes(),
        )
        .unwrap();
        let window = RateKey::ListPush {
            list: list.into(),
            key: None,
        };
        assert_eq!(c.rate, Some(window));
        // A name that is no token is no list: 404 before anything is counted.
        for bad in [
            "L",
            "AAECAwQFBgcICQoLDA0ODx",
            "AAECAwQFBgcICQoLDA0ODw==",
            &"A".repeat(200),
        ] {
            let (s, p) = status(run(
                AppRoute::PushList { list: bad.into() },
                f.clone(),
                body.as_bytes(),
            ));
            assert_eq!(
                (s, &p["type"]),
                (404, &json!("/problems/not-found")),
                "{bad}"
            );
        }
        let (s, p) = status(run(
            AppRoute::PushList { list: list.into() },
            Fields {
                content_encoding: Some("aes128gcm".into()),
                content_type: None,
                ..f
            },
            &aes128gcm(200),
        ));
        assert_eq!(
            (s, &p["type"]),
            (415, &json!("/problems/list-push-not-jwe"))
        );
    }

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn create_checks_document_after_rate() {
        let (auth, key) = vapid_header(9, AUD, NOW + 600);
        let doc = json!({"https://x.example/p/a": {}, "ftp://bad/p": {}}).to_string();
        let f = Fields {
            content_type: Some(list::CONTENT_TYPE.into()),
            content_encoding: Some("gzip".into()),
            authorization: Some(auth),
            ..Fields::default()
        };
        let gz = gzip(doc.as_bytes());
        let c = run(AppRoute::CreateList, f.clone(), &gz).unwrap();
        assert_eq!(c.vapid_key.as_deref(), Some(key.as_str()));
        assert_eq!(c.rate, Some(RateKey::ListCreation(key)));
        let err = c
            .after_rate
            .unwrap()
            .run(NOW, &Limits::default())
            .unwrap_err();
        let reply = err.reply();
        assert_eq!(reply.status, 422);
        let p: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(p["members"][0]["reason"], "malformed-uri");
        // Without VAPID there is no per-key rate.
        let anon = Fields {
            authorization: None,
            ..f.clone()
        };
        assert_eq!(run(AppRoute::CreateList, anon, &gz).unwrap().rate, None);
        // Document-level errors come first.
        let (s, _) = status(run(AppRoute::CreateList, f.clone(), b"not gzip"));
        assert_eq!(s, 400);
        let wrong_type = Fields {
            content_type: Some("application/json".into()),
            ..f
        };
        assert_eq!(status(run(AppRoute::CreateList, wrong_type, &gz)).0, 415);
    }

    #[test]
    fn amend_leaves_members_to_the_origin() {
        let f = Fields {
            content_type: Some(list::MERGE_PATCH_CONTENT_TYPE.into()),
            ..Fields::default()
        };
        let patch = json!({"ftp://bad/p": {}, "https://x.example/p/a": null}).to_string();
        let c = run(AppRoute::AmendList, f.clone(), patch.as_bytes()).unwrap();
        assert_eq!(c.after_rate, None);
        let (s, p) = status(run(AppRoute::AmendList, f, b"[1]"));
        assert_eq!(
            (s, &p["type"]),
            (400, &json!("/problems/invalid-list-document"))
        );
    }

    #[test]
    fn problems_match_shared() {
        // The edge's answer is shared's problem, untouched.
        let e = shared::headers::HeaderError::MissingTtl;
        let (s, p) = status(run(AppRoute::Push, Fields::default(), b""));
        assert_eq!(s, e.status());
        assert_eq!(p["title"], e.title());
        assert_eq!(p["detail"], e.to_string());
    }
}
