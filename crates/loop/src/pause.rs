//! The pipeline's pause, held per source: PIPELINE_PAUSED from `daemon@node` adds that
//! source's pause, its PIPELINE_RESUMED removes only that one, and the pipeline runs
//! again only when no source holds a pause. Shared by every daemon that honours the pause
//! (data_pipeline, queue_populator, selfplay_coordinator).

use ringrift_proto::{Event, wire::event::Payload};
use std::collections::BTreeMap;

/// The key of a pause whose source is unknown (state stored before pauses were kept per
/// source, or an event without a source): any PIPELINE_RESUMED clears it.
const UNKNOWN_SOURCE: &str = "";

/// Source (`daemon@node`) → the reason of its pause.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Pauses(BTreeMap<String, String>);

impl Pauses {
    /// A pause stored as one flag (before per-source pauses): held by an unknown source.
    pub fn from_legacy(reason: Option<String>) -> Pauses {
        Pauses(
            reason
                .map(|r| (UNKNOWN_SOURCE.to_owned(), r))
                .into_iter()
                .collect(),
        )
    }

    /// Applies PIPELINE_PAUSED / PIPELINE_RESUMED; false for any other event.
    pub fn apply(&mut self, ev: &Event) -> bool {
        match &ev.payload {
            Payload::PipelinePaused(p) => {
                self.0.insert(ev.source.clone(), p.reason.clone());
            }
            Payload::PipelineResumed(_) => {
                self.0.remove(&ev.source);
                self.0.remove(UNKNOWN_SOURCE);
            }
            _ => return false,
        }
        true
    }

    pub fn is_paused(&self) -> bool {
        !self.0.is_empty()
    }

    /// Why the pipeline is paused (every holder, `source: reason`), `None` when it runs.
    pub fn reason(&self) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        Some(
            self.0
                .iter()
                .map(|(s, r)| {
                    if s.is_empty() {
                        r.clone()
                    } else {
                        format!("{s}: {r}")
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    /// The sources holding a pause.
    pub fn holders(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringrift_proto::wire::PipelineControl;

    fn ev(source: &str, paused: bool) -> Event {
        let c = PipelineControl {
            reason: format!("by {source}"),
        };
        let mut e = Event::new(if paused {
            Payload::PipelinePaused(c)
        } else {
            Payload::PipelineResumed(c)
        });
        e.source = source.into();
        e
    }

    #[test]
    fn a_source_resumes_only_its_own_pause() {
        let (a, b) = ("system_health_monitor@n1", "system_health_monitor@n2");
        let mut p = Pauses::default();
        assert!(p.apply(&ev(a, true)));
        assert!(p.apply(&ev(b, true)));
        // n2's resume leaves n1's pause in force.
        p.apply(&ev(b, false));
        assert!(p.is_paused());
        assert_eq!(
            p.reason().as_deref(),
            Some("system_health_monitor@n1: by system_health_monitor@n1")
        );
        // A resume from a source that holds none changes nothing.
        p.apply(&ev("system_health_monitor@n3", false));
        assert!(p.is_paused());
        p.apply(&ev(a, false));
        assert!(!p.is_paused());
        assert_eq!(p.reason(), None);
        assert!(!p.apply(&Event::new(Payload::CurriculumUpdated(Default::default()))));
    }

    #[test]
    fn a_pause_of_unknown_source_is_cleared_by_any_resume() {
        let mut p = Pauses::from_legacy(Some("disk".into()));
        p.apply(&ev("system_health_monitor@n1", true));
        p.apply(&ev("system_health_monitor@n1", false));
        assert!(!p.is_paused());
        let json = serde_json::to_string(&Pauses::from_legacy(Some("x".into()))).unwrap();
        assert_eq!(json, r#"{"":"x"}"#);
    }
}
