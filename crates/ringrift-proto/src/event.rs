//! The domain event: a `wire::Event` that passed validation, plus the catalogue mapping
//! between event types and their payload messages.

use crate::wire::{self, EventType, event::Payload};
use prost::Message;
use sha2::{Digest, Sha256};

/// Largest encoded event the router accepts (64 KiB). Events carry metadata, not data:
/// files travel through the data server, never through the bus.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// Why a wire event was rejected. Each message names the offending field.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EventError {
    #[error("unknown event type {0}")]
    UnknownType(i32),
    #[error("event type is unspecified")]
    UnspecifiedType,
    #[error("event of type {0} has no payload")]
    MissingPayload(&'static str),
    #[error("event of type {event_type} carries a payload for {payload_type}")]
    PayloadMismatch {
        event_type: &'static str,
        payload_type: &'static str,
    },
    #[error("JSON payload for {event_type} is invalid: {error}")]
    BadJson {
        event_type: &'static str,
        error: String,
    },
    #[error("event is {size} bytes, more than the {max} byte limit")]
    TooLarge { size: usize, max: usize },
    #[error("event id is {0} bytes, more than 256")]
    IdTooLong(usize),
}

/// A validated event. `payload` always matches `kind`; a JSON payload survives only for
/// [`EventType::External`] (for catalogue types it has been converted to the typed message).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub kind: EventType,
    pub source: String,
    pub time_unix_ms: i64,
    pub config_key: String,
    pub seq: u64,
    pub payload: Payload,
}

macro_rules! catalogue {
    ($($name:ident : $msg:ident),* $(,)?) => {
        /// The event type a typed payload belongs to (`None` for the JSON escape hatch).
        fn payload_type(p: &Payload) -> Option<EventType> {
            match p {
                $(Payload::$name(_) => Some(EventType::$name),)*
                Payload::Json(_) => None,
            }
        }

        /// Converts a JSON object into the typed payload of `kind`.
        fn typed_from_json(kind: EventType, json: &str) -> Result<Payload, EventError> {
            let bad = |e: serde_json::Error| EventError::BadJson {
                event_type: type_name(kind),
                error: e.to_string(),
            };
            // Only an object is a payload (serde would also read a struct from an array).
            let v: serde_json::Value = serde_json::from_str(json).map_err(bad)?;
            if !v.is_object() {
                return Err(EventError::BadJson { event_type: type_name(kind), error: "not a JSON object".into() });
            }
            match kind {
                $(EventType::$name => Ok(Payload::$name(serde_json::from_value::<wire::$msg>(v).map_err(bad)?)),)*
                EventType::External => Ok(Payload::Json(json.to_owned())),
                EventType::Unspecified => Err(EventError::UnspecifiedType),
            }
        }

        /// The payload as a JSON value, for humans and JSON tools.
        pub fn payload_to_json(p: &Payload) -> serde_json::Value {
            let r = match p {
                $(Payload::$name(m) => serde_json::to_value(m),)*
                Payload::Json(s) => serde_json::from_str(s),
            };
            r.unwrap_or(serde_json::Value::Null)
        }
    };
}

