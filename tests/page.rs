//! The approver page in a real browser (Debian's Chromium over WebDriver):
//! a developer asks for access on the page, an approver sees the request
//! arrive without reloading and approves it, the grant counts down, psql's
//! session through jitgate appears and is killed or ended by a revoke; the
//! page refuses self-approval and forged forms, lists what ran under a
//! grant, signs people in with a secret or through the identity provider,
//! and fits a phone.
//!
//! Witnesses: what the browser shows, what psql heard, the target's
//! `pg_stat_activity`, the API's view of requests and jitgate's audit log.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

/// Developers may ask for read on demo-pg for up to 2h; one approver says yes.
const POLICY: &str = "[[policies]]\nname = \"dev-read\"\ntargets = [\"demo-pg\"]\n\
                      levels = [\"read\"]\nrequesters = [\"developer\"]\nmax_duration = \"2h\"\n\
                      approvals = 1\napprovers = [\"approver\"]\n";

async fn world() -> (PgServer, Jitgate) {
    let pg = PgServer::start().await;
    let jg = Jitgate::start(
        &pg,
        JitgateOptions {
            policies: POLICY.to_owned(),
            ..JitgateOptions::default()
        },
    )
    .await;
    (pg, jg)
}

/// Sign `browser` in on the page with `secret`, landing on the overview.
async fn sign_in_with_secret(browser: &Chromium, jg: &Jitgate, secret: &str) {
    browser.goto(&format!("{}/", jg.admin_url())).await;
    assert_eq!(
        browser.path().await,
        "/signin",
        "signed out goes to the sign-in page"
    );
    browser.fill("#secret", secret).await;
    browser
        .click("form[action='/signin'] button[type=submit]")
        .await;
    browser.wait_for("#pending").await;
    assert_eq!(browser.path().await, "/");
}

async fn shot(browser: &Chromium, name: &str) {
    if let Some(path) = screenshot_path(name) {
        browser.screenshot(&path).await;
    }
}

/// Post a form to `action` from inside the page, as a forger in the page
/// (or a user's tampered copy) would: with this sign-in's token when
/// `with_token`, without it otherwise.
async fn post_from_page(browser: &Chromium, action: &str, with_token: bool) {
    let token = if with_token {
        "const t = document.querySelector(\"input[name=csrf]\").value; \
         const i = document.createElement('input'); i.type = 'hidden'; i.name = 'csrf'; i.value = t; f.appendChild(i);"
    } else {
        ""
    };
    let script = format!(
        "const f = document.createElement('form'); f.method = 'post'; f.action = '{action}'; \
         {token} document.body.appendChild(f); f.submit(); return true;"
    );
    browser.js(&script).await;
    browser.wait_for("h1").await;
}

