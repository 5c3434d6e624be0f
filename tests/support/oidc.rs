//! A real OpenID Connect provider for the sign-on tests (panva's certified
//! `oidc-provider` under Node, `tests/oidc/provider.mjs`), on a free port,
//! with the clients and accounts a test names; and a [`Browser`] that
//! signs a person in on its pages over HTTP as a person's browser would:
//! cookies, redirects, and the provider's own login and consent forms.
//!
//! Its npm packages come from `tests/oidc/package-lock.json`: installed with
//! `npm ci` the first time a test needs them (`.ci/run` does it up front).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;

use super::jitgate::{JitgateConfig, JitgateOptions, Upstream};
use super::process::free_port;
use super::wait::within;

/// The client secret of the kit's `jitgate` client.
pub const OIDC_CLIENT_SECRET: &str = "kit-client-secret";

fn provider_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// `npm ci` once per test process, when the packages are missing.
fn ensure_packages() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done || provider_dir().join("node_modules/oidc-provider").exists() {
        *done = true;
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(provider_dir())
        .output()
        .expect("run npm (install nodejs and npm)");
    assert!(
        out.status.success(),
        "npm ci in tests/oidc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    *done = true;
}

/// One account of the provider: its login name and claims.
pub struct Account<'a> {
    pub login: &'a str,
    pub email: &'a str,
    pub groups: &'a [&'a str],
}

/// How a provider runs.
#[derive(Default)]
pub struct ProviderOptions {
    /// Reached through an [`Interposer`] (its issuer is the interposer's).
    pub interposed: bool,
    /// Seconds an ID token lives (the provider's default: an hour).
    pub id_token_ttl: Option<u64>,
}

