//! Tests of the Elo store against hand-computed values.

use super::*;

fn key() -> ConfigKey {
    "square8_2p".parse().expect("key")
}

fn m(id: &str, a: &str, b: &str, score_a: f64) -> MatchResult {
    MatchResult {
        match_id: id.into(),
        config_key: key(),
        participant_a: a.into(),
        participant_b: b.into(),
        score_a,
        played_at: 1,
        source_node: "n".into(),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn two_new_players_move_by_sixteen() {
    // Equal ratings: expected 0.5, K=32 → winner +16, loser -16.
    let dir = tempfile::tempdir().expect("tempdir");
    let elo = EloStore::open(&dir.path().join("unified_elo.db")).expect("open");
    assert!(
        elo.record_match(&m("m1", "alice", "bob", 1.0))
            .expect("record")
    );
    assert!(close(elo.rating("alice", key()).expect("a").rating, 1516.0));
    assert!(close(elo.rating("bob", key()).expect("b").rating, 1484.0));
    // Second game 1516 vs 1484, bob wins: E_bob = 1/(1+10^(32/400)) = 0.454078...
    // bob += 32*(1-0.454078) = 17.4695..., alice loses the same.
    elo.record_match(&m("m2", "bob", "alice", 1.0))
        .expect("record");
    let bob = elo.rating("bob", key()).expect("b");
    assert!((bob.rating - 1501.4695).abs() < 1e-3, "{}", bob.rating);
    assert_eq!((bob.games, bob.wins, bob.losses), (2, 1, 1));
}

#[test]
fn anchors_are_pinned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let elo = EloStore::open(&dir.path().join("unified_elo.db")).expect("open");
    // 1500 vs random 400: E = 1/(1+10^(-1100/400)) = 0.998225...; win gains 32*0.001775 = 0.0568.
    elo.record_match(&m("m1", "model", RANDOM_ID, 1.0))
        .expect("record");
    let r = elo.rating("model", key()).expect("rating").rating;
    assert!((r - 1500.05679).abs() < 1e-4, "{r}");
    assert!(close(
        elo.rating(RANDOM_ID, key()).expect("random").rating,
        400.0
    ));
    // model (1500.0568) loses to heuristic 1200: E = 0.8490..., loss costs 32*0.8490 = 27.17.
    elo.record_match(&m("m2", HEURISTIC_ID, "model", 1.0))
        .expect("record");
    let r2 = elo.rating("model", key()).expect("rating").rating;
    let expected = r - 32.0 * expected_score(r, 1200.0, 2);
    assert!(close(r2, expected), "{r2} vs {expected}");
    assert!((r2 - 1472.888).abs() < 1e-2, "{r2}");
    assert!(close(
        elo.rating(HEURISTIC_ID, key()).expect("h").rating,
        1200.0
    ));
    // A draw between equals changes nothing.
    elo.record_match(&m("m3", "x", "y", 0.5)).expect("draw");
    assert!(close(elo.rating("x", key()).expect("x").rating, 1500.0));
}

#[test]
fn recording_is_idempotent_and_validated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let elo = EloStore::open(&dir.path().join("unified_elo.db")).expect("open");
    assert!(elo.record_match(&m("m1", "a", "b", 1.0)).expect("first"));
    assert!(!elo.record_match(&m("m1", "a", "b", 1.0)).expect("again"));
    assert!(close(elo.rating("a", key()).expect("a").rating, 1516.0));
    assert!(elo.record_match(&m("m2", "a", "b", 0.7)).is_err());
    assert!(elo.record_match(&m("m3", "a", "a", 1.0)).is_err());
    assert_eq!(elo.match_count().expect("count"), 1);
}