#[tokio::test]
async fn a_request_made_on_the_page_is_approved_live_and_revoking_ends_psql() {
    let (pg, jg) = world().await;
    let alice = Chromium::start().await;
    let bob = Chromium::start().await;
    sign_in_with_secret(&bob, &jg, BOB_SECRET).await;
    // Bob's overview stays open; a mark in the page tells whether it was reloaded.
    bob.js("window.jitgateNoReload = true; return true;").await;
    shot(&bob, "page-empty.png").await;

    // Alice asks on the page: target and level from her policies, duration
    // capped by the policy, reason required.
    sign_in_with_secret(&alice, &jg, ALICE_SECRET).await;
    alice
        .goto(&format!("{}/requests/new", jg.admin_url()))
        .await;
    let durations = alice
        .js("return [...document.querySelectorAll('#duration option')].map(o => o.value);")
        .await;
    assert_eq!(
        durations,
        serde_json::json!(["15m", "30m", "1h", "2h"]),
        "durations stop at the policy's 2h"
    );
    alice.select("#target", PG_TARGET).await;
    alice.select("#level", "read").await;
    alice.select("#duration", "1h").await;
    let required = alice
        .js("return document.querySelector('#reason').required;")
        .await;
    assert_eq!(required, Value::Bool(true));
    alice
        .fill("#reason", "INC-42: check the orders table")
        .await;
    shot(&alice, "page-request.png").await;
    alice
        .click("form[action='/requests'] button[type=submit]")
        .await;
    alice.wait_for("article.request").await;
    let request_path = alice.path().await;
    let request_id = request_path.trim_start_matches("/requests/").to_owned();
    assert!(request_id.starts_with("r_"), "{request_path}");
    let text = alice.text().await.to_lowercase();
    assert!(
        text.contains("pending") && text.contains("inc-42"),
        "{text}"
    );

    // Her own request has no Approve button, and a forced approval gets the API's 403.
    assert!(
        !alice.has("form[action$='/approve']").await,
        "no approve button on one's own request"
    );
    post_from_page(&alice, &format!("/requests/{request_id}/approve"), true).await;
    let refused = alice.text().await;
    assert!(
        refused.contains("you cannot approve your own request"),
        "the model's refusal shows: {refused}"
    );

    // Bob's open overview shows it without a reload.
    let card = format!("#pending article[id='{request_id}']");
    bob.wait_for(&card).await;
    assert_eq!(
        bob.js("return window.jitgateNoReload === true;").await,
        Value::Bool(true),
        "the request appeared by live update, not by reloading the page"
    );
    let card_text = bob.text_of(&card).await;
    for fact in ["alice", PG_TARGET, "read", "1h", "INC-42", "0 of 1", "in "] {
        assert!(
            card_text.contains(fact),
            "the card shows {fact}: {card_text}"
        );
    }
    shot(&bob, "page-pending.png").await;

    // A forged deny without the CSRF token is refused and changes nothing.
    post_from_page(&bob, &format!("/requests/{request_id}/deny"), false).await;
    let forged = bob.text().await;
    assert!(forged.contains("CSRF"), "{forged}");
    let seen = jg.request_by_id(BOB_SECRET, &request_id).await;
    assert_eq!(
        seen["state"], "pending",
        "the forged deny changed nothing: {seen}"
    );
    jg.wait_for_audit("the refused forgery", |v| {
        v["event"] == "page_request_refused" && v["identity"] == "bob"
    })
    .await;

    // Bob approves with a comment.
    bob.goto(&format!("{}/", jg.admin_url())).await;
    bob.js("window.jitgateNoReload = true; return true;").await;
    bob.fill(&format!("{card} textarea[name=comment]"), "ok for INC-42")
        .await;
    bob.click(&format!("{card} form.decide button.primary"))
        .await;
    bob.wait_for_text("the approval", Duration::from_secs(10), |t| {
        t.to_lowercase().contains("approved")
    })
    .await;
    let seen = jg.request_by_id(BOB_SECRET, &request_id).await;
    assert_eq!(seen["state"], "approved", "{seen}");
    let grant_id = id_string(&seen["grant"]);
    jg.wait_for_audit("bob's approval", |v| {
        v["event"] == "request_approved" && v["by"] == "bob" && v["comment"] == "ok for INC-42"
    })
    .await;

    // The grant counts down on bob's overview.
    bob.goto(&format!("{}/", jg.admin_url())).await;
    bob.js("window.jitgateNoReload = true; return true;").await;
    let countdown = format!("#grants article[id='{grant_id}'] time[data-countdown]");
    let before = bob.text_of(&countdown).await;
    assert!(
        before.starts_with("in 59m") || before.starts_with("in 1h"),
        "{before}"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let after = bob.text_of(&countdown).await;
    assert_ne!(before, after, "the countdown ticks");

    // Alice's overview gives her the command to paste.
    alice.goto(&format!("{}/", jg.admin_url())).await;
    let connect = alice
        .text_of(&format!("#grants article[id='{grant_id}'] .connect"))
        .await;
    assert!(
        connect.contains("jitgate connect demo-pg --level read")
            && connect.contains(&format!("port={}", jg.pg_port()))
            && connect.contains("user=alice"),
        "{connect}"
    );

    // Two psql sessions through jitgate appear in bob's list without a reload.
    // (One after the other, so the first listed is the first started.)
    let login = Login::alice();
    let mut killed = jg.spawn_psql(
        &login,
        &["-c", "SELECT 1", "-c", "SELECT pg_sleep(60)"],
        false,
    );
    pg.wait_for_backend_count(By::User("jg_read"), 1).await;
    let revoked = jg.spawn_psql(
        &login,
        &["-c", "SELECT 2", "-c", "SELECT pg_sleep(60)"],
        false,
    );
    pg.wait_for_backend_count(By::User("jg_read"), 2).await;
    let rows = "#sessions tbody tr";
    bob.wait_for_text("two sessions", Duration::from_secs(10), |t| {
        t.contains("Live sessions 2")
    })
    .await;
    let listed = bob
        .client
        .find_all(fantoccini::Locator::Css(rows))
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        bob.js("return window.jitgateNoReload === true;").await,
        Value::Bool(true)
    );
    let sessions_text = bob.text_of("#sessions").await;
    assert!(
        sessions_text.contains("127.0.0.1") && sessions_text.contains(PG_TARGET),
        "{sessions_text}"
    );
    shot(&bob, "page-overview.png").await;

    // Bob kills one: its psql hears FATAL, the server loses its backend,
    // and the row goes.
    bob.click(&format!("{rows}:first-child form button")).await;
    let out = tokio::time::timeout(Duration::from_secs(15), killed.wait())
        .await
        .expect("the killed psql ends");
    assert!(!out.unwrap().success());
    pg.wait_for_backend_count(By::User("jg_read"), 1).await;
    bob.wait_for_text("one session left", Duration::from_secs(10), |t| {
        t.contains("Live sessions 1")
    })
    .await;
    jg.wait_for_audit("the kill", |v| {
        v["event"] == "session_kill_requested" && v["by"] == "bob"
    })
    .await;

    // What ran under the grant, newest first.
    bob.goto(&format!("{}/grants/{grant_id}", jg.admin_url()))
        .await;
    let statements = bob
        .wait_for_text("the statements", Duration::from_secs(10), |t| {
            t.contains("pg_sleep")
        })
        .await;
    assert!(
        statements.contains("SELECT 1") && statements.contains("SELECT 2"),
        "{statements}"
    );
    shot(&bob, "page-grant.png").await;

    // Revoke, after a confirmation that names alice and the target.
    bob.click(&format!("a[href='/grants/{grant_id}/revoke']"))
        .await;
    let question = bob.text_of("h1").await;
    assert!(
        question.contains("alice") && question.contains(PG_TARGET),
        "{question}"
    );
    bob.click("form[action$='/revoke'] button.danger").await;
    let out = tokio::time::timeout(Duration::from_secs(15), revoked.wait_with_output())
        .await
        .expect("the revoked psql ends")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FATAL") && stderr.contains("revoked"),
        "psql: {stderr}"
    );
    pg.wait_for_backend_count(By::User("jg_read"), 0).await;
    bob.wait_for_text("the grant ended", Duration::from_secs(10), |t| {
        t.contains("This grant has ended") && t.contains("No live sessions")
    })
    .await;
    jg.wait_for_audit("bob's revoke", |v| {
        v["event"] == "grant_revoked" && v["by"] == "bob" && v["grant"] == grant_id.as_str()
    })
    .await;
}

