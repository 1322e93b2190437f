//! Baselines of the built-in players per board: first-seat score of random vs random,
//! heuristic vs heuristic and heuristic vs random. Usage:
//! `cargo run --release -p ringrift-workload --example baselines [CONFIG] [GAMES]`.

use ringrift_workload::game::{Geometry, State};
use ringrift_workload::players::{HeuristicPlayer, Player, RandomPlayer, play_game};
use ringrift_workload::rng::Rng;

type MakePlayer = fn() -> Box<dyn Player>;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let config = args.next().unwrap_or_else(|| "hex8_2p".into()).parse()?;
    let games: usize = args.next().map(|g| g.parse()).transpose()?.unwrap_or(1000);
    let geo = Geometry::new(config);
    let mut rng = Rng::new(1);
    let pairs: [(&str, MakePlayer, MakePlayer); 3] = [
        (
            "random vs random",
            || Box::new(RandomPlayer),
            || Box::new(RandomPlayer),
        ),
        (
            "heuristic vs heuristic",
            || Box::new(HeuristicPlayer),
            || Box::new(HeuristicPlayer),
        ),
        (
            "heuristic (first) vs random",
            || Box::new(HeuristicPlayer),
            || Box::new(RandomPlayer),
        ),
    ];
    for (label, a, b) in pairs {
        let (mut wins, mut draws, mut plies) = (0, 0, 0);
        for _ in 0..games {
            let (mut pa, mut pb) = (a(), b());
            let end = play_game(
                State::new(geo.clone()),
                &mut [pa.as_mut(), pb.as_mut()],
                &mut rng,
            );
            plies += end.moves.len();
            match end.winner {
                Some(0) => wins += 1,
                None => draws += 1,
                Some(_) => {}
            }
        }
        println!(
            "{config} {label:<28} first seat wins {:.3}, draws {:.3}, mean length {:.1} ({games} games)",
            wins as f64 / games as f64,
            draws as f64 / games as f64,
            plies as f64 / games as f64
        );
    }
    Ok(())
}
