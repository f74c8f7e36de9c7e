//! HTTP/1.1 as the web page needs it, spoken on a connection that the
//! shared accept loop ([`crate::server`]) handed over: reading requests
//! under caps and a deadline, and writing answers.
//!
//! What a browser, `curl` or a script sends is bounded before it is kept:
//! - the request line and the headers together: [`MAX_HEAD`] bytes, at most
//!   [`MAX_HEADERS`] headers (`431` past either);
//! - a body: [`MAX_BODY`] bytes, sized by `Content-Length` (`413` past it;
//!   a chunked body gets `501`: the page never sends one);
//! - time: each request must arrive whole within the connection's idle
//!   time, counted from the answer to the one before (`408` when a request
//!   stops half-way; an idle keep-alive connection is just closed), and a
//!   client must take each block of an answer (up to 64 KiB) within that
//!   time too.
//!
//! Connections are kept alive between requests (HTTP/1.1's default), as
//! browsers expect. Anything malformed is answered with its status and a
//! sentence in plain text, and the connection is closed (after a bounded
//! [`linger`], so that the client gets to read why).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::debug;

use crate::protocol::ProtocolError;
use crate::server::Connection;
use crate::wire::{is_timeout, IdleDeadline, LineReader, StallWriter};

/// Most bytes of a request line and its headers, line endings included.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers in one request (a browser sends about 15).
pub const MAX_HEADERS: usize = 64;
/// Longest request body (the page's API takes JSON under 100 bytes).
pub const MAX_BODY: usize = 4096;
/// Empty lines skipped before a request line (RFC 9112 section 2.2: some
/// clients send one after a `POST` body).
const LEADING_EMPTY_LINES: usize = 2;

/// A request's method. The page needs three; the others are kept by name
/// so that an answer can say which methods a path takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Other(String),
}

impl Method {
    fn parse(text: &str) -> Method {
        match text {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            other => Method::Other(other.to_string()),
        }
    }
}

/// One request, read whole.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    /// The target as sent (origin form: a path, then maybe `?query`).
    pub target: String,
    /// Names as sent (compare them with [`Request::header`]), values
    /// without the blanks around them.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the client keeps the connection for another request.
    keep_alive: bool,
}

impl Request {
    /// The value of the header `name` (any case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The target's path, without the query.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(&self.target, |(path, _)| path)
    }

    /// The target's query (after `?`; empty when there is none).
    pub fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, query)| query)
    }
}

/// An answer: a status, headers, and a body whose length is known before
/// it is sent (`Content-Length` is always given).
pub struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
    /// The connection is closed after this answer, whatever the client
    /// asked (a refusal: its slot is not kept for another request).
    closes: bool,
}

/// What follows an answer's headers.
pub enum Body {
    /// Bytes at hand (an API answer, a page asset compiled in).
    Bytes(Cow<'static, [u8]>),
    /// `len` bytes read as they are sent (a file for the player).
    Stream { reader: Box<dyn Read>, len: u64 },
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Bytes(bytes) => bytes.len() as u64,
            Body::Stream { len, .. } => *len,
        }
    }
}

impl Response {
    /// An answer of `status` with `body`.
    pub fn new(status: u16, body: Body) -> Response {
        Response {
            status,
            closes: false,
            headers: Vec::new(),
            body,
        }
    }

    /// An answer of `status` with no body.
    pub fn empty(status: u16) -> Response {
        Response::new(status, Body::Bytes(Cow::Borrowed(b"")))
    }

    /// An answer of `status` whose body is `bytes` of `content_type`.
    pub fn bytes(
        status: u16,
        content_type: &str,
        bytes: impl Into<Cow<'static, [u8]>>,
    ) -> Response {
        Response::new(status, Body::Bytes(bytes.into())).with_header("Content-Type", content_type)
    }

    /// RFC 9110 sections 8.6 and 6.4.1: a 204 or a 304 has neither a
    /// Content-Length nor a body.
    fn bodiless(&self) -> bool {
        matches!(self.status, 204 | 304)
    }

    /// A plain-text answer: `status` and one sentence.
    pub fn text(status: u16, sentence: &str) -> Response {
        Response::bytes(
            status,
            "text/plain; charset=utf-8",
            format!("{sentence}\n").into_bytes(),
        )
    }

    /// The same answer, after which the connection is closed.
    pub fn and_close(mut self) -> Response {
        self.closes = true;
        self
    }

