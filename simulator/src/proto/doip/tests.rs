use super::*;
use hex_literal::hex;
use proptest::prelude::*;

const TESTER: u16 = 0x0E00;
/// Routing activation request from 0x0E00, default type, no OEM field.
const ACTIVATE: [u8; 15] = hex!("02 fd 00 05 00 00 00 07 0e 00 00 00 00 00 00");
const ACTIVATED: [u8; 17] = hex!("02 fd 00 06 00 00 00 09 0e 00 00 10 10 00 00 00 00");
const VIN: [u8; 17] = *b"SIMECU00000000001";

fn drain(c: &mut Connection) -> (Vec<Vec<u8>>, Vec<Event>) {
    (
        std::iter::from_fn(|| c.poll_transmit()).collect(),
        std::iter::from_fn(|| c.poll_event()).collect(),
    )
}

/// Feed `bytes` at `now`; return what went out and what happened.
fn feed(c: &mut Connection, now: u64, bytes: &[u8]) -> (Vec<Vec<u8>>, Vec<Event>) {
    c.handle_bytes(now, bytes);
    drain(c)
}

fn activated(cfg: Config) -> Connection {
    let mut c = Connection::new(0, cfg);
    let (out, _) = feed(&mut c, 0, &ACTIVATE);
    assert_eq!(out, vec![ACTIVATED.to_vec()]);
    c
}

fn nack(code: u8) -> Vec<u8> {
    let mut v = hex!("02 fd 00 00 00 00 00 01").to_vec();
    v.push(code);
    v
}

#[test]
fn header_parse() {
    assert_eq!(
        Header::parse(&hex!("02 fd 00 05 00 00 00 07 0e")),
        Ok(Some(Header {
            version: 2,
            payload_type: 0x0005,
            payload_length: 7
        }))
    );
    assert_eq!(Header::parse(&hex!("02 fd 00 05 00 00 00")), Ok(None));
    assert_eq!(Header::parse(&[]), Ok(None));
    assert!(matches!(
        Header::parse(&hex!("03 fc 80 01 00 00 00 05")),
        Ok(Some(Header { version: 3, .. }))
    ));
    assert!(matches!(
        Header::parse(&hex!("ff 00 00 01 00 00 00 00")),
        Ok(Some(Header { version: 0xFF, .. }))
    ));
    let h = Header {
        version: 3,
        payload_type: 0x8001,
        payload_length: 0x0102_0304,
    };
    assert_eq!(h.to_bytes(), hex!("03 fc 80 01 01 02 03 04"));
}

#[test]
fn header_incorrect_pattern() {
    for (bytes, version, inverse, payload_type) in [
        (hex!("02 fc 00 05 00 00 00 07"), 0x02, 0xFC, 0x0005),
        (hex!("04 fb 00 05 00 00 00 07"), 0x04, 0xFB, 0x0005),
        (hex!("01 fe 00 05 00 00 00 07"), 0x01, 0xFE, 0x0005),
        (hex!("ff 00 00 05 00 00 00 07"), 0xFF, 0x00, 0x0005),
        (hex!("ff 00 80 01 00 00 00 05"), 0xFF, 0x00, 0x8001),
    ] {
        let e = Header::parse(&bytes).unwrap_err();
        assert_eq!(
            e,
            DoipError::IncorrectPattern {
                version,
                inverse,
                payload_type
            }
        );
        assert_eq!(e.nack_code(), Some(NackCode::IncorrectPattern));
        assert!(e.closes_connection());
    }
}

#[test]
fn header_validation_in_iso_order() {
    let check =
        |bytes: [u8; 8], max, mem| Header::parse(&bytes).unwrap().unwrap().validate(max, mem);
    assert_eq!(check(hex!("02 fd 00 05 00 00 00 07"), 4096, None), Ok(()));
    assert_eq!(check(hex!("02 fd 00 05 00 00 00 0b"), 4096, None), Ok(()));
    assert_eq!(
        check(hex!("02 fd 12 34 00 00 00 03"), 4096, None),
        Err(DoipError::UnknownPayloadType {
            payload_type: 0x1234,
            length: 3
        })
    );
    assert_eq!(
        check(hex!("02 fd 80 01 00 00 10 01"), 4096, None),
        Err(DoipError::MessageTooLarge {
            length: 4097,
            max: 4096
        })
    );
    assert_eq!(
        check(hex!("02 fd 80 01 00 00 01 00"), 4096, Some(255)),
        Err(DoipError::OutOfMemory {
            length: 256,
            available: 255
        })
    );
    for (bytes, payload_type, length) in [
        (hex!("02 fd 00 05 00 00 00 08"), 0x0005, 8),
        (hex!("02 fd 00 05 00 00 00 06"), 0x0005, 6),
        (hex!("02 fd 80 01 00 00 00 04"), 0x8001, 4),
        (hex!("02 fd 00 07 00 00 00 01"), 0x0007, 1),
        (hex!("02 fd 40 02 00 00 00 05"), 0x4002, 5),
        (hex!("02 fd 00 04 00 00 00 1f"), 0x0004, 31),
    ] {
        assert_eq!(
            check(bytes, 4096, None),
            Err(DoipError::InvalidPayloadLength {
                payload_type,
                length
            })
        );
    }
    // Unknown type is checked before size: an unknown huge message is "unknown".
    assert!(matches!(
        check(hex!("02 fd 77 77 ff ff ff ff"), 4096, None),
        Err(DoipError::UnknownPayloadType { .. })
    ));
    let codes: Vec<_> = [
        DoipError::UnknownPayloadType {
            payload_type: 0,
            length: 0,
        },
        DoipError::MessageTooLarge { length: 0, max: 0 },
        DoipError::OutOfMemory {
            length: 0,
            available: 0,
        },
        DoipError::InvalidPayloadLength {
            payload_type: 0,
            length: 0,
        },
    ]
    .iter()
    .map(|e| (e.nack_code().map(u8::from), e.closes_connection()))
    .collect();
    assert_eq!(
        codes,
        vec![
            (Some(1), false),
            (Some(2), false),
            (Some(3), false),
            (Some(4), true)
        ]
    );
}