#[tokio::test]
async fn a_webhook_link_followed_from_chat_opens_the_request_ready_to_decide() {
    let (hook, received) = webhook_receiver().await;
    let pg = PgServer::start().await;
    let jg = Jitgate::start(
        &pg,
        JitgateOptions {
            policies: POLICY.to_owned(),
            webhooks: vec![hook],
            ..JitgateOptions::default()
        },
    )
    .await;
    let bob = Chromium::start().await;
    sign_in_with_secret(&bob, &jg, BOB_SECRET).await;
    let request_id = id_of(&jg.request_ok(ALICE_SECRET, "read", "30m").await);
    let link = eventually(Duration::from_secs(10), "the webhook's message", || async {
        let got = received.lock().unwrap().clone();
        got.iter()
            .find(|d| d.body["event"] == "request_created")
            .map(|d| d.body["url"].as_str().unwrap_or_default().to_owned())
    })
    .await;
    assert_eq!(link, format!("{}/requests/{request_id}", jg.admin_url()));

    // The chat is another site: following its link, the browser leaves the
    // SameSite=Strict cookie behind, and the page brings it back itself.
    bob.goto(&format!(
        "data:text/html,<a id=link href='{link}'>{request_id}</a>"
    ))
    .await;
    bob.click("#link").await;
    let decide = format!("article[id='{request_id}'] form.decide");
    bob.wait_for(&decide).await;
    assert_eq!(bob.path().await, format!("/requests/{request_id}"));
    bob.click(&format!("{decide} button.primary")).await;
    bob.wait_for_text("the approval", Duration::from_secs(10), |t| {
        t.to_lowercase().contains("approved")
    })
    .await;
    let seen = jg.request_by_id(BOB_SECRET, &request_id).await;
    assert_eq!(seen["state"], "approved", "{seen}");
}

