//! HTTP/1.1 over std's sockets: one thread per connection that reads requests under deadlines,
//! bodies with a size limit, JSON replies and errors, CORS, and server-sent event streams
//! written and flushed one event at a time.
//!
//! Our own rather than tiny_http's because tiny_http cannot time out its sockets: a client that
//! declared a body and never sent it held a worker forever, and its accept loop ended for good
//! when the process ran out of file descriptors.

use serde::Serialize;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// Larger bodies are refused: a full 128k-token context is well under 1 MiB of text.
pub const MAX_BODY: usize = 4 << 20;
/// A request line and headers beyond this are refused; real clients send well under 2 KiB.
const MAX_HEAD: usize = 16 << 10;

/// How long a connection may take: the bounds that keep a silent or slow client from holding
/// a thread and a socket forever.
pub struct Limits {
    /// For a request to start on a connection, new or kept alive.
    idle: Duration,
    /// For a started request's head and body to arrive in full.
    pub(super) request: Duration,
    /// For a client to take each write of a reply.
    write: Duration,
}

pub const LIMITS: Limits = Limits {
    idle: Duration::from_secs(10),
    request: Duration::from_secs(30),
    write: Duration::from_secs(30),
};

/// A reply that ends a request: the HTTP status and a message naming the problem.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
        }
    }

    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn kind(&self) -> &'static str {
        match self.status {
            401 => "authentication_error",
            404 => "not_found_error",
            503 => "unavailable_error",
            500..=599 => "server_error",
            _ => "invalid_request_error",
        }
    }

    pub fn to_json(&self) -> Value {
        json!({"error": {"code": self.status, "message": self.message, "type": self.kind()}})
    }

    /// Ollama's shape, whose clients read `error` as the message itself.
    pub fn to_plain_json(&self) -> Value {
        json!({"error": self.message})
    }
}

const CORS: [(&str, &str); 3] = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
    (
        "Access-Control-Allow-Headers",
        "Content-Type, Authorization",
    ),
];

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// The socket, read under a deadline that every read call re-applies, so a client that
/// trickles bytes cannot stretch a request past it.
struct Socket {
    stream: TcpStream,
    deadline: Instant,
    /// What the client is told when a request misses its deadline.
    request_limit: Duration,
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self
            .deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or(ErrorKind::TimedOut)?;
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

pub(super) enum Body {
    Length(usize),
    Chunked,
}

/// How a request's body is delimited and what its client asked of the connection, from its head.
pub(super) struct Framing {
    pub(super) body: Body,
    pub(super) expects_continue: bool,
    pub(super) keep_alive: bool,
}

/// A way to tell, while a reply waits for the model, whether its client has gone.
pub struct Client(Option<TcpStream>);

impl Client {
    /// A client that never goes: for requests served without a connection.
    pub fn detached() -> Client {
        Client(None)
    }

    /// Whether the client has closed or reset its connection. Looks at the socket without
    /// reading from it, so a request the client has already pipelined stays where it is.
    pub fn gone(&self) -> bool {
        let Some(stream) = &self.0 else {
            return false;
        };
        if stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        let gone = match stream.peek(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => !matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted),
        };
        let _ = stream.set_nonblocking(false);
        gone
    }
}

/// One request on a connection; the connection's thread keeps it, so that a handler that
/// panics can still be answered.
pub struct Request<'c> {
    reader: &'c mut BufReader<Socket>,
    method: String,
    path: String,
    http_1_0: bool,
    headers: Vec<(String, String)>,
    body: Body,
    expects_continue: bool,
    body_read: bool,
    responded: bool,
    keep_alive: bool,
}