#[test]
fn every_message_round_trips_with_wire_bytes() {
    let ann = VehicleAnnouncement {
        vin: VIN,
        logical_address: 0x0010,
        eid: hex!("02 00 00 00 00 10"),
        gid: hex!("aa bb cc dd ee ff"),
        further_action: 0x10,
        sync_status: None,
    };
    let vin_hex = hex!("53 49 4d 45 43 55 30 30 30 30 30 30 30 30 30 30 31");
    let mut ann_wire = hex!("02 fd 00 04 00 00 00 20").to_vec();
    ann_wire.extend(vin_hex);
    ann_wire.extend(hex!("00 10 02 00 00 00 00 10 aa bb cc dd ee ff 10"));
    let mut ann_sync_wire = ann_wire.clone();
    ann_sync_wire[7] = 0x21;
    ann_sync_wire.push(0x00);
    let mut vir_vin_wire = hex!("02 fd 00 03 00 00 00 11").to_vec();
    vir_vin_wire.extend(vin_hex);
    let cases: Vec<(Message, Vec<u8>)> = vec![
        (
            Message::GenericNack(NackCode::InvalidPayloadLength),
            hex!("02 fd 00 00 00 00 00 01 04").to_vec(),
        ),
        (
            Message::VehicleIdRequest,
            hex!("02 fd 00 01 00 00 00 00").to_vec(),
        ),
        (
            Message::VehicleIdRequestEid(hex!("02 00 00 00 00 10")),
            hex!("02 fd 00 02 00 00 00 06 02 00 00 00 00 10").to_vec(),
        ),
        (Message::VehicleIdRequestVin(VIN), vir_vin_wire),
        (Message::VehicleAnnouncement(ann.clone()), ann_wire),
        (
            Message::VehicleAnnouncement(VehicleAnnouncement {
                sync_status: Some(0x00),
                ..ann
            }),
            ann_sync_wire,
        ),
        (
            Message::RoutingActivationRequest {
                source: TESTER,
                activation_type: ActivationType::Default,
                oem: None,
            },
            ACTIVATE.to_vec(),
        ),
        (
            Message::RoutingActivationRequest {
                source: 0x0E80,
                activation_type: ActivationType::CentralSecurity,
                oem: Some(hex!("de ad be ef")),
            },
            hex!("02 fd 00 05 00 00 00 0b 0e 80 e0 00 00 00 00 de ad be ef").to_vec(),
        ),
        (
            Message::RoutingActivationResponse {
                tester: TESTER,
                entity: 0x0010,
                code: RoutingActivationCode::Success,
                oem: None,
            },
            ACTIVATED.to_vec(),
        ),
        (
            Message::RoutingActivationResponse {
                tester: TESTER,
                entity: 0x0010,
                code: RoutingActivationCode::UnsupportedActivationType,
                oem: Some(hex!("01 02 03 04")),
            },
            hex!("02 fd 00 06 00 00 00 0d 0e 00 00 10 06 00 00 00 00 01 02 03 04").to_vec(),
        ),
        (
            Message::AliveCheckRequest,
            hex!("02 fd 00 07 00 00 00 00").to_vec(),
        ),
        (
            Message::AliveCheckResponse { source: TESTER },
            hex!("02 fd 00 08 00 00 00 02 0e 00").to_vec(),
        ),
        (
            Message::EntityStatusRequest,
            hex!("02 fd 40 01 00 00 00 00").to_vec(),
        ),
        (
            Message::EntityStatusResponse(EntityStatus {
                node_type: NodeType::Node,
                max_sockets: 4,
                open_sockets: 1,
                max_data_size: Some(0x0001_000C),
            }),
            hex!("02 fd 40 02 00 00 00 07 01 04 01 00 01 00 0c").to_vec(),
        ),
        (
            Message::EntityStatusResponse(EntityStatus {
                node_type: NodeType::Gateway,
                max_sockets: 2,
                open_sockets: 0,
                max_data_size: None,
            }),
            hex!("02 fd 40 02 00 00 00 03 00 02 00").to_vec(),
        ),
        (
            Message::PowerModeRequest,
            hex!("02 fd 40 03 00 00 00 00").to_vec(),
        ),
        (
            Message::PowerModeResponse(PowerMode::Ready),
            hex!("02 fd 40 04 00 00 00 01 01").to_vec(),
        ),
        (
            Message::Diagnostic {
                source: TESTER,
                target: 0x0010,
                data: hex!("22 f1 90").to_vec(),
            },
            hex!("02 fd 80 01 00 00 00 07 0e 00 00 10 22 f1 90").to_vec(),
        ),
        (
            Message::DiagnosticAck {
                source: 0x0010,
                target: TESTER,
                code: 0x00,
                previous: Vec::new(),
            },
            hex!("02 fd 80 02 00 00 00 05 00 10 0e 00 00").to_vec(),
        ),
        (
            Message::DiagnosticAck {
                source: 0x0010,
                target: TESTER,
                code: 0x00,
                previous: hex!("22 f1").to_vec(),
            },
            hex!("02 fd 80 02 00 00 00 07 00 10 0e 00 00 22 f1").to_vec(),
        ),
        (
            Message::DiagnosticNack {
                source: 0x0011,
                target: TESTER,
                code: DiagnosticNackCode::UnknownTargetAddress,
                previous: Vec::new(),
            },
            hex!("02 fd 80 03 00 00 00 05 00 11 0e 00 03").to_vec(),
        ),
        (
            Message::DiagnosticNack {
                source: 0x0010,
                target: TESTER,
                code: DiagnosticNackCode::TransportProtocolError,
                previous: hex!("10 02").to_vec(),
            },
            hex!("02 fd 80 03 00 00 00 07 00 10 0e 00 08 10 02").to_vec(),
        ),
    ];
    let mut types = std::collections::BTreeSet::new();
    for (msg, wire) in cases {
        assert_eq!(msg.encode(2), wire, "{msg:?}");
        let h = Header::parse(&wire).unwrap().unwrap();
        h.validate(DEFAULT_MAX_PAYLOAD, None).unwrap();
        assert_eq!(h.payload_length as usize, wire.len() - HEADER_LEN);
        assert_eq!(
            Message::decode(h.payload_type, &wire[HEADER_LEN..]).as_ref(),
            Ok(&msg)
        );
        types.insert(msg.payload_type());
    }
    assert_eq!(types.len(), 16, "every payload type covered");
    assert_eq!(
        Message::decode(0x9999, &[]),
        Err(DoipError::UnknownPayloadType {
            payload_type: 0x9999,
            length: 0
        })
    );
    assert_eq!(
        Message::decode(pt::ALIVE_CHECK_RESPONSE, &[1]),
        Err(DoipError::InvalidPayloadLength {
            payload_type: 0x0008,
            length: 1
        })
    );
}

