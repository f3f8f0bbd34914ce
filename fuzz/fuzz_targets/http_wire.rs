//! A connection's bytes through the server's HTTP/1.1 parser (`server::wire::parse`): request
//! heads, Content-Length and chunked bodies, pipelining and keep-alive, with no socket.
//!
//! The first input byte picks the mode. Even: the rest is the bytes a client sent, and whatever
//! the parser makes of them must hold together: no panic, no body beyond `MAX_BODY`, at most
//! one request per 14 bytes (the shortest request line and blank line), a refusal only last
//! and with one of the statuses the server documents, framing headers that are unambiguous on
//! every request it accepted, and each accepted request re-encoded plainly parsing back to
//! itself. Odd: the rest describes up to four pipelined requests whose bodies the target
//! itself encodes, by Content-Length or as random-size chunks with extensions and trailers,
//! sometimes with one chunk-size line broken; the parser must return exactly those bodies, or
//! refuse the broken request with a 400 after serving the ones before it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmfile::server::wire::{parse, Parsed, WireRequest, MAX_BODY};

/// "A / HTTP/1.0" and a blank line, each ended by a bare LF.
const SHORTEST_REQUEST: usize = 14;
/// Re-encoded heads up to this size are well within the server's head limit.
const ROUND_TRIP_HEAD: usize = 8 << 10;

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((mode, rest)) if mode % 2 == 0 => raw(rest),
        Some((_, rest)) => structured(rest),
        None => {}
    }
});

fn raw(bytes: &[u8]) {
    let parsed = parse(bytes);
    for (i, item) in parsed.iter().enumerate() {
        match item {
            Parsed::Request(request) => {
                assert!(request.body.len() <= MAX_BODY);
                assert_unambiguous_framing(request);
                assert_round_trips(request);
            }
            Parsed::Refused(error) => {
                assert_eq!(i, parsed.len() - 1, "a refusal ends the connection");
                // 408 needs a clock: bytes that end early are a client that closed.
                assert!(
                    matches!(error.status, 400 | 413 | 431 | 501 | 505),
                    "status {} for {:?}",
                    error.status,
                    error.message
                );
            }
        }
    }
    let requests = parsed
        .iter()
        .filter(|item| matches!(item, Parsed::Request(_)))
        .count();
    assert!(requests * SHORTEST_REQUEST <= bytes.len());
}

