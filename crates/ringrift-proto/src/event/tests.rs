//! Validation of wire events: each rejection names what is wrong.

use super::*;
use crate::wire::{self, EventType, event::Payload};

fn wire_event(kind: i32, payload: Option<Payload>) -> wire::Event {
    wire::Event {
        r#type: kind,
        payload,
        ..Default::default()
    }
}

#[test]
fn typed_payload_matching_type_is_accepted_and_gets_content_id() {
    let p = Payload::NewGamesAvailable(wire::NewGamesAvailable {
        new_games: 3,
        ..Default::default()
    });
    let e = Event::try_from(wire_event(
        EventType::NewGamesAvailable as i32,
        Some(p.clone()),
    ))
    .unwrap();
    assert_eq!(e.kind, EventType::NewGamesAvailable);
    assert_eq!(e.id.len(), 64, "sha-256 hex id");
    let again = Event::try_from(wire_event(EventType::NewGamesAvailable as i32, Some(p))).unwrap();
    assert_eq!(e.id, again.id, "same content, same id");
}

#[test]
fn unknown_and_unspecified_types_are_rejected() {
    let p = Payload::Json("{}".into());
    assert_eq!(
        Event::try_from(wire_event(9999, Some(p.clone()))),
        Err(EventError::UnknownType(9999))
    );
    assert_eq!(
        Event::try_from(wire_event(0, Some(p))),
        Err(EventError::UnspecifiedType)
    );
}

#[test]
fn mismatched_and_missing_payloads_are_rejected() {
    let p = Payload::ModelPromoted(wire::ModelPromoted::default());
    let err =
        Event::try_from(wire_event(EventType::NewGamesAvailable as i32, Some(p))).unwrap_err();
    assert!(err.to_string().contains("MODEL_PROMOTED"), "{err}");
    let err = Event::try_from(wire_event(EventType::NewGamesAvailable as i32, None)).unwrap_err();
    assert_eq!(err, EventError::MissingPayload("NEW_GAMES_AVAILABLE"));
}

#[test]
fn json_payload_is_converted_to_the_typed_message() {
    let p = Payload::Json(r#"{"new_games": 7, "db_path": "x.db"}"#.into());
    let e = Event::try_from(wire_event(EventType::NewGamesAvailable as i32, Some(p))).unwrap();
    match e.payload {
        Payload::NewGamesAvailable(m) => {
            assert_eq!(m.new_games, 7);
            assert_eq!(m.db_path, "x.db");
        }
        other => panic!("not converted: {other:?}"),
    }
}

#[test]
fn json_with_unknown_field_or_wrong_shape_is_rejected() {
    for bad in [
        r#"{"new_gamez": 7}"#,
        r#"{"new_games": "many"}"#,
        "not json",
        "[1]",
    ] {
        let p = Payload::Json(bad.into());
        let err =
            Event::try_from(wire_event(EventType::NewGamesAvailable as i32, Some(p))).unwrap_err();
        assert!(matches!(err, EventError::BadJson { .. }), "{bad}: {err}");
    }
    let p = Payload::Json("[1]".into());
    assert!(Event::try_from(wire_event(EventType::External as i32, Some(p))).is_err());
    let p = Payload::Json(r#"{"anything": [1,2]}"#.into());
    assert!(Event::try_from(wire_event(EventType::External as i32, Some(p))).is_ok());
}

#[test]
fn oversized_event_is_rejected() {
    let p = Payload::PromotionRejected(wire::PromotionRejected {
        reason: "x".repeat(MAX_EVENT_BYTES),
        ..Default::default()
    });
    let err =
        Event::try_from(wire_event(EventType::PromotionRejected as i32, Some(p))).unwrap_err();
    assert!(matches!(err, EventError::TooLarge { .. }), "{err}");
}

#[test]
fn domain_round_trips_through_wire() {
    let e = Event::new(Payload::DaemonStarted(wire::DaemonLifecycle {
        daemon: "x".into(),
        ..Default::default()
    }))
    .with_config("hex8_2p")
    .with_id("abc");
    let back = Event::try_from(wire::Event::from(e.clone())).unwrap();
    assert_eq!(back, e);
}