impl Request<'_> {
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path without its query string.
    pub fn path(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }

    /// The client of this request, to watch while its reply waits.
    pub fn client(&self) -> Client {
        Client(self.reader.get_ref().stream.try_clone().ok())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The request body, refused beyond [`MAX_BODY`] before reading it when the client says its
    /// length, and after [`MAX_BODY`] bytes when it sends chunks. It can be read once.
    pub fn read_body(&mut self) -> Result<Vec<u8>, ApiError> {
        let body = self.read_body_once();
        // Where the next request would start is unknown after a body that went wrong.
        if body.is_err() {
            self.keep_alive = false;
        }
        body
    }

    fn read_body_once(&mut self) -> Result<Vec<u8>, ApiError> {
        let limit = self.reader.get_ref().request_limit;
        refuse_declared_too_large(&self.body)?;
        if self.body_read {
            return Ok(Vec::new());
        }
        self.body_read = true;
        if self.expects_continue {
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                .map_err(|error| body_read_error(error, limit))?;
        }
        read_body(self.reader, &self.body, limit)
    }

    /// Sends a reply; a client that has already gone is no error of ours.
    pub fn respond(&mut self, status: u16, content_type: &str, body: &[u8]) {
        if self.responded {
            return;
        }
        let length = format!("Content-Length: {}", body.len());
        let mut reply = self.head(status, content_type, &[&length]);
        reply.extend_from_slice(body);
        if self.write(&reply).is_err() {
            self.keep_alive = false;
        }
    }

    pub fn respond_json(&mut self, status: u16, body: &Value) {
        self.respond(
            status,
            "application/json; charset=utf-8",
            body.to_string().as_bytes(),
        );
    }

    pub fn respond_error(&mut self, error: &ApiError) {
        self.respond_json(error.status, &error.to_json());
    }

    /// Starts a streamed reply in `format`; the connection closes after it.
    pub fn start_stream(&mut self, format: StreamFormat) -> std::io::Result<EventStream<'_>> {
        // HTTP/1.0 has no chunked encoding: there the end of the body is the end of the
        // connection.
        let chunked = !self.http_1_0;
        self.keep_alive = false;
        let mut extra = vec!["Cache-Control: no-cache"];
        if chunked {
            extra.push("Transfer-Encoding: chunked");
        }
        let head = self.head(200, format.content_type(), &extra);
        self.write(&head)?;
        Ok(EventStream::to_writer(&self.reader.get_ref().stream, chunked).in_format(format))
    }

    /// The status line and headers of a reply, ending with the blank line. The connection is
    /// kept only when the client wants it and no unread body stands before its next request.
    fn head(&mut self, status: u16, content_type: &str, extra: &[&str]) -> Vec<u8> {
        self.responded = true;
        let body_unread = !self.body_read && !matches!(self.body, Body::Length(0));
        self.keep_alive &= !body_unread;
        let mut head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\n",
            reason(status)
        );
        for line in extra {
            head.push_str(line);
            head.push_str("\r\n");
        }
        for (name, value) in CORS {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let connection = if self.keep_alive {
            "keep-alive"
        } else {
            "close"
        };
        head.push_str(&format!("Connection: {connection}\r\n\r\n"));
        head.into_bytes()
    }

    fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut writer = &self.reader.get_ref().stream;
        writer.write_all(bytes)
    }
}

/// Unix reports a socket's timeout as WouldBlock, Windows as TimedOut.
fn is_timeout(error: &std::io::Error) -> bool {
    matches!(error.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
}

fn find_header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn body_too_large() -> ApiError {
    ApiError::new(
        413,
        format!("the request body is larger than the limit of {MAX_BODY} bytes"),
    )
}

/// A declared length beyond [`MAX_BODY`] is refused before a byte of it is read.
fn refuse_declared_too_large(body: &Body) -> Result<(), ApiError> {
    match body {
        Body::Length(n) if *n > MAX_BODY => Err(body_too_large()),
        _ => Ok(()),
    }
}

fn body_read_error(error: std::io::Error, request_limit: Duration) -> ApiError {
    if is_timeout(&error) {
        too_slow(request_limit)
    } else {
        ApiError::bad_request(format!("cannot read the request body: {error}"))
    }
}

/// A request's body as `body` frames it, within [`MAX_BODY`]; a read that times out is told
/// `request_limit`.
pub(super) fn read_body(
    reader: &mut impl BufRead,
    body: &Body,
    request_limit: Duration,
) -> Result<Vec<u8>, ApiError> {
    refuse_declared_too_large(body)?;
    let mut bytes = Vec::new();
    match *body {
        Body::Length(n) => {
            reader
                .take(n as u64)
                .read_to_end(&mut bytes)
                .map_err(|error| body_read_error(error, request_limit))?;
            if bytes.len() < n {
                return Err(body_read_error(
                    ErrorKind::UnexpectedEof.into(),
                    request_limit,
                ));
            }
        }
        Body::Chunked => read_chunks(reader, &mut bytes).map_err(|error| match error {
            ChunkError::Io(error) => body_read_error(error, request_limit),
            ChunkError::TooLarge => body_too_large(),
            ChunkError::Malformed => ApiError::bad_request("the chunked request body is malformed"),
        })?,
    }
    Ok(bytes)
}

fn too_slow(limit: Duration) -> ApiError {
    ApiError::new(
        408,
        format!(
            "the request did not arrive within {} s; send it whole and at once",
            limit.as_secs_f32()
        ),
    )
}

enum ChunkError {
    Io(std::io::Error),
    TooLarge,
    Malformed,
}

impl From<std::io::Error> for ChunkError {
    fn from(error: std::io::Error) -> ChunkError {
        ChunkError::Io(error)
    }
}

impl From<HeadError> for ChunkError {
    fn from(error: HeadError) -> ChunkError {
        match error {
            HeadError::Io(error) => ChunkError::Io(error),
            _ => ChunkError::Malformed,
        }
    }
}

fn read_chunks(reader: &mut impl BufRead, body: &mut Vec<u8>) -> Result<(), ChunkError> {
    loop {
        let line = read_line(reader)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        // from_str_radix also takes a sign: "+5" would be a size here and an error to a proxy
        // in front, which would then disagree with us on where the next request starts.
        if !size.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ChunkError::Malformed);
        }
        let size = usize::from_str_radix(size, 16).map_err(|_| ChunkError::Malformed)?;
        if size == 0 {
            // Trailer fields, which nothing here uses, up to the blank line.
            while !read_line(reader)?.is_empty() {}
            return Ok(());
        }
        if size > MAX_BODY - body.len() {
            return Err(ChunkError::TooLarge);
        }
        let start = body.len();
        reader.take(size as u64 + 2).read_to_end(body)?;
        if body.len() != start + size + 2 || !body.ends_with(b"\r\n") {
            return Err(ChunkError::Malformed);
        }
        body.truncate(start + size);
    }
}