#[test]
fn codes_keep_unnamed_values() {
    assert_eq!(
        RoutingActivationCode::from(0x42),
        RoutingActivationCode::Other(0x42)
    );
    assert_eq!(u8::from(RoutingActivationCode::Other(0x42)), 0x42);
    assert_eq!(ActivationType::from(0xE0), ActivationType::CentralSecurity);
    assert_eq!(
        DiagnosticNackCode::from(0x01),
        DiagnosticNackCode::Other(0x01)
    );
    for b in 0..=255u8 {
        assert_eq!(u8::from(NackCode::from(b)), b);
        assert_eq!(u8::from(PowerMode::from(b)), b);
        assert_eq!(u8::from(NodeType::from(b)), b);
    }
}

#[test]
fn error_messages_state_the_facts() {
    for (e, text) in [
        (
            DoipError::IncorrectPattern {
                version: 2,
                inverse: 0xFC,
                payload_type: 5,
            },
            "incorrect pattern: version 0x02, inverse 0xfc, payload type 0x0005",
        ),
        (
            DoipError::UnknownPayloadType {
                payload_type: 0x1234,
                length: 3,
            },
            "unknown payload type 0x1234 (3 payload bytes discarded)",
        ),
        (
            DoipError::MessageTooLarge {
                length: 70000,
                max: 65540,
            },
            "payload of 70000 bytes exceeds the maximum of 65540",
        ),
        (
            DoipError::ActivationRefused {
                tester: 0x0100,
                code: RoutingActivationCode::UnknownSourceAddress,
            },
            "routing activation of 0x0100 refused with code 0x00",
        ),
        (
            DoipError::InvalidSourceAddress { address: 0x0E00 },
            "diagnostic message from 0x0e00, which is not activated on this socket",
        ),
        (
            DoipError::InitialInactivity {
                timeout_us: 2_000_000,
            },
            "no routing activation within 2000000 µs of connecting",
        ),
        (
            DoipError::AckTimeout {
                target: 0x0010,
                timeout_us: 2_000_000,
            },
            "no acknowledgement from 0x0010 within 2000000 µs",
        ),
    ] {
        assert_eq!(e.to_string(), text);
    }
}

#[test]
fn routing_activation_success() {
    let mut c = Connection::new(0, Config::default());
    assert_eq!(c.active_source(), None);
    let (out, ev) = feed(&mut c, 10, &ACTIVATE);
    assert_eq!(out, vec![ACTIVATED.to_vec()]);
    assert_eq!(
        ev,
        vec![Event::RoutingActivated {
            source: TESTER,
            activation_type: ActivationType::Default
        }]
    );
    assert_eq!(c.active_source(), Some(TESTER));
    // Repeated with the same source (and an OEM field): success again, no new event.
    let (out, ev) = feed(
        &mut c,
        20,
        &hex!("02 fd 00 05 00 00 00 0b 0e 00 00 00 00 00 00 00 00 00 00"),
    );
    assert_eq!(out, vec![ACTIVATED.to_vec()]);
    assert_eq!(ev, vec![]);
    // WWH-OBD is accepted; the reply uses the request's version (2019).
    let mut c = Connection::new(0, Config::default());
    let (out, _) = feed(
        &mut c,
        0,
        &hex!("03 fc 00 05 00 00 00 07 0f ff 01 00 00 00 00"),
    );
    assert_eq!(
        out,
        vec![hex!("03 fc 00 06 00 00 00 09 0f ff 00 10 10 00 00 00 00").to_vec()]
    );
}

