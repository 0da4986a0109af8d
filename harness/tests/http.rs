//! The HTTP/1.1 parsers the downloader and the artifact server share, and the server's path
//! resolution, under proptest: they never panic on any input, heads round-trip, ranges match a
//! model, paths stay inside the served directory.

use hil::artifact::resolve_path;
use hil::http::{self, RangeOutcome, Url};
use proptest::prelude::*;

proptest! {
    #[test]
    fn request_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = http::parse_request(&bytes);
    }

    #[test]
    fn request_parser_never_panics_on_near_misses(
        tail in proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b':'), Just(b' '), any::<u8>()], 0..200)
    ) {
        let mut bytes = b"GET /a.bin HTTP/1.1\r\n".to_vec();
        bytes.extend(tail);
        if let Ok(Some((_, used))) = http::parse_request(&bytes) {
            prop_assert!(used <= bytes.len());
        }
    }

    #[test]
    fn response_head_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(Some((head, used))) = http::parse_response_head(&bytes) {
            prop_assert!(used <= bytes.len());
            prop_assert!((100..=599).contains(&head.status));
            let _ = head.headers.content_length();
        }
    }

    #[test]
    fn response_head_parser_never_panics_on_near_misses(
        tail in proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b':'), Just(b' '), Just(b'0'), any::<u8>()], 0..200)
    ) {
        let mut bytes = b"HTTP/1.1 206 Partial Content\r\nContent-Length: ".to_vec();
        bytes.extend(tail);
        if let Ok(Some((head, _))) = http::parse_response_head(&bytes) {
            let _ = head.headers.content_length();
            if let Some(v) = head.headers.get("content-range") {
                let _ = http::parse_content_range(v);
            }
        }
    }

    #[test]
    fn response_heads_round_trip(
        status in 100u16..600,
        reason in "[A-Za-z ]{0,20}",
        headers in proptest::collection::vec(("[A-Za-z0-9-]{1,12}", "[!-~]([ -~]{0,30}[!-~])?"), 0..8),
        split in 0usize..400,
    ) {
        let mut text = format!("HTTP/1.1 {status} {reason}\r\n");
        for (n, v) in &headers {
            text.push_str(&format!("{n}: {v}\r\n"));
        }
        text.push_str("\r\nbody");
        let bytes = text.as_bytes();
        // Any prefix short of the blank line is incomplete, never an error.
        let end = bytes.len() - 4;
        prop_assert_eq!(http::parse_response_head(&bytes[..split.min(end - 1)]), Ok(None));
        let (head, used) = http::parse_response_head(bytes).unwrap().unwrap();
        prop_assert_eq!(used, end);
        prop_assert_eq!(head.status, status);
        prop_assert_eq!(head.reason, reason);
        prop_assert_eq!(head.headers.0, headers);
    }

    #[test]
    fn ranges_stay_inside_the_resource(value in "(?i:bytes)? ?=?[0-9, -]{0,16}", len in 0u64..1000) {
        match http::resolve_range(&value, len) {
            RangeOutcome::Partial { start, end } => prop_assert!(start <= end && end < len),
            RangeOutcome::Full | RangeOutcome::Unsatisfiable => {}
        }
    }

    #[test]
    fn ranges_match_a_model(a in 0u64..300, b in 0u64..300, len in 0u64..200) {
        let want = if b < a {
            RangeOutcome::Full
        } else if a >= len {
            RangeOutcome::Unsatisfiable
        } else {
            RangeOutcome::Partial { start: a, end: b.min(len - 1) }
        };
        prop_assert_eq!(http::resolve_range(&format!("bytes={a}-{b}"), len), want);
    }

    #[test]
    fn other_parsers_never_panic(s in "\\PC{0,40}") {
        let _ = http::parse_content_range(&s);
        let _ = Url::parse(&s);
        let _ = http::resolve_range(&s, 10);
        if let Some(p) = resolve_path(&s) {
            prop_assert!(p.components().all(|c| matches!(c, std::path::Component::Normal(_))));
        }
    }

    #[test]
    fn urls_round_trip(host in "[a-z][a-z0-9.-]{0,15}", port in 1u16.., path in "(/[A-Za-z0-9._~-]{0,8}){1,4}") {
        let url = Url::parse(&format!("http://{host}:{port}{path}")).unwrap();
        prop_assert_eq!((url.host.as_str(), url.port, url.path.as_str()), (host.as_str(), port, path.as_str()));
    }
}