/// A deposed leader's tournament (token 4 after token 5 recorded) records nothing; the
/// error names both tokens.
#[test]
fn matches_with_a_stale_token_are_refused_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let elo = EloStore::open(&dir.path().join("unified_elo.db")).expect("open");
    assert_eq!(elo.fence_token().expect("fence"), None);
    let n = elo
        .record_matches_fenced(&[m("t5/0", "a", "b", 1.0)], 5)
        .expect("token 5");
    assert_eq!((n, elo.fence_token().expect("fence")), (1, Some(5)));
    let err = elo
        .record_matches_fenced(&[m("t4/0", "a", "b", 0.0), m("t4/1", "b", "a", 1.0)], 4)
        .expect_err("token 4 is stale");
    assert!(
        matches!(err, StoreError::Fenced { token: 4, seen: 5 }),
        "{err:?}"
    );
    assert_eq!(elo.match_count().expect("count"), 1, "nothing recorded");
    assert!(close(elo.rating("a", key()).expect("a").rating, 1516.0));
    elo.record_matches_fenced(&[m("t5/1", "a", "b", 0.5)], 5)
        .expect("the same leader again");
    elo.record_matches_fenced(&[m("t6/0", "a", "b", 0.5)], 6)
        .expect("a newer leader");
    assert_eq!(elo.fence_token().expect("fence"), Some(6));
}

#[test]
fn merge_is_idempotent_and_adds_only_new_matches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pa = dir.path().join("a.db");
    let a = EloStore::open(&pa).expect("a");
    let b = EloStore::open(&dir.path().join("b.db")).expect("b");
    a.record_matches(&[m("m1", "p", "q", 1.0), m("m2", "p", "q", 0.0)])
        .expect("a");
    b.record_matches(&[m("m1", "p", "q", 1.0)]).expect("b");
    assert_eq!(b.merge_from(&pa).expect("merge"), 1);
    assert_eq!(b.merge_from(&pa).expect("merge again"), 0);
    assert_eq!(b.match_count().expect("count"), 2);
    let (pa_r, pb_r) = (
        a.rating("p", key()).expect("p"),
        b.rating("p", key()).expect("p"),
    );
    assert!(close(pa_r.rating, pb_r.rating), "same history, same rating");
    let board = b.leaderboard(key()).expect("board");
    assert_eq!(board.len(), 2);
}

/// A database written by schema v1 (participants keyed by whatever name the caller
/// used, no labels) opens under v2: its ratings stand and each old participant is
/// labelled with its id; new participants get their own labels.
#[test]
fn a_v1_database_migrates_and_labels_name_participants() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("unified_elo.db");
    {
        let v1 = crate::db::open(&path, &MIGRATIONS[..1]).expect("v1");
        let ts = "INSERT INTO participants VALUES ('models/gen1.rrm', 'model', NULL, 1);
             INSERT INTO elo_ratings VALUES ('models/gen1.rrm', 'square8_2p', 1530, 3, 2, 1, 0, 1);";
        v1.execute_batch(ts).expect("v1 rows");
    }
    let elo = EloStore::open(&path).expect("open v2");
    let old = elo.rating("models/gen1.rrm", key()).expect("old");
    assert_eq!(
        (old.rating, old.games, old.label.as_deref()),
        (1530.0, 3, Some("models/gen1.rrm"))
    );
    elo.record_match(&m("m1", "ab12", "cd34", 1.0))
        .expect("record");
    elo.set_labels(&[("ab12".into(), "gen2".into())])
        .expect("label");
    let board = elo.leaderboard(key()).expect("board");
    let labels: Vec<_> = board
        .iter()
        .map(|r| (r.participant_id.as_str(), r.label.as_deref()))
        .collect();
    assert_eq!(
        labels,
        [
            ("models/gen1.rrm", Some("models/gen1.rrm")),
            ("ab12", Some("gen2")),
            ("cd34", None)
        ]
    );
    // Merging carries labels to participants that have none, never over one.
    let other = EloStore::open(&dir.path().join("other.db")).expect("other");
    other
        .record_match(&m("m1", "ab12", "cd34", 1.0))
        .expect("record");
    other
        .set_labels(&[
            ("ab12".into(), "renamed".into()),
            ("cd34".into(), "gen3".into()),
        ])
        .expect("labels");
    elo.merge_from(&dir.path().join("other.db")).expect("merge");
    assert_eq!(
        elo.rating("ab12", key()).expect("a").label.as_deref(),
        Some("gen2")
    );
    assert_eq!(
        elo.rating("cd34", key()).expect("c").label.as_deref(),
        Some("gen3")
    );
}