    /// Adds a header. `value` comes from this program (a MIME type, a
    /// number), never from a request; a line break in it would end the
    /// headers early, so any control character is replaced by a space.
    pub fn with_header(mut self, name: &'static str, value: &str) -> Response {
        let value = value
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        self.headers.push((name, value));
        self
    }
}

/// What the page makes of a request.
pub type Answer<'a> = dyn FnMut(Request) -> Response + 'a;

/// Serves requests on the connection until the client closes it, asks to
/// close it, sends something malformed, or lets `idle` pass (or the server
/// stops).
pub fn serve(conn: &Connection, idle: Duration, answer: &mut Answer<'_>) {
    let (stream, remote) = (&conn.stream, conn.remote);
    if let Err(e) = stream
        .set_nodelay(true)
        .and_then(|()| stream.set_write_timeout(Some(idle)))
    {
        debug!("page: {remote}: cannot set up the socket: {e}");
        return;
    }
    let reading = IdleDeadline::stopped_by(stream, idle, conn.stop.clone());
    let mut reader = LineReader::new(Allowance::new(reading), MAX_HEAD);
    loop {
        // Waiting from here until the request's head is all there: the
        // connection may be closed meanwhile to make room for another
        // (`ServerOptions::make_room`).
        conn.waiting.begin();
        reader.get_mut().start_request();
        let request = match read_request(&mut reader, &mut &*stream) {
            Ok(Some(request)) => {
                conn.waiting.end();
                request
            }
            Ok(None) => return,
            Err(Failure::Quiet(why)) => {
                debug!("page: {remote}: {why}");
                return;
            }
            Err(Failure::Refused(refused)) => {
                debug!("page: {remote}: refused: {}", refused.sentence);
                let response = Response::text(refused.status, &refused.sentence);
                if write_response(stream, idle, response, Framing::REFUSAL).is_ok() {
                    linger(stream);
                }
                return;
            }
        };
        let mut framing = Framing::for_request(&request);
        let response = answer(request);
        framing.keep_alive &= !response.closes;
        if let Err(e) = write_response(stream, idle, response, framing) {
            debug!("page: {remote}: the answer was not sent whole: {e}");
            return;
        }
        if !framing.keep_alive {
            return;
        }
    }
}

/// Most bytes read and dropped after a refusal, and for how long.
const LINGER_BYTES: u64 = 256 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Closes a connection whose request was refused before it was read whole,
/// so that the client reads the refusal: closing with its bytes unread
/// would send a reset, and a reset can destroy the answer on its way
/// (the "lingering close" of web servers). Ends writing, then drops what
/// the client still sends, bounded in bytes and time.
fn linger(stream: &TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let until = Instant::now() + LINGER_TIME;
    let mut timeout = crate::wire::ReadTimeout::default();
    let mut left = LINGER_BYTES;
    let mut sink = [0; 8192];
    while left > 0 {
        match timeout.read_before(stream, Some(until), None, &mut sink, "linger over") {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n as u64),
        }
    }
}

/// Why no request came.
#[derive(Debug)]
enum Failure {
    /// The connection ended or fell idle between requests, or failed:
    /// nothing to answer.
    Quiet(String),
    /// The request is refused with a status.
    Refused(Refusal),
}

#[derive(Debug)]
struct Refusal {
    status: u16,
    sentence: String,
}

fn refuse(status: u16, sentence: impl Into<String>) -> Failure {
    Failure::Refused(Refusal {
        status,
        sentence: sentence.into(),
    })
}