fn headers_named<'r>(request: &'r WireRequest, name: &'r str) -> impl Iterator<Item = &'r str> {
    request
        .headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// What a proxy in front of the server reads as this request's length must be what the server
/// read: one Content-Length of digits only, or one Transfer-Encoding, never both.
fn assert_unambiguous_framing(request: &WireRequest) {
    let lengths: Vec<&str> = headers_named(request, "Content-Length").collect();
    let codings = headers_named(request, "Transfer-Encoding").count();
    assert!(lengths.len() + codings <= 1, "{:?}", request.headers);
    if let [length] = lengths[..] {
        assert!(
            !length.is_empty() && length.bytes().all(|b| b.is_ascii_digit()),
            "Content-Length {length:?} accepted"
        );
        assert_eq!(length.parse::<usize>().ok(), Some(request.body.len()));
    }
}

fn assert_round_trips(request: &WireRequest) {
    let framing = ["Content-Length", "Transfer-Encoding", "Connection"];
    let headers: Vec<(String, String)> = request
        .headers
        .iter()
        .filter(|(name, _)| !framing.iter().any(|f| name.eq_ignore_ascii_case(f)))
        .cloned()
        .collect();
    let mut wire = format!("{} {} HTTP/1.1\r\n", request.method, request.path).into_bytes();
    for (name, value) in &headers {
        wire.extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
    }
    wire.extend_from_slice(format!("Content-Length:{}\r\n\r\n", request.body.len()).as_bytes());
    if wire.len() > ROUND_TRIP_HEAD {
        return;
    }
    wire.extend_from_slice(&request.body);
    let again = parse(&wire);
    let [Parsed::Request(again)] = &again[..] else {
        panic!("{request:?} re-encoded parses as {again:?}");
    };
    assert_eq!(again.method, request.method);
    assert_eq!(again.path, request.path);
    assert_eq!(again.body, request.body);
    assert_eq!(again.headers[..headers.len()], headers[..]);
}

/// A tiny generator, so that a few input bytes describe many chunk boundaries.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Chunk-size lines the grammar (`1*HEXDIG`) does not allow, each a way a lenient number parser
/// could still read a size from.
const BROKEN_SIZES: [&str; 5] = ["+{}", "0x{}", "-{}", "{}g", ""];

fn structured(spec: &[u8]) {
    let mut input = spec;
    let mut wire = Vec::new();
    let mut bodies = Vec::new();
    let mut broken_at = None;
    while bodies.len() < 4 && broken_at.is_none() {
        let Some((&[control, length_byte, seed], rest)) = input.split_first_chunk::<3>() else {
            break;
        };
        let mut rng = Xorshift(u64::from_le_bytes([
            control,
            length_byte,
            seed,
            1,
            0,
            0,
            0,
            0,
        ]));
        let mut body = rest[..rest.len().min(usize::from(length_byte))].to_vec();
        input = &rest[body.len()..];
        // Rarely, since each costs milliseconds: a body at the limit, to see the boundary held
        // by both framings.
        if control & 0xf0 == 0xf0 && seed == 0xff {
            body.resize(MAX_BODY, b'z');
        }
        let chunked = control & 1 != 0;
        let http_1_0 = control & 2 != 0;
        let eol: &[u8] = if control & 4 != 0 { b"\n" } else { b"\r\n" };
        let line = |wire: &mut Vec<u8>, text: &str| {
            wire.extend_from_slice(text.as_bytes());
            wire.extend_from_slice(eol);
        };
        let version = if http_1_0 { "HTTP/1.0" } else { "HTTP/1.1" };
        line(&mut wire, &format!("POST /r{} {version}", bodies.len()));
        line(&mut wire, "Host: fuzz");
        if http_1_0 {
            line(&mut wire, "Connection: keep-alive");
        }
        if control & 8 != 0 {
            line(&mut wire, "Expect: 100-continue");
        }
        if chunked {
            line(&mut wire, "transfer-encoding: Chunked");
            line(&mut wire, "");
            let mut rest = &body[..];
            let break_chunk = (control & 0x30 == 0x30).then(|| rng.below(4));
            let mut index = 0;
            while !rest.is_empty() {
                let size = (1 + rng.below(rest.len() as u64)) as usize;
                let mut size_text = if rng.below(2) == 0 {
                    format!("{size:x}")
                } else {
                    format!("{:0width$X}", size, width = 1 + rng.below(6) as usize)
                };
                if break_chunk == Some(index) {
                    let broken = BROKEN_SIZES[rng.below(BROKEN_SIZES.len() as u64) as usize];
                    size_text = broken.replace("{}", &size_text);
                    broken_at = Some(bodies.len());
                }
                if rng.below(4) == 0 {
                    size_text.push_str(";name=value");
                }
                line(&mut wire, &size_text);
                wire.extend_from_slice(&rest[..size]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[size..];
                index += 1;
            }
            line(&mut wire, "0");
            if rng.below(2) == 0 {
                line(&mut wire, "X-Trailer: t");
            }
            line(&mut wire, "");
        } else {
            let zeros = "0".repeat(rng.below(3) as usize);
            line(&mut wire, &format!("Content-Length: {zeros}{}", body.len()));
            line(&mut wire, "");
            wire.extend_from_slice(&body);
        }
        bodies.push(body);
    }
    let parsed = parse(&wire);
    let served = broken_at.unwrap_or(bodies.len());
    let expected_items = served + usize::from(broken_at.is_some());
    assert_eq!(parsed.len(), expected_items, "{parsed:?}");
    for (i, (item, body)) in parsed.iter().zip(&bodies).enumerate() {
        match item {
            Parsed::Request(request) if i < served => {
                assert_eq!(request.method, "POST");
                assert_eq!(request.path, format!("/r{i}"));
                assert!(request.body == *body, "request {i}: the body differs");
            }
            Parsed::Refused(error) if i == served => assert_eq!(error.status, 400),
            other => panic!("item {i}: {other:?}"),
        }
    }
}