#[test]
fn routing_activation_refusals_close_the_connection() {
    let refused = |source: u16, code: RoutingActivationCode| {
        vec![Event::Closed(DoipError::ActivationRefused {
            tester: source,
            code,
        })]
    };
    // 0x00: source outside the tester range.
    let mut c = Connection::new(0, Config::default());
    let (out, ev) = feed(
        &mut c,
        0,
        &hex!("02 fd 00 05 00 00 00 07 01 00 00 00 00 00 00"),
    );
    assert_eq!(
        out,
        vec![hex!("02 fd 00 06 00 00 00 09 01 00 00 10 00 00 00 00 00").to_vec()]
    );
    assert_eq!(
        ev,
        refused(0x0100, RoutingActivationCode::UnknownSourceAddress)
    );
    assert!(c.is_closed());
    assert_eq!(c.poll_timeout(), None);
    // 0x06: unknown activation type, and central security unless configured.
    for t in ["02", "e0"] {
        let mut c = Connection::new(0, Config::default());
        let mut req = ACTIVATE;
        req[10] = u8::from_str_radix(t, 16).unwrap();
        let (out, ev) = feed(&mut c, 0, &req);
        assert_eq!(
            out,
            vec![hex!("02 fd 00 06 00 00 00 09 0e 00 00 10 06 00 00 00 00").to_vec()]
        );
        assert_eq!(
            ev,
            refused(TESTER, RoutingActivationCode::UnsupportedActivationType)
        );
    }
    let mut c = Connection::new(
        0,
        Config {
            central_security: true,
            ..Config::default()
        },
    );
    let mut req = ACTIVATE;
    req[10] = 0xE0;
    assert_eq!(feed(&mut c, 0, &req).0, vec![ACTIVATED.to_vec()]);
    // 0x02: another source on an already activated socket.
    let mut c = activated(Config::default());
    let (out, ev) = feed(
        &mut c,
        0,
        &hex!("02 fd 00 05 00 00 00 07 0e 01 00 00 00 00 00"),
    );
    assert_eq!(
        out,
        vec![hex!("02 fd 00 06 00 00 00 09 0e 01 00 10 02 00 00 00 00").to_vec()]
    );
    assert_eq!(
        ev,
        refused(0x0E01, RoutingActivationCode::DifferentSourceAddress)
    );
    // 0x01 and 0x03: the I/O layer's registry decides.
    for code in [
        RoutingActivationCode::AllSocketsRegistered,
        RoutingActivationCode::SourceAlreadyActive,
    ] {
        let cfg = Config {
            defer_activation: true,
            ..Config::default()
        };
        let mut c = Connection::new(0, cfg);
        let (out, ev) = feed(&mut c, 0, &ACTIVATE);
        assert_eq!(out, Vec::<Vec<u8>>::new(), "no answer before the verdict");
        assert_eq!(
            ev,
            vec![Event::ActivationRequested {
                source: TESTER,
                activation_type: ActivationType::Default
            }]
        );
        // A repeat while pending is swallowed.
        assert_eq!(feed(&mut c, 1, &ACTIVATE), (vec![], vec![]));
        c.complete_activation(5, code).unwrap();
        let (out, ev) = drain(&mut c);
        let mut expected = ACTIVATED;
        expected[12] = code.into();
        assert_eq!(out, vec![expected.to_vec()]);
        assert_eq!(ev, refused(TESTER, code));
        assert_eq!(c.complete_activation(6, code), Err(DoipError::Closed));
    }
    // The registry can also say yes.
    let mut c = Connection::new(
        0,
        Config {
            defer_activation: true,
            ..Config::default()
        },
    );
    assert_eq!(
        c.complete_activation(0, RoutingActivationCode::Success),
        Err(DoipError::NoPendingActivation)
    );
    feed(&mut c, 0, &ACTIVATE);
    c.complete_activation(1, RoutingActivationCode::Success)
        .unwrap();
    assert_eq!(drain(&mut c).0, vec![ACTIVATED.to_vec()]);
    assert_eq!(c.active_source(), Some(TESTER));
    // After a close, input is ignored.
    let mut c = Connection::new(0, Config::default());
    feed(
        &mut c,
        0,
        &hex!("02 fd 00 05 00 00 00 07 01 00 00 00 00 00 00"),
    );
    assert_eq!(feed(&mut c, 0, &ACTIVATE), (vec![], vec![]));
}

#[test]
fn diagnostic_before_activation_is_refused_and_closes() {
    let mut c = Connection::new(0, Config::default());
    let (out, ev) = feed(
        &mut c,
        0,
        &hex!("02 fd 80 01 00 00 00 07 0e 00 00 10 22 f1 90"),
    );
    assert_eq!(
        out,
        vec![hex!("02 fd 80 03 00 00 00 05 00 10 0e 00 02").to_vec()]
    );
    assert_eq!(
        ev,
        vec![Event::Closed(DoipError::InvalidSourceAddress {
            address: TESTER
        })]
    );
    assert!(c.is_closed());
    assert_eq!(c.send_diagnostic(0, &[0x50]), Err(DoipError::Closed));
    // After activation, a different source address is equally refused.
    let mut c = activated(Config::default());
    let (out, ev) = feed(&mut c, 0, &hex!("02 fd 80 01 00 00 00 05 0e 01 00 10 3e"));
    assert_eq!(
        out,
        vec![hex!("02 fd 80 03 00 00 00 05 00 10 0e 01 02").to_vec()]
    );
    assert_eq!(
        ev,
        vec![Event::Closed(DoipError::InvalidSourceAddress {
            address: 0x0E01
        })]
    );
    let mut c = Connection::new(0, Config::default());
    assert_eq!(c.send_diagnostic(0, &[0x50]), Err(DoipError::NotActivated));
}

#[test]
fn diagnostic_is_acknowledged_then_delivered_and_answered() {
    let mut c = activated(Config::default());
    let (out, ev) = feed(
        &mut c,
        5,
        &hex!("02 fd 80 01 00 00 00 07 0e 00 00 10 22 f1 90"),
    );
    assert_eq!(
        out,
        vec![hex!("02 fd 80 02 00 00 00 05 00 10 0e 00 00").to_vec()]
    );
    assert_eq!(
        ev,
        vec![Event::Diagnostic {
            source: TESTER,
            target: 0x0010,
            data: hex!("22 f1 90").to_vec()
        }]
    );
    c.send_diagnostic(6, &hex!("62 f1 90 41")).unwrap();
    assert_eq!(
        drain(&mut c).0,
        vec![hex!("02 fd 80 01 00 00 00 08 00 10 0e 00 62 f1 90 41").to_vec()]
    );
    assert_eq!(c.send_diagnostic(7, &[]), Err(DoipError::EmptyDiagnostic));
    // Functional addressing reaches the ECU too; the ACK comes from the functional address.
    let (out, ev) = feed(
        &mut c,
        8,
        &hex!("02 fd 80 01 00 00 00 06 0e 00 e4 00 3e 80"),
    );
    assert_eq!(
        out,
        vec![hex!("02 fd 80 02 00 00 00 05 e4 00 0e 00 00").to_vec()]
    );
    assert_eq!(
        ev,
        vec![Event::Diagnostic {
            source: TESTER,
            target: 0xE400,
            data: hex!("3e 80").to_vec()
        }]
    );
}

