//! Players: uniform random, the hand-written heuristic, and the model with search.

use crate::game::State;
use crate::model::Model;
use crate::rng::Rng;
use std::sync::Arc;

/// Something that picks moves.
pub trait Player {
    /// Participant name used in the Elo store.
    fn name(&self) -> &str;
    /// A legal move (cell index) for `state.to_move`. `state` is not finished.
    fn choose(&mut self, state: &State, rng: &mut Rng) -> usize;
}

/// Uniform over empty cells.
#[derive(Debug, Default)]
pub struct RandomPlayer;

impl Player for RandomPlayer {
    fn name(&self) -> &str {
        ringrift_store::elo::RANDOM_ID
    }

    fn choose(&mut self, state: &State, rng: &mut Rng) -> usize {
        let moves = state.legal_moves();
        usize::from(moves[rng.below(moves.len())])
    }
}

/// The hand-written baseline: win if it can; else block an opponent's immediate win
/// (the next player's first); else play the cell with the best line score, where every
/// k-window through the cell adds `6^own` if it holds only own stones and `0.9 · 6^m`
/// if it holds `m` stones of a single opponent (so it both builds and blocks), random
/// tie-breaks.
#[derive(Debug, Default)]
pub struct HeuristicPlayer;

impl HeuristicPlayer {
    /// Line score of empty cell `c` for seat `me`.
    pub fn cell_score(state: &State, c: usize, me: u8) -> f64 {
        let geo = &state.geo;
        let mut score = 0.0;
        let mut counts = [0usize; 4];
        for &wi in &geo.cell_windows[c] {
            counts.iter_mut().for_each(|x| *x = 0);
            for &cell in &geo.windows[wi as usize] {
                let v = state.cells[usize::from(cell)];
                if v >= 0 {
                    counts[v as usize] += 1;
                }
            }
            let own = counts[usize::from(me)];
            let owners = counts.iter().filter(|&&n| n > 0).count();
            if owners == 0 || (owners == 1 && own > 0) {
                score += 6f64.powi(own as i32);
            } else if owners == 1 {
                let m = counts.iter().copied().max().unwrap_or(0);
                score += 0.9 * 6f64.powi(m as i32);
            }
        }
        score
    }
}

impl Player for HeuristicPlayer {
    fn name(&self) -> &str {
        ringrift_store::elo::HEURISTIC_ID
    }

    fn choose(&mut self, state: &State, rng: &mut Rng) -> usize {
        let me = state.to_move;
        let n = state.players();
        for offset in 0..n {
            let p = (me + offset) % n;
            let cells = state.winning_cells(p);
            if !cells.is_empty() {
                return usize::from(cells[rng.below(cells.len())]);
            }
        }
        let mut best = Vec::new();
        let mut best_score = f64::NEG_INFINITY;
        for c in state.legal_moves() {
            let s = Self::cell_score(state, usize::from(c), me);
            if s > best_score + 1e-9 {
                best_score = s;
                best.clear();
                best.push(c);
            } else if (s - best_score).abs() <= 1e-9 {
                best.push(c);
            }
        }
        usize::from(best[rng.below(best.len())])
    }
}

/// How the model player searches and explores.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchConfig {
    /// Plies searched (1 = one-ply lookahead, 2 = also every reply). Leaves are scored
    /// by the value head; wins and full boards are exact.
    pub depth: u32,
    /// Plies from the start during which moves are sampled (exploration); later moves
    /// take the best score.
    pub explore_plies: usize,
    /// Softmax temperature over move scores when sampling.
    pub temperature: f64,
    /// Dirichlet noise mixed into the sampling distribution (AlphaZero style).
    pub dirichlet_alpha: f64,
    pub noise_fraction: f64,
    /// Temperature of the policy target written for training.
    pub target_temperature: f64,
}

impl SearchConfig {
    /// Strongest play, no randomness beyond tie-breaks (evaluation).
    pub fn greedy(depth: u32) -> Self {
        SearchConfig {
            depth,
            explore_plies: 0,
            temperature: 0.05,
            dirichlet_alpha: 0.3,
            noise_fraction: 0.0,
            target_temperature: 0.05,
        }
    }

    /// Selfplay defaults: sample the opening with noise.
    pub fn selfplay(depth: u32) -> Self {
        SearchConfig {
            depth,
            explore_plies: 10,
            temperature: 0.05,
            dirichlet_alpha: 0.3,
            noise_fraction: 0.25,
            target_temperature: 0.05,
        }
    }
}