/// Reads one request. `Ok(None)`: the client closed the connection
/// between requests. `interim` takes a `100 Continue` when the client
/// waits for one before sending its body.
fn read_request<R: Read>(
    reader: &mut LineReader<Allowance<R>>,
    interim: &mut impl Write,
) -> Result<Option<Request>, Failure> {
    let mut empty_lines = 0;
    let request_line = loop {
        match next_line(reader, Reading::BetweenRequests)? {
            None => return Ok(None),
            Some(line) if line.is_empty() && empty_lines < LEADING_EMPTY_LINES => empty_lines += 1,
            Some(line) => break line,
        }
    };
    let (method, target, authority, version) = parse_request_line(&request_line)?;
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let Some(line) = next_line(reader, Reading::InRequest)? else {
            return Err(Failure::Quiet("closed in the middle of a request".into()));
        };
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(refuse(431, format!("more than {MAX_HEADERS} headers")));
        }
        headers.push(parse_header(&line)?);
    }
    let mut request = Request {
        method,
        target,
        headers,
        body: Vec::new(),
        keep_alive: version == Version::Http11,
    };
    check_framing(&mut request, version)?;
    // A target in absolute form names the host itself, and the `Host`
    // header sent with it is to be ignored (RFC 9112 section 3.2.2).
    if let Some(authority) = authority {
        request
            .headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case("Host"));
        request.headers.push(("Host".to_string(), authority));
    }
    let length = body_length(&request)?;
    if length > 0 {
        // An HTTP/1.0 client's expectation is ignored (RFC 9110 section
        // 10.1.1): it never gets a 1xx answer.
        let expect = request
            .header("Expect")
            .filter(|_| version == Version::Http11);
        if let Some(expect) = expect {
            if !expect.eq_ignore_ascii_case("100-continue") {
                return Err(refuse(417, format!("cannot meet Expect: {expect}")));
            }
            interim
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .and_then(|()| interim.flush())
                .map_err(|e| Failure::Quiet(format!("cannot send 100 Continue: {e}")))?;
        }
        reader.get_mut().allow(length);
        request.body = reader
            .read_payload_vec(length, MAX_BODY)
            .map_err(|e| read_failure(reader, &e, Reading::InRequest))?;
    }
    Ok(Some(request))
}

/// Where a read falls: a client that stops in the middle of a request
/// gets `408` when its time is up; between requests it is closed quietly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    BetweenRequests,
    InRequest,
}

/// The next line of the head, as owned text; `None` at a clean end of the
/// stream.
fn next_line<R: Read>(
    reader: &mut LineReader<Allowance<R>>,
    reading: Reading,
) -> Result<Option<String>, Failure> {
    match reader.read_line() {
        Ok(None) => Ok(None),
        Ok(Some(Ok(line))) => Ok(Some(line.to_string())),
        Ok(Some(Err(ProtocolError::LineTooLong { .. }))) => Err(refuse(
            431,
            format!("the request's head is over {MAX_HEAD} bytes"),
        )),
        Ok(Some(Err(_))) => Err(refuse(400, "the request's head is not UTF-8 text")),
        Err(e) => Err(read_failure(reader, &e, reading)),
    }
}

/// What a failed read means for the client. Between requests, a request
/// has started if some of it is in the reader's buffer.
fn read_failure<R: Read>(
    reader: &LineReader<Allowance<R>>,
    e: &io::Error,
    reading: Reading,
) -> Failure {
    let started = reading == Reading::InRequest || reader.buffered() > 0;
    if reader.get_ref().exhausted() {
        refuse(431, format!("the request's head is over {MAX_HEAD} bytes"))
    } else if is_timeout(e) && started {
        refuse(408, "the request did not arrive in time")
    } else {
        Failure::Quiet(e.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Http10,
    Http11,
}

/// The methods of HTTP (RFC 9110 and PATCH): another one is not known
/// here (`501`); one of these on a path that does not take it is `405`.
const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// `METHOD target HTTP/1.x`, each part separated by one space: the
/// method, the target in origin form (see [`parse_target`]), the host it
/// named if any, and the version.
fn parse_request_line(line: &str) -> Result<(Method, String, Option<String>, Version), Failure> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refuse(400, "a request line is: METHOD /path HTTP/1.1"));
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(refuse(400, "the method is not a word"));
    }
    if target.bytes().any(|b| b.is_ascii_control()) {
        return Err(refuse(
            400,
            "a control character in the target (escape it as %xx)",
        ));
    }
    let (target, authority) = parse_target(method, target)?;
    if !KNOWN_METHODS.contains(&method) {
        return Err(refuse(
            501,
            format!("{method} is not an HTTP method this page knows"),
        ));
    }
    let version = match version {
        "HTTP/1.1" => Version::Http11,
        "HTTP/1.0" => Version::Http10,
        other if other.starts_with("HTTP/") => {
            return Err(refuse(505, format!("{other} is not served; use HTTP/1.1")))
        }
        _ => return Err(refuse(400, "a request line ends with HTTP/1.1")),
    };
    Ok((Method::parse(method), target, authority, version))
}

