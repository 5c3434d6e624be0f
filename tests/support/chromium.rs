//! A real browser for the approver page's tests: Debian's Chromium, headless,
//! driven over WebDriver (chromedriver) with fantoccini.
//!
//! Each [`Chromium`] is its own chromedriver on a free port with its own
//! profile directory, so two people (a developer and an approver) are two
//! browsers with their own cookies, and tests run in parallel. `Drop` ends
//! the browser and its driver.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use super::process::free_port;
use super::wait::within;

/// Where Debian puts them (`apt install chromium chromium-driver`).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub struct Chromium {
    pub client: Client,
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// A headless browser with a desktop-sized window.
    pub async fn start() -> Chromium {
        Chromium::start_sized(1280, 1000).await
    }

    pub async fn start_sized(width: u32, height: u32) -> Chromium {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "the page's tests need Chromium and its driver: apt-get install chromium chromium-driver"
        );
        let port = free_port();
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().expect("a profile directory");
        let caps = json!({
            // A jitgate whose admin listener serves TLS shows its own
            // self-signed certificate.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    // The tests run as root, where Chromium's sandbox cannot.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let url = format!("http://127.0.0.1:{port}");
        let client = within(
            Duration::from_secs(30),
            "chromedriver to start Chromium",
            async {
                loop {
                    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                    match ClientBuilder::new(connector)
                        .capabilities(caps.clone())
                        .connect(&url)
                        .await
                    {
                        Ok(client) => return client,
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            },
        )
        .await;
        Chromium {
            client,
            driver,
            _profile: profile,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("open the page");
    }

    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("the current URL");
        url.path().to_owned()
    }

    /// The element `css` names, waiting up to 10 s for it to appear.
    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` on the page within 10 s: {e}"))
    }

    /// Whether `css` names something on the page now.
    pub async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .expect("search the page")
            .is_empty()
    }

    /// The text `css` shows, read in the page (a live update may replace
    /// the element between finding and reading it).
    pub async fn text_of(&self, css: &str) -> String {
        self.wait_for(css).await;
        let text = self
            .client
            .execute(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
                vec![Value::String(css.to_owned())],
            )
            .await
            .expect("read an element's text");
        match text {
            Value::String(text) => text,
            _ => Box::pin(self.text_of(css)).await,
        }
    }

    /// The text of the whole page.
    pub async fn text(&self) -> String {
        self.text_of("body").await
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.wait_for(css).await;
        field.clear().await.expect("clear a field");
        field.send_keys(text).await.expect("type into a field");
    }

    pub async fn click(&self, css: &str) {
        self.wait_for(css).await.click().await.expect("click");
    }

    pub async fn select(&self, css: &str, value: &str) {
        self.wait_for(css)
            .await
            .select_by_value(value)
            .await
            .expect("pick an option");
    }

    /// Run `script` in the page; its return value.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .expect("run a script in the page")
    }

    /// Wait until `check` holds for the page's text, up to `limit`.
    pub async fn wait_for_text(
        &self,
        what: &str,
        limit: Duration,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let text = self.text().await;
            if check(&text) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited {limit:?} for {what}; the page says:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Save a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let png = self.client.screenshot().await.expect("a screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("the screenshot's directory");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The driver takes its browser with it.
        let _ = self.driver.start_kill();
    }
}

/// Where the README's screenshots go when a test is asked to remake them
/// (`JITGATE_SCREENSHOTS=docs`); a temporary place otherwise.
pub fn screenshot_path(name: &str) -> Option<PathBuf> {
    match std::env::var("JITGATE_SCREENSHOTS").ok()?.as_str() {
        "" => None,
        dir => Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(dir)
                .join(name),
        ),
    }
}
