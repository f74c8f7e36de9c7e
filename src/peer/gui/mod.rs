//! The peer's web page: a small HTTP server on 127.0.0.1 by default,
//! synchronous and thread-based like the rest of the peer, serving
//! - the page itself (`assets/`: plain HTML, CSS and JavaScript compiled
//!   into the binary; no build step);
//! - a JSON API behind it ([`api`]);
//! - the files for the page's player, with HTTP `Range` support, while they
//!   are still downloading ([`stream`]).
//!
//! It runs on the shared accept loop ([`crate::server`]): one named thread
//! per connection (`gui-<client address>`), at most [`MAX_CONNECTIONS`] at
//! once (the next gets `503`, unless one of them waits for a request: the
//! one that has waited longest is closed to make room), every one
//! closed and joined when the page
//! stops. [`http`] reads each request under caps and the peer's
//! `idle_timeout_secs`, so a client that stalls or floods holds neither
//! memory nor the peer's shutdown.
//!
//! Who can connect is the listening address's business (`gui_address`,
//! 127.0.0.1 by default: this machine alone). Whoever connects, another
//! site's page in their browser may not use it ([`foreign_request`]): a
//! request must name the page by an IP address or `localhost` (which
//! defeats DNS rebinding), and a request that changes something must come
//! from the page itself (no cross-site request forgery). Every answer
//! carries headers that keep it out of other sites' frames and players
//! ([`guarded`]). A shared file is never shown as a page of its own
//! ([`with_media_type`]).

pub mod api;
pub mod http;
pub mod stream;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::info;
use serde_json::Value;

use super::download::{Download, DownloadState};
use super::library::SharedFile;
use super::media::MediaType;
use super::Peer;
use crate::logging::network_warning;
use crate::protocol::{FileKey, MediaKind};
use crate::server::{Handler, Server, ServerOptions};
use api::{ApiError, ApiResult};
use http::{Body, Method, Request, Response};
use stream::{parse_range, ByteRange, PieceStream, RangeAsk};

/// Connections served at once (a browser opens about six); the next one
/// gets `503` at once, unless one of them waits for a request (see
/// [`crate::server::ServerOptions::make_room`]).
pub const MAX_CONNECTIONS: usize = 64;

/// Stack size of a connection's thread (the standard library's default).
const GUI_STACK_SIZE: usize = 2 * 1024 * 1024;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// The running web page of a peer.
pub struct Gui {
    addr: SocketAddr,
    server: Option<Server>,
    /// Set when the page stops: the player's waiting reads end at once.
    stopping: Arc<AtomicBool>,
}

impl Gui {
    /// Listens on `addr` (port 0: any free port) and serves `peer`.
    pub fn start(addr: SocketAddr, peer: Arc<Peer>) -> std::io::Result<Gui> {
        let cannot = |e: std::io::Error| {
            std::io::Error::other(format!("cannot serve the page on {addr}: {e}"))
        };
        let listener = crate::server::bind_listener(addr).map_err(cannot)?;
        let port = listener.local_addr().map_err(cannot)?.port();
        let stopping = Arc::new(AtomicBool::new(false));
        let idle = peer.config().idle_timeout;
        let handler: Arc<Handler> = Arc::new({
            let stopping = Arc::clone(&stopping);
            move |conn| {
                http::serve(&conn, idle, &mut |request| {
                    answer(request, &peer, &stopping, port)
                })
            }
        });
        let options = ServerOptions {
            name: "gui".into(),
            max_connections: MAX_CONNECTIONS,
            max_per_ip: MAX_CONNECTIONS,
            busy: http::busy,
            // The answers search the tracker and the ring and build JSON:
            // the usual thread stack, not the line protocol's small one.
            stack_size: GUI_STACK_SIZE,
            // A browser's idle keep-alive connections (or a client's) give
            // their place to a new one rather than keep the page full.
            make_room: true,
        };
        let server = Server::start(listener, options, handler).map_err(cannot)?;
        let addr = server.local_addr();
        info!("web page on http://{addr}/");
        Ok(Gui {
            addr,
            server: Some(server),
            stopping,
        })
    }