/// A running provider.
pub struct OidcProvider {
    child: Child,
    _dir: TempDir,
    log: PathBuf,
    pub issuer: String,
    /// The man in the middle, when it runs behind one.
    pub interposer: Option<Interposer>,
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The kit's client: confidential, native (loopback redirects on any
/// port), authorization code and device flows; `alg` signs its ID tokens.
pub fn jitgate_client(client_id: &str, alg: &str) -> Value {
    json!({
        "client_id": client_id,
        "client_secret": OIDC_CLIENT_SECRET,
        // The CLI's loopback port, and the approver page's own return.
        "redirect_uris": ["http://127.0.0.1/callback", "http://127.0.0.1/signin/callback"],
        "application_type": "native",
        "grant_types": ["authorization_code", "urn:ietf:params:oauth:grant-type:device_code"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_basic",
        "id_token_signed_response_alg": alg,
    })
}

impl OidcProvider {
    /// Start a provider with `clients` (client metadata) and `accounts`.
    pub async fn start(clients: Vec<Value>, accounts: &[Account<'_>]) -> OidcProvider {
        OidcProvider::start_with(clients, accounts, ProviderOptions::default()).await
    }

    pub async fn start_with(
        clients: Vec<Value>,
        accounts: &[Account<'_>],
        options: ProviderOptions,
    ) -> OidcProvider {
        ensure_packages();
        let dir = tempfile::tempdir().expect("a directory for the provider");
        let port = free_port();
        let accounts: serde_json::Map<String, Value> = accounts
            .iter()
            .map(|a| {
                (
                    a.login.to_owned(),
                    json!({"email": a.email, "email_verified": true, "groups": a.groups,
                           "preferred_username": a.login}),
                )
            })
            .collect();
        let interposer = match options.interposed {
            true => Some(Interposer::start(port).await),
            false => None,
        };
        let issuer = match &interposer {
            Some(i) => format!("http://127.0.0.1:{}", i.port),
            None => format!("http://127.0.0.1:{port}"),
        };
        let settings = dir.path().join("settings.json");
        std::fs::write(
            &settings,
            json!({"port": port, "issuer": issuer, "clients": clients, "accounts": accounts,
                   "idTokenTtl": options.id_token_ttl})
            .to_string(),
        )
        .unwrap();
        let log = dir.path().join("provider.log");
        let child = Command::new("node")
            .arg(provider_dir().join("provider.mjs"))
            .arg(&settings)
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .expect("start node (install nodejs)");
        let provider = OidcProvider {
            child,
            _dir: dir,
            log,
            issuer,
            interposer,
        };
        within(
            Duration::from_secs(30),
            "the OIDC provider to listen",
            async {
                while !provider.log().contains("listening ") {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        )
        .await;
        provider
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `[oidc]` table of a jitgate that signs people on here, with
    /// its credentials living `ttl`, and `clock_skew` leeway on ID tokens.
    pub fn jitgate_table(&self, client_id: &str, ttl: &str, clock_skew: &str) -> String {
        format!(
            "[oidc]\nissuer = \"{}\"\nclient_id = \"{client_id}\"\nclient_secret_env = \"KIT_OIDC_SECRET\"\n\
             username_claim = \"email\"\ngroups_claim = \"groups\"\nscopes = [\"openid\", \"email\", \"groups\"]\n\
             credential_ttl = \"{ttl}\"\nclock_skew = \"{clock_skew}\"\n\n",
            self.issuer
        )
    }

    /// The config of the kit's usual jitgate in front of `upstream`, signing
    /// people on here as client `client_id` (its secret in the environment,
    /// never in the file; see [`Self::jitgate_table`]), with `policies`
    /// after the `[oidc]` table.
    pub fn jitgate_config(
        &self,
        upstream: &impl Upstream,
        client_id: &str,
        ttl: &str,
        clock_skew: &str,
        policies: &str,
    ) -> JitgateConfig {
        let table = self.jitgate_table(client_id, ttl, clock_skew);
        let mut config = JitgateOptions {
            policies: format!("{table}\n{policies}"),
            ..JitgateOptions::default()
        }
        .config(upstream);
        config
            .env
            .push(("KIT_OIDC_SECRET".to_owned(), OIDC_CLIENT_SECRET.to_owned()));
        config
    }

    /// An ID token the provider issues for `client_id` (with `secret`) to
    /// `login`, obtained as that client would: a browser sign-in, then the
    /// code redeemed at the token endpoint.
    pub async fn id_token_for(&self, client_id: &str, secret: &str, login: &str) -> String {
        use base64::Engine;
        let verifier = "k".repeat(43);
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(<sha2::Sha256 as sha2::Digest>::digest(verifier.as_bytes()));
        let redirect = "http://127.0.0.1:9/callback";
        let mut url = reqwest::Url::parse(&format!("{}/auth", self.issuer)).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect)
            .append_pair("scope", "openid email groups")
            .append_pair("state", "state-of-a-direct-sign-in")
            .append_pair("nonce", "nonce-of-a-direct-sign-in")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let back = Browser::default().sign_in(url.as_str(), login).await;
        let code = code_in(&back);
        let answer: Value = reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .basic_auth(client_id, Some(secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect),
                ("code_verifier", &verifier),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["id_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no ID token: {answer}"))
            .to_owned()
    }

    /// Stop it now (a provider that is down).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A person's browser: keeps cookies, follows the provider's redirects by
/// hand, and fills the provider's login and consent forms.
pub struct Browser {
    http: reqwest::Client,
}

impl Default for Browser {
    fn default() -> Self {
        Browser {
            http: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap(),
        }
    }
}

impl Browser {
    /// Open `url` and sign in as `login` on the provider's forms, up to the
    /// redirect away from the provider; returns where it sends the browser
    /// (not followed).
    pub async fn sign_in(&self, url: &str, login: &str) -> String {
        let mut at = url.to_owned();
        let origin = origin_of(url);
        // A page a form answered with (not a redirect), to fill next.
        let mut answered: Option<String> = None;
        for _ in 0..16 {
            if !at.starts_with(&origin) {
                return at;
            }
            let body = match answered.take() {
                Some(body) => body,
                None => {
                    let page = self
                        .http
                        .get(&at)
                        .send()
                        .await
                        .expect("GET a provider page");
                    if let Some(next) = location(&page, &origin) {
                        at = next;
                        continue;
                    }
                    page.text().await.unwrap()
                }
            };
            // The device flow ends on a page of the provider's own.
            if body.contains("Sign-in Success") {
                return at;
            }
            let action = form_action(&body)
                .unwrap_or_else(|| panic!("a provider page with no form at {at}: {body}"));
            let mut form = hidden_inputs(&body);
            if form.iter().any(|(k, v)| k == "prompt" && v == "login") {
                form.push(("login".into(), login.into()));
                form.push(("password".into(), "any".into()));
            }
            let answer = self
                .http
                .post(&action)
                .form(&form)
                .send()
                .await
                .expect("POST a provider form");
            match location(&answer, &origin) {
                Some(next) => at = next,
                None => {
                    let status = answer.status();
                    let text = answer.text().await.unwrap_or_default();
                    assert!(
                        status.is_success(),
                        "the provider answered {status} to the form at {at}: {text}"
                    );
                    at = action;
                    answered = Some(text);
                }
            }
        }
        panic!("signing in took more than 16 pages, last at {at}");
    }

    /// Sign in and follow the final redirect (to the CLI's loopback port).
    pub async fn sign_in_and_return(&self, url: &str, login: &str) -> String {
        let back = self.sign_in(url, login).await;
        let page = self.http.get(&back).send().await.expect("GET the redirect");
        page.text().await.unwrap_or_default()
    }

    /// Enter a device flow's user code on the provider and sign in.
    pub async fn approve_device(&self, verification_uri_complete: &str, login: &str) {
        self.sign_in(verification_uri_complete, login).await;
    }
}

/// The authorization code a provider's redirect to `url` carries.
pub fn code_in(url: &str) -> String {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no code in {url}"))
}

fn origin_of(url: &str) -> String {
    let u = reqwest::Url::parse(url).unwrap();
    format!("{}://{}", u.scheme(), u.host_str().unwrap())
        + &u.port().map(|p| format!(":{p}")).unwrap_or_default()
}

fn location(r: &reqwest::Response, origin: &str) -> Option<String> {
    if !r.status().is_redirection() {
        return None;
    }
    let l = r.headers().get("location")?.to_str().ok()?;
    Some(if l.starts_with('/') {
        format!("{origin}{l}")
    } else {
        l.to_owned()
    })
}

fn form_action(body: &str) -> Option<String> {
    let start = body.find("<form")?;
    let tag = &body[start..start + body[start..].find('>')?];
    let a = tag.find("action=\"")? + 8;
    Some(tag[a..a + tag[a..].find('"')?].replace("&amp;", "&"))
}

/// The name and value of every hidden input of the page's form.
fn hidden_inputs(body: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.find("type=\"hidden\"") {
        rest = &rest[at..];
        let tag = &rest[..rest.find('>').unwrap_or(rest.len())];
        let attr = |name: &str| {
            let marker = format!("{name}=\"");
            let a = tag.find(&marker)? + marker.len();
            Some(tag[a..a + tag[a..].find('"')?].to_owned())
        };
        if let (Some(n), Some(v)) = (attr("name"), attr("value")) {
            out.push((n, v));
        }
        rest = &rest[tag.len()..];
    }
    out
}

/// What the [`Interposer`] does to the ID token the provider's token
/// endpoint sends: an attacker (or a broken provider) between jitgate and
/// the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tamper {
    /// Pass it on unchanged.
    Nothing,
    /// Flip one bit of its signature.
    FlipSignature,
    /// Say `alg: none` and drop the signature.
    Unsigned,
    /// Name a key id the provider never published.
    UnknownKey,
    /// Send this token instead (one the provider issued for another
    /// client, or one that has expired).
    Replace(String),
}

/// An HTTP forwarder the provider is reached through (its issuer is the
/// interposer's address), which counts what it forwards and tampers with
/// ID tokens on the way back from `/token` as told.
pub struct Interposer {
    pub port: u16,
    pub tamper: std::sync::Arc<Mutex<Tamper>>,
    /// Requests forwarded, by path (without the query).
    pub seen: std::sync::Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Interposer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Interposer {
    /// Listen on a free port and forward to 127.0.0.1:`to` (started
    /// before the provider, so the provider can be told its address).
    pub async fn start(to: u16) -> Interposer {
        use axum::body::{Body, to_bytes};
        use axum::extract::Request;
        use axum::response::Response;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tamper = std::sync::Arc::new(Mutex::new(Tamper::Nothing));
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let (t, s) = (tamper.clone(), seen.clone());
        let forward = move |request: Request| {
            let (http, tamper, seen) = (http.clone(), t.clone(), s.clone());
            async move {
                let (parts, body) = request.into_parts();
                let path = parts.uri.path().to_owned();
                seen.lock().unwrap().push(path.clone());
                let url = format!(
                    "http://127.0.0.1:{to}{}",
                    parts.uri.path_and_query().map_or("/", |p| p.as_str())
                );
                let body = to_bytes(body, 1 << 20).await.unwrap_or_default();
                let mut out = http.request(parts.method.clone(), &url).body(body.to_vec());
                // The Host header too: the provider writes its absolute
                // addresses from it, which must stay the interposer's.
                for (name, value) in &parts.headers {
                    if name != "content-length" {
                        out = out.header(name, value);
                    }
                }
                let Ok(answer) = out.send().await else {
                    // The provider is down: say so as a gateway would.
                    return Response::builder()
                        .status(502)
                        .body(Body::from("the provider is down"))
                        .unwrap();
                };
                let status = answer.status();
                let headers = answer.headers().clone();
                let mut bytes = answer.bytes().await.unwrap_or_default().to_vec();
                if path == "/token" && status.is_success() {
                    let how = tamper.lock().unwrap().clone();
                    let mut json: Value = serde_json::from_slice(&bytes).unwrap();
                    if let Some(token) = json["id_token"].as_str() {
                        json["id_token"] = Value::String(tampered(token, &how));
                    }
                    bytes = serde_json::to_vec(&json).unwrap();
                }
                let mut response = Response::builder().status(status);
                for (name, value) in &headers {
                    if name != "content-length" && name != "transfer-encoding" {
                        response = response.header(name, value);
                    }
                }
                response.body(Body::from(bytes)).unwrap()
            }
        };
        let app = axum::Router::new().fallback(forward);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Interposer {
            port,
            tamper,
            seen,
            task,
        }
    }

    pub fn set(&self, how: Tamper) {
        *self.tamper.lock().unwrap() = how;
    }

    /// How many requests went to `path`.
    pub fn count(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }
}

fn tampered(token: &str, how: &Tamper) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
    let parts: Vec<&str> = token.split('.').collect();
    let header = |edit: &dyn Fn(&mut Value)| {
        let mut h: Value = serde_json::from_slice(&B64URL.decode(parts[0]).unwrap()).unwrap();
        edit(&mut h);
        B64URL.encode(h.to_string())
    };
    match how {
        Tamper::Nothing => token.to_owned(),
        Tamper::FlipSignature => {
            let mut sig = B64URL.decode(parts[2]).unwrap();
            sig[0] ^= 1;
            format!("{}.{}.{}", parts[0], parts[1], B64URL.encode(sig))
        }
        Tamper::Unsigned => format!(
            "{}.{}.",
            header(&|h| h["alg"] = Value::String("none".into())),
            parts[1]
        ),
        Tamper::UnknownKey => format!(
            "{}.{}.{}",
            header(&|h| h["kid"] = Value::String("rotated-away".into())),
            parts[1],
            parts[2]
        ),
        Tamper::Replace(other) => other.clone(),
    }
}
