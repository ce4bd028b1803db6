//! A real browser for the console's tests: Debian's headless `chromium`
//! driven through `chromedriver` with the W3C WebDriver protocol (JSON
//! over HTTP/1.1 on loopback; the few commands the tests use, written
//! here rather than pulling a WebDriver crate and its dependencies).
//!
//! `Browser::start` returns None (after printing `SKIPPED <test>: why`)
//! when chromium or chromedriver is not installed, unless
//! `ALERTRELAY_REQUIRE_BROWSER` is set (`.ci/run` sets it after installing
//! both), in which case the test fails instead.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// WebDriver's codes of the Tab and Enter keys, for `Browser::keys`.
pub const TAB: &str = "\u{E004}";
pub const ENTER: &str = "\u{E007}";
/// The W3C name of an element reference in answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: tokio::process::Child,
    port: u16,
    session: String,
}

/// Whether the run must have a browser (`ALERTRELAY_REQUIRE_BROWSER` set
/// to anything but empty or `0`).
pub fn required() -> bool {
    std::env::var("ALERTRELAY_REQUIRE_BROWSER").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn skip(test: &str, why: &str) -> Option<Browser> {
    use std::io::Write;
    assert!(
        !required(),
        "{test}: ALERTRELAY_REQUIRE_BROWSER is set, but {why}"
    );
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why} (ALERTRELAY_REQUIRE_BROWSER=1 makes this a failure)"
    );
    None
}