/// Three players: equal ratings expect a third, so a win moves A by K·2/3 and a loss by
/// K·1/3, and winning a third of the games keeps both where they are.
#[test]
fn multi_player_games_expect_a_seats_share() {
    assert!((expected_score(1500.0, 1500.0, 3) - 1.0 / 3.0).abs() < 1e-12);
    assert!((expected_score(1500.0, 1500.0, 2) - 0.5).abs() < 1e-12);
    let (a, b) = update(1500.0, 1500.0, 1.0, 3, false, false);
    assert!(
        (a - (1500.0 + 32.0 * 2.0 / 3.0)).abs() < 1e-9 && (a - 1500.0 + b - 1500.0).abs() < 1e-9
    );
    let (mut ra, mut rb) = (1500.0, 1500.0);
    for g in 0..300 {
        (ra, rb) = update(ra, rb, if g % 3 == 0 { 1.0 } else { 0.0 }, 3, false, false);
    }
    assert!(
        (ra - 1500.0).abs() < 25.0 && (rb - 1500.0).abs() < 25.0,
        "{ra} {rb}"
    );
}

fn pair(a: usize, b: usize, score_a: f64, games: f64) -> PairScore {
    PairScore {
        a,
        b,
        score_a,
        games,
    }
}

#[test]
fn fitted_ratings_reproduce_the_pair_scores_whatever_the_order() {
    // Three models, 0 < 1 < 2: the fit's expected points match what each one scored.
    let pairs = [
        pair(0, 1, 180.0, 400.0),
        pair(1, 2, 190.0, 400.0),
        pair(0, 2, 150.0, 400.0),
    ];
    let r = fit_ratings(3, &pairs, 2);
    assert!(r[0] < r[1] && r[1] < r[2], "{r:?}");
    assert!(
        (r.iter().sum::<f64>() / 3.0 - START_RATING).abs() < 1e-6,
        "{r:?}"
    );
    for i in 0..3 {
        let (mut want, mut got) = (0.0, 0.0);
        for p in &pairs {
            let e = expected_score(r[p.a], r[p.b], 2) * p.games;
            if p.a == i {
                (want, got) = (want + p.score_a, got + e);
            } else if p.b == i {
                (want, got) = (want + p.games - p.score_a, got + p.games - e);
            }
        }
        assert!((want - got).abs() < 1e-3, "{i}: {want} vs {got} ({r:?})");
    }
    let mut reversed = pairs;
    reversed.reverse();
    let r2 = fit_ratings(3, &reversed, 2);
    assert!(r.iter().zip(&r2).all(|(x, y)| (x - y).abs() < 1e-6));
}

#[test]
fn fitted_ratings_of_three_seats_use_the_even_share() {
    // One seat of 0 against two of 1 scoring a third of the points: equal strength.
    let r = fit_ratings(2, &[pair(0, 1, 100.0, 300.0)], 3);
    assert!((r[0] - r[1]).abs() < 1e-6, "{r:?}");
    let r = fit_ratings(2, &[pair(0, 1, 150.0, 300.0)], 3);
    assert!((expected_score(r[0], r[1], 3) - 0.5).abs() < 1e-6, "{r:?}");
    // A shutout is a large but finite gap.
    let r = fit_ratings(2, &[pair(0, 1, 0.0, 10.0)], 2);
    assert!(r[0].is_finite() && r[1] - r[0] > 400.0, "{r:?}");
}
