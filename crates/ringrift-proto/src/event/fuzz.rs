//! Fuzz targets of event decoding and validation (see `ringrift-fuzz`): encoded events
//! (mutated protobuf bytes, then `wire::Event` → [`Event`]) and JSON payloads of every
//! catalogue type. Any input is a valid event or an [`EventError`]; an accepted event
//! round-trips through the wire (and its re-encoding) unchanged.

use super::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use prost::Message;

/// Every catalogue type (the proto enum, Unspecified and External included).
fn all_types() -> Vec<EventType> {
    (0..1000)
        .filter_map(|i| EventType::try_from(i).ok())
        .collect()
}

/// Seeds: an event of every type from a JSON `{}` payload (typed after validation), a
/// few with fields set, and the JSON forms themselves.
fn seeds() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for kind in all_types() {
        let w = wire::Event {
            id: String::new(),
            r#type: kind as i32,
            source: "auto_export@n1".into(),
            time_unix_ms: 1_700_000_000_000,
            config_key: "hex8_2p".into(),
            seq: 7,
            payload: Some(Payload::Json("{}".into())),
        };
        v.push(w.encode_to_vec());
        if let Ok(e) = Event::try_from(w) {
            v.push(wire::Event::from(e).encode_to_vec());
        }
    }
    let rich = [
        Payload::NewGamesAvailable(wire::NewGamesAvailable {
            new_games: 3,
            total_games: 900,
            db_path: "data/games/hex8_2p.db".into(),
            node: "n2".into(),
        }),
        Payload::ModelPromoted(wire::ModelPromoted {
            model_path: "models/x.bin".into(),
            elo: 1612.5,
            sprt_llr: 2.9,
            sprt_games: 40,
            ..Default::default()
        }),
        Payload::Json(r#"{"new_games": 7, "db_path": "x.db"}"#.into()),
    ];
    for p in rich {
        v.push(
            wire::Event {
                r#type: EventType::NewGamesAvailable as i32,
                payload: Some(p),
                ..Default::default()
            }
            .encode_to_vec(),
        );
    }
    v
}

/// An accepted event is a fixed point of the wire conversion and its encoding.
fn round_trips(e: &Event) -> Result<(), TestCaseError> {
    let w = wire::Event::from(e.clone());
    let bytes = w.encode_to_vec();
    let back = wire::Event::decode(bytes.as_slice())
        .map_err(|err| TestCaseError::fail(format!("re-encoded event does not decode: {err}")))?;
    prop_assert_eq!(&back, &w);
    let again = Event::try_from(back)
        .map_err(|err| TestCaseError::fail(format!("accepted event refused on re-read: {err}")))?;
    prop_assert_eq!(&again, e);
    Ok(())
}

#[test]
fn fuzz_event_decoding() {
    let r = ringrift_fuzz::run(
        file!(),
        "event_decode",
        ringrift_fuzz::mutated(seeds()),
        |bytes| {
            let Ok(w) = wire::Event::decode(bytes.as_slice()) else {
                return Ok(());
            };
            match Event::try_from(w) {
                Ok(e) => round_trips(&e),
                Err(err) => {
                    prop_assert!(!err.to_string().is_empty());
                    Ok(())
                }
            }
        },
    );
    assert_eq!(r, Ok(()));
}

#[test]
fn fuzz_event_json_payloads() {
    let types = all_types();
    let n = types.len();
    let json = ringrift_fuzz::mutated_text(&[
        "{}",
        r#"{"new_games": 7, "total_games": 9, "db_path": "x.db", "node": "n1"}"#,
        r#"{"model_path": "m", "elo": 1500.0, "sprt_llr": -1.5, "sprt_games": 3}"#,
        r#"{"daemon": "d", "pid": 1, "uptime_s": 2.5, "health": {"healthy": true, "status": 1, "message": "ok", "details": {"a": "b"}}}"#,
        r#"{"work_id": "w", "kind": "selfplay", "priority": -3, "payload_json": "{\"a\":1}"}"#,
    ]);
    let r = ringrift_fuzz::run(file!(), "event_json_payload", (0..n, json), |(i, text)| {
        let w = wire::Event {
            r#type: types[i] as i32,
            payload: Some(Payload::Json(text)),
            ..Default::default()
        };
        match Event::try_from(w) {
            Ok(e) => round_trips(&e),
            Err(err) => {
                prop_assert!(!err.to_string().is_empty());
                Ok(())
            }
        }
    });
    assert_eq!(r, Ok(()));
}