#[test]
fn diagnostic_refusals_keep_the_connection() {
    let mut c = activated(Config {
        max_diagnostic_data: 4,
        ..Config::default()
    });
    let (out, ev) = feed(&mut c, 0, &hex!("02 fd 80 01 00 00 00 05 0e 00 07 77 3e"));
    assert_eq!(
        out,
        vec![hex!("02 fd 80 03 00 00 00 05 07 77 0e 00 03").to_vec()]
    );
    assert_eq!(
        ev,
        vec![Event::DiagnosticRefused {
            source: TESTER,
            target: 0x0777,
            code: DiagnosticNackCode::UnknownTargetAddress
        }]
    );
    let (out, ev) = feed(
        &mut c,
        0,
        &hex!("02 fd 80 01 00 00 00 09 0e 00 00 10 36 01 aa bb cc"),
    );
    assert_eq!(
        out,
        vec![hex!("02 fd 80 03 00 00 00 05 00 10 0e 00 04").to_vec()]
    );
    assert_eq!(
        ev,
        vec![Event::DiagnosticRefused {
            source: TESTER,
            target: 0x0010,
            code: DiagnosticNackCode::MessageTooLarge
        }]
    );
    assert!(!c.is_closed());
    let (_, ev) = feed(
        &mut c,
        0,
        &hex!("02 fd 80 01 00 00 00 08 0e 00 00 10 36 01 aa bb"),
    );
    assert!(matches!(ev[..], [Event::Diagnostic { .. }]));
}

#[test]
fn generic_header_errors_on_a_connection() {
    // Unknown payload type: NACK 0x01, the payload is skipped even when split, then business
    // as usual.
    let mut c = Connection::new(0, Config::default());
    let (out, ev) = feed(&mut c, 0, &hex!("02 fd 12 34 00 00 00 04 aa bb"));
    assert_eq!(out, vec![nack(0x01)]);
    assert_eq!(
        ev,
        vec![Event::Error(DoipError::UnknownPayloadType {
            payload_type: 0x1234,
            length: 4
        })]
    );
    let mut rest = hex!("cc dd").to_vec();
    rest.extend(ACTIVATE);
    assert_eq!(feed(&mut c, 0, &rest).0, vec![ACTIVATED.to_vec()]);
    // Known type that an entity does not serve on TCP: also 0x01.
    let (out, _) = feed(&mut c, 0, &hex!("02 fd 00 01 00 00 00 00"));
    assert_eq!(out, vec![nack(0x01)]);
    let (out, _) = feed(&mut c, 0, &ACTIVATED);
    assert_eq!(out, vec![nack(0x01)]);
    // Too large: NACK 0x02, discard, keep. Out of memory: NACK 0x03, discard, keep.
    let mut c = activated(Config {
        max_payload: 16,
        ..Config::default()
    });
    let mut big = hex!("02 fd 80 01 00 00 00 11").to_vec();
    big.extend([0u8; 17]);
    let (out, ev) = feed(&mut c, 0, &big);
    assert_eq!(out, vec![nack(0x02)]);
    assert_eq!(
        ev,
        vec![Event::Error(DoipError::MessageTooLarge {
            length: 17,
            max: 16
        })]
    );
    c.set_available_memory(Some(5));
    let (out, ev) = feed(
        &mut c,
        0,
        &hex!("02 fd 80 01 00 00 00 06 0e 00 00 10 3e 00"),
    );
    assert_eq!(out, vec![nack(0x03)]);
    assert_eq!(
        ev,
        vec![Event::Error(DoipError::OutOfMemory {
            length: 6,
            available: 5
        })]
    );
    c.set_available_memory(None);
    let (out, _) = feed(
        &mut c,
        0,
        &hex!("02 fd 80 01 00 00 00 06 0e 00 00 10 3e 00"),
    );
    assert_eq!(
        out,
        vec![hex!("02 fd 80 02 00 00 00 05 00 10 0e 00 00").to_vec()]
    );
    // Invalid payload length: NACK 0x04 and close.
    let (out, ev) = feed(&mut c, 0, &hex!("02 fd 00 05 00 00 00 08"));
    assert_eq!(out, vec![nack(0x04)]);
    assert_eq!(
        ev,
        vec![Event::Closed(DoipError::InvalidPayloadLength {
            payload_type: 5,
            length: 8
        })]
    );
    assert!(c.is_closed());
    // Incorrect pattern: NACK 0x00 (in the entity's version) and close; the rest is ignored.
    let mut c = Connection::new(0, Config::default());
    let mut bytes = hex!("03 fd 00 05 00 00 00 07").to_vec();
    bytes.extend(ACTIVATE);
    let (out, ev) = feed(&mut c, 0, &bytes);
    assert_eq!(out, vec![nack(0x00)]);
    assert_eq!(
        ev,
        vec![Event::Closed(DoipError::IncorrectPattern {
            version: 3,
            inverse: 0xFD,
            payload_type: 5
        })]
    );
    assert_eq!(feed(&mut c, 0, &ACTIVATE), (vec![], vec![]));
    // A generic NACK from the tester is reported.
    let mut c = Connection::new(0, Config::default());
    let (out, ev) = feed(&mut c, 0, &nack(0x02));
    assert!(out.is_empty());
    assert_eq!(ev, vec![Event::PeerNack(NackCode::MessageTooLarge)]);
}