/// A small set of cells (immediate winning cells; rarely more than a handful). Past
/// capacity further cells are dropped, which keeps "empty", "one" and "two or more"
/// exact after one removal per ply.
#[derive(Debug, Clone, Copy, Default)]
struct CellSet {
    n: u8,
    cells: [u16; 15],
}

impl CellSet {
    fn from_cells(cells: &[u16]) -> Self {
        let mut s = CellSet::default();
        cells.iter().for_each(|&c| s.insert(c));
        s
    }

    fn insert(&mut self, c: u16) {
        if !self.contains(c) && usize::from(self.n) < self.cells.len() {
            self.cells[usize::from(self.n)] = c;
            self.n += 1;
        }
    }

    fn contains(&self, c: u16) -> bool {
        self.cells[..usize::from(self.n)].contains(&c)
    }

    fn without(mut self, c: u16) -> Self {
        if let Some(i) = self.cells[..usize::from(self.n)]
            .iter()
            .position(|&x| x == c)
        {
            self.n -= 1;
            self.cells[i] = self.cells[usize::from(self.n)];
        }
        self
    }

    fn len(&self) -> usize {
        usize::from(self.n)
    }

    fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn first(&self) -> Option<u16> {
        (self.n > 0).then_some(self.cells[0])
    }
}

/// Scores of every root move.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub moves: Vec<u16>,
    /// Value of each move for the player to move, in [-1, 1].
    pub scores: Vec<f32>,
}

impl Analysis {
    /// Softmax of scores at `temperature`.
    pub fn distribution(&self, temperature: f64) -> Vec<f64> {
        let t = temperature.max(1e-6);
        let max = self
            .scores
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max) as f64;
        let w: Vec<f64> = self
            .scores
            .iter()
            .map(|&s| ((s as f64 - max) / t).exp())
            .collect();
        let sum: f64 = w.iter().sum();
        w.into_iter().map(|x| x / sum).collect()
    }
}

/// The model with a small alpha-beta search (negamax; for 3–4 players every other seat
/// is treated as one opponent, the "paranoid" simplification).
#[derive(Debug, Clone)]
pub struct ModelPlayer {
    name: String,
    model: Arc<Model>,
    pub config: SearchConfig,
    /// Hidden pre-activation per perspective seat, kept in step with the search board.
    accs: Vec<Vec<f32>>,
    /// Window pattern indices per perspective (n-tuple models only), in step too.
    patterns: Vec<Vec<u32>>,
    /// n-tuple sum per perspective.
    lut_sums: Vec<f32>,
    /// `(players + 1)^i` for each position in a window.
    pattern_pow: Vec<u32>,
    /// Restrict moves to cells next to a stone (large boards only).
    near_only: bool,
}

impl ModelPlayer {
    pub fn new(name: impl Into<String>, model: Arc<Model>, config: SearchConfig) -> Self {
        let accs = vec![vec![0.0; model.hidden]; model.planes];
        let near_only = model.cells > 100;
        let lut_sums = vec![0.0; model.planes];
        ModelPlayer {
            name: name.into(),
            model,
            config,
            accs,
            patterns: Vec::new(),
            lut_sums,
            pattern_pow: Vec::new(),
            near_only,
        }
    }

    /// Moves the n-tuple state for a stone of `p` appearing (`sign` 1) at `c` or
    /// disappearing (`sign` -1).
    fn update_patterns(&mut self, s: &State, c: usize, p: u8, sign: i64) {
        if self.model.lut.is_empty() {
            return;
        }
        let n = u32::from(s.players());
        for q in 0..self.patterns.len() {
            let code = i64::from(crate::game::stone_code(p, q as u8, n));
            for &(w, i) in &s.geo.cell_window_pos[c] {
                let slot = &mut self.patterns[q][w as usize];
                let old = *slot;
                let new = (i64::from(old)
                    + sign * code * i64::from(self.pattern_pow[usize::from(i)]))
                    as u32;
                self.lut_sums[q] += self.model.lut[new as usize] - self.model.lut[old as usize];
                *slot = new;
            }
        }
    }

    fn make(&mut self, s: &mut State, c: usize) {
        let p = s.to_move;
        for q in 0..self.accs.len() {
            let f = self.model.feature(p, q as u8, c);
            self.model.add_feature(&mut self.accs[q], f, 1.0);
        }
        self.update_patterns(s, c, p, 1);
        s.play_unchecked(c);
    }