pub(super) enum HeadError {
    Io(std::io::Error),
    TooLarge,
    Malformed(String),
    Version,
}

/// One line of a request head or chunk framing, without its CRLF, within [`MAX_HEAD`].
fn read_line(reader: &mut impl BufRead) -> Result<String, HeadError> {
    let mut line = Vec::new();
    reader
        .take(MAX_HEAD as u64)
        .read_until(b'\n', &mut line)
        .map_err(HeadError::Io)?;
    if !line.ends_with(b"\n") {
        return Err(if line.len() == MAX_HEAD {
            HeadError::TooLarge
        } else {
            HeadError::Io(ErrorKind::UnexpectedEof.into())
        });
    }
    line.pop();
    if line.ends_with(b"\r") {
        line.pop();
    }
    String::from_utf8(line)
        .map_err(|_| HeadError::Malformed("the request head is not UTF-8".into()))
}

pub(super) struct Head {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) http_1_0: bool,
    pub(super) headers: Vec<(String, String)>,
}

pub(super) fn read_head(reader: &mut impl BufRead) -> Result<Head, HeadError> {
    let malformed = |what: &str| HeadError::Malformed(what.to_string());
    let request_line = read_line(reader)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("the request line is not METHOD PATH HTTP/1.1"));
    };
    let http_1_0 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        v if v.starts_with("HTTP/") => return Err(HeadError::Version),
        _ => return Err(malformed("the request line is not METHOD PATH HTTP/1.1")),
    };
    if method.is_empty() || path.is_empty() {
        return Err(malformed("the request line is not METHOD PATH HTTP/1.1"));
    }
    let mut headers = Vec::new();
    let mut size = request_line.len();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        size += line.len();
        if size > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        let (name, value) = line
            .split_once(':')
            .filter(|(name, _)| !name.is_empty() && !name.contains([' ', '\t']))
            .ok_or_else(|| malformed("a header line is not Name: value"))?;
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok(Head {
        method: method.to_string(),
        path: path.to_string(),
        http_1_0,
        headers,
    })
}

/// What a request's head says about its body and its connection.
pub(super) fn framing(head: &Head) -> Result<Framing, ApiError> {
    let header = |name| find_header(&head.headers, name);
    // Of two framing headers a proxy in front may honour the other one, and so disagree with
    // us on where this body ends and the next request starts.
    let single = |name: &str| {
        let count = head
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count();
        if count > 1 {
            return Err(ApiError::bad_request(format!(
                "a request cannot have more than one {name} header"
            )));
        }
        Ok(find_header(&head.headers, name))
    };
    let connection = header("Connection").unwrap_or_default();
    let has = |token: &str| {
        connection
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let keep_alive = if head.http_1_0 {
        has("keep-alive")
    } else {
        !has("close")
    };
    let expects_continue = header("Expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let body = match (single("Transfer-Encoding")?, single("Content-Length")?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "a request cannot have both Transfer-Encoding and Content-Length",
            ))
        }
        (Some(coding), None) if coding.eq_ignore_ascii_case("chunked") => Body::Chunked,
        (Some(coding), None) => {
            return Err(ApiError::new(
                501,
                format!(
                    "the transfer encoding {coding} is not supported; \
                     send chunked or a Content-Length"
                ),
            ))
        }
        (None, Some(length)) => {
            let not_a_number =
                || ApiError::bad_request(format!("Content-Length {length} is not a number"));
            // parse() also takes a sign, which the header's grammar does not.
            if !length.bytes().all(|b| b.is_ascii_digit()) {
                return Err(not_a_number());
            }
            Body::Length(length.parse().map_err(|_| not_a_number())?)
        }
        (None, None) => Body::Length(0),
    };
    Ok(Framing {
        body,
        expects_continue,
        keep_alive,
    })
}

