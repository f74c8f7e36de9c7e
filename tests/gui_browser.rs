//! The peer's web GUI in a real browser: headless Chromium, driven through
//! ChromeDriver, opens the pages of an audio client and a video client,
//! checks each lists only its kind of file, starts a download, plays the
//! file while it is still downloading, and waits for 100% and a file on
//! disk with the source's SHA-256. Screenshots go to
//! `target/gui-screenshots/`.
//!
//! Needs `chromium`, `chromium-driver` and `ffmpeg` (Debian packages;
//! `.ci/run` installs them). Without them the tests print "skipped" and
//! pass, except when `CI` is set: CI must have them.

mod support;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{eventually, target_dir, PeerProcess, TrackerProcess};
use webdriver::{Browser, CHROMEDRIVER, CHROMIUM};

/// The seeder's upload limit: the downloads take about 30 s at this rate,
/// long enough to play a file while it is still coming, even where a busy
/// machine is slow to start the browser's player.
const UPLOAD_LIMIT: &str = "120kB";
const UPLOAD_LIMIT_BYTES: u64 = 120_000;
/// A test file must take at least this long to download at that limit.
const MIN_DOWNLOAD_SECS: u64 = 20;
/// How long a download may take before the test gives up.
const DOWNLOAD_WAIT: Duration = Duration::from_secs(120);

/// A `file:` URL of `path`: `file:///tmp/x` on Unix, `file:///C:/x` on
/// Windows (whose paths start with a drive, not `/`).
fn file_url(path: &std::path::Path) -> String {
    let text = path.to_string_lossy().replace('\\', "/");
    match text.strip_prefix('/') {
        Some(rest) => format!("file:///{rest}"),
        None => format!("file:///{text}"),
    }
}