    fn unmake(&mut self, s: &mut State) {
        if let Some(&c) = s.moves.last() {
            let p = s.cells[usize::from(c)] as u8;
            for q in 0..self.accs.len() {
                let f = self.model.feature(p, q as u8, usize::from(c));
                self.model.add_feature(&mut self.accs[q], f, -1.0);
            }
            s.undo();
            self.update_patterns(s, usize::from(c), p, -1);
        }
    }

    /// Leaf value for the player to move.
    fn leaf_value(&self, me: u8) -> f32 {
        let me = usize::from(me);
        self.model.value(&self.accs[me], self.lut_sums[me])
    }

    fn candidates(&self, s: &State) -> Vec<u16> {
        let all = s.legal_moves();
        if !self.near_only || s.moves.is_empty() {
            return all;
        }
        let geo = &s.geo;
        let near: Vec<u16> = all
            .iter()
            .copied()
            .filter(|&c| {
                let (x, y) = geo.coords[usize::from(c)];
                s.moves.iter().any(|&m| {
                    let (mx, my) = geo.coords[usize::from(m)];
                    (mx - x).abs() <= 1 && (my - y).abs() <= 1
                })
            })
            .collect();
        if near.is_empty() { all } else { near }
    }

    /// Value of `s` for its player to move, searching `depth` more plies.
    fn negamax(&mut self, s: &mut State, depth: u32, mut alpha: f32, beta: f32) -> f32 {
        let me = s.to_move;
        if depth == 0 {
            return self.leaf_value(me);
        }
        let moves = self.candidates(s);
        if moves.iter().any(|&c| s.wins_at(usize::from(c), me)) {
            return 1.0;
        }
        if moves.is_empty() {
            return 0.0;
        }
        let mut best = f32::NEG_INFINITY;
        for c in moves {
            self.make(s, usize::from(c));
            let v = if s.done {
                0.0
            } else {
                -self.negamax(s, depth - 1, -beta, -alpha)
            };
            self.unmake(s);
            best = best.max(v);
            alpha = alpha.max(v);
            if alpha >= beta {
                break;
            }
        }
        best
    }

    /// Two-player negamax with threat bookkeeping: `mine` and `theirs` are the cells
    /// where the player to move and the opponent would win at once. Any win of mine ends
    /// the search (+1); two or more of theirs that I cannot pre-empt lose (−1); a single
    /// one forces the block. These checks also run at the leaves, so forced sequences a
    /// few plies past the nominal depth are scored exactly.
    fn negamax2(
        &mut self,
        s: &mut State,
        depth: u32,
        mut alpha: f32,
        beta: f32,
        mine: CellSet,
        theirs: CellSet,
    ) -> f32 {
        if !mine.is_empty() {
            return 1.0;
        }
        if theirs.len() >= 2 {
            return -1.0;
        }
        let me = s.to_move;
        // A forced block costs no depth (like a check extension in chess): lines of
        // single threats are followed to a quiet position before the value head scores it.
        let forced = theirs.first();
        if depth == 0 && forced.is_none() {
            return self.leaf_value(me);
        }
        let next_depth = if forced.is_some() { depth } else { depth - 1 };
        let moves = match forced {
            Some(block) => vec![block],
            None => self.candidates(s),
        };
        if moves.is_empty() {
            return 0.0;
        }
        let mut best = f32::NEG_INFINITY;
        for c in moves {
            let c = usize::from(c);
            self.make(s, c);
            let v = if s.done {
                0.0
            } else {
                let mut new_theirs = CellSet::default();
                s.new_wins_through(c, me, |x| new_theirs.insert(x));
                -self.negamax2(
                    s,
                    next_depth,
                    -beta,
                    -alpha,
                    theirs.without(c as u16),
                    new_theirs,
                )
            };
            self.unmake(s);
            best = best.max(v);
            alpha = alpha.max(v);
            if alpha >= beta {
                break;
            }
        }
        best
    }