#[test]
fn alive_check_both_ways() {
    let mut c = activated(Config::default());
    // The tester asks: we answer with the entity's address.
    let (out, _) = feed(&mut c, 0, &hex!("02 fd 00 07 00 00 00 00"));
    assert_eq!(out, vec![hex!("02 fd 00 08 00 00 00 02 00 10").to_vec()]);
    // We ask: the answer passes the check.
    c.start_alive_check(1_000).unwrap();
    c.start_alive_check(1_001).unwrap();
    assert_eq!(
        drain(&mut c).0,
        vec![hex!("02 fd 00 07 00 00 00 00").to_vec()]
    );
    assert_eq!(c.poll_timeout(), Some(501_000));
    let (out, ev) = feed(&mut c, 2_000, &hex!("02 fd 00 08 00 00 00 02 0e 00"));
    assert!(out.is_empty());
    assert_eq!(ev, vec![Event::AliveCheckPassed { source: TESTER }]);
    assert_eq!(c.poll_timeout(), Some(2_000 + 300_000_000));
    // No answer: the connection closes.
    c.start_alive_check(10_000).unwrap();
    c.handle_timeout(509_999);
    assert!(!c.is_closed());
    c.handle_timeout(510_000);
    assert_eq!(
        drain(&mut c).1,
        vec![Event::Closed(DoipError::AliveCheckTimeout {
            timeout_us: 500_000
        })]
    );
    assert_eq!(c.start_alive_check(0), Err(DoipError::Closed));
}

#[test]
fn entity_status_and_power_mode_over_tcp() {
    let mut c = Connection::new(0, Config::default());
    c.entity_mut().open_sockets = 1;
    let (out, _) = feed(
        &mut c,
        0,
        &hex!("02 fd 40 01 00 00 00 00 02 fd 40 03 00 00 00 00"),
    );
    assert_eq!(
        out,
        vec![
            hex!("02 fd 40 02 00 00 00 07 01 01 01 00 01 00 0c").to_vec(),
            hex!("02 fd 40 04 00 00 00 01 01").to_vec()
        ]
    );
}

#[test]
fn inactivity_timers() {
    // Initial: no activation within 2 s.
    let mut c = Connection::new(1_000, Config::default());
    assert_eq!(c.poll_timeout(), Some(2_001_000));
    // Other traffic does not extend it.
    feed(&mut c, 1_500_000, &hex!("02 fd 00 07 00 00 00 00"));
    assert_eq!(c.poll_timeout(), Some(2_001_000));
    c.handle_timeout(2_000_999);
    assert!(!c.is_closed());
    c.handle_timeout(2_001_000);
    assert_eq!(
        drain(&mut c).1,
        vec![Event::Closed(DoipError::InitialInactivity {
            timeout_us: 2_000_000
        })]
    );
    // General: 5 minutes after the last message, restarted by traffic both ways.
    let mut c = Connection::new(0, Config::default());
    feed(&mut c, 1_000_000, &ACTIVATE);
    assert_eq!(c.poll_timeout(), Some(301_000_000));
    feed(
        &mut c,
        100_000_000,
        &hex!("02 fd 80 01 00 00 00 06 0e 00 00 10 3e 80"),
    );
    assert_eq!(c.poll_timeout(), Some(400_000_000));
    c.send_diagnostic(200_000_000, &[0x7E, 0x00]).unwrap();
    assert_eq!(c.poll_timeout(), Some(500_000_000));
    c.handle_timeout(499_999_999);
    assert!(!c.is_closed());
    c.handle_timeout(500_000_000);
    assert_eq!(
        drain(&mut c).1.last(),
        Some(&Event::Closed(DoipError::GeneralInactivity {
            timeout_us: 300_000_000
        }))
    );
    c.handle_timeout(u64::MAX);
    assert_eq!(c.poll_event(), None);
}

#[test]
fn udp_vehicle_identification() {
    let e = EntityInfo::default();
    let ann = e.announcement();
    assert_eq!(&ann[..8], hex!("02 fd 00 04 00 00 00 20"));
    assert_eq!(
        Message::decode(0x0004, &ann[8..]),
        Ok(Message::VehicleAnnouncement(e.vehicle_announcement()))
    );
    // Plain, in version 2 and the default version 0xFF (answered in the entity's version).
    assert_eq!(
        udp_response(&hex!("02 fd 00 01 00 00 00 00"), &e),
        Some(ann.clone())
    );
    assert_eq!(
        udp_response(&hex!("ff 00 00 01 00 00 00 00"), &e),
        Some(ann.clone())
    );
    let mut v3 = ann.clone();
    v3[..2].copy_from_slice(&hex!("03 fc"));
    assert_eq!(udp_response(&hex!("03 fc 00 01 00 00 00 00"), &e), Some(v3));
    // By EID.
    let by_eid = hex!("02 fd 00 02 00 00 00 06 02 00 00 00 00 10");
    assert_eq!(udp_response(&by_eid, &e), Some(ann.clone()));
    let other_eid = hex!("02 fd 00 02 00 00 00 06 02 00 00 00 00 11");
    assert_eq!(udp_response(&other_eid, &e), None);
    // By VIN.
    let mut by_vin = hex!("02 fd 00 03 00 00 00 11").to_vec();
    by_vin.extend(VIN);
    assert_eq!(udp_response(&by_vin, &e), Some(ann.clone()));
    by_vin[24] = b'2';
    assert_eq!(udp_response(&by_vin, &e), None);
    // Status and power mode.
    assert_eq!(
        udp_response(&hex!("02 fd 40 01 00 00 00 00"), &e),
        Some(hex!("02 fd 40 02 00 00 00 07 01 01 00 00 01 00 0c").to_vec())
    );
    assert_eq!(
        udp_response(&hex!("02 fd 40 03 00 00 00 00"), &e),
        Some(hex!("02 fd 40 04 00 00 00 01 01").to_vec())
    );
    // Malformed datagrams get generic NACKs; others' announcements and runts are ignored.
    assert_eq!(
        udp_response(&hex!("02 fc 00 01 00 00 00 00"), &e),
        Some(nack(0x00))
    );
    assert_eq!(
        udp_response(&hex!("02 fd 55 55 00 00 00 00"), &e),
        Some(nack(0x01))
    );
    assert_eq!(
        udp_response(&hex!("02 fd 00 01 00 00 00 01 00"), &e),
        Some(nack(0x04))
    );
    assert_eq!(
        udp_response(&hex!("02 fd 00 02 00 00 00 06 02"), &e),
        Some(nack(0x04))
    );
    assert_eq!(udp_response(&ann, &e), None);
    assert_eq!(udp_response(&hex!("02 fd 00"), &e), None);
}

