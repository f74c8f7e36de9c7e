//! The peer's web API against live peers (the real binaries on 127.0.0.1):
//! listing by profile, starting a download and following it to 100%, a
//! `Range` request on a file still downloading, and the best peers first.
//! One test runs a peer and its page in-process, to plant a stopped
//! download (the media of a file partly here).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::{eventually, random_bytes, write_file, PeerProcess, TrackerProcess};

/// The web API of one peer.
struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    /// The API of `peer`, from the `gui on http://...` line it printed.
    fn of(peer: &mut PeerProcess) -> Api {
        let base = peer.gui_url();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(90)))
            .http_status_as_error(false)
            .build()
            .into();
        Api { base, agent }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let mut response = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_json().unwrap())
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let mut response = self
            .agent
            .post(format!("{}{path}", self.base))
            .send_json(body)
            .unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_json().unwrap())
    }

    /// `GET /media/<key>` with a `Range` header: status, `Content-Range`,
    /// body.
    fn range(&self, key: &str, range: &str) -> (u16, String, Vec<u8>) {
        let mut response = self
            .agent
            .get(format!("{}/media/{key}", self.base))
            .header("Range", range)
            .call()
            .unwrap();
        let status = response.status().as_u16();
        let content_range = response
            .headers()
            .get("Content-Range")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap();
        (status, content_range, body)
    }

    /// The listed file called `name` (its JSON), if any.
    fn file(&self, name: &str) -> Option<Value> {
        let (status, body) = self.get("/api/files");
        assert_eq!(status, 200, "{body}");
        body["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .cloned()
    }

    /// The download of `key` (its JSON).
    fn download(&self, key: &str) -> Value {
        self.download_if_any(key)
            .unwrap_or_else(|| panic!("no download of {key} in {:?}", self.get("/api/downloads")))
    }

    /// The download of `key` (its JSON), if the page lists one yet.
    fn download_if_any(&self, key: &str) -> Option<Value> {
        let (_, body) = self.get("/api/downloads");
        body["downloads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["key"] == key)
            .cloned()
    }

    /// Waits (bounded) for the download of `key` to be done.
    fn wait_done(&self, key: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let download = self.download(key);
            if download["state"] == "done" {
                return download;
            }
            assert!(
                download["state"] != "failed" && Instant::now() < deadline,
                "the download did not finish: {download}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// `data` as the samples of a WAV file.
fn wav(data: &[u8]) -> Vec<u8> {
    support::wav_bytes(data, 8000)
}

fn start_client(home: &Path, tracker: &TrackerProcess, profile: &str) -> (PeerProcess, Api) {
    let mut peer = PeerProcess::start(home, tracker.addr, &["--profile", profile]);
    let api = Api::of(&mut peer);
    (peer, api)
}

#[test]
fn each_profile_lists_its_kind_and_a_download_reaches_100_percent() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = TrackerProcess::start(&[]);
    let song = wav(&random_bytes(300_000, 1));
    let clip = random_bytes(200_000, 2);
    let originals = dir.path().join("originals");
    let files = [
        write_file(&originals, "song.wav", &song),
        write_file(&originals, "clip.webm", &clip),
        write_file(&originals, "notes.txt", b"not media"),
    ];
    let mut args: Vec<&str> = vec!["share"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let mut seeder = PeerProcess::start(&dir.path().join("seeder"), tracker.addr, &args);
    for _ in &files {
        seeder.expect("sharing ");
    }

    let (mut audio_peer, audio) = start_client(&dir.path().join("audio"), &tracker, "audio");
    let (_video_peer, video) = start_client(&dir.path().join("video"), &tracker, "video");
    let (_, info) = audio.get("/api/info");
    assert_eq!(info["profile"], "audio");
    let names = |api: &Api| -> Vec<String> {
        let (_, body) = api.get("/api/files");
        let files = body["files"].as_array().unwrap().clone();
        files
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&audio), ["song.wav"]);
    assert_eq!(names(&video), ["clip.webm"]);
    let (_, found) = audio.get("/api/files?q=SONG");
    assert_eq!(found["files"].as_array().unwrap().len(), 1, "{found}");
    let (_, none) = audio.get("/api/files?q=clip");
    assert_eq!(none["files"], json!([]), "a video file, on an audio client");
    // A search takes 16 criteria, and the audio client adds `kind=audio`.
    let words = |n: usize| vec!["song"; n].join("+");
    let (status, found) = audio.get(&format!("/api/files?q={}", words(15)));
    assert_eq!(
        (status, found["files"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    let (status, refused) = audio.get(&format!("/api/files?q={}", words(16)));
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"], "at most 15 words in a search");
    // Nor more than a tracker's line.
    let (status, refused) = audio.get(&format!("/api/files?q={}", "a".repeat(9000)));
    assert_eq!(status, 400, "{refused}");
    let said = refused["error"].as_str().unwrap();
    assert!(said.starts_with("a search too long: "), "{said}");
    // A search that cannot be decoded is refused, not taken for none.
    let (status, refused) = audio.get("/api/files?q=%zz");
    assert_eq!(status, 400, "{refused}");
    assert_eq!(
        refused["error"],
        "bad q \"%zz\": '%' must be followed by two hex digits"
    );

    // The audio client refuses the video file, and nonsense.
    let clip_key = video.file("clip.webm").unwrap()["key"].clone();
    let (status, refused) = audio.post("/api/downloads", &json!({ "key": clip_key }));
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("video"),
        "{refused}"
    );
    let (status, refused) = audio.post("/api/downloads", &json!({ "key": "abc" }));
    assert_eq!(status, 400, "{refused}");
    let (status, _) = audio.post("/api/downloads", &json!({ "key": "00".repeat(32) }));
    assert_eq!(status, 404);

    let entry = audio.file("song.wav").unwrap();
    assert_eq!(
        (entry["kind"].clone(), entry["size"].clone()),
        (json!("audio"), json!(song.len()))
    );
    assert_eq!(entry["seeders"], 1);
    let key = entry["key"].as_str().unwrap().to_string();
    let (status, started) = audio.post("/api/downloads", &json!({ "key": key }));
    assert_eq!(status, 202, "{started}");
    let done = audio.wait_done(&key, Duration::from_secs(60));
    assert_eq!(done["progress"], 1.0);
    assert_eq!(done["bytes_done"], song.len());
    assert!(
        done["chunks"].as_str().unwrap().chars().all(|c| c == '#'),
        "{done}"
    );
    let saved = std::fs::read(dir.path().join("audio/downloads/song.wav")).unwrap();
    assert_eq!(sha256(&saved), sha256(&song));
    let (status, again) = audio.post("/api/downloads", &json!({ "key": key }));
    assert_eq!(status, 409, "{again}");
    // Copied into another folder from the shell: the page still shows the
    // file once, as its latest download.
    let elsewhere = dir.path().join("elsewhere");
    audio_peer.send(&format!("download {key} {}", elsewhere.display()));
    audio_peer.expect("[song.wav] done:");
    let (_, listed) = audio.get("/api/downloads");
    let of_song: Vec<&Value> = listed["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["key"] == key.as_str())
        .collect();
    assert_eq!(of_song.len(), 1, "{listed}");

    // Its shares: the song, complete; the video client shares nothing.
    let (_, shares) = audio.get("/api/shares");
    assert_eq!(shares["shares"][0]["name"], "song.wav", "{shares}");
    assert_eq!(shares["shares"][0]["complete"], true);
    let (_, shares) = video.get("/api/shares");
    assert_eq!(shares["shares"], json!([]));
}

#[test]
fn a_range_of_a_file_still_downloading_is_exact_and_fetched_first() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = TrackerProcess::start(&[]);
    // 1 MiB at 64 KB/s: about 16 s in all (64 pieces of 16 KiB).
    let song = wav(&random_bytes((1 << 20) - 44, 3));
    let original = write_file(&dir.path().join("originals"), "long.wav", &song);
    let mut seeder = PeerProcess::start(
        &dir.path().join("seeder"),
        tracker.addr,
        &[
            "--upload-limit",
            "64KB",
            "share",
            original.to_str().unwrap(),
        ],
    );
    seeder.expect("sharing ");
    let (client, api) = start_client(&dir.path().join("client"), &tracker, "audio");
    let key = api.file("long.wav").unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = api.post("/api/downloads", &json!({ "key": key }));
    assert_eq!(status, 202);

    // Five pieces near the end of the file: with rarest-first alone (random
    // among equals) all five would come before half the file about one
    // time in 32.
    let (start, end) = (900_000usize, 979_999usize);
    let (status, content_range, body) = api.range(&key, &format!("bytes={start}-{end}"));
    let progress = api.download(&key)["progress"].as_f64().unwrap();
    assert_eq!(status, 206);
    assert_eq!(content_range, format!("bytes {start}-{end}/{}", song.len()));
    assert_eq!(body, song[start..=end], "the bytes of the range, exactly");
    assert!(
        progress < 0.5,
        "the range's pieces came first: the download was at {:.0}% when they were served",
        progress * 100.0
    );

    // A range past the end, and an open range to the end.
    let (status, content_range, _) = api.range(&key, &format!("bytes={}-", song.len()));
    assert_eq!(
        (status, content_range),
        (416, format!("bytes */{}", song.len()))
    );
    let (status, _, tail) = api.range(&key, "bytes=-100");
    assert_eq!((status, tail.as_slice()), (206, &song[song.len() - 100..]));

    // The seeder gone, the download stops half-way: nothing downloads the
    // rest. A range that starts in a piece not here is refused at once,
    // with why, instead of a 206 whose bytes never come.
    drop((seeder, client));
    let mut client = PeerProcess::start(
        &dir.path().join("client"),
        tracker.addr,
        &["--profile", "audio", "--stall-timeout-secs", "1"],
    );
    let api = Api::of(&mut client);
    // (The shell goes on with the download a moment after the page is up:
    // until then the page lists none.)
    assert!(
        eventually(Duration::from_secs(60), || api
            .download_if_any(&key)
            .is_some_and(|download| download["state"] == "failed")),
        "{:?}",
        api.download_if_any(&key)
    );
    let mut refused = 0;
    for piece in 0..64 {
        let at = piece * 16 * 1024;
        let (status, _, body) = api.range(&key, &format!("bytes={at}-{at}"));
        match status {
            206 => assert_eq!(body, [song[at]], "piece {piece}"),
            409 => {
                let body = String::from_utf8_lossy(&body);
                assert!(body.contains("and nothing is downloading it"), "{body}");
                refused += 1;
            }
            other => panic!("piece {piece}: {other}"),
        }
    }
    assert!(
        refused > 0,
        "every piece was here: the download ended first"
    );
}

#[test]
fn another_site_s_page_can_neither_frame_the_page_nor_use_its_api() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = TrackerProcess::start(&[]);
    let mut peer = PeerProcess::start(dir.path(), tracker.addr, &[]);
    let host = peer.gui_url().trim_start_matches("http://").to_string();
    let ask = |path: &str, site: &str| {
        let mut connection = open(&host);
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nSec-Fetch-Site: {site}\r\n\r\n");
        std::io::Write::write_all(connection.get_mut(), request.as_bytes()).unwrap();
        read_head_lines(&mut connection).unwrap()
    };
    let has = |headers: &[String], line: &str| headers.iter().any(|h| h == line);

    // The page itself, in its own tab: not to be framed, nothing loaded
    // from elsewhere.
    let (status, _, headers) = ask("/", "none");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    for line in [
        "X-Frame-Options: DENY",
        "X-Content-Type-Options: nosniff",
        "Cross-Origin-Resource-Policy: same-origin",
        "Content-Security-Policy: default-src 'self'; frame-ancestors 'none'",
    ] {
        assert!(has(&headers, line), "{line} not in {headers:?}");
    }
    // The page's own calls get through.
    let (status, _, _) = ask("/api/info", "same-origin");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    // Another site's script, or its <video>, is refused, and its
    // connection not kept for another try.
    for (path, site) in [("/api/info", "cross-site"), ("/media/00", "same-site")] {
        let (status, _, headers) = ask(path, site);
        assert!(
            status.starts_with("HTTP/1.1 403"),
            "{path} {site}: {status}"
        );
        assert!(has(&headers, "Connection: close"), "{headers:?}");
    }
}

#[test]
fn most_pieces_come_from_the_fast_peer_and_the_time_stays_close_to_its() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = TrackerProcess::start(&[]);
    // 2 MiB (128 pieces): 2 s from the fast peer alone, 200 s from the slow.
    let data = random_bytes(2 << 20, 4);
    let original = write_file(&dir.path().join("originals"), "film.bin", &data);
    let path = original.to_str().unwrap();
    let mut fast = PeerProcess::start(
        &dir.path().join("fast"),
        tracker.addr,
        &["--upload-limit", "1MB", "share", path],
    );
    fast.expect("sharing ");
    let timed_download = |name: &str| {
        let (client, api) = start_client(&dir.path().join(name), &tracker, "all");
        let key = api.file("film.bin").unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string();
        let started = Instant::now();
        let (status, _) = api.post("/api/downloads", &json!({ "key": key }));
        assert_eq!(status, 202);
        let done = api.wait_done(&key, Duration::from_secs(120));
        let saved = std::fs::read(dir.path().join(name).join("downloads/film.bin")).unwrap();
        assert_eq!(sha256(&saved), sha256(&data));
        (client, done, started.elapsed())
    };
    // The baseline, in the same run: the fast peer alone.
    let (alone_client, _, alone) = timed_download("alone");
    // It would seed too: only the two seeders serve the next download.
    drop(alone_client);
    let mut slow = PeerProcess::start(
        &dir.path().join("slow"),
        tracker.addr,
        &["--upload-limit", "10KB", "share", path],
    );
    slow.expect("sharing ");
    let (_client, done, took) = timed_download("client");

    let pieces_from = |peer: &PeerProcess| -> u64 {
        let sources = done["peers"].as_array().unwrap();
        let addr = peer.addr.port();
        sources
            .iter()
            .find(|s| s["addr"].as_str().unwrap().ends_with(&format!(":{addr}")))
            .map_or(0, |s| s["pieces"].as_u64().unwrap())
    };
    let (from_fast, from_slow) = (pieces_from(&fast), pieces_from(&slow));
    println!(
        "{from_fast} pieces from the fast peer, {from_slow} from the slow one, in {took:?} \
         (the fast peer alone: {alone:?})"
    );
    assert_eq!(from_fast + from_slow, 128, "{done}");
    assert!(from_fast >= 110, "most pieces from the fast peer: {done}");
    // The slow peer's pieces must not hold the download back (an even
    // split would take 100 s, and the first 16 pieces asked of it 25 s):
    // pieces stuck on it go to the fast one. (Twice the baseline and 5 s:
    // the two downloads may meet a machine busy differently.)
    let close = alone * 2 + Duration::from_secs(5);
    assert!(
        took <= close,
        "took {took:?}, the fast peer alone {alone:?}: {done}"
    );
}

/// Sends `request` as is on a new connection to the page at `base`, and
/// returns the status line of the answer.
fn raw_status(base: &str, request: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut status = String::new();
    BufReader::new(stream).read_line(&mut status).unwrap();
    status.trim_end().to_string()
}

#[test]
fn the_page_answers_only_this_machine_s_browser_and_drops_a_stalled_client() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let tracker = TrackerProcess::start(&[]);
    let mut peer = PeerProcess::start(dir.path(), tracker.addr, &["--idle-timeout-secs", "2"]);
    let base = peer.gui_url();
    let host = base.trim_start_matches("http://").to_string();
    let get =
        |host: &str| format!("GET /api/info HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    assert!(raw_status(&base, &get(&host)).starts_with("HTTP/1.1 200"));
    let port = host.rsplit_once(':').unwrap().1;
    assert!(raw_status(&base, &get(&format!("localhost:{port}"))).starts_with("HTTP/1.1 200"));
    // A site that rebinds its own name to 127.0.0.1 sends that name.
    let rebound = raw_status(&base, &get(&format!("evil.example:{port}")));
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
    // Another site's form or script may not start a download.
    let post = |origin: &str| {
        format!(
            "POST /api/downloads HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\n\
             Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        )
    };
    let forged = raw_status(&base, &post("http://evil.example"));
    assert!(forged.starts_with("HTTP/1.1 403"), "{forged}");
    // The page's own request gets through (and is answered on its merits).
    let own = raw_status(&base, &post(&format!("http://{host}")));
    assert!(own.starts_with("HTTP/1.1 400"), "{own}");

    // A client that stops in the middle of its request, in its body or
    // even in its first line, is told so and dropped after the idle time
    // (2 s here), instead of holding a thread for ever.
    let stalls = [
        format!("POST /api/downloads HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4000\r\n\r\n{{"),
        "GET /api/inf".to_string(),
    ];
    let started = Instant::now();
    let mut stalled: Vec<_> = stalls
        .iter()
        .map(|bytes| {
            let mut stream = std::net::TcpStream::connect(&host).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            stream.write_all(bytes.as_bytes()).unwrap();
            stream
        })
        .collect();
    for stream in &mut stalled {
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(1500) && waited < Duration::from_secs(50),
            "dropped after {waited:?}"
        );
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    }
}

/// The head of one answer read from `stream`: its status line and its
/// `Content-Length` (0 without one).
fn read_head(
    stream: &mut std::io::BufReader<std::net::TcpStream>,
) -> std::io::Result<(String, usize)> {
    read_head_lines(stream).map(|(status, length, _)| (status, length))
}

/// Like [`read_head`], with the header lines too.
fn read_head_lines(
    stream: &mut std::io::BufReader<std::net::TcpStream>,
) -> std::io::Result<(String, usize, Vec<String>)> {
    use std::io::BufRead;
    let mut status = String::new();
    stream.read_line(&mut status)?;
    let mut length = 0;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        stream.read_line(&mut line)?;
        if line.trim_end().is_empty() {
            break;
        }
        headers.push(line.trim_end().to_string());
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    Ok((status.trim_end().to_string(), length, headers))
}

/// One answer read from `stream`: its status line and body (sized by its
/// `Content-Length`).
fn read_answer(
    stream: &mut std::io::BufReader<std::net::TcpStream>,
) -> std::io::Result<(String, String)> {
    use std::io::Read;
    let (status, length) = read_head(stream)?;
    let mut body = vec![0; length];
    stream.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A connection to the page at `host`, read with a timeout.
fn open(host: &str) -> std::io::BufReader<std::net::TcpStream> {
    let stream = std::net::TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    std::io::BufReader::new(stream)
}

/// Sends `request` on a new connection and reads the answer, then the
/// stream to its end: the answer, and how the stream ended after it (a
/// clean end, or an error such as a reset). Refused for the connection
/// cap (a `503`, or a reset) while connections that the test closed are
/// still being let go, it tries again, for 30 s at most.
fn ask_new(host: &str, request: &[u8]) -> (String, String, std::io::Result<usize>) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut connection = open(host);
        let sent = connection.get_mut().write_all(request);
        match sent.and_then(|()| read_answer(&mut connection)) {
            Ok((status, body)) if !status.starts_with("HTTP/1.1 503 ") => {
                let end = connection.read_to_end(&mut Vec::new());
                return (status, body, end);
            }
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            other => panic!("no answer but the cap's: {other:?}"),
        }
    }
}

#[test]
fn the_page_keeps_connections_refuses_floods_and_stops_with_clients_connected() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let tracker = TrackerProcess::start(&[]);
    let mut peer = PeerProcess::start(dir.path(), tracker.addr, &[]);
    let host = peer.gui_url().trim_start_matches("http://").to_string();
    let get = format!("GET /api/info HTTP/1.1\r\nHost: {host}\r\n\r\n");

    // Two requests on one connection, the second sent before the first
    // is answered: both answered, in order.
    let mut kept = open(&host);
    let favicon = format!("GET /favicon.ico HTTP/1.1\r\nHost: {host}\r\n\r\n");
    kept.get_mut()
        .write_all(format!("{get}{favicon}").as_bytes())
        .unwrap();
    let (status, body) = read_answer(&mut kept).unwrap();
    assert!(status.starts_with("HTTP/1.1 200 "), "{status}");
    assert!(body.contains("\"profile\""), "{body}");
    let no_content = |kept: &mut std::io::BufReader<std::net::TcpStream>| {
        read_answer(kept).unwrap().0.starts_with("HTTP/1.1 204 ")
    };
    assert!(no_content(&mut kept));
    // A method a path does not take: 405, with the ones it does.
    let delete = format!("DELETE /api/info HTTP/1.1\r\nHost: {host}\r\n\r\n");
    kept.get_mut().write_all(delete.as_bytes()).unwrap();
    let (status, length, headers) = read_head_lines(&mut kept).unwrap();
    assert!(status.starts_with("HTTP/1.1 405 "), "{status}");
    assert!(
        headers.iter().any(|h| h == "Allow: GET, HEAD"),
        "{headers:?}"
    );
    std::io::Read::read_exact(&mut kept, &mut vec![0; length]).unwrap();
    // HEAD: GET's head, no body (the next answer on the connection starts
    // right after it).
    let head = format!("HEAD /api/info HTTP/1.1\r\nHost: {host}\r\n\r\n");
    kept.get_mut()
        .write_all(format!("{head}{favicon}").as_bytes())
        .unwrap();
    let (status, length) = read_head(&mut kept).unwrap();
    assert!(
        status.starts_with("HTTP/1.1 200 ") && length > 0,
        "{status} {length}"
    );
    assert!(no_content(&mut kept));

    // A body nested as deep as its cap allows gets a 400, not a crash.
    let nested = "[".repeat(4096);
    let post = format!(
        "POST /api/downloads HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4096\r\n\r\n{nested}"
    );
    kept.get_mut().write_all(post.as_bytes()).unwrap();
    let (status, body) = read_answer(&mut kept).unwrap();
    assert!(status.starts_with("HTTP/1.1 400 "), "{status} {body}");

    // At the cap, with every connection kept alive and idle, the one idle
    // longest (`kept`) is closed to make room for the next: a client's
    // idle connections do not keep the page full. (Connections busy with
    // a request keep their places, and the next one gets 503: see the
    // server's own test.)
    let held: Vec<_> = (1..swarmline::peer::gui::MAX_CONNECTIONS)
        .map(|_| {
            // A round trip on each: it is being served.
            let mut connection = open(&host);
            connection.get_mut().write_all(get.as_bytes()).unwrap();
            let (status, _) = read_answer(&mut connection).unwrap();
            assert!(status.starts_with("HTTP/1.1 200 "), "{status}");
            connection
        })
        .collect();
    let mut newcomer = open(&host);
    newcomer.get_mut().write_all(get.as_bytes()).unwrap();
    let (status, _) = read_answer(&mut newcomer).unwrap();
    assert!(status.starts_with("HTTP/1.1 200 "), "{status}");
    let mut rest = Vec::new();
    assert_eq!(
        std::io::Read::read_to_end(&mut kept, &mut rest).unwrap_or(0),
        0,
        "the longest idle connection was closed"
    );
    drop((held, newcomer));

    // A header that never ends is refused once the head's cap is read,
    // long before the idle time (120 s here); the page goes on.
    let started = Instant::now();
    let mut endless = format!("GET /api/info HTTP/1.1\r\nHost: {host}\r\nX-Flood: ").into_bytes();
    endless.resize(64 * 1024, b'a');
    let (status, body, end) = ask_new(&host, &endless);
    assert!(status.starts_with("HTTP/1.1 431 "), "{status}");
    assert!(body.contains("head is over 16384 bytes"), "{body}");
    // The rest of the flood was read and dropped, so the connection ends
    // cleanly after the answer, not with a reset that could destroy it.
    assert!(end.is_ok(), "{end:?}");
    assert!(started.elapsed() < Duration::from_secs(60));

    // Quitting closes the open connections instead of waiting out their
    // idle time.
    let quitting = Instant::now();
    peer.send("quit");
    assert!(peer.wait(Duration::from_secs(60)).success());
    assert!(quitting.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_client_that_stops_reading_a_file_is_dropped_after_the_idle_time() {
    use std::io::{Read, Write};
    const SIZE: usize = 32 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "film.mp4", &random_bytes(SIZE, 9));
    let path = path.to_string_lossy().into_owned();
    let tracker = TrackerProcess::start(&[]);
    let mut peer = PeerProcess::start(
        &dir.path().join("peer"),
        tracker.addr,
        &["--idle-timeout-secs", "2", "share", &path],
    );
    let key = peer
        .expect("sharing ")
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let host = peer.gui_url().trim_start_matches("http://").to_string();
    let mut player = std::net::TcpStream::connect(&host).unwrap();
    player
        .write_all(format!("GET /media/{key} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .unwrap();
    // Not a byte read for four times the idle time. The socket buffers
    // take a few megabytes, then the page waits for the client, which may
    // still let a few kilobytes through now and then: that must not keep
    // the answer going past the idle time.
    std::thread::sleep(Duration::from_secs(8));
    player
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut received = Vec::new();
    let _ = player.read_to_end(&mut received);
    assert!(
        !received.is_empty() && received.len() < SIZE,
        "{} bytes of the {SIZE}-byte file came: the answer {}",
        received.len(),
        if received.len() >= SIZE {
            "went on after the client stalled"
        } else {
            "never started"
        }
    );
}

#[test]
fn a_shared_page_or_picture_is_sent_as_bytes_to_save_never_as_a_page() {
    let dir = tempfile::tempdir().unwrap();
    let originals = dir.path().join("files");
    let page = write_file(
        &originals,
        "my page é.html",
        b"<script>fetch('/api/shares')</script>",
    );
    let picture = write_file(&originals, "pic.svg", b"<svg onload=\"alert(1)\"/>");
    let song = write_file(&originals, "song.wav", &wav(&random_bytes(20_000, 4)));
    // Audio by its bytes, whatever its name says.
    let tone = write_file(&originals, "tone.bin", &wav(&random_bytes(20_000, 5)));
    let tracker = TrackerProcess::start(&[]);
    let mut peer = PeerProcess::start(
        &dir.path().join("peer"),
        tracker.addr,
        &[
            "share",
            page.to_str().unwrap(),
            picture.to_str().unwrap(),
            song.to_str().unwrap(),
            tone.to_str().unwrap(),
        ],
    );
    let keys: Vec<String> = (0..4)
        .map(|_| {
            let line = peer.expect("sharing ");
            line.rsplit(' ').next().unwrap().to_string()
        })
        .collect();
    let api = Api::of(&mut peer);
    let header = |response: &ureq::http::Response<ureq::Body>, name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut types = Vec::new();
    for key in &keys {
        let response = api
            .agent
            .get(format!("{}/media/{key}", api.base))
            .call()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(header(&response, "X-Content-Type-Options"), "nosniff");
        types.push((
            header(&response, "Content-Type"),
            header(&response, "Content-Disposition"),
            header(&response, "Content-Security-Policy"),
        ));
    }
    types.sort();
    let save = |name: &str, encoded: &str| {
        (
            "application/octet-stream".to_string(),
            format!("attachment; filename=\"{name}\"; filename*=UTF-8''{encoded}"),
            "sandbox; default-src 'none'".to_string(),
        )
    };
    // A page and a picture to save under their names, never shown; a
    // sound to play (no policy that would stop a tab playing it).
    assert_eq!(
        types,
        [
            save("my page _.html", "my%20page%20%C3%A9.html"),
            save("pic.svg", "pic.svg"),
            ("audio/wav".to_string(), String::new(), String::new()),
            ("audio/x-wav".to_string(), String::new(), String::new()),
        ]
    );
    // Only GET and HEAD there.
    let deleted = api
        .agent
        .delete(format!("{}/media/{}", api.base, keys[0]))
        .call()
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 405);
    assert_eq!(header(&deleted, "Allow"), "GET, HEAD");
}

#[test]
fn a_file_whose_download_ends_before_it_starts_is_refused_with_the_reason() {
    // The tracker lists one holder of `ghost.wav`, which takes connections
    // (the system does, for a listener) and never answers: the download
    // waits for the manifest, and stops after its stall timeout.
    let dir = tempfile::tempdir().unwrap();
    let tracker = TrackerProcess::start(&[]);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = silent.local_addr().unwrap().port();
    let key = support::key(7);
    let mut ghost = tracker.connect();
    assert!(ghost.ask(&format!("HELO {nobody}")).starts_with("OK"));
    let added = ghost.ask(&format!("ADDF {key} ghost.wav 100000 16384 audio /x"));
    assert!(added.starts_with("OK"), "{added}");
    let mut client = PeerProcess::start(
        &dir.path().join("client"),
        tracker.addr,
        &["--profile", "audio", "--stall-timeout-secs", "10"],
    );
    let api = Api::of(&mut client);
    let (status, body) = api.post("/api/downloads", &json!({ "key": key }));
    assert_eq!(status, 202, "{body}");
    // Asked at once, the file is waited for while its download starts;
    // once the download stops, the answer says why, not "download it".
    let (status, _, body) = api.range(&key, "bytes=0-99");
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("the download of ghost.wav ended: "), "{body}");
    let reason = api.download(&key)["error"].as_str().unwrap().to_string();
    assert!(
        body.contains(&reason),
        "{body} should give the reason {reason:?}"
    );
}

/// `GET` or `HEAD` of `/media/<key>` on the page at `addr`, with a
/// `Range` if given: the status, the `Content-Range` and the body, as the
/// bytes came (the connection closed after it).
fn raw_media(
    addr: std::net::SocketAddr,
    method: &str,
    key: &str,
    range: Option<&str>,
) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let range = range.map_or(String::new(), |r| format!("Range: {r}\r\n"));
    let request = format!(
        "{method} /media/{key} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{range}\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(answer[..split].to_vec()).unwrap();
    let status = head[9..12].parse().unwrap();
    let content_range = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Range: "))
        .unwrap_or("")
        .to_string();
    (status, content_range, answer[split + 4..].to_vec())
}

#[test]
fn a_file_partly_here_that_nothing_downloads_is_promised_only_the_bytes_here() {
    // In-process: a stopped download planted in the peer's library
    // (pieces 0 to 3 and 5 to 9 of ten; piece 4 missing), nothing
    // downloading it, and the page serving it.
    use std::sync::Arc;
    const PIECE: usize = 16 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let tracker = support::tracker_in_process();
    let peer = Arc::new(support::start_peer(
        dir.path(),
        "alice",
        tracker.local_addr(),
        &[],
    ));
    let data = random_bytes(10 * PIECE, 41);
    support::plant_partial(&peer, &dir.path().join("alice"), "half.bin", &data, |i| {
        i != 4
    });
    let key = swarmline::pieces::Manifest::build(&data[..], PIECE as u32, |_| {})
        .unwrap()
        .key()
        .to_string();
    let page = swarmline::peer::gui::Gui::start("127.0.0.1:0".parse().unwrap(), Arc::clone(&peer))
        .unwrap();
    let addr = page.addr();

    // A range that runs into the missing piece ends where it begins: the
    // length promised is the length sent.
    let (status, content_range, body) = raw_media(addr, "GET", &key, Some("bytes=16384-"));
    assert_eq!(status, 206);
    assert_eq!(content_range, format!("bytes 16384-65535/{}", data.len()));
    assert_eq!(body, data[PIECE..4 * PIECE]);
    // From the missing piece on: refused, with the reason.
    let (status, _, body) = raw_media(addr, "GET", &key, Some("bytes=65536-"));
    assert_eq!(status, 409);
    let said = String::from_utf8_lossy(&body);
    assert!(said.contains("piece 4 is missing"), "{said}");
    // After it, to the end: all there.
    let (status, content_range, body) = raw_media(addr, "GET", &key, Some("bytes=81920-"));
    assert_eq!(
        (status, content_range),
        (
            206,
            format!("bytes 81920-{}/{}", data.len() - 1, data.len())
        )
    );
    assert_eq!(body, data[5 * PIECE..]);
    // The whole file could never be sent: refused, not promised and cut.
    for method in ["GET", "HEAD"] {
        let (status, _, _) = raw_media(addr, method, &key, None);
        assert_eq!(status, 409, "{method}");
    }
    page.shutdown();
}
