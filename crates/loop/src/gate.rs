//! The promotion gate's settings (`[unified_promotion]`), read by unified_promotion to
//! decide and by evaluation to stop a gauntlet early once a model can no longer pass
//! (`ringrift_jobs::gate_vars` puts it into an evaluate job).

use handler_base::Context;
use ringrift_contracts::Gate;

/// `[unified_promotion]` in ringrift.toml: the [`Gate`]'s thresholds, flattened.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromotionConfig {
    #[serde(flatten)]
    pub gate: Gate,
}

impl PromotionConfig {
    /// Reads and checks the section.
    pub fn load(ctx: &Context) -> anyhow::Result<Self> {
        let c: PromotionConfig = ctx.settings.section("unified_promotion")?;
        if let Err(e) = c.gate.validate() {
            return Err(
                handler_base::ConfigError::Invalid(format!("unified_promotion.{e}")).into(),
            );
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_reads_the_gate_flattened_and_refuses_unknown_keys() {
        let c: PromotionConfig =
            serde_json::from_str(r#"{"min_lower_vs_heuristic": 0.7}"#).unwrap();
        assert_eq!(c.gate.min_lower_vs_heuristic, 0.7);
        assert_eq!(
            c.gate.min_lower_vs_random,
            Gate::default().min_lower_vs_random
        );
        let err = serde_json::from_str::<PromotionConfig>(r#"{"min_lower_vs_heuristc": 0.7}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("min_lower_vs_heuristc"), "{err}");
    }
}
