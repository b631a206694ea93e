//! The Workers runtime binding (wasm32 only): the fetch handler and the
//! rate-limit Durable Object. Each step is a call into the plain modules.

#[cfg(feature = "bench")]
use crate::bench;
use crate::check::{self, Fields, Inbound, Verifier};
use crate::config::{vars, Config};
use crate::documents::Documents;
use crate::forward::{self, Outgoing};
use crate::limiter::{self, Hit, RateKey, Verdict, Window};
use crate::reply::{EdgeError, Refusal, Reply};
use crate::route::{self, AppRoute, BodyKind, Route};
use futures_util::StreamExt;
use shared::push::PushError;
use std::cell::Cell;
use worker::js_sys::{self, Uint8Array};
use worker::wasm_bindgen::JsValue;
use worker::{
    console_error, durable_object, event, Context, DurableObject, Env, Fetch, Headers, Method,
    Request, RequestInit, RequestRedirect, Response, Result, State,
};

thread_local! {
    /// The list documents this isolate is reading (one thread per isolate).
    static DOCUMENTS: Documents = Documents::new();
}

/// VAPID verification with the platform's ECDSA (WebCrypto, native code in
/// workerd) and `shared`'s token form and claims rules.
struct WebCryptoVerifier;

impl Verifier for WebCryptoVerifier {
    async fn verify(
        &self,
        c: &shared::vapid::Credentials,
        audience: &str,
        now: u64,
        limits: &shared::Limits,
    ) -> std::result::Result<(), shared::vapid::VapidError> {
        use shared::vapid::VapidError;
        let signed = c.signed()?;
        match ecdsa_p256_verify(&c.key.0, signed.input, &signed.signature).await {
            Ok(true) => {}
            Ok(false) => return Err(VapidError::Signature),
            Err(_) => return Err(VapidError::BadKey),
        }
        c.verify_claims(audience, now, limits).map(|_| ())
    }
}

/// `crypto.subtle.verify` of an ES256 signature (r‖s) under a raw P-256 key.
async fn ecdsa_p256_verify(
    key: &[u8],
    input: &[u8],
    sig: &[u8],
) -> std::result::Result<bool, JsValue> {
    use js_sys::{Array, Function, Object, Promise, Reflect};
    use worker::wasm_bindgen::JsCast;
    use worker::wasm_bindgen_futures::JsFuture;
    let crypto = Reflect::get(&js_sys::global(), &"crypto".into())?;
    let subtle = Reflect::get(&crypto, &"subtle".into())?;
    let call = |name: &str, args: &Array| -> std::result::Result<Promise, JsValue> {
        let f: Function = Reflect::get(&subtle, &name.into())?.dyn_into()?;
        f.apply(&subtle, args)?.dyn_into()
    };
    let algorithm = |extra: (&str, &str)| -> std::result::Result<JsValue, JsValue> {
        let o = Object::new();
        Reflect::set(&o, &"name".into(), &"ECDSA".into())?;
        Reflect::set(&o, &extra.0.into(), &extra.1.into())?;
        Ok(o.into())
    };
    let args = Array::of5(
        &"raw".into(),
        &Uint8Array::from(key).into(),
        &algorithm(("namedCurve", "P-256"))?,
        &false.into(),
        &Array::of1(&"verify".into()),
    );
    let k = JsFuture::from(call("importKey", &args)?).await?;
    let args = Array::of4(
        &algorithm(("hash", "SHA-256"))?,
        &k,
        &Uint8Array::from(sig).into(),
        &Uint8Array::from(input).into(),
    );
    Ok(JsFuture::from(call("verify", &args)?).await?.as_bool() == Some(true))
}

/// Milliseconds since the epoch, as the runtime's clock reads.
fn now_ms() -> f64 {
    js_sys::Date::now()
}

fn now_secs() -> u64 {
    (now_ms() / 1000.0) as u64
}

fn config(env: &Env) -> std::result::Result<Config, crate::config::ConfigError> {
    Config::from_env(|name| {
        env.secret(name)
            .map(|s| s.to_string())
            .or_else(|_| env.var(name).map(|v| v.to_string()))
            .ok()
    })
}

fn respond(reply: Reply) -> Result<Response> {
    let headers = Headers::new();
    headers.set("Content-Type", reply.content_type)?;
    for (name, value) in &reply.headers {
        headers.append(name, value)?;
    }
    Ok(Response::builder()
        .with_status(reply.status)
        .with_headers(headers)
        .fixed(reply.body.into_bytes()))
}