/// What the client is answered for a head that cannot be read; `None` when it has gone.
pub(super) fn head_refusal(error: HeadError, request_limit: Duration) -> Option<ApiError> {
    match error {
        HeadError::Io(error) if is_timeout(&error) => Some(too_slow(request_limit)),
        HeadError::Io(_) => None,
        HeadError::TooLarge => Some(ApiError::new(
            431,
            format!("the request head is larger than the limit of {MAX_HEAD} bytes"),
        )),
        HeadError::Malformed(message) => Some(ApiError::bad_request(message)),
        HeadError::Version => Some(ApiError::new(
            505,
            "this server speaks HTTP/1.0 and HTTP/1.1",
        )),
    }
}

impl<'c> Request<'c> {
    fn new(reader: &'c mut BufReader<Socket>, head: Head) -> Result<Request<'c>, ApiError> {
        let Framing {
            body,
            expects_continue,
            keep_alive,
        } = framing(&head)?;
        let Head {
            method,
            path,
            http_1_0,
            headers,
        } = head;
        Ok(Request {
            reader,
            method,
            path,
            http_1_0,
            headers,
            body,
            expects_continue,
            body_read: false,
            responded: false,
            keep_alive,
        })
    }
}

/// Serves the requests of one connection until the client closes it, a limit runs out, or a
/// reply ends it. A handler that panics gets its request answered with a 500.
pub fn serve_connection(stream: TcpStream, limits: &Limits, handle: &dyn Fn(&mut Request)) {
    // Events are single small writes that must leave at once, not wait for the last ACK.
    let configured = stream
        .set_write_timeout(Some(limits.write))
        .and_then(|()| stream.set_nodelay(true));
    if configured.is_err() {
        return;
    }
    let mut reader = BufReader::new(Socket {
        stream,
        deadline: Instant::now() + limits.idle,
        request_limit: limits.request,
    });
    loop {
        reader.get_mut().deadline = Instant::now() + limits.idle;
        // A connection that stays silent is closed without a word, as keep-alive ends.
        match reader.fill_buf() {
            Ok([]) | Err(_) => return,
            Ok(_) => {}
        }
        reader.get_mut().deadline = Instant::now() + limits.request;
        let refusal = match read_head(&mut reader) {
            Ok(head) => match Request::new(&mut reader, head) {
                Ok(mut request) => {
                    let handled = catch_unwind(AssertUnwindSafe(|| handle(&mut request)));
                    if handled.is_err() {
                        request.keep_alive = false;
                        request.respond_error(&ApiError::new(
                            500,
                            "the server failed while handling this request; it goes on serving others",
                        ));
                    }
                    if !request.responded {
                        return;
                    }
                    if request.keep_alive {
                        continue;
                    }
                    break;
                }
                Err(error) => error,
            },
            Err(error) => match head_refusal(error, limits.request) {
                Some(refusal) => refusal,
                None => return,
            },
        };
        refuse(&reader.get_ref().stream, &refusal);
        break;
    }
    linger(&mut reader);
}

/// How long a connection that is closing after its reply waits for the client to finish.
const LINGER: Duration = Duration::from_secs(1);

/// Closing a socket with input still unread makes the system reset the connection, which can
/// destroy the reply before the client has read it (a 401 or 413 sent without reading the
/// body); so the reply is ended with a FIN first and what the client still sends is read away,
/// for a bounded time.
fn linger(reader: &mut BufReader<Socket>) {
    let socket = reader.get_mut();
    let _ = socket.stream.shutdown(Shutdown::Write);
    socket.deadline = Instant::now() + LINGER;
    let _ = std::io::copy(&mut reader.take(MAX_BODY as u64), &mut std::io::sink());
}

/// Answers a connection that will get no request served, and closes it.
pub fn refuse(mut stream: &TcpStream, error: &ApiError) {
    let body = error.to_json().to_string();
    let mut reply = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        error.status,
        reason(error.status),
        body.len()
    );
    for (name, value) in CORS {
        reply.push_str(&format!("{name}: {value}\r\n"));
    }
    reply.push_str("\r\n");
    reply.push_str(&body);
    let _ = stream.write_all(reply.as_bytes());
}

