//! `jitgate login` and `jitgate logout`: sign on through the company's
//! identity provider, keep the credential jitgate issues, end it.
//!
//! `login` runs the authorization code flow with PKCE as a native app
//! should (RFC 8252): it listens on a loopback port for the browser's
//! redirect, asks jitgate for the provider's URL with a fresh state, nonce
//! and S256 challenge, opens the browser there (or prints the URL), checks
//! the state (and the issuer, RFC 9207) of the redirect, and hands jitgate
//! the code with its verifier and nonce. `login --device` uses the device
//! authorization grant (RFC 8628) for machines without a browser. The
//! credential goes to the file `credentials.rs` keeps; its secret is never
//! printed.

use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::credentials::{self, Stored};
use super::{ApiArgs, Client};

/// How long `login` waits for the browser to come back.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest redirect request read from the browser.
const MAX_REDIRECT_BYTES: usize = 16 * 1024;

#[derive(Deserialize)]
struct SignedOn {
    identity: String,
    groups: Vec<String>,
    credential: CredentialInfo,
    secret: String,
}

#[derive(Deserialize)]
struct CredentialInfo {
    id: String,
    expires_at: String,
}

#[derive(Deserialize)]
struct Started {
    authorization_url: String,
    #[serde(default)]
    issuer: Option<String>,
}

#[derive(Deserialize)]
struct DeviceStart {
    device_code: String,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: Option<String>,
    expires_in: u64,
    interval: u64,
}

/// Fresh randomness for state, nonce and the PKCE verifier.
fn random_text() -> String {
    B64URL.encode(rand::random::<[u8; 32]>())
}

pub(crate) async fn login(
    api: ApiArgs,
    device: bool,
    no_browser: bool,
    port: u16,
) -> anyhow::Result<()> {
    let client = Client::anonymous(&api.server)?;
    let signed_on = if device {
        device_flow(&client).await?
    } else {
        browser_flow(&client, no_browser, port).await?
    };
    let path = credentials::save(
        &client.server(),
        Stored {
            identity: signed_on.identity.clone(),
            credential: signed_on.credential.id.clone(),
            expires_at: signed_on.credential.expires_at.clone(),
            secret: signed_on.secret,
        },
    )?;
    if api.json {
        let out = json!({
            "identity": signed_on.identity,
            "groups": signed_on.groups,
            "credential": {"id": signed_on.credential.id, "expires_at": signed_on.credential.expires_at},
            "saved_to": path,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let groups = if signed_on.groups.is_empty() {
            "no groups".to_owned()
        } else {
            format!("groups {}", signed_on.groups.join(", "))
        };
        println!(
            "signed in as {} ({groups}); credential {} valid until {}",
            signed_on.identity, signed_on.credential.id, signed_on.credential.expires_at
        );
        eprintln!(
            "kept in {} (your API token and database password); `jitgate connect <target>` opens a session",
            path.display()
        );
    }
    Ok(())
}

async fn browser_flow(client: &Client, no_browser: bool, port: u16) -> anyhow::Result<SignedOn> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| match port {
            0 => "cannot listen on a loopback port for the browser's redirect".to_owned(),
            p => format!("cannot listen on 127.0.0.1:{p} for the browser's redirect; is another login running?"),
        })?;
    let redirect_uri = format!(
        "http://127.0.0.1:{}/callback",
        listener.local_addr()?.port()
    );
    let (state, nonce, verifier) = (random_text(), random_text(), random_text());
    let started: Started = parse(
        client
            .post(
                "/v1/login/start",
                Some(json!({
                    "redirect_uri": redirect_uri,
                    "state": state,
                    "nonce": nonce,
                    "code_challenge": crate::identity::oidc::code_challenge(&verifier),
                })),
            )
            .await?,
    )?;
    let url = started.authorization_url;
    let opened = !no_browser && open_browser(&url);
    if opened {
        eprintln!("a browser window opened for you to sign in; if it did not, open:");
    } else {
        eprintln!("open this address in a browser to sign in:");
    }
    eprintln!("  {url}");
    let code = tokio::time::timeout(
        BROWSER_TIMEOUT,
        wait_for_redirect(&listener, &state, started.issuer.as_deref()),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "no sign-in came back within {} minutes; run `jitgate login` again (or `jitgate login --device` on a machine without a browser)",
            BROWSER_TIMEOUT.as_secs() / 60
        )
    })??;
    parse(
        client
            .post(
                "/v1/login/code",
                Some(json!({
                    "code": code,
                    "redirect_uri": redirect_uri,
                    "code_verifier": verifier,
                    "nonce": nonce,
                })),
            )
            .await?,
    )
}

