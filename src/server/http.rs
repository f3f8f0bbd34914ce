//! HTTP plumbing over tiny_http: bodies with a size limit, JSON replies and errors, CORS, and
//! server-sent event streams written and flushed one event at a time.

use serde_json::{json, Value};
use std::io::{Read, Write};
use tiny_http::{HTTPVersion, Header, Request, Response, StatusCode};

/// Larger bodies are refused: a full 128k-token context is well under 1 MiB of text.
pub const MAX_BODY: usize = 4 << 20;

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
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("header names and values are ASCII")
}

const CORS: [(&str, &str); 3] = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
    (
        "Access-Control-Allow-Headers",
        "Content-Type, Authorization",
    ),
];

/// Sends a reply; a client that has already gone is no error of ours.
pub fn respond(request: Request, status: u16, content_type: &str, body: Vec<u8>) {
    let mut response = Response::from_data(body)
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", content_type));
    for (name, value) in CORS {
        response.add_header(header(name, value));
    }
    let _ = request.respond(response);
}

pub fn respond_json(request: Request, status: u16, body: &Value) {
    respond(
        request,
        status,
        "application/json; charset=utf-8",
        body.to_string().into_bytes(),
    );
}

pub fn respond_error(request: Request, error: &ApiError) {
    respond_json(request, error.status, &error.to_json());
}

/// The request body, refused beyond [`MAX_BODY`] before reading it when the client says its
/// length, and after [`MAX_BODY`] bytes when it does not.
pub fn read_body(request: &mut Request) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            413,
            format!("the request body is larger than the limit of {MAX_BODY} bytes"),
        )
    };
    if request.body_length().is_some_and(|n| n > MAX_BODY) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
    if body.len() > MAX_BODY {
        return Err(too_large());
    }
    Ok(body)
}

/// A `text/event-stream` reply. tiny_http buffers a streamed body, so the response is written
/// by hand on the raw connection, each event its own chunk, flushed at once.
pub struct EventStream {
    writer: Box<dyn Write + Send>,
    chunked: bool,
}

impl EventStream {
    pub fn start(request: Request) -> std::io::Result<EventStream> {
        // HTTP/1.0 has no chunked encoding: there the end of the body is the end of the
        // connection, which tiny_http closes after a 1.0 request.
        let chunked = *request.http_version() != HTTPVersion(1, 0);
        let mut writer = request.into_writer();
        let mut head = String::from(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n",
        );
        head.push_str(if chunked {
            "Transfer-Encoding: chunked\r\n"
        } else {
            "Connection: close\r\n"
        });
        for (name, value) in CORS {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        writer.write_all(head.as_bytes())?;
        writer.flush()?;
        Ok(EventStream { writer, chunked })
    }

    /// One `data: ...` event.
    pub fn send(&mut self, data: &str) -> std::io::Result<()> {
        self.write(format!("data: {data}\n\n").as_bytes())
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.chunked {
            write!(self.writer, "{:X}\r\n", bytes.len())?;
            self.writer.write_all(bytes)?;
            self.writer.write_all(b"\r\n")?;
        } else {
            self.writer.write_all(bytes)?;
        }
        self.writer.flush()
    }

    pub fn end(mut self) -> std::io::Result<()> {
        if self.chunked {
            self.writer.write_all(b"0\r\n\r\n")?;
        }
        self.writer.flush()
    }
}