/// How a streamed reply frames its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// Server-sent events, `data: ...` and a blank line: llama.cpp's and OpenAI's streams.
    Events,
    /// One JSON value a line (NDJSON): Ollama's streams.
    Lines,
}

impl StreamFormat {
    fn content_type(self) -> &'static str {
        match self {
            StreamFormat::Events => "text/event-stream",
            StreamFormat::Lines => "application/x-ndjson",
        }
    }
}

/// A streamed reply, each message its own chunk, flushed at once.
pub struct EventStream<'r> {
    writer: Box<dyn Write + 'r>,
    chunked: bool,
    format: StreamFormat,
}

impl<'r> EventStream<'r> {
    /// Server-sent events written to `writer` rather than to a connection: the fuzzers' dry
    /// run writes them to a sink, to run the code that formats them.
    pub fn to_writer(writer: impl Write + 'r, chunked: bool) -> EventStream<'r> {
        EventStream {
            writer: Box::new(writer),
            chunked,
            format: StreamFormat::Events,
        }
    }

    pub fn in_format(self, format: StreamFormat) -> EventStream<'r> {
        EventStream { format, ..self }
    }

    /// One message: a `data: ...` event, or a line. `data` is one line of JSON (or
    /// OpenAI's `[DONE]`), so neither framing needs escaping.
    pub fn send(&mut self, data: &str) -> std::io::Result<()> {
        let framed = match self.format {
            StreamFormat::Events => format!("data: {data}\n\n"),
            StreamFormat::Lines => format!("{data}\n"),
        };
        self.write(framed.as_bytes())
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.chunked {
            let mut chunk = format!("{:X}\r\n", bytes.len()).into_bytes();
            chunk.extend_from_slice(bytes);
            chunk.extend_from_slice(b"\r\n");
            self.writer.write_all(&chunk)
        } else {
            self.writer.write_all(bytes)
        }
    }

    /// Sends one of the reply types as an event.
    pub fn send_json(&mut self, body: &impl Serialize) -> std::io::Result<()> {
        let data = serde_json::to_string(body).map_err(std::io::Error::other)?;
        self.send(&data)
    }

