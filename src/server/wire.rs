//! A connection's bytes through the server's HTTP/1.1 parsing with no socket: the head, framing
//! and body code that `http::serve_connection` runs, over a byte slice. For the `http_wire` fuzz
//! target and tests of the parser on exact bytes.

use super::http::{self, Framing, LIMITS};

pub use super::http::{ApiError, MAX_BODY};

/// What one request on a connection led to.
#[derive(Debug)]
pub enum Parsed {
    /// A request whose head and body arrived whole.
    Request(WireRequest),
    /// What the server answered instead of serving a request; the connection ends after it.
    Refused(ApiError),
}

#[derive(Debug, PartialEq, Eq)]
pub struct WireRequest {
    pub method: String,
    /// The request target as sent, query included.
    pub path: String,
    /// In the order sent, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The requests in `bytes`, sent by a client on one connection that it then closed, read as the
/// server reads them when every handler reads its body. They end at the first refusal, after a
/// request that does not keep the connection alive, or where the bytes end; a request cut off
/// within its head ends them with nothing, as the server closes such a connection without a word.
pub fn parse(bytes: &[u8]) -> Vec<Parsed> {
    let mut reader = bytes;
    let mut parsed = Vec::new();
    while !reader.is_empty() {
        let head = match http::read_head(&mut reader) {
            Ok(head) => head,
            Err(error) => {
                parsed.extend(http::head_refusal(error, LIMITS.request).map(Parsed::Refused));
                break;
            }
        };
        let framing = http::framing(&head);
        let read = framing.and_then(
            |Framing {
                 body, keep_alive, ..
             }| {
                http::read_body(&mut reader, &body, LIMITS.request).map(|body| (body, keep_alive))
            },
        );
        match read {
            Ok((body, keep_alive)) => {
                parsed.push(Parsed::Request(WireRequest {
                    method: head.method,
                    path: head.path,
                    headers: head.headers,
                    body,
                }));
                if !keep_alive {
                    break;
                }
            }
            Err(refusal) => {
                parsed.push(Parsed::Refused(refusal));
                break;
            }
        }
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(parsed: &[Parsed]) -> Vec<&WireRequest> {
        parsed
            .iter()
            .filter_map(|item| match item {
                Parsed::Request(request) => Some(request),
                Parsed::Refused(_) => None,
            })
            .collect()
    }

    fn refusal(parsed: &[Parsed]) -> Option<u16> {
        match parsed.last() {
            Some(Parsed::Refused(error)) => Some(error.status),
            _ => None,
        }
    }

    #[test]
    fn pipelined_requests_are_read_by_length_and_by_chunks_until_one_closes() {
        let parsed = parse(
            b"POST /a?q=1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
              POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
              3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n\
              GET /never HTTP/1.1\r\n\r\n",
        );
        let requests = requests(&parsed);
        assert_eq!(parsed.len(), 2, "{parsed:?}");
        assert_eq!(requests[0].path, "/a?q=1");
        assert_eq!(requests[0].body, b"hello");
        assert_eq!(
            requests[1].headers,
            [
                ("Transfer-Encoding".to_string(), "chunked".to_string()),
                ("Connection".to_string(), "close".to_string())
            ]
        );
        assert_eq!(requests[1].body, b"abcde");
    }

    #[test]
    fn http_1_0_keeps_the_connection_only_when_asked() {
        let kept =
            b"GET / HTTP/1.0\nConnection: keep-alive\n\nGET /2 HTTP/1.0\n\nGET /3 HTTP/1.0\n\n";
        let parsed = parse(kept);
        let paths: Vec<&str> = requests(&parsed).iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/", "/2"]);
    }

    #[test]
    fn a_refusal_ends_the_connection_with_its_status() {
        let cases: [(&[u8], u16); 5] = [
            (b"GET /\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\n\r\n", 505),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nContent-Length: 4194305\r\n\r\n", 413),
            (b"POST / HTTP/1.1\r\nContent-Length: 99\r\n\r\ncut off", 400),
        ];
        for (raw, status) in cases {
            let mut pipelined = b"GET /first HTTP/1.1\r\n\r\n".to_vec();
            pipelined.extend_from_slice(raw);
            pipelined.extend_from_slice(b"GET /after HTTP/1.1\r\n\r\n");
            let parsed = parse(&pipelined);
            assert_eq!(parsed.len(), 2, "{parsed:?}");
            assert_eq!(refusal(&parsed), Some(status), "{parsed:?}");
        }
    }

    /// Found by the http_wire fuzz target: a chunk-size line of "+5" was read as 5.
    #[test]
    fn a_chunk_size_is_hex_digits_only() {
        for size in ["+5", "-5", "0x5", "5g", "", "5 5"] {
            let raw = format!(
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nhello\r\n0\r\n\r\n"
            );
            let parsed = parse(raw.as_bytes());
            assert_eq!(parsed.len(), 1, "{size:?}: {parsed:?}");
            assert_eq!(refusal(&parsed), Some(400), "{size:?}: {parsed:?}");
        }
        let parsed = parse(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n05 ;a=b\r\nhello\r\n0\r\n\r\n",
        );
        assert_eq!(requests(&parsed)[0].body, b"hello", "{parsed:?}");
    }

    /// Found by the http_wire fuzz target: of two Content-Length headers the first was honoured.
    #[test]
    fn framing_headers_come_once() {
        let repeated: [&[u8]; 4] = [
            b"POSA / HTTP/1.1\r\nContent-Length: 1\r\nTran: chunked\r HTTP/1.1\r\n\
              Content-Length: 1\r\nTran: chunk\n\r\n1",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 2\r\n\r\nab",
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
        ];
        for raw in repeated {
            let parsed = parse(raw);
            assert_eq!(parsed.len(), 1, "{parsed:?}");
            assert_eq!(refusal(&parsed), Some(400), "{parsed:?}");
        }
    }

    #[test]
    fn a_content_length_is_digits_only() {
        for length in ["+5", "-5", "5.0", "0x5", "", "5 5"] {
            let raw = format!("POST / HTTP/1.1\r\nContent-Length: {length}\r\n\r\nhello");
            let parsed = parse(raw.as_bytes());
            assert_eq!(refusal(&parsed), Some(400), "{length:?}: {parsed:?}");
        }
        let parsed = parse(b"POST / HTTP/1.1\r\nContent-Length:  005 \r\n\r\nhello");
        assert_eq!(requests(&parsed)[0].body, b"hello", "{parsed:?}");
    }

    #[test]
    fn a_head_cut_off_ends_the_connection_without_a_reply() {
        let parsed = parse(b"GET / HTTP/1.1\r\nHost: x\r\n");
        assert!(parsed.is_empty(), "{parsed:?}");
    }
}