#[test]
fn gui_lists_the_profile_files_and_plays_them_while_downloading() {
    if !tools_installed(&[CHROMIUM, CHROMEDRIVER, "ffmpeg"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    let audio = Media::new(&media, "tone.wav", "audio");
    write_wav(&audio.path, 40, 44_100);
    let video = Media::new(&media, "testcard.webm", "video");
    write_webm(&video.path, 30);
    for file in [&audio, &video] {
        let size = std::fs::metadata(&file.path).unwrap().len();
        assert!(
            size > MIN_DOWNLOAD_SECS * UPLOAD_LIMIT_BYTES,
            "{} is only {size} bytes: at {UPLOAD_LIMIT}/s it downloads in under {MIN_DOWNLOAD_SECS} s, \
             too fast to play it while it downloads; make it bigger",
            file.name
        );
    }

    let tracker = TrackerProcess::start(&[]);
    let mut seeder = PeerProcess::start(
        &dir.path().join("seeder"),
        tracker.addr,
        &[
            "--upload-limit",
            UPLOAD_LIMIT,
            "share",
            audio.path.to_str().unwrap(),
            video.path.to_str().unwrap(),
        ],
    );
    let mut keys = Vec::new();
    for _ in 0..2 {
        let line = seeder.expect("sharing ");
        let key = line.rsplit(" as ").next().unwrap().to_string();
        keys.push((line, key));
    }
    let key_of = |file: &Media| {
        keys.iter()
            .find(|(line, _)| line.contains(&file.name))
            .map(|(_, key)| key.clone())
            .unwrap_or_else(|| panic!("the seeder did not say it shares {}: {keys:?}", file.name))
    };
    let (audio_key, video_key) = (key_of(&audio), key_of(&video));

    let browser = Browser::start().unwrap_or_else(|e| panic!("{e}"));
    let shots = target_dir().join("gui-screenshots");
    let mut saved = Vec::new();
    for (file, key, other) in [(&audio, &audio_key, &video), (&video, &video_key, &audio)] {
        let home = dir.path().join(format!("{}-client", file.kind));
        let mut peer = PeerProcess::start(&home, tracker.addr, &["--profile", file.kind]);
        let gui = peer.gui_url() + "/";
        let client = GuiClient {
            browser: &browser,
            gui,
            kind: file.kind,
            peer: &peer,
        };
        saved.extend(client.download_and_play(file, key, other, &home, &shots));
    }
    println!("screenshots:");
    for path in saved {
        println!("  {}", path.display());
    }
}

/// The browser plumbing on its own, without a peer: open a local page,
/// click a button that plays a WAV, see it play, take a screenshot. When
/// this fails, the trouble is Chromium or ChromeDriver, not the GUI.
#[test]
fn webdriver_plumbing_clicks_plays_audio_and_takes_a_screenshot() {
    if !tools_installed(&[CHROMIUM, CHROMEDRIVER]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_wav(&dir.path().join("tone.wav"), 5, 8_000);
    let page = dir.path().join("page.html");
    std::fs::write(
        &page,
        "<!doctype html><title>plumbing</title>\
         <button id=go onclick=\"this.textContent='playing'; \
         document.getElementById('player').play()\">Play</button>\
         <audio id=player src=tone.wav controls></audio>",
    )
    .unwrap();
    let browser = Browser::start().unwrap_or_else(|e| panic!("{e}"));
    browser.goto(&file_url(&page)).unwrap();
    browser.click_css("#go", Duration::from_secs(5)).unwrap();
    let button = browser.find("#go").unwrap().expect("the button");
    assert_eq!(browser.text(&button).unwrap(), "playing");
    assert_eq!(
        browser.attribute(&button, "id").unwrap().as_deref(),
        Some("go")
    );

    let time = || {
        browser
            .execute(
                "return document.getElementById('player').currentTime;",
                vec![],
            )
            .unwrap()
            .as_f64()
            .unwrap_or(0.0)
    };
    assert!(
        eventually(Duration::from_secs(10), || time() > 0.5),
        "the audio did not play: currentTime {}; console: {}",
        time(),
        browser.console_log()
    );
    let first = time();
    std::thread::sleep(Duration::from_millis(700));
    assert!(time() > first, "currentTime stuck at {first}");

    let png = browser.screenshot().unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000);
}

// ---------------------------------------------------------------------------
// One client's page.

/// A test file, its name and kind.
struct Media {
    name: String,
    kind: &'static str,
    path: PathBuf,
}

impl Media {
    fn new(dir: &Path, name: &str, kind: &'static str) -> Media {
        Media {
            name: name.to_string(),
            kind,
            path: dir.join(name),
        }
    }
}

/// A client peer's GUI, open in the browser.
struct GuiClient<'a> {
    browser: &'a Browser,
    /// `http://127.0.0.1:PORT/`
    gui: String,
    kind: &'static str,
    peer: &'a PeerProcess,
}

/// Reads what the page shows, for the checks and for failure messages.
const PAGE_STATE: &str = r#"
const text = (e) => (e ? e.textContent.trim() : null);
const error = document.querySelector('div#error');
const player = document.getElementById('player');
const keyOf = (e) => { const owner = e.closest('[data-key]'); return owner ? owner.dataset.key : null; };
return {
  profile: document.body.dataset.profile || null,
  error: error ? (error.hidden || getComputedStyle(error).display === 'none' ? '' : text(error)) : '(no div#error)',
  rows: [...document.querySelectorAll('table#files tr.file')].map((r) => ({
    key: r.dataset.key, kind: r.dataset.kind, text: r.innerText.replace(/\s+/g, ' ').trim() })),
  downloads: [...document.querySelectorAll('#downloads div.download')].map((d) => ({
    key: d.dataset.key, percent: text(d.querySelector('span.percent')),
    text: d.innerText.replace(/\s+/g, ' ').trim() })),
  play_buttons: [...document.querySelectorAll('button.play')].map(keyOf),
  now_playing: text(document.getElementById('now-playing')),
  player: player ? {
    tag: player.tagName, src: player.currentSrc || player.src, time: player.currentTime,
    paused: player.paused, ready_state: player.readyState, network_state: player.networkState,
    error: player.error ? player.error.code + ' ' + player.error.message : null } : null,
};
"#;

impl GuiClient<'_> {
    /// The whole scenario on this client's page; the screenshots it saved.
    fn download_and_play(
        &self,
        file: &Media,
        key: &str,
        other: &Media,
        home: &Path,
        shots: &Path,
    ) -> Vec<PathBuf> {
        self.browser
            .goto(&self.gui)
            .unwrap_or_else(|e| self.fail(&format!("could not open the page: {e}")));

        // The file list: only this profile's kind, with our file in it.
        let state = self.wait_for(
            &format!("table#files to list {} and body[data-profile]", file.name),
            Duration::from_secs(30),
            |s| s["profile"] == json!(self.kind) && row_of(s, key).is_some(),
        );
        let rows = state["rows"].as_array().unwrap();
        for row in rows {
            if row["kind"] != json!(self.kind)
                || row["text"].as_str().unwrap().contains(&other.name)
            {
                self.fail(&format!(
                    "the {} client lists {row}; it should list {} files only",
                    self.kind, self.kind
                ));
            }
        }
        let listed = self.api("api/files");
        let api_kinds: Vec<&Value> = listed["files"]
            .as_array()
            .map(|f| f.iter().map(|f| &f["kind"]).collect())
            .unwrap_or_default();
        assert!(
            !api_kinds.is_empty() && api_kinds.iter().all(|k| **k == json!(self.kind)),
            "GET /api/files on the {} client: {listed}",
            self.kind
        );

        // Download it, and play it as soon as the page offers to.
        self.click(&format!(
            "table#files tr.file[data-key=\"{key}\"] button.download"
        ));
        self.wait_for(
            &format!("a button.play for {}", file.name),
            Duration::from_secs(30),
            |s| {
                s["play_buttons"]
                    .as_array()
                    .is_some_and(|b| b.contains(&json!(key)))
            },
        );
        let progress = self.progress(key);
        if progress >= 1.0 {
            self.fail(&format!(
                "{} was downloaded before it could be played (progress {progress}): \
                 lower the upload limit or make the file bigger",
                file.name
            ));
        }
        self.click(&format!(
            "div.download[data-key=\"{key}\"] button.play, tr.file[data-key=\"{key}\"] button.play"
        ));
        let media_path = format!("/media/{key}");
        let first = self.wait_for(
            &format!("#player to play {media_path} past 0.5 s"),
            Duration::from_secs(40),
            |s| {
                s["player"]["src"]
                    .as_str()
                    .is_some_and(|src| src.ends_with(&media_path))
                    && s["player"]["time"].as_f64().unwrap_or(0.0) > 0.5
            },
        );
        // Playing while downloading: the download had not ended when the
        // player was seen past 0.5 s.
        let progress = self.progress(key);
        std::thread::sleep(Duration::from_millis(1500));
        let second = self.state();
        let (t1, t2) = (
            first["player"]["time"].as_f64().unwrap(),
            second["player"]["time"].as_f64().unwrap_or(0.0),
        );
        if t2 <= t1 + 0.5 {
            self.fail(&format!(
                "#player stopped playing: currentTime {t1} then, 1.5 s later, {t2}"
            ));
        }
        if progress >= 1.0 {
            self.fail(&format!(
                "the download ended before playing could be checked (progress {progress}): \
                 lower the upload limit or make the file bigger"
            ));
        }
        let tag = if self.kind == "audio" {
            "AUDIO"
        } else {
            "VIDEO"
        };
        assert_eq!(second["player"]["tag"], json!(tag), "{}", self.explain());
        assert!(
            second["now_playing"]
                .as_str()
                .is_some_and(|n| n.contains(&file.name)),
            "#now-playing should name {}; {}",
            file.name,
            self.explain()
        );
        println!(
            "{} client: #player at {t1:.1} s then {t2:.1} s while the download is at {:.0}%",
            self.kind,
            progress * 100.0
        );
        let mut saved = vec![self.screenshot(shots, "playing")];

        // The end: 100% on the page, and the very same bytes on disk.
        self.wait_for(
            &format!("span.percent \"100%\" for {}", file.name),
            DOWNLOAD_WAIT,
            |s| download_of(s, key)["percent"] == json!("100%"),
        );
        saved.push(self.screenshot(shots, "done"));
        let want = sha256(&file.path);
        let got = home.join("downloads").join(&file.name);
        assert!(
            eventually(Duration::from_secs(20), || got.exists()
                && sha256(&got) == want),
            "{} is not the source's bytes (exists: {}); the download dir holds {:?}; /api/shares: {}",
            got.display(),
            got.exists(),
            std::fs::read_dir(home.join("downloads"))
                .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
                .unwrap_or_default(),
            self.api("api/shares")
        );
        saved
    }

    /// What the page shows now.
    fn state(&self) -> Value {
        self.browser
            .execute(PAGE_STATE, vec![])
            .unwrap_or_else(|e| json!({ "webdriver error": e }))
    }

    /// Polls the page until `check` holds; fails the test after `limit`.
    fn wait_for(&self, what: &str, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let state = self.state();
            if check(&state) {
                return state;
            }
            if Instant::now() > deadline {
                self.fail(&format!("waited {limit:?} for {what}"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn click(&self, selector: &str) {
        if let Err(e) = self.browser.click_css(selector, Duration::from_secs(10)) {
            self.fail(&e);
        }
    }

    /// A download's progress by `GET /api/downloads` (0 when not listed).
    fn progress(&self, key: &str) -> f64 {
        let downloads = self.api("api/downloads");
        downloads["downloads"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["key"] == json!(key)))
            .and_then(|d| d["progress"].as_f64())
            .unwrap_or(0.0)
    }

    /// `GET` of a JSON API path; an `{"error"}` object when that fails.
    fn api(&self, path: &str) -> Value {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{}{path}", self.gui);
        match agent.get(&url).call() {
            Ok(mut response) => {
                let status = response.status();
                let text = response.body_mut().read_to_string().unwrap_or_default();
                serde_json::from_str(&text)
                    .unwrap_or_else(|_| json!({ "error": format!("{status}, not JSON: {text}") }))
            }
            Err(e) => json!({ "error": format!("GET {url}: {e}") }),
        }
    }

    fn screenshot(&self, dir: &Path, moment: &str) -> PathBuf {
        let path = dir.join(format!("{}-{moment}.png", self.kind));
        if let Err(e) = self.browser.save_screenshot(&path) {
            self.fail(&format!("screenshot: {e}"));
        }
        path
    }

    /// Everything that helps to see why a check failed.
    fn explain(&self) -> String {
        let state = self.state();
        format!(
            "the {kind} client's page at {gui}\n  div#error: {error}\n  page: {state:#}\n  \
             GET /api/downloads: {downloads}\n  browser console:\n{console}\n  peer stderr:\n{stderr}",
            kind = self.kind,
            gui = self.gui,
            error = state["error"],
            downloads = self.api("api/downloads"),
            console = self.browser.console_log(),
            stderr = self.peer.stderr_text(),
        )
    }

    fn fail(&self, what: &str) -> ! {
        let path = target_dir()
            .join("gui-screenshots")
            .join(format!("{}-failed.png", self.kind));
        let shot = match self.browser.save_screenshot(&path) {
            Ok(()) => format!("screenshot: {}", path.display()),
            Err(e) => format!("no screenshot: {e}"),
        };
        panic!("{what}\n{}\n{shot}", self.explain());
    }
}

/// The row of `table#files` for `key` in a page state.
fn row_of<'v>(state: &'v Value, key: &str) -> Option<&'v Value> {
    state["rows"]
        .as_array()?
        .iter()
        .find(|r| r["key"] == json!(key))
}

/// The `div.download` for `key` in a page state (`Null` when none).
fn download_of<'v>(state: &'v Value, key: &str) -> &'v Value {
    state["downloads"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["key"] == json!(key)))
        .unwrap_or(&Value::Null)
}

