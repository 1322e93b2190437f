//! The promotion gate's settings (`[unified_promotion]`), read by unified_promotion to
//! decide and by evaluation to stop a gauntlet early once a model can no longer pass.

use handler_base::Context;
use ringrift_workload::promote::Gate;

/// `[unified_promotion]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromotionConfig {
    pub min_lower_vs_random: f64,
    pub min_lower_vs_heuristic: f64,
    pub min_vs_canonical: f64,
}

impl Default for PromotionConfig {
    fn default() -> Self {
        let g = Gate::default();
        PromotionConfig {
            min_lower_vs_random: g.min_lower_vs_random,
            min_lower_vs_heuristic: g.min_lower_vs_heuristic,
            min_vs_canonical: g.min_vs_canonical,
        }
    }
}

impl PromotionConfig {
    /// Reads and checks the section.
    pub fn load(ctx: &Context) -> anyhow::Result<Self> {
        let c: PromotionConfig = ctx.settings.section("unified_promotion")?;
        for (k, v) in [
            ("min_lower_vs_random", c.min_lower_vs_random),
            ("min_lower_vs_heuristic", c.min_lower_vs_heuristic),
            ("min_vs_canonical", c.min_vs_canonical),
        ] {
            handler_base::ensure_config!(
                (0.0..=1.0).contains(&v),
                "unified_promotion.{k} = {v}: must be within 0..=1"
            );
        }
        Ok(c)
    }

    pub fn gate(&self) -> Gate {
        Gate {
            min_lower_vs_random: self.min_lower_vs_random,
            min_lower_vs_heuristic: self.min_lower_vs_heuristic,
            min_vs_canonical: self.min_vs_canonical,
        }
    }
}