/// A message stream with every kind of decoder outcome, fed whole and in every chunking.
#[test]
fn decoder_split_across_chunk_boundaries() {
    let mut stream = ACTIVATE.to_vec();
    stream.extend(hex!("02 fd 12 34 00 00 00 03 01 02 03")); // unknown: skipped
    stream.extend(hex!("02 fd 80 01 00 00 00 07 0e 00 00 10 22 f1 90"));
    stream.extend(hex!("02 fd 80 01 00 00 00 20")); // too large (max 16): skipped
    stream.extend([0x55; 0x20]);
    stream.extend(hex!("02 fd 00 07 00 00 00 00"));
    stream.extend(hex!("02 fd 00 08 00 00 00 03 00 00 00")); // invalid length: fatal
    stream.extend(ACTIVATE); // ignored
    let run = |chunks: &mut dyn Iterator<Item = &[u8]>| {
        let mut d = Decoder::new(16);
        let mut got = Vec::new();
        for chunk in chunks {
            d.push(chunk);
            while let Some(r) = d.decode().transpose() {
                got.push(r);
            }
        }
        (got, d.is_failed(), d.buffered())
    };
    let whole = run(&mut std::iter::once(&stream[..]));
    assert_eq!(whole.0.len(), 6);
    assert!(matches!(
        whole.0[0],
        Ok((_, Message::RoutingActivationRequest { .. }))
    ));
    assert!(matches!(
        whole.0[1],
        Err(DoipError::UnknownPayloadType { .. })
    ));
    assert!(matches!(whole.0[2], Ok((_, Message::Diagnostic { .. }))));
    assert!(matches!(whole.0[3], Err(DoipError::MessageTooLarge { .. })));
    assert!(matches!(whole.0[4], Ok((_, Message::AliveCheckRequest))));
    assert!(matches!(
        whole.0[5],
        Err(DoipError::InvalidPayloadLength { .. })
    ));
    assert_eq!((whole.1, whole.2), (true, 0));
    for size in 1..=stream.len() {
        assert_eq!(run(&mut stream.chunks(size)), whole, "chunk size {size}");
    }
    // Every single split point, and a deterministic sweep of uneven chunkings.
    for cut in 0..=stream.len() {
        let (a, b) = stream.split_at(cut);
        assert_eq!(run(&mut [a, b].into_iter()), whole, "cut at {cut}");
    }
    let mut x: u32 = 7;
    for _ in 0..500 {
        let mut pieces = Vec::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let n = (x as usize % 9).min(rest.len());
            let (a, b) = rest.split_at(n);
            pieces.push(a);
            rest = b;
        }
        assert_eq!(run(&mut pieces.into_iter()), whole);
    }
}

/// Shuttle bytes between a tester and an entity until both are quiet.
fn shuttle(
    cl: &mut ClientConnection,
    sv: &mut Connection,
    now: u64,
) -> (Vec<ClientEvent>, Vec<Event>) {
    let (mut ce, mut se) = (Vec::new(), Vec::new());
    loop {
        let mut moved = false;
        while let Some(b) = cl.poll_transmit() {
            sv.handle_bytes(now, &b);
            moved = true;
        }
        while let Some(b) = sv.poll_transmit() {
            cl.handle_bytes(now, &b);
            moved = true;
        }
        ce.extend(std::iter::from_fn(|| cl.poll_event()));
        se.extend(std::iter::from_fn(|| sv.poll_event()));
        if !moved {
            return (ce, se);
        }
    }
}

#[test]
fn client_and_server_back_to_back() {
    let mut cl = ClientConnection::new(ClientConfig::default());
    let mut sv = Connection::new(0, Config::default());
    assert_eq!(
        cl.send_diagnostic(0, 0x0010, &[0x3E, 0x00]),
        Err(DoipError::NotActivated)
    );
    cl.activate(0, TESTER, ActivationType::Default).unwrap();
    assert_eq!(
        cl.activate(0, TESTER, ActivationType::Default),
        Err(DoipError::ActivationPending)
    );
    assert_eq!(cl.poll_timeout(), Some(2_000_000));
    let (ce, se) = shuttle(&mut cl, &mut sv, 1);
    assert_eq!(
        ce,
        vec![ClientEvent::Activated {
            source: TESTER,
            entity: 0x0010
        }]
    );
    assert_eq!(
        se,
        vec![Event::RoutingActivated {
            source: TESTER,
            activation_type: ActivationType::Default
        }]
    );
    assert_eq!(cl.poll_timeout(), None);
    // Request, ACK, delivery to the ECU, response.
    cl.send_diagnostic(2, 0x0010, &hex!("22 f1 90")).unwrap();
    assert_eq!(
        cl.send_diagnostic(2, 0x0010, &hex!("22 f1 90")),
        Err(DoipError::AckPending { target: 0x0010 })
    );
    let (ce, se) = shuttle(&mut cl, &mut sv, 3);
    assert_eq!(
        ce,
        vec![ClientEvent::DiagnosticAck {
            source: 0x0010,
            target: TESTER
        }]
    );
    assert_eq!(
        se,
        vec![Event::Diagnostic {
            source: TESTER,
            target: 0x0010,
            data: hex!("22 f1 90").to_vec()
        }]
    );
    let mut response = hex!("62 f1 90").to_vec();
    response.extend(VIN);
    sv.send_diagnostic(4, &response).unwrap();
    let (ce, _) = shuttle(&mut cl, &mut sv, 4);
    assert_eq!(
        ce,
        vec![ClientEvent::Diagnostic {
            source: 0x0010,
            target: TESTER,
            data: response
        }]
    );
    // Unknown target: NACK reaches the client and clears the pending ACK.
    cl.send_diagnostic(5, 0x0777, &[0x3E]).unwrap();
    let (ce, _) = shuttle(&mut cl, &mut sv, 5);
    assert_eq!(
        ce,
        vec![ClientEvent::DiagnosticNack {
            source: 0x0777,
            target: TESTER,
            code: DiagnosticNackCode::UnknownTargetAddress
        }]
    );
    // The entity's alive check is answered by the client automatically.
    sv.start_alive_check(6).unwrap();
    let (ce, se) = shuttle(&mut cl, &mut sv, 6);
    assert!(ce.is_empty());
    assert_eq!(se, vec![Event::AliveCheckPassed { source: TESTER }]);
    // Entity status through the raw send.
    cl.send_message(&Message::EntityStatusRequest);
    let (ce, _) = shuttle(&mut cl, &mut sv, 7);
    assert!(matches!(
        ce[..],
        [ClientEvent::Message(Message::EntityStatusResponse(_))]
    ));
}