fn refuse(r: impl Into<Refusal>) -> Result<Response> {
    respond(r.into().reply())
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let cfg = match config(&env) {
        Ok(c) => c,
        Err(e) => {
            console_error!("edge misconfigured: {e}");
            return refuse(EdgeError::from(e));
        }
    };
    // worker::Method maps methods it does not know to GET; take the raw one.
    let method = req.inner().method();
    let url = req.url()?.to_string();
    let path_and_query = forward::path_and_query(&url).to_owned();
    let path = path_and_query.split('?').next().unwrap_or("/");
    match route::route(&method, path) {
        Err(e) => refuse(e),
        Ok(Route::Health) => respond(Reply::json(200, &serde_json::json!({"status": "ok"}))),
        #[cfg(feature = "bench")]
        Ok(Route::Bench) => bench(req, &cfg, &url).await,
        Ok(Route::App(app)) => {
            let target = Target {
                method: &method,
                url: &url,
                path_and_query: &path_and_query,
            };
            application(req, &env, &cfg, &app, &target).await
        }
    }
}

/// Where a request was sent.
struct Target<'a> {
    method: &'a str,
    url: &'a str,
    path_and_query: &'a str,
}

/// Checks an application request, counts it, forwards it.
async fn application(
    mut req: Request,
    env: &Env,
    cfg: &Config,
    app: &AppRoute,
    target: &Target<'_>,
) -> Result<Response> {
    let fields = match Fields::read_text(|n| req.headers().get(n).ok().flatten()) {
        Ok(f) => f,
        Err(e) => return refuse(PushError::from(e)),
    };
    // Held until the origin has answered: the body and its inflated form
    // live that long.
    let _document = match app.body() {
        BodyKind::Document => match DOCUMENTS.with(|d| d.try_take(cfg.max_list_documents)) {
            Some(p) => Some(p),
            None => return refuse(EdgeError::TooManyDocuments(cfg.max_list_documents)),
        },
        _ => None,
    };
    let body = read_body(&mut req, app.body().read_cap(&cfg.limits)).await?;
    let now = now_secs();
    let inbound = Inbound {
        route: app,
        fields: &fields,
        body: &body,
        audience: route::origin_of(target.url),
        now,
    };
    let checked = match check::check(&inbound, &cfg.limits, &WebCryptoVerifier).await {
        Ok(c) => c,
        Err(r) => return refuse(r),
    };
    if let Some(key) = &checked.rate {
        if let Some(r) = rate_limit(env, cfg, key).await {
            return refuse(r);
        }
    }
    if let Some(d) = &checked.after_rate {
        if let Err(r) = d.run(now, &cfg.limits) {
            return refuse(r);
        }
    }
    let headers: Vec<(String, String)> = req.headers().entries().collect();
    let out = forward::prepare(
        cfg,
        target.method,
        target.path_and_query,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &body,
        checked.vapid_key.as_deref(),
        now,
    );
    send(cfg, out, target.method, &body).await
}

/// Reads at most `cap` bytes of the body (one over a limit is enough to refuse it).
async fn read_body(req: &mut Request, cap: usize) -> Result<Vec<u8>> {
    if cap == 0 || req.inner().body().is_none() {
        return Ok(Vec::new());
    }
    let mut stream = req.stream()?;
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk?);
        if body.len() >= cap {
            body.truncate(cap);
            break;
        }
    }
    Ok(body)
}

/// Sends the marked request to an origin node, starting at a random one and
/// going on to the next while one cannot be reached; the first answer goes
/// back as it is.
async fn send(cfg: &Config, out: Outgoing, method: &str, body: &[u8]) -> Result<Response> {
    let first = (js_sys::Math::random() * cfg.origins.len() as f64) as usize;
    for url in out.urls(cfg, first) {
        let headers = Headers::new();
        for (k, v) in &out.headers {
            headers.append(k, v)?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::from(method.to_owned()))
            .with_headers(headers)
            .with_redirect(RequestRedirect::Manual);
        if !body.is_empty() {
            init.with_body(Some(Uint8Array::from(body).into()));
        }
        let req = Request::new_with_init(&url, &init)?;
        match Fetch::Request(req).send().await {
            Ok(resp) => return Ok(resp),
            Err(e) => console_error!("origin unreachable at {url}: {e}"),
        }
    }
    refuse(EdgeError::OriginUnreachable)
}