    /// Scores every candidate root move with an exact (full-window) search.
    pub fn analyse(&mut self, state: &State) -> Analysis {
        let mut s = state.clone();
        for q in 0..self.accs.len() {
            let mut acc = std::mem::take(&mut self.accs[q]);
            self.model.accumulate(&s.cells, q as u8, &mut acc);
            self.accs[q] = acc;
        }
        if !self.model.lut.is_empty() {
            let n = u32::from(s.players()) + 1;
            self.pattern_pow = (0..s.geo.k as u32).map(|i| n.pow(i)).collect();
            self.patterns = (0..self.accs.len())
                .map(|q| s.geo.patterns(&s.cells, q as u8))
                .collect();
            self.lut_sums = self
                .patterns
                .iter()
                .map(|p| self.model.lut_sum(p))
                .collect();
        }
        let me = s.to_move;
        let moves = self.candidates(&s);
        let mut scores = Vec::with_capacity(moves.len());
        if s.players() == 2 {
            let mine = CellSet::from_cells(&s.winning_cells(me));
            let theirs = CellSet::from_cells(&s.winning_cells(s.next_player(me)));
            for &c in &moves {
                let v = if mine.contains(c) {
                    1.0
                } else {
                    let c = usize::from(c);
                    self.make(&mut s, c);
                    let v = if s.done {
                        0.0
                    } else {
                        let mut next_theirs = mine.without(c as u16);
                        s.new_wins_through(c, me, |x| next_theirs.insert(x));
                        -self.negamax2(
                            &mut s,
                            self.config.depth - 1,
                            -1.5,
                            1.5,
                            theirs.without(c as u16),
                            next_theirs,
                        )
                    };
                    self.unmake(&mut s);
                    v
                };
                scores.push(v);
            }
            return Analysis { moves, scores };
        }
        for &c in &moves {
            let c = usize::from(c);
            let v = if s.wins_at(c, me) {
                1.0
            } else {
                self.make(&mut s, c);
                let v = if s.done {
                    0.0
                } else {
                    -self.negamax(&mut s, self.config.depth - 1, -1.5, 1.5)
                };
                self.unmake(&mut s);
                v
            };
            scores.push(v);
        }
        Analysis { moves, scores }
    }

    /// Picks from an analysis: sampled with noise while exploring, else the best.
    pub fn pick(&self, a: &Analysis, ply: usize, rng: &mut Rng) -> usize {
        if ply < self.config.explore_plies {
            let mut p = a.distribution(self.config.temperature);
            if self.config.noise_fraction > 0.0 {
                let noise = rng.dirichlet(self.config.dirichlet_alpha, p.len());
                let f = self.config.noise_fraction;
                for (x, n) in p.iter_mut().zip(noise) {
                    *x = (1.0 - f) * *x + f * n;
                }
            }
            return usize::from(a.moves[rng.weighted(&p)]);
        }
        let best = a.scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let ties: Vec<u16> = a
            .moves
            .iter()
            .zip(&a.scores)
            .filter(|(_, s)| **s >= best - 1e-6)
            .map(|(m, _)| *m)
            .collect();
        usize::from(ties[rng.below(ties.len())])
    }
}

impl Player for ModelPlayer {
    fn name(&self) -> &str {
        &self.name
    }

    fn choose(&mut self, state: &State, rng: &mut Rng) -> usize {
        let a = self.analyse(state);
        self.pick(&a, state.moves.len(), rng)
    }
}