    /// Where the page is served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving: waiting media reads end, every connection is closed
    /// and its thread joined.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

impl Drop for Gui {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Answers one request, with the headers that keep every answer to this
/// page ([`guarded`]).
fn answer(request: Request, peer: &Peer, stopping: &Arc<AtomicBool>, port: u16) -> Response {
    if let Some(refused) = foreign_request(&request, port) {
        network_warning(format_args!("page: refused: {}", refused.message));
        // Its connection is not kept for another try.
        return guarded(api_response(Err(refused)).and_close());
    }
    guarded(route(request, peer, stopping))
}

/// What every answer carries so that another site's page can use none of
/// them: not shown in a frame (no clicking on this page's buttons under a
/// disguise), not read by another origin's `<video>` or `<img>`, and never
/// taken for another type than the one given.
fn guarded(response: Response) -> Response {
    response
        .with_header("X-Content-Type-Options", "nosniff")
        .with_header("X-Frame-Options", "DENY")
        .with_header("Cross-Origin-Resource-Policy", "same-origin")
}

/// The policy of the page and the API's answers: everything from this
/// page alone, and no frame of it anywhere. (Not on `/media`: a tab that
/// plays a file shows a page of the browser's own making.)
const PAGE_POLICY: &str = "default-src 'self'; frame-ancestors 'none'";

/// The answer to a request from this machine's own page.
fn route(request: Request, peer: &Peer, stopping: &Arc<AtomicBool>) -> Response {
    let path = request.path();
    // HEAD is GET without the body (which the writer leaves out).
    let method = match &request.method {
        Method::Head => &Method::Get,
        other => other,
    };
    let result = match (method, path) {
        (Method::Get, "/" | "/index.html") => return asset(INDEX_HTML, "text/html; charset=utf-8"),
        (Method::Get, "/app.js") => return asset(APP_JS, "text/javascript; charset=utf-8"),
        (Method::Get, "/style.css") => return asset(STYLE_CSS, "text/css; charset=utf-8"),
        (Method::Get, media) if media.starts_with("/media/") => {
            return serve_media(&request, peer, &media["/media/".len()..], stopping);
        }
        // Browsers ask for it; there is none (and no error for it).
        (Method::Get, "/favicon.ico") => return Response::empty(204),
        (Method::Get, "/api/info") => api::info(peer),
        (Method::Get, "/api/files") => {
            query_value(request.query(), "q").and_then(|words| api::files(peer, &words))
        }
        (Method::Get, "/api/downloads") => api::downloads(peer),
        (Method::Post, "/api/downloads") => api::start_download(peer, &request.body),
        (Method::Get, "/api/shares") => api::shares(peer),
        (_, "/api/downloads") => {
            return api_response(Err(ApiError::new(405, "use GET or POST")))
                .with_header("Allow", "GET, HEAD, POST")
        }
        (_, read_only)
            if matches!(
                read_only,
                "/api/info"
                    | "/api/files"
                    | "/api/shares"
                    | "/"
                    | "/index.html"
                    | "/app.js"
                    | "/style.css"
                    | "/favicon.ico"
            ) || read_only.starts_with("/media/") =>
        {
            return api_response(Err(ApiError::new(405, "use GET")))
                .with_header("Allow", "GET, HEAD")
        }
        // `OPTIONS *`: what the page as a whole takes.
        (Method::Other(options), "*") if options == "OPTIONS" => {
            return Response::empty(204).with_header("Allow", "GET, HEAD, POST")
        }
        _ => Err(ApiError::new(404, format!("nothing at {path}"))),
    };
    api_response(result)
}

/// Why a request is refused as not from this machine's own page, if it
/// is: its `Host` must be an IP address or `localhost` with the page's
/// port (a site that rebinds its own name to 127.0.0.1 sends that name);
/// a call to the API or the files that a browser marks as sent by
/// another site's page (`Sec-Fetch-Site`) is refused; and a request other
/// than `GET` or `HEAD` with an `Origin` must come from the page's own
/// origin (a form or script of another site sends its own, and an older
/// browser no `Sec-Fetch-Site`). Requests without these headers (curl,
/// scripts) pass.
fn foreign_request(request: &Request, port: u16) -> Option<ApiError> {
    let host = request.header("Host");
    if let Some(host) = host.filter(|host| !names_this_page(host, port)) {
        return Some(ApiError::new(
            403,
            format!("the page answers only by address or localhost, not as {host:?}"),
        ));
    }
    let path = request.path();
    let site = request.header("Sec-Fetch-Site");
    if let Some(site) = site.filter(|site| !matches!(*site, "same-origin" | "none")) {
        if path.starts_with("/api/") || path.starts_with("/media/") {
            return Some(ApiError::new(
                403,
                format!("{path} answers only this page, not another site's ({site})"),
            ));
        }
    }
    let changes = !matches!(request.method, Method::Get | Method::Head);
    match (request.header("Origin"), host) {
        (Some(origin), Some(host)) if changes && origin != format!("http://{host}") => {
            Some(ApiError::new(
                403,
                format!("a request from {origin:?} may not change anything here"),
            ))
        }
        (Some(origin), None) if changes => Some(ApiError::new(
            403,
            format!("a request from {origin:?} without a Host may not change anything here"),
        )),
        _ => None,
    }
}

/// Whether `host` (a `Host` header) names this page: an IP address or
/// `localhost`, with the page's `port` (or none, the default port 80).
fn names_this_page(host: &str, port: u16) -> bool {
    let (name, host_port) = match host.rsplit_once(':') {
        Some((name, digits)) if !name.ends_with(':') && !digits.contains(']') => {
            (name, digits.parse().ok())
        }
        _ => (host, Some(80)),
    };
    let is_address = name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::Ipv4Addr>().is_ok()
        || name
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok());
    is_address && host_port == Some(port)
}

fn api_response(result: ApiResult) -> Response {
    match result {
        Ok((status, body)) => json_response(status, &body),
        Err(error) => json_response(error.status, &error.body()),
    }
}

fn json_response(status: u16, body: &Value) -> Response {
    Response::bytes(status, "application/json", body.to_string().into_bytes())
        .with_header("Cache-Control", "no-store")
        .with_header("Content-Security-Policy", PAGE_POLICY)
}

fn asset(text: &'static str, content_type: &str) -> Response {
    Response::bytes(200, content_type, text.as_bytes())
        .with_header("Content-Security-Policy", PAGE_POLICY)
}

/// The value of `name` in a URL query (`+` and `%xx` decoded; empty when
/// absent), or a 400 saying why it cannot be decoded.
fn query_value(query: &str, name: &'static str) -> Result<String, ApiError> {
    let Some((_, value)) = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
    else {
        return Ok(String::new());
    };
    crate::protocol::fields::percent_decode(name, &value.replace('+', " "))
        .map_err(|e| ApiError::new(400, e.to_string()))
}

/// `GET /media/<key>`: the file for the player, whole or a range, while
/// it downloads (pieces not here yet are waited for and fetched first).
/// Everything before the answer begins (the file, its type, the range's
/// first bytes) is waited for within one [`stream::PIECE_WAIT`].
fn serve_media(request: &Request, peer: &Peer, key: &str, stopping: &Arc<AtomicBool>) -> Response {
    let deadline = Instant::now() + stream::PIECE_WAIT;
    let found = match FileKey::parse(key) {
        Ok(key) => file_soon(peer, key, deadline, stopping),
        Err(_) => Err(not_here()),
    };
    let file = match found {
        Ok(file) => file,
        Err(refused) => return api_response(Err(refused)),
    };
    let size = file.manifest.size();
    let (status, mut range) = match parse_range(request.header("Range"), size) {
        RangeAsk::Whole => (
            200,
            ByteRange {
                start: 0,
                end: size,
            },
        ),
        RangeAsk::Part(range) => (206, range),
        RangeAsk::Unsatisfiable => {
            return Response::empty(416).with_header("Content-Range", &format!("bytes */{size}"));
        }
    };
    let download = api::running(peer, file.key);
    // With nothing downloading the file, a piece missing now never comes:
    // the answer promises only bytes that are here. A range is cut short
    // at the first missing piece (the player asks again from there, and
    // is told why there is no more); the whole file cannot be cut, and is
    // refused. (A range that starts on a missing piece is refused by the
    // first read below.)
    if download.as_ref().is_none_or(|d| d.is_finished()) {
        let here_until = stream::here_until(&file, range.start);
        if here_until < range.end {
            if status == 206 && here_until > range.start {
                range.end = here_until;
            } else if status == 200 {
                let missing = (here_until / u64::from(file.manifest.piece_size())) as usize;
                return api_response(Err(unreadable(&stream::not_coming(&file, missing))));
            }
        }
    }
    let media = match media_type_of(&file, download.clone(), deadline, stopping) {
        Ok(media) => media,
        Err(e) => return api_response(Err(unreadable(&e))),
    };
    let len = range.len();
    let mut reader = PieceStream::new(Arc::clone(&file), download, range, Arc::clone(stopping))
        .first_read_by(deadline);
    // The first bytes before the answer begins: a piece that will not
    // come (nothing downloads the file: 409) or does not come in time (a
    // download with no peer left: 504) is said with a status and why, not
    // a 206 whose body never starts.
    let mut first = vec![0; len.min(64 * 1024) as usize];
    match std::io::Read::read(&mut reader, &mut first) {
        Ok(n) => first.truncate(n),
        Err(e) => return api_response(Err(unreadable(&e))),
    }
    let body = std::io::Read::chain(std::io::Cursor::new(first), reader);
    let mut response = Response::new(
        status,
        Body::Stream {
            reader: Box::new(body),
            len,
        },
    )
    .with_header("Accept-Ranges", "bytes")
    .with_header("Cache-Control", "no-store");
    response = with_media_type(response, &media, file.name.as_str());
    if status == 206 {
        let last = range.end - 1;
        response = response.with_header(
            "Content-Range",
            &format!("bytes {}-{last}/{size}", range.start),
        );
    }
    response
}

/// `404`: the file is neither here nor downloading.
fn not_here() -> ApiError {
    ApiError::new(404, "this file is not here: download it first")
}

/// The status of a file's bytes that could not be read before the answer
/// began: `504` not come in time, `409` will not come (see
/// [`PieceStream`]), `500` anything else (a disk error).
fn unreadable(error: &std::io::Error) -> ApiError {
    let status = match error.kind() {
        std::io::ErrorKind::TimedOut => 504,
        std::io::ErrorKind::NotFound => 409,
        _ => 500,
    };
    ApiError::new(status, error.to_string())
}

/// The type a `/media` answer is sent with. The file and its name come
/// from another peer, so only audio and video go as what they are (for
/// the player, or a tab that plays them); anything else (an HTML page or
/// an SVG that carries a script, which a browser would run as this page's
/// own) goes as bytes to save under its name, never to show, and a
/// document opened anyway is sandboxed: no scripts, no access to this
/// page. No answer lets the browser guess another type.
fn with_media_type(response: Response, media: &MediaType, name: &str) -> Response {
    if media.kind != MediaKind::Other {
        return response.with_header("Content-Type", &media.mime);
    }
    response
        .with_header("Content-Type", "application/octet-stream")
        .with_header("Content-Disposition", &attachment(name))
        .with_header("Content-Security-Policy", "sandbox; default-src 'none'")
}

/// The type of `file`: from its name; for a file known to be audio or
/// video by its first bytes (a `clip.bin` that is an MP4), from those
/// bytes, waited for (and fetched first) until `deadline` while a
/// `download` brings them. Bytes that do not come are an error (as for
/// the range itself), not a guess: a video sent as bytes to save would
/// not play.
fn media_type_of(
    file: &Arc<SharedFile>,
    download: Option<Arc<Download>>,
    deadline: Instant,
    stopping: &Arc<AtomicBool>,
) -> std::io::Result<MediaType> {
    let by_name = super::media::from_name(std::path::Path::new(file.name.as_str()));
    if by_name.kind != MediaKind::Other || file.kind == MediaKind::Other {
        return Ok(by_name);
    }
    let end = file.manifest.size().min(super::media::HEAD_BYTES as u64);
    let mut head = vec![0; end as usize];
    let first_bytes = ByteRange { start: 0, end };
    let mut reader = PieceStream::new(
        Arc::clone(file),
        download,
        first_bytes,
        Arc::clone(stopping),
    )
    .first_read_by(deadline);
    std::io::Read::read_exact(&mut reader, &mut head)?;
    Ok(super::media::from_head(&head).unwrap_or(by_name))
}

/// `attachment` with the file's name (RFC 6266): an ASCII stand-in for
/// old browsers (`_` for anything else, quotes and backslashes included),
/// and the name itself percent-encoded in UTF-8.
fn attachment(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '_',
        })
        .collect();
    // What RFC 8187 leaves plain: letters, digits and !#$&+-.^_`|~.
    let encoded = crate::protocol::fields::PercentEncoded::new(name, b"\"'()*,/:;<=>?@[\\]{}");
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// The file of `key` in the library. While a download of it is starting
/// (finding peers, fetching the manifest), the file once that download
/// creates it, waited for until `deadline`: `504` if it is not there by
/// then, `409` with the reason if the download ends without it.
fn file_soon(
    peer: &Peer,
    key: FileKey,
    deadline: Instant,
    stopping: &AtomicBool,
) -> Result<Arc<SharedFile>, ApiError> {
    let library = peer.library();
    if let Some(file) = library.get(&key) {
        return Ok(file);
    }
    let download = api::running(peer, key).ok_or_else(not_here)?;
    loop {
        let over = download.is_finished();
        // (Looked at after `over`: a download that ends well has put
        // its file in the library by then.)
        if let Some(file) = library.get(&key) {
            return Ok(file);
        }
        let status = download.status();
        if over {
            let why = match status.state {
                DownloadState::Failed(reason) => reason,
                _ => "its file is no longer shared".to_string(),
            };
            let name = status.name;
            return Err(ApiError::new(
                409,
                format!("the download of {name} ended: {why}"),
            ));
        }
        if stopping.load(Ordering::Relaxed) {
            return Err(ApiError::new(503, "the page's server is stopping"));
        }
        if Instant::now() >= deadline {
            return Err(ApiError::new(
                504,
                format!(
                    "the download of {} has not found its manifest within {} s",
                    status.name,
                    stream::PIECE_WAIT.as_secs()
                ),
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_to_save_is_named_safely_in_its_header() {
        // A name from another peer: quotes, a backslash and non-ASCII.
        assert_eq!(
            attachment("a \"b\"\\é.txt"),
            "attachment; filename=\"a _b___.txt\"; filename*=UTF-8''a%20%22b%22%5C%C3%A9.txt"
        );
    }

    #[test]
    fn only_an_address_or_localhost_names_the_page() {
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LocalHost:8080",
            "[::1]:8080",
            "192.168.1.20:8080",
        ] {
            assert!(names_this_page(host, 8080), "{host}");
        }
        assert!(names_this_page("127.0.0.1", 80));
        assert!(names_this_page("[::1]", 80));
        for host in [
            "evil.example:8080",
            "127.0.0.1.nip.io:8080",
            "127.0.0.1:8081",
            "127.0.0.1",
            "::1:8080",
            "[::1]x:8080",
            "localhost:",
            "",
        ] {
            assert!(!names_this_page(host, 8080), "{host}");
        }
    }

    #[test]
    fn query_values_are_decoded() {
        let value = |query| query_value(query, "q").map_err(|e| e.status);
        assert_eq!(value("q=hello+world&x=1"), Ok("hello world".into()));
        assert_eq!(value("x=1&q=caf%C3%A9"), Ok("café".into()));
        assert_eq!(value(""), Ok(String::new()));
        assert_eq!(value("q=%zz"), Err(400), "not a %xx escape");
        assert_eq!(value("q=%ff%fe"), Err(400), "not UTF-8");
    }
}