#[tokio::test]
async fn signing_in_needs_the_secret_and_signing_out_ends_the_page() {
    let (_pg, jg) = world().await;
    let browser = Chromium::start().await;
    browser
        .goto(&format!("{}/requests/new", jg.admin_url()))
        .await;
    assert_eq!(browser.path().await, "/signin");
    browser.fill("#secret", "not-the-secret").await;
    browser
        .click("form[action='/signin'] button[type=submit]")
        .await;
    let text = browser.text().await;
    assert!(text.contains("matches no identity"), "{text}");
    assert!(!browser.has("#reason").await);

    // The right secret leads on to the page first asked for.
    browser.fill("#secret", ALICE_SECRET).await;
    browser
        .click("form[action='/signin'] button[type=submit]")
        .await;
    browser.wait_for("#reason").await;
    assert_eq!(browser.path().await, "/requests/new");
    jg.wait_for_audit("the sign-in", |v| {
        v["event"] == "sign_in" && v["identity"] == "alice"
    })
    .await;

    // The cookie is HttpOnly: the page's scripts cannot read it.
    assert_eq!(
        browser.js("return document.cookie;").await,
        Value::String(String::new())
    );
    let cookies = browser.client.get_all_cookies().await.unwrap();
    let cookie = cookies
        .iter()
        .find(|c| c.name() == "jitgate_page")
        .expect("the sign-in cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");

    browser.click("form[action='/signout'] button").await;
    browser.wait_for("#secret").await;
    browser.goto(&format!("{}/", jg.admin_url())).await;
    assert_eq!(browser.path().await, "/signin", "signed out for good");
    jg.wait_for_audit("the sign-out", |v| {
        v["event"] == "sign_out" && v["identity"] == "alice"
    })
    .await;
}