/// `$BROWSER`, else the desktop's opener; whether one started.
fn open_browser(url: &str) -> bool {
    let candidates: Vec<String> = match std::env::var("BROWSER") {
        Ok(b) if !b.trim().is_empty() => vec![b],
        _ if cfg!(target_os = "macos") => vec!["open".into()],
        _ => vec!["xdg-open".into()],
    };
    candidates.iter().any(|program| {
        std::process::Command::new(program)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .is_ok()
    })
}

/// Serve the loopback redirect: the code, once the state (and the issuer,
/// when the provider names it) are the ones this sign-on sent.
async fn wait_for_redirect(
    listener: &TcpListener,
    state: &str,
    issuer: Option<&str>,
) -> anyhow::Result<String> {
    loop {
        let (mut conn, _) = listener.accept().await?;
        let Some(target) = read_request_target(&mut conn).await else {
            continue;
        };
        let Some(query) = target.strip_prefix("/callback?") else {
            // A favicon, say.
            let _ = respond(&mut conn, "404 Not Found", "not here").await;
            continue;
        };
        let params: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
        // Another state is not this sign-on's (a stale tab, or a page that
        // guessed the port): turn it away and keep waiting for this one.
        if params.get("state").map(String::as_str) != Some(state) {
            let refused = "This is not the sign-in jitgate is waiting for.";
            let _ = respond(&mut conn, "400 Bad Request", refused).await;
            eprintln!("(a sign-in came back that is not this one's; still waiting)");
            continue;
        }
        let outcome = check_redirect(&params, issuer);
        let page = match &outcome {
            Ok(_) => "Signed in to jitgate. You can close this tab and go back to your terminal.",
            Err(_) => "jitgate could not sign you in; your terminal says why.",
        };
        let _ = respond(&mut conn, "200 OK", page).await;
        return outcome;
    }
}

/// The code of a redirect whose state is this sign-on's: the provider's
/// refusal, or a redirect from another provider, is an error.
fn check_redirect(
    params: &std::collections::HashMap<String, String>,
    issuer: Option<&str>,
) -> anyhow::Result<String> {
    if let Some(error) = params.get("error") {
        let description = params
            .get("error_description")
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        bail!("the identity provider refused the sign-in: {error}{description}");
    }
    if let (Some(expected), Some(iss)) = (issuer, params.get("iss"))
        && expected != iss
    {
        bail!("the sign-in came back from {iss}, not from jitgate's provider {expected}");
    }
    params
        .get("code")
        .cloned()
        .context("the sign-in came back without a code; run `jitgate login` again")
}

/// The request target of the browser's request (`/callback?…`).
async fn read_request_target(conn: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 2048];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut chunk).await.ok()?;
            if n == 0 || buf.len() + n > MAX_REDIRECT_BYTES {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Some(())
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .ok()??;
    let line = std::str::from_utf8(&buf).ok()?.lines().next()?.to_owned();
    let mut parts = line.split(' ');
    match (parts.next(), parts.next()) {
        (Some("GET"), Some(target)) => Some(target.to_owned()),
        _ => None,
    }
}

async fn respond(
    conn: &mut tokio::net::TcpStream,
    status: &str,
    text: &str,
) -> std::io::Result<()> {
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>jitgate</title><p style=\"font:16px sans-serif\">{text}</p>"
    );
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await?;
    conn.shutdown().await
}