/// Plays one game; `players[i]` sits in seat `i`. Returns the finished state.
pub fn play_game(state: State, players: &mut [&mut dyn Player], rng: &mut Rng) -> State {
    let mut s = state;
    while !s.done {
        let seat = usize::from(s.to_move);
        let c = players[seat].choose(&s, rng);
        // Players only return legal moves; a bug here would be caught by play().
        if s.play(c).is_err() {
            break;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::Geometry;

    fn score_vs(a: &mut dyn Player, b: &mut dyn Player, key: &str, games: usize) -> f64 {
        let geo = Geometry::new(key.parse().expect("key"));
        let mut rng = Rng::new(11);
        let mut score = 0.0;
        for g in 0..games {
            let (s, seat) = if g % 2 == 0 {
                (
                    play_game(State::new(geo.clone()), &mut [&mut *a, &mut *b], &mut rng),
                    0,
                )
            } else {
                (
                    play_game(State::new(geo.clone()), &mut [&mut *b, &mut *a], &mut rng),
                    1,
                )
            };
            score += f64::from(s.outcome_for(seat) + 1.0) / 2.0;
        }
        score / games as f64
    }

    #[test]
    fn heuristic_crushes_random() {
        let r = score_vs(&mut HeuristicPlayer, &mut RandomPlayer, "square8_2p", 40);
        assert!(r > 0.9, "heuristic vs random {r}");
    }

    #[test]
    fn heuristic_takes_wins_and_blocks() {
        let geo = Geometry::new("square8_2p".parse().expect("key"));
        let mut rng = Rng::new(1);
        // P0 has 0,1,2; P1 has 24,25,26 and is to move after P0's stray move 40: P1 wins at 27.
        let s = State::replay(geo.clone(), &[0, 24, 1, 25, 2, 26, 40]).expect("replay");
        assert_eq!(HeuristicPlayer.choose(&s, &mut rng), 27);
        // P0 to move with no win of its own must block P1's 27.
        let s = State::replay(geo, &[0, 24, 9, 25, 50, 26]).expect("replay");
        assert_eq!(HeuristicPlayer.choose(&s, &mut rng), 27);
    }

    #[test]
    fn depth_two_search_blocks_even_with_null_model() {
        let key = "square8_2p".parse().expect("key");
        let m = Arc::new(Model::null(key, 64));
        let mut p = ModelPlayer::new("m", m, SearchConfig::greedy(2));
        let geo = Geometry::new(key);
        let s = State::replay(geo, &[0, 24, 9, 25, 50, 26]).expect("replay");
        let mut rng = Rng::new(2);
        assert_eq!(p.choose(&s, &mut rng), 27);
    }

    #[test]
    fn depth_two_search_sees_a_double_threat() {
        // When the opponent already has two separate winning cells, every move loses.
        let key = "square8_2p".parse().expect("key");
        let geo = Geometry::new(key);
        // P0 stones 0,1,2 (wins at 3) and 16,17,18 (wins at 19); P1 stones scattered.
        let s = State::replay(geo, &[0, 40, 1, 42, 2, 44, 16, 46, 17, 62, 18]).expect("replay");
        assert_eq!(s.to_move, 1);
        let m = Arc::new(Model::null(key, 64));
        let mut p = ModelPlayer::new("m", m, SearchConfig::greedy(2));
        let a = p.analyse(&s);
        assert!(a.scores.iter().all(|&v| v == -1.0), "{a:?}");
    }

    #[test]
    fn forced_blocks_cost_no_depth() {
        // square8, cell = 8y + x. P0 (to move) has (0,0),(1,0) and two far stones; P1 has
        // (3,1),(3,2) and (2,1),(1,2). P0 (2,0) threatens (3,0), but P1's forced block
        // there makes two threats of its own ((3,3) and (0,3)): the threat loses. At
        // depth 1 that is seen only because the block costs no depth.
        let key = "square8_2p".parse().expect("key");
        let geo = Geometry::new(key);
        let s = State::replay(geo, &[0, 11, 1, 19, 63, 10, 47, 17]).expect("replay");
        assert_eq!(s.to_move, 0);
        let m = Arc::new(Model::null(key, 64));
        let mut p = ModelPlayer::new("m", m, SearchConfig::greedy(1));
        let a = p.analyse(&s);
        let score = |c: u16| a.scores[a.moves.iter().position(|&m| m == c).expect("legal")];
        assert_eq!(score(2), -1.0, "{a:?}");
        // A quiet move leaves nothing forced: the null model scores it 0.
        assert_eq!(score(45), 0.0, "{a:?}");
    }

    #[test]
    fn incremental_ntuple_state_matches_a_fresh_evaluation() {
        let key = "hex8_2p".parse().expect("key");
        let mut m = Model::new_random(key, 64, 8, 3).with_ntuple();
        let mut rng = Rng::new(3);
        m.lut
            .iter_mut()
            .for_each(|x| *x = (rng.normal() * 0.1) as f32);
        let geo = Geometry::new(key);
        let m = Arc::new(m);
        let mut p = ModelPlayer::new("m", m.clone(), SearchConfig::greedy(1));
        let mut s = State::replay(geo.clone(), &[3, 9, 27, 40]).expect("replay");
        p.analyse(&s);
        for c in [10usize, 11, 50] {
            p.make(&mut s, c);
        }
        p.unmake(&mut s);
        let me = s.to_move;
        let fresh = m.evaluate(&geo, &s.cells, me);
        assert!(
            (p.leaf_value(me) - fresh).abs() < 1e-4,
            "{} vs {fresh}",
            p.leaf_value(me)
        );
    }

    #[test]
    fn searching_null_model_beats_random() {
        let key = "hex8_2p".parse().expect("key");
        let mut p = ModelPlayer::new("m", Arc::new(Model::null(key, 64)), SearchConfig::greedy(2));
        let r = score_vs(&mut p, &mut RandomPlayer, "hex8_2p", 20);
        assert!(r > 0.6, "{r}");
    }
}