#[tokio::test]
async fn the_page_fits_a_phone_and_every_field_has_a_label() {
    let (_pg, jg) = world().await;
    let phone = Chromium::start_sized(390, 844).await;
    sign_in_with_secret(&phone, &jg, ALICE_SECRET).await;
    for path in ["/", "/requests/new"] {
        phone.goto(&format!("{}{path}", jg.admin_url())).await;
        phone.wait_for("h1").await;
        let overflow = phone
            .js("return document.documentElement.scrollWidth - window.innerWidth;")
            .await;
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "{path} scrolls sideways by {overflow}px"
        );
        let unlabelled = phone
            .js("return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]\
                 .filter(e => !(e.id && document.querySelector(`label[for='${e.id}']`)) && !e.getAttribute('aria-label'))\
                 .map(e => e.name);")
            .await;
        assert_eq!(
            unlabelled,
            serde_json::json!([]),
            "{path}: fields without a label"
        );
    }
    shot(&phone, "page-phone.png").await;

    // The keyboard alone reaches every part of the request form, in order,
    // starting with the link that skips the navigation.
    phone
        .goto(&format!("{}/requests/new", jg.admin_url()))
        .await;
    phone.wait_for("#reason").await;
    let mut reached = Vec::new();
    for _ in 0..12 {
        let focused = phone.client.active_element().await.unwrap();
        focused
            .send_keys(&char::from(fantoccini::key::Key::Tab).to_string())
            .await
            .unwrap();
        let now = phone
            .js("const e = document.activeElement; return e.id || e.className || e.tagName;")
            .await;
        reached.push(now.as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(reached[0], "skip", "{reached:?}");
    let order: Vec<usize> = ["target", "level", "duration", "reason", "primary"]
        .iter()
        .map(|want| {
            reached
                .iter()
                .position(|r| r == want)
                .unwrap_or_else(|| panic!("Tab never reaches {want}: {reached:?}"))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{reached:?}");
}

#[tokio::test]
async fn signing_in_through_the_identity_provider_in_the_browser() {
    let pg = PgServer::start().await;
    let provider = OidcProvider::start(
        vec![jitgate_client("jitgate", "ES256")],
        &[Account {
            login: "lee",
            email: "lee@example.com",
            groups: &["approver"],
        }],
    )
    .await;
    let jg = Jitgate::launch(provider.jitgate_config(&pg, "jitgate", "1h", "30s", POLICY)).await;

    let browser = Chromium::start().await;
    browser
        .goto(&format!("{}/requests/new", jg.admin_url()))
        .await;
    shot(&browser, "page-sign-in.png").await;
    browser.click("a[href^='/signin/provider']").await;
    // The provider's own login and consent pages, as a person fills them.
    let home = jg.admin_url();
    for _ in 0..100 {
        let url = browser.client.current_url().await.unwrap().to_string();
        if !url.starts_with(&home) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..8 {
        let url = browser.client.current_url().await.unwrap().to_string();
        if url.starts_with(&home) {
            // Back: the page that carries the new cookie to where it began.
            for _ in 0..50 {
                if browser.has(".who").await {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            break;
        }
        if browser.has("input[name=login]").await {
            browser.fill("input[name=login]", "lee").await;
            browser.fill("input[name=password]", "any").await;
        }
        if browser.has("form").await {
            browser
                .js("document.querySelector('form').submit(); return true;")
                .await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if !browser.has(".who").await {
        panic!(
            "not back on the page: {} says {}\n--- jitgate log\n{}",
            browser.client.current_url().await.unwrap(),
            browser.text().await,
            jg.log()
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert_eq!(
        browser.path().await,
        "/requests/new",
        "back where the person started"
    );
    let who = browser.text_of(".who").await;
    assert!(who.contains("lee@example.com"), "{who}");
    let signed_in = jg
        .wait_for_audit("the page's sign-on", |v| {
            v["event"] == "sign_in"
                && v["identity"] == "lee@example.com"
                && v["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("approver page"))
        })
        .await;
    let credential = signed_in["credential"].as_str().unwrap().to_owned();
    assert!(
        !jg.audit_text().contains("jgc_"),
        "no credential secret in the audit log"
    );

    // Signing out ends the credential the page held.
    browser.click("form[action='/signout'] button").await;
    browser.wait_for("a[href^='/signin/provider']").await;
    jg.wait_for_audit("the credential's end", |v| {
        v["event"] == "credential_revoked" && v["credential"] == credential.as_str()
    })
    .await;
}

#[tokio::test]
async fn the_admin_listener_serves_the_page_over_its_own_tls_with_a_secure_cookie() {
    let pg = PgServer::start().await;
    let mut config = JitgateOptions {
        policies: POLICY.to_owned(),
        ..JitgateOptions::default()
    }
    .config(&pg);
    config.admin_tls = true;
    let jg = Jitgate::launch(config).await;
    let https = jg.admin_url();
    assert!(https.starts_with("https://"), "{https}");
    // Plain HTTP on the same port gets no page.
    let plain = https.replacen("https://", "http://", 1);
    let answer = reqwest::Client::new()
        .get(format!("{plain}/signin"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        answer.as_ref().map_or(true, |a| !a.status().is_success()),
        "plain HTTP was answered: {answer:?}"
    );

    let browser = Chromium::start().await;
    sign_in_with_secret(&browser, &jg, ALICE_SECRET).await;
    let cookies = browser.client.get_all_cookies().await.unwrap();
    let cookie = cookies
        .iter()
        .find(|c| c.name() == "__Host-jitgate_page")
        .expect("the sign-in cookie, with the __Host- prefix");
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(cookie.http_only(), Some(true));
}