async fn device_flow(client: &Client) -> anyhow::Result<SignedOn> {
    let start: DeviceStart = parse(client.post("/v1/login/device", None).await?)?;
    eprintln!(
        "to sign in, open {} and enter the code {}",
        start.verification_uri, start.user_code
    );
    if let Some(complete) = &start.verification_uri_complete {
        eprintln!("  (or open {complete})");
    }
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(start.expires_in.clamp(1, 3600));
    let mut interval = Duration::from_secs(start.interval.max(1));
    loop {
        tokio::time::sleep(interval).await;
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the code expired before the sign-in was approved; run `jitgate login --device` again"
            );
        }
        let answer = client
            .post(
                "/v1/login/device/token",
                Some(json!({"device_code": start.device_code})),
            )
            .await?;
        match answer.get("status").and_then(Value::as_str) {
            Some("authorization_pending") => {}
            Some("slow_down") => interval += Duration::from_secs(5),
            _ => return parse(answer),
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> anyhow::Result<T> {
    serde_json::from_value(v).context("the admin API's answer is not what this jitgate expects")
}

/// `jitgate logout`: end the stored credential (all of the caller's with
/// `all`), or, with `user`, every credential of that person (admins).
pub(crate) async fn logout(
    api: ApiArgs,
    all: bool,
    user: Option<String>,
    free_name: bool,
) -> anyhow::Result<()> {
    let server = Client::anonymous(&api.server)?.server();
    let stored = credentials::load(&server)?;
    let token = api
        .token
        .clone()
        .or_else(|| stored.as_ref().map(|s| s.secret.clone()));
    let client = Client::new(&api.server, token)?;
    let answer = match &user {
        Some(name) => {
            let path = format!("/v1/identities/{}/logout", super::commands::segment(name)?);
            client
                .post(&path, Some(json!({"free_name": free_name})))
                .await?
        }
        None => match client.post("/v1/logout", Some(json!({"all": all}))).await {
            Ok(answer) => answer,
            // Already ended (expired, or logged out elsewhere): forget it anyway.
            Err(super::ClientError::Api { status, .. })
                if status == reqwest::StatusCode::UNAUTHORIZED && stored.is_some() =>
            {
                json!({"identity": stored.as_ref().map(|s| s.identity.clone()), "ended": []})
            }
            Err(e) => return Err(e.into()),
        },
    };
    if user.is_none() {
        credentials::forget(&server)?;
    }
    if api.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let ended = answer
        .get("ended")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let who = answer
        .get("identity")
        .and_then(Value::as_str)
        .unwrap_or("you");
    match (&user, ended) {
        (Some(_), 0) => println!("{who} holds no live credential; nothing to end"),
        (Some(_), n) => println!(
            "ended {n} credential{} of {who}, and the sessions opened with them",
            if n == 1 { "" } else { "s" }
        ),
        (None, 0) => println!("logged out (the credential had already ended)"),
        (None, n) => println!(
            "logged out {who}: {n} credential{} ended, with the sessions opened with {}",
            if n == 1 { "" } else { "s" },
            if n == 1 { "it" } else { "them" }
        ),
    }
    Ok(())
}

/// The token for a command: `--token`/`JITGATE_TOKEN`, else the credential
/// `jitgate login` stored for this server (while it lives).
pub(crate) fn token_for(api: &ApiArgs) -> anyhow::Result<Option<String>> {
    if api.token.as_deref().is_some_and(|t| !t.trim().is_empty()) {
        return Ok(api.token.clone());
    }
    let server = Client::anonymous(&api.server)?.server();
    match credentials::load(&server)? {
        Some(stored) if stored.live() => Ok(Some(stored.secret)),
        Some(stored) => bail!(
            "your credential for {server} ({}) expired at {}; sign in again with `jitgate login`",
            stored.identity,
            stored.expires_at
        ),
        None => Ok(None),
    }
}
