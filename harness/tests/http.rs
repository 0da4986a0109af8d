//! The HTTP glue hyper and reqwest leave to us (artifact URLs, `Range`, `Content-Range`) and the
//! artifact server's path resolution, under proptest: they never panic on any input, ranges
//! match a model, paths stay inside the served directory, URLs keep host, port and path.

use hil::artifact::resolve_path;
use hil::http::{self, RangeOutcome};
use proptest::prelude::*;

proptest! {
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
        let _ = http::parse_url(&s);
        let _ = http::resolve_range(&s, 10);
        if let Some(p) = resolve_path(&s) {
            prop_assert!(p.components().all(|c| matches!(c, std::path::Component::Normal(_))));
        }
    }

    #[test]
    fn urls_round_trip(
        scheme in "https?",
        host in "[a-z][a-z0-9-]{0,15}",
        port in 1u16..,
        path in "(/[A-Za-z0-9_~-]{1,8}){1,4}",
    ) {
        let url = http::parse_url(&format!("{scheme}://{host}:{port}{path}")).unwrap();
        let default = if scheme == "http" { 80 } else { 443 };
        prop_assert_eq!(url.scheme(), scheme.as_str());
        prop_assert_eq!(url.host_str(), Some(host.as_str()));
        prop_assert_eq!(url.port_or_known_default(), Some(port));
        prop_assert_eq!(url.port(), (port != default).then_some(port));
        prop_assert_eq!(url.path(), path.as_str());
    }
}
