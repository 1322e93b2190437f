//! `HealthCheckResult`: what every daemon reports in heartbeats and to the launcher.

use ringrift_proto::wire;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    Running,
    Starting,
    Degraded,
    Error,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HealthCheckResult {
    pub healthy: bool,
    pub status: HealthStatus,
    pub message: String,
    pub details: BTreeMap<String, String>,
}

impl HealthCheckResult {
    pub fn running(message: impl Into<String>) -> Self {
        Self::with(true, HealthStatus::Running, message)
    }
    pub fn degraded(message: impl Into<String>) -> Self {
        Self::with(true, HealthStatus::Degraded, message)
    }
    pub fn error(message: impl Into<String>) -> Self {
        Self::with(false, HealthStatus::Error, message)
    }
    pub fn with(healthy: bool, status: HealthStatus, message: impl Into<String>) -> Self {
        HealthCheckResult {
            healthy,
            status,
            message: message.into(),
            details: BTreeMap::new(),
        }
    }
    pub fn detail(mut self, k: impl Into<String>, v: impl ToString) -> Self {
        self.details.insert(k.into(), v.to_string());
        self
    }
}

impl From<HealthStatus> for wire::HealthStatus {
    fn from(s: HealthStatus) -> Self {
        match s {
            HealthStatus::Running => wire::HealthStatus::Running,
            HealthStatus::Starting => wire::HealthStatus::Starting,
            HealthStatus::Degraded => wire::HealthStatus::Degraded,
            HealthStatus::Error => wire::HealthStatus::Error,
            HealthStatus::Stopped => wire::HealthStatus::Stopped,
        }
    }
}

impl From<HealthCheckResult> for wire::HealthCheckResult {
    fn from(h: HealthCheckResult) -> Self {
        wire::HealthCheckResult {
            healthy: h.healthy,
            status: wire::HealthStatus::from(h.status) as i32,
            message: h.message,
            details: h.details.into_iter().collect(),
        }
    }
}

impl TryFrom<wire::HealthCheckResult> for HealthCheckResult {
    type Error = String;
    fn try_from(w: wire::HealthCheckResult) -> Result<Self, String> {
        let status = match wire::HealthStatus::try_from(w.status) {
            Ok(wire::HealthStatus::Running) => HealthStatus::Running,
            Ok(wire::HealthStatus::Starting) => HealthStatus::Starting,
            Ok(wire::HealthStatus::Degraded) => HealthStatus::Degraded,
            Ok(wire::HealthStatus::Error) => HealthStatus::Error,
            Ok(wire::HealthStatus::Stopped) => HealthStatus::Stopped,
            _ => return Err(format!("invalid health status {}", w.status)),
        };
        Ok(HealthCheckResult {
            healthy: w.healthy,
            status,
            message: w.message,
            details: w.details.into_iter().collect(),
        })
    }
}