/// Counts the request in its Durable Object; a refusal if over the limit.
/// If the object cannot be asked, the request goes on: the origin keeps
/// the same limits.
async fn rate_limit(env: &Env, cfg: &Config, key: &RateKey) -> Option<Refusal> {
    match ask_limiter(env, key, key.hit(&cfg.limits, cfg.rate_window_secs)).await {
        Ok(Verdict::Allowed) => None,
        Ok(Verdict::Limited { retry_after }) => Some(
            EdgeError::RateLimited {
                what: key.what(),
                retry_after,
            }
            .into(),
        ),
        Err(e) => {
            console_error!("rate limiter unavailable ({e}); the origin's limits still apply");
            None
        }
    }
}

async fn ask_limiter(env: &Env, key: &RateKey, hit: Hit) -> Result<Verdict> {
    let stub = env
        .durable_object(vars::RATE_LIMITER)?
        .id_from_name(&key.object_name())?
        .get_stub()?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(JsValue::from_str(&serde_json::to_string(&hit)?)));
    let req = Request::new_with_init("https://rate-limiter/hit", &init)?;
    stub.fetch_with_request(req).await?.json().await
}

/// `POST /_bench/validate?n=N`: times the checks of the list push it carries.
#[cfg(feature = "bench")]
async fn bench(mut req: Request, cfg: &Config, url: &str) -> Result<Response> {
    use std::time::Duration;
    use worker::Delay;
    let fields = match Fields::read_text(|n| req.headers().get(n).ok().flatten()) {
        Ok(f) => f,
        Err(e) => return refuse(PushError::from(e)),
    };
    let body = read_body(&mut req, BodyKind::Message.read_cap(&cfg.limits)).await?;
    let app = AppRoute::PushList {
        list: "bench".into(),
    };
    let inbound = Inbound {
        route: &app,
        fields: &fields,
        body: &body,
        audience: route::origin_of(url),
        now: now_secs(),
    };
    let n = bench::iterations(url.split_once('?').map(|(_, q)| q));
    let settle = || Delay::from(Duration::ZERO);
    match bench::run(&inbound, cfg, &WebCryptoVerifier, n, now_ms, settle).await {
        Ok(report) => respond(Reply::json(200, &serde_json::to_value(report)?)),
        Err(r) => refuse(r),
    }
}

/// The fixed-window counter of one rate-limited thing (a list, a VAPID key).
/// SQLite-backed: the window survives the object's eviction; an alarm at
/// the window's end drops the storage of things no longer counted.
#[durable_object]
pub struct RateLimiter {
    state: State,
    table_ready: Cell<bool>,
}

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS rate_window \
     (id INTEGER PRIMARY KEY, win_start INTEGER NOT NULL, win_ends INTEGER NOT NULL, hits INTEGER NOT NULL)";
const SELECT_WINDOW: &str =
    "SELECT win_start AS start, win_ends AS ends, hits AS count FROM rate_window WHERE id = 0";
const STORE_WINDOW: &str =
    "INSERT OR REPLACE INTO rate_window (id, win_start, win_ends, hits) VALUES (0, ?, ?, ?)";

impl RateLimiter {
    fn stored(&self) -> Result<Option<Window>> {
        let sql = self.state.storage().sql();
        if !self.table_ready.get() {
            sql.exec(CREATE_TABLE, None)?;
            self.table_ready.set(true);
        }
        Ok(sql.exec(SELECT_WINDOW, None)?.to_array::<Window>()?.pop())
    }
}

impl DurableObject for RateLimiter {
    fn new(state: State, _env: Env) -> Self {
        RateLimiter {
            state,
            table_ready: Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let hit: Hit = req.json().await?;
        let stored = self.stored()?;
        let now = now_secs();
        let (next, verdict) = limiter::count(stored, now, hit);
        if let Some(w) = next {
            self.state.storage().sql().exec(
                STORE_WINDOW,
                vec![
                    (w.start as i64).into(),
                    (w.ends as i64).into(),
                    i64::from(w.count).into(),
                ],
            )?;
            if stored.is_none_or(|s| s.start != w.start) {
                let wait_ms = w.ends.saturating_sub(now) * 1000 + 1000;
                self.state.storage().set_alarm(wait_ms as i64).await?;
            }
        }
        Response::from_json(&verdict)
    }

    async fn alarm(&self) -> Result<Response> {
        let stored = self.stored()?;
        let now = now_secs();
        if limiter::expired(stored, now) {
            self.state.storage().delete_all().await?;
            self.table_ready.set(false);
        } else if let Some(w) = stored {
            let wait_ms = w.ends.saturating_sub(now) * 1000 + 1000;
            self.state.storage().set_alarm(wait_ms as i64).await?;
        }
        Response::ok("")
    }
}
