//! The peer's web page: a small HTTP server (tiny_http, synchronous and
//! thread-based like the rest of the peer) on 127.0.0.1 by default, serving
//! - the page itself (`assets/`: plain HTML, CSS and JavaScript compiled
//!   into the binary; no build step);
//! - a JSON API behind it ([`api`]);
//! - the files for the page's player, with HTTP `Range` support, while they
//!   are still downloading ([`stream`]).
//!
//! One named thread takes requests (`gui-accept`) and one named thread
//! answers each (`gui-request`), at most [`MAX_REQUESTS`] at once; all are
//! joined when the page stops. A request or an answer that stalls for the
//! peer's `idle_timeout_secs` ends its connection (on Linux and the BSDs,
//! where accepted sockets take the listener's timeouts), so a stalled
//! client holds neither a thread nor the peer's shutdown.
//!
//! Only this machine's browser may use it ([`foreign_request`]): a request
//! must name the page by an IP address or `localhost` (which defeats DNS
//! rebinding), and a request that changes something must come from the
//! page itself, not from another site's (cross-site request forgery).

pub mod api;
pub mod stream;

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::{debug, info, warn};
use serde_json::Value;
use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

use super::library::SharedFile;
use super::Peer;
use crate::protocol::FileKey;
use api::{ApiError, ApiResult};
use stream::{parse_range, ByteRange, PieceStream, RangeAsk};

/// Requests answered at once; the next one gets `503` at once.
pub const MAX_REQUESTS: usize = 64;
/// How often the accepting thread looks whether the page is stopping.
const STOP_CHECK: Duration = Duration::from_millis(200);

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// The running web page of a peer.
pub struct Gui {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Gui {
    /// Listens on `addr` (port 0: any free port) and serves `peer`.
    pub fn start(addr: SocketAddr, peer: Arc<Peer>) -> io::Result<Gui> {
        let cannot = |e: &dyn std::fmt::Display| {
            io::Error::other(format!("cannot serve the page on {addr}: {e}"))
        };
        let listener = listener(addr, peer.config().idle_timeout).map_err(|e| cannot(&e))?;
        let server = Server::from_listener(listener, None).map_err(|e| cannot(&e))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| io::Error::other("the page's server has no IP address"))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let acceptor = thread::Builder::new().name("gui-accept".into()).spawn({
            let stopping = Arc::clone(&stopping);
            move || accept(&server, &peer, &stopping)
        })?;
        info!("web page on http://{addr}/");
        Ok(Gui {
            addr,
            stopping,
            acceptor: Some(acceptor),
        })
    }

    /// Where the page is served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving: waiting media reads end, every thread is joined.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl Drop for Gui {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A listening socket on `addr` whose accepted connections wait at most
/// `stall` for each read and each write (socket options a connection
/// takes from its listener on Linux and the BSDs; tiny_http does not
/// expose the connections to set them).
fn listener(addr: SocketAddr, stall: Duration) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    #[cfg(not(windows))]
    socket.set_reuse_address(true)?;
    socket.set_read_timeout(Some(stall))?;
    socket.set_write_timeout(Some(stall))?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

/// The accepting thread: hands each request to a thread of its own.
fn accept(server: &Server, peer: &Arc<Peer>, stopping: &Arc<AtomicBool>) {
    let port = server.server_addr().to_ip().map_or(0, |addr| addr.port());
    let mut answering: Vec<JoinHandle<()>> = Vec::new();
    while !stopping.load(Ordering::SeqCst) {
        let request = match server.recv_timeout(STOP_CHECK) {
            Ok(Some(request)) => request,
            Ok(None) => continue,
            Err(e) => {
                debug!("page: {e}");
                continue;
            }
        };
        answering.retain(|t| !t.is_finished());
        if answering.len() >= MAX_REQUESTS {
            let busy = ApiError::new(503, "the peer is busy; try again in a moment");
            let _ = request.respond(json_response(busy.status, &busy.body()));
            continue;
        }
        let (peer, stopping) = (Arc::clone(peer), Arc::clone(stopping));
        let spawned = thread::Builder::new()
            .name("gui-request".into())
            .spawn(move || answer(request, &peer, &stopping, port));
        match spawned {
            Ok(thread) => answering.push(thread),
            Err(e) => warn!("page: cannot start a thread: {e}"),
        }
    }
    for thread in answering {
        let _ = thread.join();
    }
}

/// Answers one request.
fn answer(mut request: Request, peer: &Peer, stopping: &Arc<AtomicBool>, port: u16) {
    if let Some(refused) = foreign_request(&request, port) {
        warn!("page: refused: {}", refused.message);
        return respond(request, api_response(Err(refused)));
    }
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let method = request.method().clone();
    let result = match (&method, path) {
        (Method::Get, "/" | "/index.html") => {
            return respond(request, asset(INDEX_HTML, "text/html; charset=utf-8"))
        }
        (Method::Get, "/app.js") => {
            return respond(request, asset(APP_JS, "text/javascript; charset=utf-8"))
        }
        (Method::Get, "/style.css") => {
            return respond(request, asset(STYLE_CSS, "text/css; charset=utf-8"))
        }
        (Method::Get | Method::Head, media) if media.starts_with("/media/") => {
            return serve_media(request, peer, &media["/media/".len()..], stopping);
        }
        // Browsers ask for it; there is none (and no error for it).
        (Method::Get, "/favicon.ico") => return respond(request, Response::empty(204)),
        (Method::Get, "/api/info") => api::info(peer),
        (Method::Get, "/api/files") => api::files(peer, &query_value(query, "q")),
        (Method::Get, "/api/downloads") => api::downloads(peer),
        (Method::Post, "/api/downloads") => {
            read_body(&mut request).and_then(|body| api::start_download(peer, &body))
        }
        (Method::Get, "/api/shares") => api::shares(peer),
        (_, "/api/downloads") => Err(ApiError::new(405, "use GET or POST")),
        (_, "/api/info" | "/api/files" | "/api/shares") => Err(ApiError::new(405, "use GET")),
        _ => Err(ApiError::new(404, format!("nothing at {path}"))),
    };
    respond(request, api_response(result));
}

/// Why a request is refused as not from this machine's own page, if it
/// is: its `Host` must be an IP address or `localhost` with the page's
/// port (a site that rebinds its own name to 127.0.0.1 sends that name),
/// and a request other than `GET` or `HEAD` with an `Origin` must come
/// from the page's own origin (a form or script of another site sends
/// its own). Requests without these headers (curl, scripts) pass.
fn foreign_request(request: &Request, port: u16) -> Option<ApiError> {
    let header = |name: &'static str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str())
    };
    let host = header("Host");
    if let Some(host) = host.filter(|host| !names_this_page(host, port)) {
        return Some(ApiError::new(
            403,
            format!("the page answers only by address or localhost, not as {host:?}"),
        ));
    }
    let changes = !matches!(request.method(), Method::Get | Method::Head);
    match (header("Origin"), host) {
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

fn respond<R: Read>(request: Request, response: Response<R>) {
    if let Err(e) = request.respond(response) {
        debug!("page: the answer was not sent whole: {e}");
    }
}

fn api_response(result: ApiResult) -> Response<io::Cursor<Vec<u8>>> {
    match result {
        Ok((status, body)) => json_response(status, &body),
        Err(error) => json_response(error.status, &error.body()),
    }
}

fn json_response(status: u16, body: &Value) -> Response<io::Cursor<Vec<u8>>> {
    Response::from_data(body.to_string().into_bytes())
        .with_status_code(status)
        .with_header(header("Content-Type", "application/json"))
        .with_header(header("Cache-Control", "no-store"))
}

fn asset(text: &'static str, content_type: &str) -> Response<io::Cursor<Vec<u8>>> {
    Response::from_data(text.as_bytes().to_vec()).with_header(header("Content-Type", content_type))
}

/// A header. Every call site passes constants, numbers or a MIME type,
/// all ASCII, never text from a request; `from_bytes` fails only on
/// non-ASCII.
fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("header text is ASCII")
}

/// Reads a small request body (at most [`api::MAX_BODY`] bytes).
fn read_body(request: &mut Request) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    request
        .as_reader()
        .take(api::MAX_BODY + 1)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::new(400, format!("cannot read the request body: {e}")))?;
    if body.len() as u64 > api::MAX_BODY {
        return Err(ApiError::new(413, "the request body is too long"));
    }
    Ok(body)
}