/// One HTTP/1.1 exchange with chromedriver: the status and the JSON body.
async fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    if std::env::var("ALERTRELAY_BROWSER_TRACE").is_ok() {
        eprintln!(
            "webdriver: {method} {path} {}",
            body.map(|b| b.to_string()).unwrap_or_default()
        );
    }
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to chromedriver");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .await
        .expect("write to chromedriver");
    // chromedriver may keep the connection open after its answer: read
    // the head, then exactly Content-Length bytes (or chunks to the end).
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).await.expect("read from chromedriver");
        assert!(
            n > 0,
            "chromedriver closed the connection without an answer"
        );
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("an HTTP status");
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let mut rest = raw[head_end..].to_vec();
    match length {
        Some(len) => {
            while rest.len() < len {
                let n = s.read(&mut buf).await.expect("read from chromedriver");
                assert!(n > 0, "chromedriver's answer was cut short");
                rest.extend_from_slice(&buf[..n]);
            }
            rest.truncate(len);
        }
        None => {
            s.read_to_end(&mut rest)
                .await
                .expect("read from chromedriver");
        }
    }
    let rest = String::from_utf8_lossy(&rest).into_owned();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(&rest)
    } else {
        rest
    };
    let json = serde_json::from_str(&body).unwrap_or(Value::Null);
    (status, json)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n.min(rest.len())]);
        s = rest.get(n + 2..).unwrap_or("");
    }
    out
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session at 1280×800,
    /// English, trusting the console's certificate (which chains to the
    /// federation CA, unknown to the browser).
    pub async fn start(test: &str) -> Option<Browser> {
        Self::start_with(test, "en-US").await
    }

    pub async fn start_with(test: &str, lang: &str) -> Option<Browser> {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            if !std::path::Path::new(bin).exists() {
                return skip(
                    test,
                    &format!("{bin} is not installed (apt-get install chromium chromium-driver)"),
                );
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                let _ = s.shutdown().await;
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,800",
                         format!("--lang={lang}")],
                "prefs": {"intl.accept_languages": lang},
            }
        }}});
        let (status, v) = http(port, "POST", "/session", Some(&caps)).await;
        assert_eq!(status, 200, "new WebDriver session: {v}");
        let session = v["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        Some(Browser {
            driver,
            port,
            session,
        })
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let (status, v) = http(self.port, method, &path, body.as_ref()).await;
        assert_eq!(status, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url}))).await;
    }

    pub async fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    pub async fn title(&self) -> String {
        self.cmd("GET", "/title", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// The page's HTML as the browser has it now.
    pub async fn source(&self) -> String {
        self.cmd("GET", "/source", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// The element `css` selects, if any.
    pub async fn find(&self, css: &str) -> Option<String> {
        let path = format!("/session/{}/element", self.session);
        let body = json!({"using": "css selector", "value": css});
        let (status, v) = http(self.port, "POST", &path, Some(&body)).await;
        (status == 200).then(|| v["value"][ELEMENT].as_str().unwrap_or("").to_owned())
    }

    async fn element(&self, css: &str) -> String {
        self.find(css)
            .await
            .unwrap_or_else(|| panic!("no element {css:?} on the page"))
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.element(css).await;
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})))
            .await;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let e = self.element(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})))
            .await;
    }

    pub async fn text(&self, css: &str) -> String {
        let e = self.element(css).await;
        self.cmd("GET", &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Element `e`'s text, or `None` when it is gone (stale).
    async fn text_of(&self, e: &str) -> Option<String> {
        let path = format!("/session/{}/element/{e}/text", self.session);
        let (status, v) = http(self.port, "GET", &path, None).await;
        (status == 200).then(|| v["value"].as_str().unwrap_or("").to_owned())
    }

    /// Runs `script` in the page (WebDriver's own channel, not subject to
    /// the page's CSP) and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Types `keys` on the keyboard, into whatever has the focus (WebDriver
    /// key actions: `TAB` and `ENTER` are the keys of those names).
    pub async fn keys(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|c| {
                let k = c.to_string();
                [
                    json!({"type": "keyDown", "value": k}),
                    json!({"type": "keyUp", "value": k}),
                ]
            })
            .collect();
        let body = json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]});
        self.cmd("POST", "/actions", Some(body)).await;
    }

    /// The id of the element that has the keyboard focus.
    pub async fn focused(&self) -> String {
        self.eval("return document.activeElement ? document.activeElement.id : ''")
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Presses Tab (at most `limit` times) until the element with id `id`
    /// has the focus: it can be reached with the keyboard alone.
    pub async fn tab_to(&self, id: &str, limit: usize) {
        for _ in 0..limit {
            if self.focused().await == id {
                return;
            }
            self.keys(TAB).await;
        }
        assert_eq!(
            self.focused().await,
            id,
            "#{id} not reached with {limit} presses of Tab"
        );
    }

    /// Sets the window's size (CSS pixels).
    pub async fn window(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// The browser's cookies for the current page, with their attributes.
    pub async fn cookies(&self) -> Vec<Value> {
        self.cmd("GET", "/cookie", None)
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let b64 = self.cmd("GET", "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or(""))
            .expect("a base64 PNG")
    }

    /// Polls until `check` holds of the page's text `css`.
    pub async fn wait_text(
        &self,
        css: &str,
        within: Duration,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            // The page may be replaced between finding the element and
            // reading it (a form's navigation): a stale element reads as
            // nothing yet.
            let t = match self.find(css).await {
                Some(e) => self.text_of(&e).await.unwrap_or_default(),
                None => String::new(),
            };
            if check(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "{css:?} never as expected; last {t:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls until the page's URL satisfies `check` (a click's navigation
    /// may still be under way when the click returns); returns it.
    pub async fn wait_url(&self, within: Duration, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let u = self.url().await;
            if check(&u) {
                return u;
            }
            assert!(
                Instant::now() < deadline,
                "the page never got there; last {u:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls until the page's HTML contains `text`.
    pub async fn wait_source(&self, within: Duration, text: &str) {
        let deadline = Instant::now() + within;
        loop {
            if self.source().await.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {text:?}; last {}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn quit(self) {
        // Drop ends the session (and so Chromium) and chromedriver.
        drop(self);
    }
}

impl Drop for Browser {
    /// Ends the WebDriver session, so chromedriver closes Chromium, also
    /// when a test panics (a killed chromedriver would leave Chromium
    /// running); then chromedriver goes (`kill_on_drop`).
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let req = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.session, self.port
        );
        if s.write_all(req.as_bytes()).is_ok() {
            // The answer comes once Chromium is gone.
            let _ = s.read(&mut [0u8; 1024]);
        }
        let _ = self.driver.start_kill();
    }
}