/// A request's target in the forms RFC 9112 section 3.2 gives a server
/// to take: a path (origin form, `/api/info?q=x`); the same after the
/// scheme and host (absolute form, `http://127.0.0.1:8080/api/info`,
/// which a proxy sends), returned as the path and the host; or `*`, for
/// `OPTIONS` alone (asterisk form: the server as a whole).
fn parse_target(method: &str, target: &str) -> Result<(String, Option<String>), Failure> {
    const NOT_A_TARGET: &str = "the target must be a path starting with /";
    if target.starts_with('/') || (target == "*" && method == "OPTIONS") {
        return Ok((target.to_string(), None));
    }
    let Some((scheme, rest)) = target.split_once("://") else {
        return Err(refuse(400, NOT_A_TARGET));
    };
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(refuse(400, format!("{NOT_A_TARGET} (or http://host/path)")));
    }
    let (host, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    if host.is_empty() || host.contains('@') {
        return Err(refuse(
            400,
            "the target's host must be a name or address and a port, nothing more",
        ));
    }
    let path = match path.strip_prefix('/') {
        Some(_) => path.to_string(),
        None => format!("/{path}"),
    };
    Ok((path, Some(host.to_string())))
}

/// `Name: value` (no blank before the colon; no folded lines).
fn parse_header(line: &str) -> Result<(String, String), Failure> {
    let Some((name, value)) = line.split_once(':') else {
        return Err(refuse(400, "a header line is: Name: value"));
    };
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return Err(refuse(400, format!("{name:?} is not a header name")));
    }
    // RFC 9110 section 5.5: no control character but the tab in a value
    // (a NUL or a lone CR there is a request made to confuse a parser).
    if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(refuse(
            400,
            format!("a control character in the value of {name}"),
        ));
    }
    Ok((
        name.to_string(),
        value.trim_matches([' ', '\t']).to_string(),
    ))
}

/// A character allowed in a method or a header name (RFC 9110 `tchar`).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks `Host` and reads `Connection`: whether the connection stays open
/// after the answer (an HTTP/1.0 client's is closed after each answer).
fn check_framing(request: &mut Request, version: Version) -> Result<(), Failure> {
    let hosts = request
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("Host"))
        .count();
    if hosts > 1 || (hosts == 0 && version == Version::Http11) {
        return Err(refuse(
            400,
            "an HTTP/1.1 request has exactly one Host header",
        ));
    }
    for (name, value) in &request.headers {
        if !name.eq_ignore_ascii_case("Connection") {
            continue;
        }
        for option in value.split(',').map(str::trim) {
            if option.eq_ignore_ascii_case("close") {
                request.keep_alive = false;
            }
        }
    }
    Ok(())
}

/// The body's length from `Content-Length` (0 without one); a chunked
/// body is not taken.
fn body_length(request: &Request) -> Result<usize, Failure> {
    if request.header("Transfer-Encoding").is_some() {
        return Err(refuse(
            501,
            "a body must come with a Content-Length, not a Transfer-Encoding",
        ));
    }
    let mut length: Option<u64> = None;
    for (name, value) in &request.headers {
        if !name.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refuse(
                400,
                format!("Content-Length {value:?} is not a number"),
            ));
        }
        // All digits: too many for a u64 is just too long (413 below).
        let new = value.parse::<u64>().unwrap_or(u64::MAX);
        match length {
            Some(old) if new != old => {
                return Err(refuse(400, "two different Content-Length headers"))
            }
            _ => length = Some(new),
        }
    }
    match length {
        Some(n) if n > MAX_BODY as u64 => Err(refuse(
            413,
            format!("a body here is at most {MAX_BODY} bytes"),
        )),
        Some(n) => Ok(n as usize),
        None => Ok(0),
    }
}

/// How an answer goes out: with its body or not, and whether the
/// connection stays open after it.
#[derive(Debug, Clone, Copy)]
struct Framing {
    /// False for a `HEAD` request: the headers alone.
    with_body: bool,
    /// The connection stays open for another request.
    keep_alive: bool,
}

impl Framing {
    /// A refusal: the whole answer, then the connection is closed.
    const REFUSAL: Framing = Framing {
        with_body: true,
        keep_alive: false,
    };

    /// The answer to `request`, as its method and headers ask.
    fn for_request(request: &Request) -> Framing {
        Framing {
            with_body: request.method != Method::Head,
            keep_alive: request.keep_alive,
        }
    }
}