/// The value of `name` in a URL query (`+` and `%xx` decoded; empty when
/// absent or not decodable).
fn query_value(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| {
            crate::protocol::fields::percent_decode("q", &value.replace('+', " ")).ok()
        })
        .unwrap_or_default()
}

/// `GET /media/<key>`: the file for the player, whole or a range, while
/// it downloads (pieces not here yet are waited for and fetched first).
fn serve_media(request: Request, peer: &Peer, key: &str, stopping: &Arc<AtomicBool>) {
    let found = FileKey::parse(key)
        .ok()
        .and_then(|key| file_soon(peer, key, stopping));
    let Some(file) = found else {
        let missing = ApiError::new(404, "this file is not here: download it first");
        return respond(request, json_response(missing.status, &missing.body()));
    };
    let size = file.manifest.size();
    let range_header = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Range"))
        .map(|h| h.value.as_str().to_string());
    let (status, range) = match parse_range(range_header.as_deref(), size) {
        RangeAsk::Whole => (
            200,
            ByteRange {
                start: 0,
                end: size,
            },
        ),
        RangeAsk::Part(range) => (206, range),
        RangeAsk::Unsatisfiable => {
            let response = Response::empty(416)
                .with_header(header("Content-Range", &format!("bytes */{size}")));
            return respond(request, response);
        }
    };
    let mime = super::media::from_name(std::path::Path::new(file.name.as_str())).mime;
    let download = api::running(peer, file.key);
    let mut headers = vec![
        header("Content-Type", &mime),
        header("Accept-Ranges", "bytes"),
        header("Cache-Control", "no-store"),
    ];
    if status == 206 {
        let last = range.end - 1;
        headers.push(header(
            "Content-Range",
            &format!("bytes {}-{last}/{size}", range.start),
        ));
    }
    let body = PieceStream::new(Arc::clone(&file), download, range, Arc::clone(stopping));
    let length = usize::try_from(range.len()).ok();
    respond(
        request,
        Response::new(StatusCode(status), headers, body, length, None),
    );
}

/// The file of `key` in the library; if a download of it is starting
/// (finding peers, fetching the manifest), the file once it is created,
/// waiting at most [`stream::PIECE_WAIT`].
fn file_soon(peer: &Peer, key: FileKey, stopping: &AtomicBool) -> Option<Arc<SharedFile>> {
    let deadline = std::time::Instant::now() + stream::PIECE_WAIT;
    loop {
        if let Some(file) = peer.library().get(&key) {
            return Some(file);
        }
        let starting = api::running(peer, key).is_some();
        if !starting || stopping.load(Ordering::Relaxed) || std::time::Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(query_value("q=hello+world&x=1", "q"), "hello world");
        assert_eq!(query_value("x=1&q=caf%C3%A9", "q"), "café");
        assert_eq!(query_value("q=%zz", "q"), "");
        assert_eq!(query_value("", "q"), "");
    }
}
