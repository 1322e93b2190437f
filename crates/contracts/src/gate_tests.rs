//! Tests of the promotion gate on gauntlet results (kept out of `gate.rs`, which knows
//! no report type: the reports use the gate, not the other way round).

use crate::example::opponent;
use crate::gate::*;
use crate::report::OpponentResult;

fn anchors() -> Vec<OpponentResult> {
    vec![
        opponent(RANDOM_ID, 100, 97, 0.915, 0.99),
        opponent(HEURISTIC_ID, 100, 75, 0.66, 0.82),
    ]
}

fn wilson() -> Gate {
    Gate {
        canonical_test: CanonicalTest::Wilson,
        ..Gate::default()
    }
}

/// With opening groups the SPRT runs on them: 200 pairs scoring 0.55 per game decide where
/// the same 400 games as single games (LLR 2.00 at elo1 35) do not; a count of the
/// wrong length is refused by name.
#[test]
fn the_sprt_runs_on_opening_groups_when_the_result_has_them() {
    let gate = Gate {
        sprt_elo1: 35.0,
        ..Gate::default()
    };
    let mut canonical = opponent("gen1", 400, 220, 0.5, 0.6);
    let single = {
        let mut r = anchors();
        r.push(canonical.clone());
        check_gate(r.iter().map(|r| r.score()), &gate, 2)
    };
    assert!(!single.passed, "{single:?}");
    assert!(
        single.reasons[0].contains("undecided with LLR 2.00"),
        "{single:?}"
    );
    canonical.groups = vec![20, 0, 140, 0, 40];
    let mut results = anchors();
    results.push(canonical.clone());
    let d = check_gate(results.iter().map(|r| r.score()), &gate, 2);
    assert!(d.passed, "{d:?}");
    let st = d.sprt.expect("sprt");
    assert_eq!((st.games, st.verdict), (400, Verdict::Accepted));
    canonical.groups = vec![1, 2, 3];
    let mut results = anchors();
    results.push(canonical);
    let d = check_gate(results.iter().map(|r| r.score()), &gate, 2);
    assert!(!d.passed);
    assert!(
        d.reasons[0].contains("3 opening-group counts, a 2-player game has 5"),
        "{d:?}"
    );
}

/// 28 of 50 against the canonical model is a point score of 0.56 but a Wilson lower
/// bound of 0.42: no evidence the candidate is better, so it is not promoted.
#[test]
fn the_canonical_is_beaten_on_a_lower_bound_not_a_point_score() {
    let mut results = anchors();
    results.push(opponent("gen1", 50, 28, 0.423, 0.69));
    let d = check_gate(results.iter().map(|r| r.score()), &wilson(), 2);
    assert!(!d.passed, "{d:?}");
    assert!(
        d.reasons[0].contains("vs canonical gen1: lower 95% bound 0.423 < 0.50"),
        "{d:?}"
    );
    let mut results = anchors();
    results.push(opponent("gen1", 200, 130, 0.581, 0.71));
    let d = check_gate(results.iter().map(|r| r.score()), &wilson(), 2);
    assert!(d.passed, "{d:?}");
    let lenient = Gate {
        min_lower_vs_canonical: 0.4,
        ..wilson()
    };
    let mut results = anchors();
    results.push(opponent("gen1", 50, 28, 0.423, 0.69));
    assert!(check_gate(results.iter().map(|r| r.score()), &lenient, 2).passed);
}

/// Under the default SPRT the decision comes from the game counts: 260 of 400 is
/// accepted (LLR above 2.94), 28 of 50 is undecided and 60 of 200 rejected, each
/// recorded with its LLR and game count.
#[test]
fn the_sprt_decides_from_the_counts_and_is_recorded() {
    let gate = Gate::default();
    let decide = |games, wins| {
        let mut results = anchors();
        results.push(opponent("gen1", games, wins, 0.0, 1.0));
        check_gate(results.iter().map(|r| r.score()), &gate, 2)
    };
    let d = decide(400, 260);
    assert!(d.passed, "{d:?}");
    let st = d.sprt.expect("recorded");
    assert_eq!((st.games, st.verdict), (400, Verdict::Accepted));
    assert!(st.llr >= st.upper, "{st:?}");
    let d = decide(50, 28);
    assert!(!d.passed && d.reasons[0].contains("undecided"), "{d:?}");
    assert_eq!(d.sprt.map(|s| s.games), Some(50));
    let d = decide(200, 60);
    assert!(
        !d.passed && d.reasons[0].contains("rejected with LLR"),
        "{d:?}"
    );
    // Rejected by the SPRT before its floors were played: the test is the first
    // reason, the missing floors follow. The reason names the depth the games were
    // played at, when the job reported it.
    let only = [OpponentResult {
        depth: 1,
        ..opponent("gen1", 200, 60, 0.0, 1.0)
    }];
    let d = check_gate(only.iter().map(|r| r.score()), &gate, 2);
    assert!(d.reasons[0].contains("rejected with LLR"), "{d:?}");
    assert!(
        d.reasons[0].starts_with("vs canonical gen1 at depth 1: SPRT"),
        "{d:?}"
    );
    assert_eq!(
        d.reasons[1..],
        ["no games against random", "no games against heuristic"]
    );
    // No canonical model yet: only the floors, no test.
    let d = check_gate(anchors().iter().map(|r| r.score()), &gate, 2);
    assert!(d.passed && d.sprt.is_none(), "{d:?}");
}

/// A 4-player config moves the bars to a seat's share: 0.60 against the heuristic
/// becomes 1/3, so a lower bound of 0.40 that fails two-player passes four-player.
#[test]
fn multi_player_bars_are_per_seat() {
    let results = [
        opponent(RANDOM_ID, 100, 80, 0.71, 0.87),
        opponent(HEURISTIC_ID, 100, 48, 0.40, 0.58),
    ];
    let two = check_gate(results.iter().map(|r| r.score()), &Gate::default(), 2);
    assert!(!two.passed, "{two:?}");
    assert_eq!(two.reasons.len(), 2, "{two:?}");
    let four = check_gate(results.iter().map(|r| r.score()), &Gate::default(), 4);
    assert!(four.passed, "{four:?}");
    assert!((Gate::default().bar(HEURISTIC_ID, 4).unwrap() - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(
        Gate::default().bar("gen3", 4),
        None,
        "the SPRT decides, not a bar"
    );
}