/// Writes `response`, framed as `framing` says. Of the
/// answer, the client must take 64 KiB, or all of a smaller one, within
/// each `stall` spent writing it ([`StallWriter`]; the time the body takes
/// to be read, a piece still coming, is not the client's).
///
/// Written straight to the socket, with no buffer in between: a buffer
/// would try to flush again when dropped after a failed write, and so
/// wait out the time a second time.
fn write_response(
    stream: &TcpStream,
    stall: Duration,
    response: Response,
    framing: Framing,
) -> io::Result<()> {
    let head = head_of(&response, framing.keep_alive);
    let send_body = framing.with_body && !response.bodiless();
    let mut out = StallWriter::new(stream, stall);
    match response.body {
        // Small: the head and the body in one write.
        Body::Bytes(bytes) => {
            let mut whole = head.into_bytes();
            if send_body {
                whole.extend_from_slice(&bytes);
            }
            out.write_all(&whole)
        }
        // The head at once (the player sees the answer begin even while
        // the first piece is awaited), then the body as it is read.
        Body::Stream { reader, len } => {
            out.write_all(head.as_bytes())?;
            if send_body {
                copy_exactly(reader, len, &mut out)?;
            }
            Ok(())
        }
    }
}

/// The status line and headers of `response`, with the date, its length
/// and, unless `keep_alive`, `Connection: close`.
fn head_of(response: &Response, keep_alive: bool) -> String {
    let status = response.status;
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    let _ = write!(head, "Date: {}\r\n", http_date(SystemTime::now()));
    for (name, value) in &response.headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if !response.bodiless() {
        let _ = write!(head, "Content-Length: {}\r\n", response.body.len());
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    head
}

/// Copies exactly `len` bytes of `reader` to `out`, 64 KiB at a time; a
/// reader that ends sooner is an error (the client was promised `len`).
fn copy_exactly(mut reader: Box<dyn Read>, len: u64, out: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = match reader.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the body ended after {} of {len} bytes", len - left),
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// The reason phrase of the statuses this server sends.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// The answer sent to a connection past the page's cap, before it is
/// closed (see [`crate::server::ServerOptions::busy`]).
pub fn busy(sentence: &str) -> Vec<u8> {
    let response = Response::text(503, sentence);
    let mut whole = head_of(&response, false).into_bytes();
    if let Body::Bytes(body) = &response.body {
        whole.extend_from_slice(body);
    }
    whole
}

/// `time` as an HTTP date (RFC 9110 section 5.6.7): `Sun, 06 Nov 1994
/// 08:49:37 GMT`.
fn http_date(time: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, of_day) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm,
    // counting from 0000-03-01 so that leap days fall at a year's end).
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let of_era = shifted % 146_097;
    let year_of_era = (of_era - of_era / 1460 + of_era / 36_524 - of_era / 146_096) / 365;
    let day_of_year = of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = (month_index + 2) % 12; // 0 = January
    let year = year_of_era + era * 400 + u64::from(month < 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[month as usize],
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// A reader that lets through only so many bytes per request: the head's
/// cap while the head is read, plus the body's length once it is known.
/// Past that it fails (and says so by [`Allowance::exhausted`]), so a
/// client streaming a header without end is refused at once, not at the
/// deadline.
///
/// A read never asks for more than is left, so bytes read ahead of the
/// head (the body, or a next request sent without waiting) count against
/// it only when the head itself is over the cap.
struct Allowance<R> {
    inner: R,
    left: usize,
    exhausted: bool,
}

impl<R> Allowance<R> {
    fn new(inner: R) -> Allowance<R> {
        Allowance {
            inner,
            left: 0,
            exhausted: false,
        }
    }

    /// More bytes may come: `more` of a body.
    fn allow(&mut self, more: usize) {
        self.left = self.left.saturating_add(more);
    }

    fn exhausted(&self) -> bool {
        self.exhausted
    }
}

impl Allowance<IdleDeadline<'_>> {
    /// A new request may start: a new head's allowance and a new deadline.
    fn start_request(&mut self) {
        self.left = MAX_HEAD;
        self.inner.restart();
    }
}

impl<R: Read> Read for Allowance<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 && !buf.is_empty() {
            self.exhausted = true;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "more bytes than a request may have",
            ));
        }
        let n = buf.len().min(self.left);
        let read = self.inner.read(&mut buf[..n])?;
        self.left -= read;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads one request from `bytes` (the head's allowance as a fresh
    /// connection has it); the `100 Continue`, if any, goes to `interim`.
    fn read(bytes: &[u8], interim: &mut Vec<u8>) -> Result<Option<Request>, Failure> {
        let mut allowance = Allowance::new(bytes);
        allowance.allow(MAX_HEAD);
        let mut reader = LineReader::new(allowance, MAX_HEAD);
        read_request(&mut reader, interim)
    }

    fn status_of(bytes: &[u8]) -> u16 {
        match read(bytes, &mut Vec::new()) {
            Err(Failure::Refused(refusal)) => refusal.status,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_browser_request_is_read_whole() {
        let mut interim = Vec::new();
        let request = read(
            b"\r\nPOST /api/downloads?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
              content-length: 2\r\nOrigin:  http://127.0.0.1:8080 \r\n\r\n{}",
            &mut interim,
        )
        .unwrap()
        .unwrap();
        assert_eq!(request.method, Method::Post);
        assert_eq!((request.path(), request.query()), ("/api/downloads", "x=1"));
        assert_eq!(request.header("ORIGIN"), Some("http://127.0.0.1:8080"));
        assert_eq!(request.body, b"{}");
        assert!(request.keep_alive);
        assert!(interim.is_empty());
    }

    #[test]
    fn connection_options_decide_keep_alive() {
        let keeps = |text: &str| {
            read(text.as_bytes(), &mut Vec::new())
                .unwrap()
                .unwrap()
                .keep_alive
        };
        assert!(!keeps(
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n"
        ));
        assert!(!keeps("GET / HTTP/1.0\r\n\r\n"));
        assert!(!keeps("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        assert!(keeps(
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n"
        ));
    }

    #[test]
    fn a_client_waiting_to_send_its_body_is_told_to_go_on() {
        let mut interim = Vec::new();
        let request = read(
            b"POST /api/downloads HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\
              Content-Length: 3\r\n\r\nabc",
            &mut interim,
        )
        .unwrap()
        .unwrap();
        assert_eq!(interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(request.body, b"abc");
        // Never to an HTTP/1.0 client (RFC 9110 section 10.1.1).
        let mut interim = Vec::new();
        let request = read(
            b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
            &mut interim,
        )
        .unwrap()
        .unwrap();
        assert!(interim.is_empty());
        assert_eq!(request.body, b"abc");
    }

    #[test]
    fn a_target_in_absolute_form_is_its_path_and_names_the_host() {
        let request = read(
            b"GET http://127.0.0.1:8080/api/files?q=x HTTP/1.1\r\nHost: evil.example\r\n\r\n",
            &mut Vec::new(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(request.path(), "/api/files");
        assert_eq!(request.query(), "q=x");
        // The target's host, not the header's, is the one the page checks.
        assert_eq!(request.header("Host"), Some("127.0.0.1:8080"));
        let bare = read(
            b"GET HTTP://h:1 HTTP/1.1\r\nHost: h:1\r\n\r\n",
            &mut Vec::new(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(bare.path(), "/");
        let star = read(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", &mut Vec::new())
            .unwrap()
            .unwrap();
        assert_eq!(star.path(), "*");
    }

    #[test]
    fn a_clean_end_between_requests_is_no_request() {
        assert!(read(b"", &mut Vec::new()).unwrap().is_none());
    }

    #[test]
    fn malformed_requests_get_their_status() {
        let cases: [(&[u8], u16); 24] = [
            (b"GET /\r\n\r\n", 400),
            (b"GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"BREW / HTTP/1.1\r\nHost: h\r\n\r\n", 501),
            (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX: \xff\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +2\r\n\r\nab",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4097\r\n\r\n",
                413,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                413,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                501,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx",
                417,
            ),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\x7f\r\n\r\n", 400),
        ];
        for (bytes, status) in cases {
            assert_eq!(
                status_of(bytes),
                status,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn a_head_over_its_caps_gets_431() {
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert_eq!(
            status_of(format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n").as_bytes()),
            431
        );
        let long = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD)
        );
        assert_eq!(status_of(long.as_bytes()), 431);
        // A header line without an end is refused once the cap is read,
        // not buffered until the end comes.
        let endless = std::io::repeat(b'a');
        let mut allowance = Allowance::new(b"GET / HTTP/1.1\r\nX: ".as_slice().chain(endless));
        allowance.allow(MAX_HEAD);
        let mut reader = LineReader::new(allowance, MAX_HEAD);
        match read_request(&mut reader, &mut Vec::new()) {
            Err(Failure::Refused(refusal)) => assert_eq!(refusal.status, 431),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn answers_carry_their_length_and_dates_are_http_dates() {
        assert_eq!(
            http_date(UNIX_EPOCH + Duration::from_secs(784_111_777)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            http_date(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
        let busy = String::from_utf8(busy("full")).unwrap();
        assert!(busy.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(busy.ends_with("Content-Length: 5\r\nConnection: close\r\n\r\nfull\n"));
        let response = Response::text(200, "a\r\nb").with_header("X", "c\r\nd");
        assert_eq!(response.headers.last().unwrap().1, "c  d");
    }
}
