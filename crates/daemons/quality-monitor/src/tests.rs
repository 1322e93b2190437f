//! Figures on hand-made windows, and the daemon in process: `build`, a cycle that
//! publishes QUALITY_SCORE_UPDATED for new games only, health that names a collapse.

use super::*;

fn game(id: usize, winner: Option<u8>, moves: Vec<u16>, players: usize) -> GameRecord {
    let config: ConfigKey = if players == 2 { "hex8_2p" } else { "hex8_3p" }
        .parse()
        .expect("key");
    GameRecord {
        game_id: format!("g{id}"),
        config_key: config,
        players: (0..players).map(|s| format!("p{s}")).collect(),
        winner,
        policy: Some(moves.iter().map(|&m| vec![(m, 0.7), (63, 0.3)]).collect()),
        // The seat that wins always thinks it is winning, the others losing.
        search_values: winner.map(|w| {
            (0..moves.len())
                .map(|ply| {
                    if ply % players == usize::from(w) {
                        0.5
                    } else {
                        -0.5
                    }
                })
                .collect()
        }),
        moves,
        source_node: "n1".into(),
        quality_score: 0.5,
        created_at: 1_700_000_000_000,
    }
}

/// Every game opens the same way and the first seat wins them all.
fn collapsed(n: usize) -> Vec<GameRecord> {
    (0..n)
        .map(|i| game(i, Some(0), vec![10, 20, 11, 21, 12, 22, 13], 2))
        .collect()
}

/// Openings all differ (up to 512 games); seats win alternately.
fn healthy(n: usize) -> Vec<GameRecord> {
    (0..n)
        .map(|i| {
            let a = (i % 64) as u16;
            let b = (a + 1 + (i / 64) as u16) % 64;
            game(i, Some((i % 2) as u8), vec![a, b], 2)
        })
        .collect()
}

#[test]
fn figures_of_a_collapsed_and_a_healthy_window() {
    let cfg = QualityConfig::default();
    let f = figures(&collapsed(100), 2, 4);
    assert_eq!(f.games, 100);
    assert_eq!(f.mean_length, 7.0);
    assert_eq!(f.first_player_share, 1.0);
    assert_eq!(f.opening_diversity, 0.01);
    assert_eq!(f.policy_agreement, Some(1.0));
    assert_eq!(f.value_agreement, Some(1.0));
    assert!(f.quality_score < 0.01, "{f:?}");
    let p = problems(&cfg, &f, 2);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].contains("first seat wins 1.00") && p[1].contains("distinct openings"));

    let f = figures(&healthy(100), 2, 4);
    assert_eq!((f.first_player_share, f.draw_share), (0.5, 0.0));
    assert_eq!(f.opening_diversity, 1.0);
    assert!(problems(&cfg, &f, 2).is_empty(), "{f:?}");
    assert_eq!(f.quality_score, 1.0, "{f:?}");
    // Half the games opening one way (the way game 1 of the other half opens too):
    // 50 distinct openings over 100 games, balance still 1.
    let mut half = healthy(50);
    half.extend((50..100).map(|i| game(i, Some((i % 2) as u8), vec![1, 2], 2)));
    let f = figures(&half, 2, 4);
    assert!((f.opening_diversity - 0.5).abs() < 1e-9, "{f:?}");
    assert!((f.quality_score - 0.75).abs() < 1e-9, "{f:?}");
    // Too few games: nothing judged.
    assert!(problems(&cfg, &figures(&collapsed(10), 2, 4), 2).is_empty());
}

/// Three players: the first seat's even share is 1/3, so winning half the games is
/// already past the moved bar (0.75 at two players is 0.6 at three).
#[test]
fn the_first_seat_bar_is_per_seat() {
    let games: Vec<GameRecord> = (0..90)
        .map(|i| {
            let w = if i % 2 == 0 { 0 } else { 1 + (i % 4 / 2) as u8 };
            game(i, Some(w), vec![(i % 61) as u16, 61, 62], 3)
        })
        .collect();
    let f = figures(&games, 3, 2);
    assert!((f.first_player_share - 0.5).abs() < 1e-9, "{f:?}");
    assert!(problems(&QualityConfig::default(), &f, 3).is_empty());
    let f = figures(&collapsed(90), 3, 2);
    assert!(!problems(&QualityConfig::default(), &f, 3).is_empty());
    assert!((per_seat_bar(0.75, 3) - 0.6).abs() < 1e-9);
}

#[tokio::test]
async fn in_process_a_cycle_reports_new_games_once_and_health_names_a_collapse() {
    let home = tempfile::tempdir().expect("tempdir");
    let (h, ctx, published) =
        ringrift_test_support::daemon(INFO.name, build, home.path(), "test", "[quality_monitor]\n");
    h.run_cycle(&ctx).await.expect("cycle without games");
    assert!(published.events().is_empty(), "no game store yet");

    let db = paths::game_db(home.path(), "hex8_2p".parse().expect("key"));
    std::fs::create_dir_all(db.parent().expect("parent")).expect("dir");
    let store = GameStore::open(&db).expect("store");
    store.insert_games(&collapsed(60)).expect("insert");
    h.run_cycle(&ctx).await.expect("cycle");
    let updates: Vec<wire::QualityScoreUpdated> = published
        .payloads()
        .into_iter()
        .filter_map(|p| match p {
            wire::event::Payload::QualityScoreUpdated(q) => Some(q),
            _ => None,
        })
        .collect();
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert_eq!(updates[0].avg_game_length, 7.0);
    assert_eq!(updates[0].policy_accuracy, 1.0);
    assert_eq!(updates[0].value_accuracy, 1.0);
    let health = h.health_check();
    assert!(
        matches!(health.status, handler_base::HealthStatus::Degraded),
        "{health:?}"
    );
    assert!(
        health.message.contains("hex8_2p: first seat wins"),
        "{health:?}"
    );

    h.run_cycle(&ctx).await.expect("cycle");
    assert_eq!(published.events().len(), 1, "no new games, no new report");
    let more: Vec<GameRecord> = healthy(500)
        .into_iter()
        .map(|mut g| {
            g.game_id = format!("h{}", g.game_id);
            g
        })
        .collect();
    store.insert_games(&more).expect("insert");
    h.run_cycle(&ctx).await.expect("cycle");
    assert_eq!(published.events().len(), 2);
    assert!(
        matches!(h.health_check().status, handler_base::HealthStatus::Running),
        "the window holds only the latest 500 games: {:?}",
        h.health_check()
    );
}

#[tokio::test]
async fn a_bad_setting_is_named() {
    let home = tempfile::tempdir().expect("tempdir");
    let (ctx, _) = Context::for_test(
        INFO.name,
        home.path(),
        "[quality_monitor]\nmax_first_player_share = 1.5\n",
    )
    .expect("context");
    let err = build(&ctx).err().expect("refused").to_string();
    assert!(err.contains("max_first_player_share = 1.5"), "{err}");
}