catalogue! {
    NewGamesAvailable: NewGamesAvailable,
    SelfplayCompleted: SelfplayCompleted,
    DataSyncStarted: DataSync,
    DataSyncCompleted: DataSync,
    DataSyncFailed: DataSync,
    NpzExportCompleted: NpzExportCompleted,
    TrainingStarted: TrainingStarted,
    TrainingCompleted: TrainingCompleted,
    TrainingFailed: TrainingFailed,
    EvaluationCompleted: EvaluationCompleted,
    ModelPromoted: ModelPromoted,
    PromotionRejected: PromotionRejected,
    ModelDistributed: ModelDistributed,
    NpzDistributed: NpzDistributed,
    EloUpdated: EloUpdated,
    QualityScoreUpdated: QualityScoreUpdated,
    PlateauDetected: PlateauDetected,
    RegressionDetected: RegressionDetected,
    CurriculumUpdated: CurriculumUpdated,
    FeedbackSignal: FeedbackSignal,
    WorkQueued: WorkItem,
    WorkClaimed: WorkItem,
    WorkCompleted: WorkItem,
    WorkFailed: WorkItem,
    IdleResourceDetected: IdleResourceDetected,
    ResourcePressure: ResourcePressure,
    PipelinePaused: PipelineControl,
    PipelineResumed: PipelineControl,
    NodeUnhealthy: NodeStatus,
    NodeRecovered: NodeStatus,
    NodeTerminated: NodeStatus,
    ReplicationAlert: ReplicationAlert,
    RepairCompleted: RepairCompleted,
    OrphanDetected: OrphanDetected,
    LeaderChanged: LeaderChanged,
    DaemonStarted: DaemonLifecycle,
    DaemonStopped: DaemonLifecycle,
    DaemonFailed: DaemonLifecycle,
    DaemonHeartbeat: DaemonHeartbeat,
    PipelineStageStalled: PipelineStageStalled,
    QueueAlert: QueueAlert,
    EventsExpired: EventsExpired,
    HostJoined: HostMembership,
    HostLeft: HostMembership,
}

/// The catalogue name of a type, e.g. `NEW_GAMES_AVAILABLE`.
pub fn type_name(kind: EventType) -> &'static str {
    kind.as_str_name()
}

/// The dedup id of an event: the publisher's id, else SHA-256 of type name + payload bytes.
pub fn event_id_of(kind: EventType, id: &str, payload: &Payload) -> String {
    if !id.is_empty() {
        return id.to_owned();
    }
    let mut h = Sha256::new();
    h.update(type_name(kind).as_bytes());
    h.update([0u8]);
    let carrier = wire::Event {
        payload: Some(payload.clone()),
        ..Default::default()
    };
    h.update(carrier.encode_to_vec());
    hex::encode(h.finalize())
}

impl TryFrom<wire::Event> for Event {
    type Error = EventError;

    fn try_from(w: wire::Event) -> Result<Self, EventError> {
        let size = w.encoded_len();
        if size > MAX_EVENT_BYTES {
            return Err(EventError::TooLarge {
                size,
                max: MAX_EVENT_BYTES,
            });
        }
        if w.id.len() > 256 {
            return Err(EventError::IdTooLong(w.id.len()));
        }
        let kind = EventType::try_from(w.r#type).map_err(|_| EventError::UnknownType(w.r#type))?;
        if kind == EventType::Unspecified {
            return Err(EventError::UnspecifiedType);
        }
        let payload = match w.payload {
            None => return Err(EventError::MissingPayload(type_name(kind))),
            Some(Payload::Json(json)) => typed_from_json(kind, &json)?,
            Some(p) => match payload_type(&p) {
                Some(t) if t == kind => p,
                Some(t) => {
                    return Err(EventError::PayloadMismatch {
                        event_type: type_name(kind),
                        payload_type: type_name(t),
                    });
                }
                None => unreachable!("json handled above"),
            },
        };
        let id = event_id_of(kind, &w.id, &payload);
        Ok(Event {
            id,
            kind,
            source: w.source,
            time_unix_ms: w.time_unix_ms,
            config_key: w.config_key,
            seq: w.seq,
            payload,
        })
    }
}

impl From<Event> for wire::Event {
    fn from(e: Event) -> Self {
        wire::Event {
            id: e.id,
            r#type: e.kind as i32,
            source: e.source,
            time_unix_ms: e.time_unix_ms,
            config_key: e.config_key,
            seq: e.seq,
            payload: Some(e.payload),
        }
    }
}

impl Event {
    /// A new event with a typed payload; `kind` is derived from the payload.
    pub fn new(payload: Payload) -> Self {
        let kind = payload_type(&payload).unwrap_or(EventType::External);
        Event {
            id: String::new(),
            kind,
            source: String::new(),
            time_unix_ms: 0,
            config_key: String::new(),
            seq: 0,
            payload,
        }
    }

    /// Builder-style setter for the config key.
    pub fn with_config(mut self, key: impl Into<String>) -> Self {
        self.config_key = key.into();
        self
    }

    /// Builder-style setter for the dedup id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