// ---------------------------------------------------------------------------
// Tools and test media.

/// Whether the programs the browser tests need are installed. Without
/// them the test is skipped (loudly), except under CI, which must have them.
fn tools_installed(programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|program| {
            if program.starts_with('/') {
                !Path::new(program).exists()
            } else {
                !Command::new(program)
                    .arg("-version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            }
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "{} not found: install chromium chromium-driver ffmpeg (or run .ci/run)",
        missing.join(", ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("{message}; CI must have them");
    }
    // Straight to stderr, not eprintln!: the test harness would hide that.
    let _ = writeln!(
        std::io::stderr(),
        "\n********\n* skipped: {message}\n********\n"
    );
    false
}

/// Writes `seconds` of a 440 Hz tone as 16-bit mono PCM WAV.
fn write_wav(path: &Path, seconds: u32, rate: u32) {
    let pcm: Vec<u8> = (0..seconds * rate)
        .flat_map(|i| {
            let t = f64::from(i) / f64::from(rate);
            let sample = (t * 440.0 * std::f64::consts::TAU).sin() * 8000.0;
            (sample as i16).to_le_bytes()
        })
        .collect();
    std::fs::write(path, support::wav_bytes(&pcm, rate)).unwrap();
}

/// Makes a `seconds` long WebM (VP8 test card with noise, so it does not
/// compress to nothing, and an Opus tone) with ffmpeg: about 3.5 MB.
fn write_webm(path: &Path, seconds: u32) {
    let seconds = seconds.to_string();
    #[rustfmt::skip]
    let args = [
        "-hide_banner", "-loglevel", "error",
        "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25,noise=alls=25:allf=t",
        "-f", "lavfi", "-i", "sine=frequency=440",
        "-t", &seconds,
        "-c:v", "libvpx", "-b:v", "900k", "-minrate", "900k", "-maxrate", "900k",
        "-deadline", "realtime", "-cpu-used", "8",
        "-c:a", "libopus", "-y",
    ];
    let output = Command::new("ffmpeg")
        .args(args)
        .arg(path)
        .output()
        .expect("run ffmpeg");
    assert!(
        output.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn sha256(path: &Path) -> [u8; 32] {
    swarmline::peer::fsutil::sha256_of_file(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