    pub fn end(mut self) -> std::io::Result<()> {
        if self.chunked {
            self.writer.write_all(b"0\r\n\r\n")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpListener};

    const SHORT: Limits = Limits {
        idle: Duration::from_millis(300),
        request: Duration::from_millis(600),
        write: Duration::from_secs(5),
    };

    fn echo_or_panic(request: &mut Request) {
        match request.path() {
            "/panic" => panic!("a handler failed on purpose"),
            "/echo" => match request.read_body() {
                Ok(body) => request.respond(200, "text/plain", &body),
                Err(error) => request.respond_error(&error),
            },
            _ => request.respond(200, "text/plain", b"ok"),
        }
    }

    /// A server with `limits` that serves its connections one after another.
    fn start(limits: &'static Limits) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                serve_connection(stream, limits, &echo_or_panic);
            }
        });
        address
    }

    fn connect(address: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }

    /// Sends `raw` and reads until the server closes the connection.
    fn exchange(address: SocketAddr, raw: &[u8]) -> String {
        let mut stream = connect(address);
        stream.write_all(raw).unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply
    }

    #[test]
    fn a_kept_alive_connection_serves_bodies_by_length_and_by_chunks() {
        let address = start(&LIMITS);
        let reply = exchange(
            address,
            b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
              POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
              3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n",
        );
        let replies: Vec<&str> = reply.split("HTTP/1.1 ").skip(1).collect();
        assert_eq!(replies.len(), 2, "{reply}");
        assert!(replies[0].starts_with("200 OK\r\n"), "{reply}");
        assert!(replies[0].contains("Connection: keep-alive\r\n"), "{reply}");
        assert!(replies[0].ends_with("\r\n\r\nhello"), "{reply}");
        assert!(replies[1].contains("Connection: close\r\n"), "{reply}");
        assert!(replies[1].ends_with("\r\n\r\nabcde"), "{reply}");
    }

    #[test]
    fn a_client_that_expects_100_continue_is_told_to_send_its_body() {
        let address = start(&LIMITS);
        let mut stream = connect(address);
        stream
            .write_all(b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut interim = [0; 25];
        stream.read_exact(&mut interim).unwrap();
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        stream.write_all(b"abc").unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        assert!(
            reply.starts_with("HTTP/1.1 200 OK") && reply.ends_with("abc"),
            "{reply}"
        );
    }

    #[test]
    fn a_reply_sent_before_the_body_is_read_reaches_the_client() {
        let address = start(&LIMITS);
        let mut stream = connect(address);
        let body = vec![b'x'; 1 << 20];
        let head = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body).unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        assert!(reply.contains("Connection: close\r\n"), "{reply}");
        assert!(reply.ends_with("ok"), "{reply}");
    }

    #[test]
    fn a_panicking_handler_gets_a_500_and_the_server_goes_on() {
        let address = start(&LIMITS);
        let reply = exchange(address, b"GET /panic HTTP/1.1\r\n\r\n");
        assert!(reply.starts_with("HTTP/1.1 500 "), "{reply}");
        assert!(reply.contains("Connection: close\r\n"), "{reply}");
        assert!(reply.contains("goes on serving"), "{reply}");
        let reply = exchange(address, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(reply.starts_with("HTTP/1.1 200 OK") && reply.ends_with("ok"));
    }

    #[test]
    fn a_silent_connection_is_closed_after_the_idle_limit() {
        let address = start(&SHORT);
        let started = Instant::now();
        assert_eq!(exchange(address, b""), "", "closed without a reply");
        let waited = started.elapsed();
        assert!(
            waited >= SHORT.idle && waited < Duration::from_secs(5),
            "{waited:?}"
        );
    }

    #[test]
    fn a_head_sent_a_byte_at_a_time_gets_408_at_the_request_limit() {
        let address = start(&SHORT);
        let mut stream = connect(address);
        let started = Instant::now();
        // Each byte comes well within the idle limit; only the whole head's deadline ends it.
        for &byte in b"GET / HTTP/1.1\r\nX-Slow: ".iter().cycle() {
            if stream.write_all(&[byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            if started.elapsed() > Duration::from_secs(5) {
                panic!("the server still reads a head after 5 s");
            }
            if started.elapsed() > SHORT.request * 2 {
                break;
            }
        }
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        assert!(reply.starts_with("HTTP/1.1 408 "), "{reply:?}");
    }

    #[test]
    fn a_body_declared_and_never_sent_gets_408() {
        let address = start(&SHORT);
        let started = Instant::now();
        let reply = exchange(
            address,
            b"POST /echo HTTP/1.1\r\nContent-Length: 2000\r\n\r\n",
        );
        assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
        assert!(reply.contains("did not arrive within 0.6 s"), "{reply}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn bad_heads_are_refused_with_their_reason() {
        let address = start(&LIMITS);
        let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let cases: [(&[u8], &str); 7] = [
            (b"GET /\r\n\r\n", "400 "),
            (b"GET / HTTP/2.0\r\n\r\n", "505 "),
            (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", "400 "),
            (b"GET / HTTP/1.1\r\n\xff: x\r\n\r\n", "400 "),
            (huge.as_bytes(), "431 "),
            (
                b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                "400 ",
            ),
            (
                b"POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                "501 ",
            ),
        ];
        for (raw, status) in cases {
            let reply = exchange(address, raw);
            assert!(
                reply.starts_with(&format!("HTTP/1.1 {status}")),
                "{:?}: {reply}",
                String::from_utf8_lossy(&raw[..raw.len().min(40)])
            );
        }
        let chunked_too_large = format!(
            "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:X}\r\n",
            MAX_BODY + 1
        );
        let reply = exchange(address, chunked_too_large.as_bytes());
        assert!(reply.starts_with("HTTP/1.1 413 "), "{reply}");
        assert!(reply.contains("Connection: close\r\n"), "{reply}");
        let mut exact = format!(
            "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:X}\r\n",
            MAX_BODY
        )
        .into_bytes();
        exact.extend(std::iter::repeat_n(b' ', MAX_BODY));
        exact.extend_from_slice(b"\r\n1\r\n");
        let reply = exchange(address, &exact);
        assert!(reply.starts_with("HTTP/1.1 413 "), "{reply}");
        let overflowing =
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n";
        let reply = exchange(address, overflowing);
        assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
    }
}
