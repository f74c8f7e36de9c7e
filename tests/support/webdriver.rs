//! A small synchronous WebDriver client for browser tests: starts
//! `chromedriver` on a free port, opens one headless Chromium session, and
//! speaks the W3C WebDriver HTTP+JSON protocol to it with `ureq`.
//!
//! Only what the tests need: navigate, find elements by CSS, click, read
//! text and attributes, run a script, take a screenshot, read the browser's
//! console. Every call returns `Result<_, String>` so a test can put the
//! error in its own failure message.

#![allow(dead_code)] // each test uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The key under which WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long one WebDriver command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A reference to an element of the current page.
#[derive(Clone, Debug)]
pub struct Element(String);

/// A `chromedriver` process with one browser session; the session is
/// deleted (closing Chromium) and chromedriver killed when dropped.
pub struct Browser {
    agent: ureq::Agent,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
    driver: Child,
    log_file: PathBuf,
    // Dropped last, after Chromium has quit.
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium
    /// session. The port is free when picked, but another test's server
    /// may take it before chromedriver binds it: then chromedriver exits
    /// (or another server answers), and a new port is tried, three in all.
    pub fn start() -> Result<Browser, String> {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Browser::start_on(crate::support::free_port()) {
                Ok(browser) => return Ok(browser),
                Err(e) => failures.push(e),
            }
        }
        Err(failures.join("\n\nthen: "))
    }

    /// Starts chromedriver on `port` and opens a headless Chromium session.
    fn start_on(port: u16) -> Result<Browser, String> {
        let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
        let log_file = profile.path().join("chromedriver.log");
        let log = std::fs::File::create(&log_file).map_err(|e| e.to_string())?;
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("could not start {CHROMEDRIVER}: {e}"))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(COMMAND_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            agent,
            session: String::new(),
            driver,
            log_file,
            _profile: profile,
        };

        // Wait until chromedriver says it is ready.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = browser.request("GET", &format!("{base}/status"), None);
            if let Ok(value) = &status {
                if value["ready"] == json!(true) {
                    break;
                }
            }
            if let Ok(Some(exit)) = browser.driver.try_wait() {
                return Err(format!(
                    "chromedriver exited with {exit}; its log:\n{}",
                    browser.driver_log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "chromedriver on port {port} was not ready within 20 s (last /status: {status:?}); its log:\n{}",
                    browser.driver_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }

        let user_data_dir = browser._profile.path().join("chromium-profile");
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--disable-quic".to_string(),
            "--no-first-run".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-component-update".to_string(),
            "--disable-sync".to_string(),
            "--autoplay-policy=no-user-gesture-required".to_string(),
            format!("--user-data-dir={}", user_data_dir.display()),
            "--window-size=1280,900".to_string(),
        ];
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "timeouts": {"pageLoad": 30_000, "script": 30_000, "implicit": 0},
                    "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
                    "goog:loggingPrefs": {"browser": "ALL"},
                }
            }
        });
        let created = browser
            .request("POST", &format!("{base}/session"), Some(capabilities))
            .map_err(|e| {
                format!(
                    "could not open a Chromium session: {e}; chromedriver's log:\n{}",
                    browser.driver_log()
                )
            })?;
        let id = created["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no sessionId in {created}"))?;
        browser.session = format!("{base}/session/{id}");
        Ok(browser)
    }

    /// Opens `url` and waits for its load event.
    pub fn goto(&self, url: &str) -> Result<(), String> {
        self.command("POST", "/url", Some(json!({ "url": url })))
            .map(drop)
    }

    /// Every element matching the CSS `selector`, in document order.
    pub fn find_all(&self, selector: &str) -> Result<Vec<Element>, String> {
        let found = self.command(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": selector})),
        )?;
        found
            .as_array()
            .ok_or_else(|| format!("not a list of elements: {found}"))?
            .iter()
            .map(|e| {
                e[ELEMENT_KEY]
                    .as_str()
                    .map(|id| Element(id.to_string()))
                    .ok_or_else(|| format!("not an element: {e}"))
            })
            .collect()
    }

    /// The first element matching `selector`, if any.
    pub fn find(&self, selector: &str) -> Result<Option<Element>, String> {
        Ok(self.find_all(selector)?.into_iter().next())
    }

    /// Clicks an element (scrolling it into view first, as a user would).
    pub fn click(&self, element: &Element) -> Result<(), String> {
        self.command(
            "POST",
            &format!("/element/{}/click", element.0),
            Some(json!({})),
        )
        .map(drop)
    }

    /// Clicks the first element matching `selector`, waiting up to `limit`
    /// for one that can be clicked: the page may redraw (replacing the
    /// element) between finding and clicking it.
    pub fn click_css(&self, selector: &str, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let error = match self.find(selector)? {
                Some(element) => match self.click(&element) {
                    Ok(()) => return Ok(()),
                    Err(e) => e,
                },
                None => format!("no element matches {selector:?}"),
            };
            if Instant::now() > deadline {
                return Err(format!("could not click {selector:?}: {error}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An element's rendered text.
    pub fn text(&self, element: &Element) -> Result<String, String> {
        let text = self.command("GET", &format!("/element/{}/text", element.0), None)?;
        Ok(text.as_str().unwrap_or_default().to_string())
    }

    /// An element's attribute, `None` when it has none.
    pub fn attribute(&self, element: &Element, name: &str) -> Result<Option<String>, String> {
        let value = self.command(
            "GET",
            &format!("/element/{}/attribute/{name}", element.0),
            None,
        )?;
        Ok(value.as_str().map(str::to_string))
    }

    /// Runs `script` (a function body: use `return`) with `args` in the page.
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value, String> {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Result<Vec<u8>, String> {
        let encoded = self.command("GET", "/screenshot", None)?;
        let encoded = encoded
            .as_str()
            .ok_or_else(|| format!("a screenshot that is not a string: {encoded}"))?;
        base64_decode(encoded)
    }

    /// Saves a screenshot as `path` (a PNG), creating its directory.
    pub fn save_screenshot(&self, path: &Path) -> Result<(), String> {
        let png = self.screenshot()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The browser console's messages since the last call (errors from the
    /// page's scripts, failed requests), one per line.
    pub fn console_log(&self) -> String {
        match self.command("POST", "/se/log", Some(json!({"type": "browser"}))) {
            Ok(Value::Array(entries)) => entries
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["level"].as_str().unwrap_or("?"),
                        e["message"].as_str().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Ok(other) => other.to_string(),
            Err(e) => format!("(no console log: {e})"),
        }
    }

    /// What chromedriver has written so far.
    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// A command of this session: `path` is relative to `/session/ID`.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.request(method, &format!("{}{path}", self.session), body)
    }

    /// One WebDriver request; its `value`, or the error it reports.
    fn request(&self, method: &str, url: &str, body: Option<Value>) -> Result<Value, String> {
        let response = match (method, body) {
            ("GET", _) => self.agent.get(url).call(),
            ("DELETE", _) => self.agent.delete(url).call(),
            (_, body) => self
                .agent
                .post(url)
                .send_json(body.unwrap_or_else(|| json!({}))),
        };
        let mut response = response.map_err(|e| format!("{method} {url}: {e}"))?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .map_err(|e| format!("{method} {url}: reading the answer: {e}"))?;
        let answer: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{method} {url}: {status}, not JSON ({e}): {text}"))?;
        let value = answer["value"].clone();
        if !status.is_success() {
            // A WebDriver error: {"value": {"error", "message", "stacktrace"}}.
            // (Only by the status: a script's result may well have an "error" key.)
            return Err(match value["error"].as_str() {
                Some(error) => format!(
                    "{method} {url}: {status} {error}: {}",
                    value["message"].as_str().unwrap_or_default()
                ),
                None => format!("{method} {url}: {status}: {text}"),
            });
        }
        Ok(value)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.request("DELETE", &self.session, None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Decodes standard base64 (with or without padding; whitespace ignored).
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut bits: u32 = 0;
    let mut count = 0;
    for byte in text.bytes() {
        let six = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' | b' ' => continue,
            other => return Err(format!("{:?} is not base64", other as char)),
        };
        bits = (bits << 6) | u32::from(six);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Ok(out)
}

#[test]
fn base64_decodes_what_it_should() {
    assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
    assert_eq!(base64_decode("aGVsbG8h").unwrap(), b"hello!");
    assert_eq!(base64_decode("aGk").unwrap(), b"hi");
    assert_eq!(base64_decode("").unwrap(), b"");
    assert!(base64_decode("a*b").is_err());
}