#[test]
fn client_refusals_and_timeouts() {
    // Refused activation (unknown source) and the entity closing.
    let mut cl = ClientConnection::new(ClientConfig::default());
    let mut sv = Connection::new(0, Config::default());
    cl.activate(0, 0x0100, ActivationType::Default).unwrap();
    let (ce, se) = shuttle(&mut cl, &mut sv, 0);
    assert_eq!(
        ce,
        vec![ClientEvent::ActivationRefused {
            code: RoutingActivationCode::UnknownSourceAddress
        }]
    );
    assert!(matches!(se[..], [Event::Closed(_)]));
    // No activation response, no ACK.
    let mut cl = ClientConnection::new(ClientConfig::default());
    cl.activate(0, TESTER, ActivationType::Default).unwrap();
    cl.handle_timeout(1_999_999);
    assert_eq!(cl.poll_event(), None);
    cl.handle_timeout(2_000_000);
    assert_eq!(
        cl.poll_event(),
        Some(ClientEvent::Error(DoipError::ActivationTimeout {
            timeout_us: 2_000_000
        }))
    );
    let mut cl = ClientConnection::new(ClientConfig::default());
    cl.activate(0, TESTER, ActivationType::Default).unwrap();
    cl.handle_bytes(0, &ACTIVATED);
    cl.send_diagnostic(10, 0x0010, &[0x3E, 0x00]).unwrap();
    assert_eq!(cl.poll_timeout(), Some(2_000_010));
    cl.handle_timeout(2_000_010);
    let events: Vec<_> = std::iter::from_fn(|| cl.poll_event()).collect();
    assert_eq!(
        events.last(),
        Some(&ClientEvent::Error(DoipError::AckTimeout {
            target: 0x0010,
            timeout_us: 2_000_000
        }))
    );
    // A malformed header from the entity: NACK back and close.
    let mut cl = ClientConnection::new(ClientConfig::default());
    cl.handle_bytes(0, &hex!("02 02 00 00 00 00 00 00"));
    assert_eq!(cl.poll_transmit(), Some(nack(0x00)));
    assert!(cl.is_closed());
    assert_eq!(cl.poll_timeout(), None);
    assert_eq!(
        cl.activate(0, TESTER, ActivationType::Default),
        Err(DoipError::Closed)
    );
}

/// Split `data` at the given (sorted, deduplicated) cut points.
fn pieces<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for c in cuts.into_iter().chain([data.len()]) {
        out.push(&data[start..c]);
        start = c;
    }
    out
}

/// Arbitrary bytes, possibly led by a plausible header so the deeper paths are reached.
fn input() -> impl Strategy<Value = Vec<u8>> {
    let header = prop_oneof![
        Just(Vec::new()),
        Just(ACTIVATE.to_vec()),
        (
            prop::sample::select(vec![
                0x0000u16, 0x0001, 0x0004, 0x0005, 0x0006, 0x0007, 0x0008, 0x4001, 0x4002, 0x4003,
                0x4004, 0x8001, 0x8002, 0x8003, 0x1234
            ]),
            0u32..64
        )
            .prop_map(|(t, l)| Header {
                version: 2,
                payload_type: t,
                payload_length: l
            }
            .to_bytes()
            .to_vec()),
    ];
    (
        header,
        prop::collection::vec(any::<u8>(), 0..200),
        any::<bool>(),
    )
        .prop_map(|(mut h, tail, activate_first)| {
            if activate_first && !h.starts_with(&ACTIVATE) {
                let mut v = ACTIVATE.to_vec();
                v.append(&mut h);
                h = v;
            }
            h.extend(tail);
            h
        })
}

proptest! {
    #[test]
    fn arbitrary_input_never_panics(
        data in input(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let chunks = pieces(&data, &cuts);
        let mut sv = Connection::new(0, Config { max_payload: 48, ..Config::default() });
        let mut cl = ClientConnection::new(ClientConfig::default());
        let mut d = Decoder::new(48);
        let mut now = 0;
        for chunk in &chunks {
            now += 100_000;
            sv.handle_bytes(now, chunk);
            sv.handle_timeout(now);
            let _ = sv.send_diagnostic(now, &[0x7F, 0x22, 0x78]);
            while sv.poll_transmit().is_some() {}
            while sv.poll_event().is_some() {}
            cl.handle_bytes(now, chunk);
            cl.handle_timeout(now);
            while cl.poll_transmit().is_some() {}
            while cl.poll_event().is_some() {}
            d.push(chunk);
            while d.decode().transpose().is_some() {}
        }
        let _ = udp_response(&data, &EntityInfo::default());
    }

    #[test]
    fn decoder_is_independent_of_chunking(
        data in input(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let run = |chunks: &[&[u8]]| {
            let mut d = Decoder::new(48);
            let mut got = Vec::new();
            for chunk in chunks {
                d.push(chunk);
                while let Some(r) = d.decode().transpose() {
                    got.push(r);
                }
            }
            (got, d.is_failed(), d.buffered())
        };
        prop_assert_eq!(run(&pieces(&data, &cuts)), run(&[&data[..]]));
    }
}
