use super::*;

const GOOD: &str = "{\"artifact\": {\"url\": \"http://127.0.0.1:1/v2.bin\", \"size\": 10, \"sha256\": \"3f5c000000000000000000000000000000000000000000000000000000000001\"}, \"version\": \"2.0.0\", \"target\": {\"transport\": \"doip\", \"host\": \"127.0.0.1\"}}";

/// Every bad body is its own error with its status and location.
#[test]
fn bad_bodies_are_named_errors_with_their_status() {
    let base = Path::new(".");
    let cases: &[(&str, BodyFormat, u16, &str)] = &[
        (
            "{\"artifact\": ",
            BodyFormat::Json,
            400,
            "manifest: not valid JSON at line 1 column 13: EOF while parsing a value",
        ),
        (
            &GOOD.replace("\"version\"", "\"colour\": 1, \"version\""),
            BodyFormat::Json,
            400,
            "manifest:1:",
        ),
        (
            &GOOD.replace("\"size\": 10", "\"size\": 0"),
            BodyFormat::Json,
            422,
            "artifact.size: must be more than 0",
        ),
        ("artifact: [1\n", BodyFormat::Yaml, 400, "manifest:"),
    ];
    for (body, format, status, text) in cases {
        let e = parse_manifest(body.as_bytes(), *format, base).unwrap_err();
        assert_eq!(e.status(), *status, "{e}");
        assert!(e.to_string().contains(text), "{e}");
        assert_eq!(e.body()["error"], e.to_string());
    }
    let e = parse_manifest(
        &GOOD
            .replace("\"version\"", "\"colour\": 1, \"version\"")
            .into_bytes(),
        BodyFormat::Json,
        base,
    )
    .unwrap_err();
    assert!(e.to_string().contains("unknown field `colour`"), "{e}");
    assert_eq!(e.body()["line"], 1);
    assert!(parse_manifest(GOOD.as_bytes(), BodyFormat::Json, base).is_ok());
    assert!(parse_manifest(GOOD.as_bytes(), BodyFormat::Yaml, base).is_ok());
    assert_eq!(
        parse_manifest(&[0xff, 0xfe], BodyFormat::Yaml, base)
            .unwrap_err()
            .status(),
        400
    );
}

#[test]
fn content_types() {
    for (ct, want) in [
        (Some("application/json"), Some(BodyFormat::Json)),
        (
            Some("Application/JSON; charset=utf-8"),
            Some(BodyFormat::Json),
        ),
        (Some("application/yaml"), Some(BodyFormat::Yaml)),
        (Some("text/x-yaml"), Some(BodyFormat::Yaml)),
        (Some("text/plain"), None),
        (Some("multipart/form-data; boundary=x"), None),
        (None, None),
    ] {
        match (BodyFormat::of_content_type(ct), want) {
            (Ok(f), Some(w)) => assert_eq!(f, w),
            (Err(e), None) => assert_eq!(e.status(), 415),
            (got, want) => panic!("{ct:?}: {got:?}, want {want:?}"),
        }
    }
}

/// What cancel says in each state, from the job document alone.
#[test]
fn cancel_in_each_state() {
    use crate::ota::job::ApplyStep;
    let m = Manifest::parse(GOOD, "m").unwrap();
    let block = State::Transferring {
        step: TransferStep::Block { n: 1, of: 2 },
    };
    let cases = [
        (State::Submitted, false, None),
        (State::Downloading { bytes: 3 }, false, None),
        (State::Downloaded, false, None),
        (State::Verifying, false, None),
        (block.clone(), false, None),
        (block, true, Some(409)),
        (
            State::Applying {
                step: ApplyStep::Reset,
            },
            false,
            Some(409),
        ),
        (State::Committed, false, Some(409)),
        (State::Cancelled, false, Some(409)),
    ];
    for (state, requested, want) in cases {
        let mut job = Job::new("job-0001".into(), m.clone(), 0);
        job.state = state.clone();
        job.requested_at_boot = requested.then_some(3);
        let got = too_late(&job).err().map(|e| e.status());
        assert_eq!(got, want, "{state} (requested {requested})");
        if got.is_none() {
            let mut j = job.clone();
            j.go(State::Cancelled, 1).unwrap();
        }
    }
}

/// The gate and a cancel decide under one lock: whichever comes first wins.
#[test]
fn the_gate_and_a_cancel_exclude_each_other() {
    let gate = Arc::new(Mutex::new(Gate::default()));
    let g = install_gate(Arc::clone(&gate));
    assert_eq!((g.0)(), Ok(()));
    assert!(lock(&gate).install_requested, "a cancel now is refused");
    let gate = Arc::new(Mutex::new(Gate {
        cancel: true,
        install_requested: false,
    }));
    let g = install_gate(Arc::clone(&gate));
    assert_eq!((g.0)(), Err("the job is being cancelled".to_string()));
    assert!(!lock(&gate).install_requested);
}

#[test]
fn progress_of_a_job() {
    let m = Manifest::parse(GOOD, "m").unwrap();
    let mut job = Job::new("job-0001".into(), m, 0);
    assert_eq!(
        ProgressView::of(&job),
        ProgressView {
            bytes: 0,
            size: 10,
            blocks: None
        }
    );
    job.go(State::Downloading { bytes: 4 }, 1).unwrap();
    assert_eq!(ProgressView::of(&job).bytes, 4);
    job.go(State::Downloaded, 2).unwrap();
    job.go(State::Verifying, 3).unwrap();
    for step in [
        TransferStep::Session,
        TransferStep::Block { n: 1, of: 3 },
        TransferStep::Block { n: 2, of: 3 },
    ] {
        job.go(State::Transferring { step }, 4).unwrap();
    }
    let p = ProgressView::of(&job);
    assert_eq!((p.bytes, p.blocks), (10, Some([2, 3])));
    job.go(
        State::Transferring {
            step: TransferStep::Session,
        },
        5,
    )
    .unwrap();
    assert_eq!(ProgressView::of(&job).blocks, Some([0, 3]));
}
