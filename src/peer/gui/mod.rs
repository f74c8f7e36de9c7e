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
//! joined when the page stops.

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
        let server = Server::http(addr)
            .map_err(|e| io::Error::other(format!("cannot serve the page on {addr}: {e}")))?;
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

/// The accepting thread: hands each request to a thread of its own.
fn accept(server: &Server, peer: &Arc<Peer>, stopping: &Arc<AtomicBool>) {
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
            .spawn(move || answer(request, &peer, &stopping));
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
fn answer(mut request: Request, peer: &Peer, stopping: &Arc<AtomicBool>) {
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
    fn query_values_are_decoded() {
        assert_eq!(query_value("q=hello+world&x=1", "q"), "hello world");
        assert_eq!(query_value("x=1&q=caf%C3%A9", "q"), "café");
        assert_eq!(query_value("q=%zz", "q"), "");
        assert_eq!(query_value("", "q"), "");
    }
}
