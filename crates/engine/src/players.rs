//! Players: uniform random, the hand-written heuristic, and the model with search.
//!
//! Search. Two players: alpha-beta negamax with exact threat bookkeeping (`negamax2`).
//! Three or four players: **max-n** (`maxn`): every seat picks the move best for itself,
//! a leaf is scored by the value head from every seat's perspective (the player keeps one
//! accumulator per perspective seat anyway), and wins, forced blocks and full boards are
//! exact as in the two-player search (each seat's immediate winning cells are kept
//! incrementally). Why max-n and not paranoid (the root maximises, all others minimise
//! the root): in k-in-a-row the seats that are not to move have every reason to block
//! whoever is about to win, and paranoid assumes they never will. When the seat after
//! next has a double threat, paranoid scores every root move as lost (the middle seat is
//! assumed to let it win) and cannot tell the two blocks from the rest; max-n sees that a
//! block of one cell makes the middle seat block the other. Paranoid also feeds
//! pessimistic values into the value targets (issue 15). The price is weaker pruning
//! (max-n prunes only when the mover reaches the +1 bound), which matters little at the
//! depths the loop searches (2). The old code flipped the sign every ply as if two players,
//! which made the seat after next an ally: at depth 3 it preferred moves that let that
//! seat win.
//!
//! Proven results and quiescence (two players). A win found `d` plies below the root
//! scores `1 − d · PLY_STEP` (a loss the negative), so the search takes the fastest win and
//! plays a lost position out with its slowest loss, and leaf values are clamped below
//! every proven result. A quiet leaf (no winning cell for either side) whose mover can
//! force a double threat (two winning cells at once, which one stone cannot block) is a
//! proven win rather than a value-head guess: either at once, or through a chain of up to
//! [`THREAT_LIMIT`] single threats, each of which the opponent must block
//! ([`State::threat_win`]; a line where a block makes a threat of the opponent's is given
//! up, so every win it reports is forced). Against the heuristic on hex8_2p at depth 3
//! (2,000 paired games, the same openings), one model scored 0.735 before any of this,
//! 0.768 with proven-result distances and 0.793 with the double-threat check too; 2,000
//! games took 1.4 times as long. Chaining threats, the null model (1,000 games, the same
//! openings each time) scored 0.46 with the double threat alone, 0.56 with a chain of 1,
//! 0.57 with 2, 0.60 with 3, 0.62 with 5 and 0.58 with 8, at 16, 22, 24, 27, 33 and 60 s.
//!
//! Defence at the leaves. A quiet leaf where the mover has no such win but the opponent,
//! were it to move, would have one is not quiet for the mover: the value head would
//! score a position that the opponent wins by force. There the mover gets one more ply
//! (`defence`), limited to the cells of the opponent's line (its threats, their blocks,
//! the double threat and its winning cells), each reply scored as a leaf of the
//! opponent's (with its own threat check, and no second defence below). If none of them
//! stops the line the leaf counts as lost: another cell may defend (a counter-threat
//! elsewhere), so this is a judgement, not a proof. A model of the 30-minute run (gen 6)
//! scored 0.7925 without it and 0.8190 with it (1,000 games, 20 s and 29 s); gen 1
//! 0.784 and 0.801 (2,000 games, 50 s and 85 s); the null model 0.60 and 0.72. Falling
//! back to the value head where no listed cell defends scored 0.799 for gen 6: the line
//! that cannot be stopped there mostly cannot be stopped at all. A full-width depth-4
//! search scored 0.818 for gen 6 at 157 s.
//!
//! Move ordering and root windows. The root's moves are searched in the order of the
//! model's policy head, each with the window `(best − margin, +∞)` where `margin` is
//! [`SCORE_MARGIN`] temperatures (of the sampling or the policy target, whichever is
//! larger), so a move that cannot come within `margin` of the best fails low early: its
//! score is then an upper bound, and its weight in the softmax is below `e^-8` of the
//! best's either way. Inner two-player nodes order their moves by the policy head too
//! (from the mover's perspective) where two or more plies remain below them (at the
//! last ply the head costs about as much as the ten leaves it saves), and every node
//! tries its ply's killer move (the last reply that caused a cutoff there) first, which
//! makes those fail-lows come at the first reply. A model whose policy head is all zero
//! (the null model) skips the head.

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

/// Random plies that open a game of `config`, in selfplay and in every evaluation: one
/// random stone per seat (two on boards of more than 100 cells, where one stone is a
/// smaller part of the board) plus one. The extra ply hands the first deliberate move to
/// the seat that placed fewer stones, which offsets the first player's advantage: on
/// hex8_2p the first seat won 78 % of selfplay games with the old fixed exploration, 72 %
/// with 2 random plies and 54 % with 3 (a generation-4 model, 400 games); the heuristic
/// against itself wins 0.69 / 0.31 by seat after 2 random plies and 0.55 / 0.46 after 3
/// (2,000 games each); and a depth-5 search scores 0.61 against the same model at depth 3
/// after 2 plies but 0.70 after 3 (400 games), so a balanced opening also lets a stronger
/// player show it (issue 15). The 3- and 4-player counts follow the same rule unmeasured.
pub fn opening_plies(config: ringrift_store::ConfigKey) -> usize {
    let per_seat = if crate::game::Geometry::new(config).cells() > 100 {
        2
    } else {
        1
    };
    usize::from(config.players()) * per_seat + 1
}

/// Root moves scoring more than this many temperatures below the best are only bounded.
pub const SCORE_MARGIN: f64 = 8.0;

/// A proven win `d` plies below the root scores `1 − d · PLY_STEP` (a loss the negative),
/// so the two-player search takes the fastest win and, when every move loses against best
/// play, the move that loses slowest: the opponent must then still find the win, where a
/// flat −1 made every losing move equal and the player gave up with a random stone.
pub const PLY_STEP: f32 = 5e-4;

/// Single threats chained at a quiet leaf (see [`SearchConfig::threat_limit`]).
pub const THREAT_LIMIT: u32 = 3;

/// Leaf values are clamped to this, below a proven result up to 20 plies deep.
pub const LEAF_MAX: f32 = 0.985;

/// How the model player searches and explores.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchConfig {
    /// Plies searched (1 = one-ply lookahead, 2 = also every reply). Leaves are scored
    /// by the value head; wins and full boards are exact.
    pub depth: u32,
    /// Plies from the start played uniformly at random among the candidates (opening
    /// diversity; they are still searched for the training targets).
    pub random_plies: usize,
    /// Softmax temperature over move scores at the first ply after the random ones; it
    /// decays geometrically to `temperature_end` over `temperature_plies` plies, after
    /// which moves take the best score.
    pub temperature: f64,
    pub temperature_end: f64,
    pub temperature_plies: usize,
    /// Dirichlet noise mixed into the sampling distribution (AlphaZero style).
    pub dirichlet_alpha: f64,
    pub noise_fraction: f64,
    /// Temperature of the policy target written for training.
    pub target_temperature: f64,
    /// Order moves by the model's policy head (a no-op for a policy head of zeros).
    pub policy_ordering: bool,
    /// Score every root move exactly (full window) instead of bounding the ones more
    /// than [`SCORE_MARGIN`] temperatures below the best (for measurements).
    pub exact_scores: bool,
    /// Single threats a quiet leaf may chain into a double threat before the value head
    /// scores it ([`State::threat_win`]; 0 = the double threat alone).
    pub threat_limit: u32,
    /// At a quiet leaf where the opponent could force a double threat, search the
    /// mover's replies on that line one more ply (see the module doc).
    pub defend: bool,
}

impl SearchConfig {
    /// Strongest play, no randomness beyond tie-breaks (evaluation).
    pub fn greedy(depth: u32) -> Self {
        SearchConfig {
            depth,
            random_plies: 0,
            temperature: 0.05,
            temperature_end: 0.05,
            temperature_plies: 0,
            dirichlet_alpha: 0.3,
            noise_fraction: 0.0,
            target_temperature: 0.05,
            policy_ordering: true,
            exact_scores: false,
            threat_limit: THREAT_LIMIT,
            defend: true,
        }
    }

    /// Selfplay defaults for `config`: [`opening_plies`] random stones, then a
    /// temperature of 0.5 decaying to 0.05 over 3 moves per seat, with 25 % noise.
    pub fn selfplay(depth: u32, config: ringrift_store::ConfigKey) -> Self {
        let seats = usize::from(config.players());
        SearchConfig {
            depth,
            random_plies: opening_plies(config),
            temperature: 0.5,
            temperature_end: 0.05,
            temperature_plies: 3 * seats,
            dirichlet_alpha: 0.3,
            noise_fraction: 0.25,
            target_temperature: 0.05,
            policy_ordering: true,
            exact_scores: false,
            threat_limit: THREAT_LIMIT,
            defend: true,
        }
    }

    /// The sampling temperature at `ply`: `None` for a random ply or a greedy one
    /// (`Some(0.0)`: take the best).
    pub fn temperature_at(&self, ply: usize) -> Option<f64> {
        if ply < self.random_plies {
            return None;
        }
        let k = ply - self.random_plies;
        if k >= self.temperature_plies {
            return Some(0.0);
        }
        let (t0, t1) = (self.temperature.max(1e-6), self.temperature_end.max(1e-6));
        Some(t0 * (t1 / t0).powf(k as f64 / self.temperature_plies as f64))
    }

    /// Checks ranges; the error names the setting.
    pub fn validate(&self) -> Result<(), crate::WorkloadError> {
        let bad = |what: String| Err(crate::WorkloadError::Invalid(what));
        if self.depth == 0 {
            return bad("--depth must be at least 1".into());
        }
        for (name, t) in [
            ("--temperature", self.temperature),
            ("--temperature-end", self.temperature_end),
            ("target temperature", self.target_temperature),
        ] {
            if !(t.is_finite() && t > 0.0) {
                return bad(format!("{name} must be a positive number, not {t}"));
            }
        }
        if !(0.0..=1.0).contains(&self.noise_fraction) {
            return bad(format!(
                "--noise must be between 0 and 1, not {}",
                self.noise_fraction
            ));
        }
        Ok(())
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
    /// Value of each move for the player to move, in [-1, 1]. Exact for moves within
    /// [`SCORE_MARGIN`] temperatures of the best; an upper bound below that.
    pub scores: Vec<f32>,
}

impl Analysis {
    /// Softmax of scores at `temperature`.
    pub fn distribution(&self, temperature: f64) -> Vec<f64> {
        let t = temperature.max(1e-6);
        let max = self.value() as f64;
        let w: Vec<f64> = self
            .scores
            .iter()
            .map(|&s| ((s as f64 - max) / t).exp())
            .collect();
        let sum: f64 = w.iter().sum();
        w.into_iter().map(|x| x / sum).collect()
    }

    /// The searched value of the position for the player to move: its best move's score.
    pub fn value(&self) -> f32 {
        self.scores
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max)
    }
}

/// Values of a position for every seat (`[seat]`; seats past the game's count unused).
type Values = [f32; 4];

/// The exact values of a win of `seat`: +1 for it, −1 for everyone else.
fn win_for(seat: u8) -> Values {
    let mut v = [-1.0; 4];
    v[usize::from(seat)] = 1.0;
    v
}

/// Each seat's immediate winning cells.
type Threats = [CellSet; 4];

/// The model with a small search: alpha-beta negamax for two players, max-n for three
/// and four (see the module doc).
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
    /// Whether the policy head says anything (not all zero); else no ordering.
    has_policy: bool,
    /// Per ply from the start of the game, the last move that caused a cutoff there
    /// (the killer heuristic: a reply that refuted one move often refutes its siblings).
    killers: Vec<u16>,
    /// Positions visited (moves made) by searches so far, for measurements.
    pub nodes: u64,
    /// Moves on the board when the current search began (for [`Self::proven`]).
    root_ply: usize,
    /// Inside a defensive extension ([`Self::defence`]): no second one below it.
    defending: bool,
}

impl ModelPlayer {
    pub fn new(name: impl Into<String>, model: Arc<Model>, config: SearchConfig) -> Self {
        let accs = vec![vec![0.0; model.hidden]; model.planes];
        let near_only = model.cells > 100;
        let lut_sums = vec![0.0; model.planes];
        let has_policy = model.wp.iter().chain(&model.bp).any(|&w| w != 0.0);
        ModelPlayer {
            name: name.into(),
            model,
            config,
            accs,
            patterns: Vec::new(),
            lut_sums,
            pattern_pow: Vec::new(),
            near_only,
            has_policy,
            killers: Vec::new(),
            nodes: 0,
            root_ply: 0,
            defending: false,
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
        self.nodes += 1;
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

    /// Leaf value for the player to move, kept below every proven result ([`LEAF_MAX`]).
    fn leaf_value(&self, me: u8) -> f32 {
        let me = usize::from(me);
        self.model
            .value(&self.accs[me], self.lut_sums[me])
            .clamp(-LEAF_MAX, LEAF_MAX)
    }

    /// A proven win (`won`) or loss for the player to move in `s`, scored by its distance
    /// from the search's root (see [`PLY_STEP`]).
    fn proven(&self, s: &State, won: bool) -> f32 {
        let v = 1.0 - PLY_STEP * (s.moves.len() - self.root_ply) as f32;
        if won { v } else { -v }
    }

    /// Leaf values for every seat.
    fn leaf_values(&self, players: u8) -> Values {
        let mut v = [0.0; 4];
        for q in 0..players {
            v[usize::from(q)] = self.leaf_value(q);
        }
        v
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

    /// Orders `moves` of the position at `ply`, `depth` plies above the leaves: by the
    /// policy head's logits for `me` (best first) where the subtrees are deep enough to
    /// pay for the head (`depth` ≥ 2: the head costs about as much as ten leaves), then
    /// the killer of the ply first. Keeps the board order when ordering is off.
    fn order(&self, moves: &mut [u16], me: u8, ply: usize, depth: u32) {
        if !self.config.policy_ordering || moves.len() < 2 {
            return;
        }
        if depth >= 2 {
            self.order_by_policy(moves, me);
        }
        if let Some(&k) = self.killers.get(ply)
            && let Some(i) = moves.iter().position(|&m| m == k)
        {
            moves[..=i].rotate_right(1);
        }
    }

    /// Sorts `moves` by the policy head's logits for `me` (best first), unless the head
    /// is all zero.
    fn order_by_policy(&self, moves: &mut [u16], me: u8) {
        if !self.has_policy {
            return;
        }
        let mut logits = Vec::with_capacity(moves.len());
        self.model
            .policy_logits(&self.accs[usize::from(me)], moves, &mut logits);
        let mut keyed: Vec<(f32, u16)> = logits.into_iter().zip(moves.iter().copied()).collect();
        keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (m, (_, c)) in moves.iter_mut().zip(keyed) {
            *m = c;
        }
    }

    /// Max-n for three or four players: the values of `s` for every seat, searching
    /// `depth` more plies. `threats` are every seat's immediate winning cells. The seat
    /// to move wins if it can; if the next seat has two winning cells it wins; if it has
    /// one, blocking it is the only move worth searching (it costs no depth). A move
    /// that reaches the mover's +1 bound ends the node.
    fn maxn(&mut self, s: &mut State, depth: u32, threats: &Threats) -> Values {
        let me = s.to_move;
        if !threats[usize::from(me)].is_empty() {
            return win_for(me);
        }
        let next = s.next_player(me);
        let theirs = threats[usize::from(next)];
        if theirs.len() >= 2 {
            return win_for(next);
        }
        let forced = theirs.first();
        if depth == 0 && forced.is_none() {
            return self.leaf_values(s.players());
        }
        let next_depth = if forced.is_some() { depth } else { depth - 1 };
        let moves = match forced {
            Some(block) => vec![block],
            None => self.candidates(s),
        };
        let mut best: Option<Values> = None;
        for c in moves {
            let v = self.maxn_child(s, usize::from(c), next_depth, threats);
            if best.is_none_or(|b| v[usize::from(me)] > b[usize::from(me)]) {
                best = Some(v);
            }
            if v[usize::from(me)] >= 1.0 {
                break;
            }
        }
        best.unwrap_or([0.0; 4])
    }

    /// Plays `c`, searches the position after it with [`Self::maxn`], takes it back.
    fn maxn_child(&mut self, s: &mut State, c: usize, depth: u32, threats: &Threats) -> Values {
        let me = s.to_move;
        self.make(s, c);
        let v = if s.done {
            s.winner.map_or([0.0; 4], win_for)
        } else {
            let mut after = threats.map(|t| t.without(c as u16));
            s.new_wins_through(c, me, |x| after[usize::from(me)].insert(x));
            self.maxn(s, depth, &after)
        };
        self.unmake(s);
        v
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
            return self.proven(s, true);
        }
        if theirs.len() >= 2 {
            return self.proven(s, false);
        }
        let me = s.to_move;
        // A forced block costs no depth (like a check extension in chess): lines of
        // single threats are followed to a quiet position before the value head scores it.
        let forced = theirs.first();
        let mut defence = false;
        let (moves, next_depth) = if let Some(block) = forced {
            (vec![block], depth)
        } else if depth > 0 {
            let mut m = self.candidates(s);
            self.order(&mut m, me, s.moves.len(), depth);
            (m, depth - 1)
        } else {
            // Quiescence: a double threat of the mover, or a chain of single threats
            // that ends in one, is a win that the value head would have to guess.
            if let Some(plies) = s.threat_win(me, self.config.threat_limit) {
                return self.proven(s, true) - plies as f32 * PLY_STEP;
            }
            match self.defence(s, me) {
                Some(m) => {
                    defence = true;
                    (m, 0)
                }
                None => return self.leaf_value(me),
            }
        };
        if moves.is_empty() {
            return 0.0;
        }
        self.defending |= defence;
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
                if forced.is_none() {
                    let ply = s.moves.len();
                    if self.killers.len() <= ply {
                        self.killers.resize(ply + 1, u16::MAX);
                    }
                    self.killers[ply] = c as u16;
                }
                break;
            }
        }
        if defence {
            self.defending = false;
        }
        best
    }

    /// At a quiet leaf of `me` where the opponent, were it to move, could force a double
    /// threat ([`State::threat_line`]): the cells of that line, where `me` may defend, for
    /// one more ply of search (once per line of play).
    fn defence(&mut self, s: &mut State, me: u8) -> Option<Vec<u16>> {
        if !self.config.defend || self.defending {
            return None;
        }
        let mut line = Vec::new();
        s.threat_line(s.next_player(me), self.config.threat_limit, &mut line)?;
        line.sort_unstable();
        line.dedup();
        Some(line)
    }

    /// How far below the best a root move's score must be exact at `ply`: the larger of
    /// the sampling and the target temperature, times [`SCORE_MARGIN`]; infinite with
    /// `exact_scores`.
    fn margin(&self, ply: usize) -> f32 {
        if self.config.exact_scores {
            return f32::INFINITY;
        }
        let t = self
            .config
            .temperature_at(ply)
            .unwrap_or(0.0)
            .max(self.config.target_temperature);
        (SCORE_MARGIN * t) as f32
    }

    /// Scores every candidate root move: the best and every move within the margin
    /// exactly, the others as an upper bound (see the module doc).
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
        let mut moves = self.candidates(&s);
        if self.config.policy_ordering {
            self.order_by_policy(&mut moves, me);
        }
        self.killers.clear();
        self.root_ply = s.moves.len();
        let mut scores = Vec::with_capacity(moves.len());
        let depth = self.config.depth.max(1) - 1;
        if s.players() == 2 {
            let margin = self.margin(s.moves.len());
            let mine = CellSet::from_cells(&s.winning_cells(me));
            let theirs = CellSet::from_cells(&s.winning_cells(s.next_player(me)));
            let mut best = f32::NEG_INFINITY;
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
                        // Fail-soft: below `alpha` the score is an upper bound.
                        let alpha = (best - margin).max(-1.5);
                        -self.negamax2(
                            &mut s,
                            depth,
                            -1.5,
                            -alpha,
                            theirs.without(c as u16),
                            next_theirs,
                        )
                    };
                    self.unmake(&mut s);
                    v
                };
                best = best.max(v);
                scores.push(v);
            }
            return Analysis { moves, scores };
        }
        let mut threats = Threats::default();
        for p in 0..s.players() {
            threats[usize::from(p)] = CellSet::from_cells(&s.winning_cells(p));
        }
        for &c in &moves {
            let v = if threats[usize::from(me)].contains(c) {
                1.0
            } else {
                self.maxn_child(&mut s, usize::from(c), depth, &threats)[usize::from(me)]
            };
            scores.push(v);
        }
        Analysis { moves, scores }
    }

    /// Picks from an analysis at `ply`: uniformly among the candidates during the random
    /// plies, sampled at the scheduled temperature with noise during the exploring
    /// ones, else the best (random among ties).
    pub fn pick(&self, a: &Analysis, ply: usize, rng: &mut Rng) -> usize {
        match self.config.temperature_at(ply) {
            None => return usize::from(a.moves[rng.below(a.moves.len())]),
            Some(t) if t > 0.0 => {
                let mut p = a.distribution(t);
                if self.config.noise_fraction > 0.0 {
                    let noise = rng.dirichlet(self.config.dirichlet_alpha, p.len());
                    let f = self.config.noise_fraction;
                    for (x, n) in p.iter_mut().zip(noise) {
                        *x = (1.0 - f) * *x + f * n;
                    }
                }
                return usize::from(a.moves[rng.weighted(&p)]);
            }
            Some(_) => {}
        }
        let best = a.value();
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
        assert!(a.scores.iter().all(|&v| v < -LEAF_MAX), "{a:?}");
    }

    #[test]
    fn a_lost_position_is_played_out_with_the_slowest_loss() {
        // square8, cell = 8y + x. P0 threatens (3,0) and has an open two on row 2, so P1
        // (to move) loses whatever it plays: at once unless it blocks (3,0), and two plies
        // later if it does (P0 makes an open three). The block must still be the move.
        let key = "square8_2p".parse().expect("key");
        let geo = Geometry::new(key);
        let s = State::replay(geo, &[0, 40, 1, 42, 2, 44, 18, 46, 19]).expect("replay");
        let m = Arc::new(Model::null(key, 64));
        let mut p = ModelPlayer::new("m", m, SearchConfig::greedy(2));
        let a = p.analyse(&s);
        assert!(a.scores.iter().all(|&v| v < -LEAF_MAX), "all lose: {a:?}");
        assert_eq!(score_of(&a, 3), a.value(), "{a:?}");
        let ties = a.scores.iter().filter(|&&v| v == a.value()).count();
        assert_eq!(ties, 1, "only the block loses slowest: {a:?}");
        assert_eq!(p.choose(&s, &mut Rng::new(1)), 3);
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
        assert!(score(2) < -LEAF_MAX, "{a:?}");
        // A quiet move leaves P1 a double threat at (3,0) ((3,0) and (0,3) win), which the
        // leaf's quiescence check sees.
        assert!(score(45) < -LEAF_MAX, "{a:?}");
    }

    #[test]
    fn leaves_see_a_double_threat_the_mover_can_make() {
        // square8, cell = 8y + x. P0 has an open two on row 2 (18, 19). At depth 1, P1
        // must take 17 or 20: anything else lets P0 make an open three, a win three plies
        // past the root that only the leaf's check can see.
        let key = "square8_2p".parse().expect("key");
        let s = State::replay(Geometry::new(key), &[18, 40, 19]).expect("replay");
        let mut p = ModelPlayer::new("m", Arc::new(Model::null(key, 64)), SearchConfig::greedy(1));
        let a = p.analyse(&s);
        for (&m, &v) in a.moves.iter().zip(&a.scores) {
            if m == 17 || m == 20 {
                assert_eq!(v, 0.0, "{m}: {a:?}");
            } else {
                assert!(v < -LEAF_MAX, "{m}: {a:?}");
            }
        }
    }

    #[test]
    fn a_quiet_leaf_under_a_forced_attack_is_defended_or_lost() {
        // square8, cell = 8y + x; P0's stones sit in the corners. P1 has an open two on
        // row 3 (26, 27): to move, it would make an open three. At P0's quiet leaf the
        // null model's value is 0 whatever P1 threatens; the defensive ply finds a block
        // (not lost) with one open two, and none that saves P0 with a second (row 6).
        let key = "square8_2p".parse().expect("key");
        let geo = Geometry::new(key);
        let leaf = |moves: &[u16], defend: bool| {
            let mut s = State::replay(geo.clone(), moves).expect("replay");
            let mut c = SearchConfig::greedy(1);
            c.defend = defend;
            let mut p = ModelPlayer::new("m", Arc::new(Model::null(key, 64)), c);
            p.analyse(&s);
            p.root_ply = s.moves.len();
            p.nodes = 0;
            let none = CellSet::default();
            let v = p.negamax2(&mut s, 0, -1.5, 1.5, none, none);
            (v, p.nodes)
        };
        let one_front = [0, 26, 7, 27];
        let two_fronts = [0, 26, 7, 27, 56, 50, 63, 51];
        assert_eq!(leaf(&one_front, false), (0.0, 0));
        assert_eq!(leaf(&two_fronts, false), (0.0, 0));
        let (v, nodes) = leaf(&one_front, true);
        assert!(
            v > -LEAF_MAX && nodes > 0,
            "one open two: {v} after {nodes} nodes"
        );
        let (v, _) = leaf(&two_fronts, true);
        assert!(v < -LEAF_MAX, "two open twos: {v}");
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

    fn null_player(key: &str, depth: u32) -> (ModelPlayer, Arc<Geometry>) {
        let key: ringrift_store::ConfigKey = key.parse().expect("key");
        let geo = Geometry::new(key);
        let m = Arc::new(Model::null(key, geo.cells()));
        (ModelPlayer::new("m", m, SearchConfig::greedy(depth)), geo)
    }

    fn score_of(a: &Analysis, c: u16) -> f32 {
        a.scores[a.moves.iter().position(|&m| m == c).expect("legal")]
    }

    #[test]
    fn three_players_block_the_next_seat_when_they_cannot_win() {
        // square8, cell = 8y + x. Seat 1 has 24, 25, 26 and wins at 27; seats 0 and 2
        // are scattered; seat 0 to move. (The sign-flip search at depth 1 scored every
        // move 0 with the null model: it looked at no reply.)
        let (mut p, geo) = null_player("square8_3p", 1);
        let s = State::replay(geo.clone(), &[7, 24, 63, 47, 25, 61, 21, 26, 45]).expect("replay");
        assert_eq!(s.to_move, 0);
        for depth in [1, 2] {
            p.config.depth = depth;
            let a = p.analyse(&s);
            assert_eq!(score_of(&a, 27), 0.0, "depth {depth}: {a:?}");
            assert!(
                a.moves
                    .iter()
                    .zip(&a.scores)
                    .all(|(&m, &v)| m == 27 || v == -1.0),
                "depth {depth}: every other move lets seat 1 win: {a:?}"
            );
            assert_eq!(p.choose(&s, &mut Rng::new(1)), 27);
        }
    }

    #[test]
    fn four_players_block_the_next_seat_too() {
        // Seat 1 has 24, 25, 26 (wins at 27); seats 0, 2, 3 scattered; seat 0 to move.
        let (mut p, geo) = null_player("square8_4p", 2);
        let s =
            State::replay(geo, &[7, 24, 63, 5, 47, 25, 61, 13, 21, 26, 45, 39]).expect("replay");
        assert_eq!(s.to_move, 0);
        assert_eq!(p.choose(&s, &mut Rng::new(1)), 27);
    }

    #[test]
    fn three_players_take_their_own_win_before_blocking() {
        // As above, but seat 0 has 0, 1, 2 and wins at 3 (seat 1 still threatens 27).
        let (mut p, geo) = null_player("square8_3p", 2);
        let s = State::replay(geo, &[0, 24, 63, 1, 25, 61, 2, 26, 45]).expect("replay");
        assert_eq!(s.to_move, 0);
        let a = p.analyse(&s);
        assert_eq!(score_of(&a, 3), 1.0, "{a:?}");
        assert_eq!(a.value(), 1.0);
        assert_eq!(p.choose(&s, &mut Rng::new(1)), 3);
    }

    #[test]
    fn three_players_block_a_double_threat_of_the_seat_after_next() {
        // Seat 2 has 41, 42, 43 (row 5), winning at 40 and at 44; seats 0 and 1 have
        // nothing; seat 0 to move. Seat 1 alone can block only one cell, so seat 0 must
        // block the other: then seat 1 (maximising its own value) blocks the second.
        // The sign-flip search treated seat 2 as seat 0's ally: at depth 3 it scored
        // every move that leaves the double threat +1 (seat 2 wins, "good" for seat 0)
        // and the blocks 0, so it picked a move that loses. Paranoid would score every
        // move −1 (it assumes seat 1 never blocks) and could not tell the blocks apart.
        let (mut p, geo) = null_player("square8_3p", 2);
        let s = State::replay(geo, &[0, 7, 41, 56, 22, 42, 58, 4, 43]).expect("replay");
        assert_eq!(s.to_move, 0);
        assert_eq!(s.winning_cells(2), vec![40, 44]);
        for depth in [1, 2, 3] {
            p.config.depth = depth;
            let a = p.analyse(&s);
            for (&m, &v) in a.moves.iter().zip(&a.scores) {
                let want = if m == 40 || m == 44 { 0.0 } else { -1.0 };
                assert_eq!(v, want, "depth {depth} move {m}: {a:?}");
            }
            let c = p.choose(&s, &mut Rng::new(depth.into()));
            assert!(c == 40 || c == 44, "depth {depth}: {c}");
        }
    }

    #[test]
    fn three_player_leaves_see_every_seat_and_full_boards_are_draws() {
        // A random model's leaf: each seat's value head, from its own perspective.
        let key: ringrift_store::ConfigKey = "hexagonal_3p".parse().expect("key");
        let geo = Geometry::new(key);
        let m = Arc::new(Model::new_random(key, geo.cells(), 8, 7));
        let mut p = ModelPlayer::new("m", m.clone(), SearchConfig::greedy(1));
        let s = State::replay(geo.clone(), &[30, 31, 20]).expect("replay");
        let a = p.analyse(&s);
        let mut after = s.clone();
        after.play(usize::from(a.moves[0])).expect("legal");
        let want = m.evaluate(&geo, &after.cells, s.to_move);
        assert!(
            (a.scores[0] - want).abs() < 1e-4,
            "{} vs {want}",
            a.scores[0]
        );
        // One empty cell left and no line possible through it: a draw, scored 0.
        let n = geo.cells();
        let mut moves: Vec<u16> = Vec::new();
        let mut rng = Rng::new(9);
        let mut t = State::new(geo.clone());
        while t.moves.len() < n - 1 && !t.done {
            let legal: Vec<u16> = t
                .legal_moves()
                .into_iter()
                .filter(|&c| !t.wins_at(usize::from(c), t.to_move))
                .collect();
            let Some(&c) = legal.get(rng.below(legal.len().max(1))) else {
                break;
            };
            t.play(usize::from(c)).expect("legal");
            moves.push(c);
        }
        if t.moves.len() == n - 1 && !t.done && t.winning_cells(t.to_move).is_empty() {
            let a = p.analyse(&t);
            assert_eq!(a.scores, vec![0.0], "{a:?}");
        }
    }

    #[test]
    fn temperature_schedule_decays_then_turns_greedy() {
        let c = SearchConfig::selfplay(2, "hex8_2p".parse().expect("key"));
        assert_eq!(c.random_plies, 3);
        assert_eq!(c.temperature_at(0), None);
        assert_eq!(c.temperature_at(2), None);
        assert_eq!(c.temperature_at(3), Some(0.5));
        let mid = c.temperature_at(6).expect("sampled");
        assert!(mid < 0.5 && mid > 0.05, "{mid}");
        assert_eq!(c.temperature_at(3 + 6), Some(0.0));
        let big = SearchConfig::selfplay(2, "square19_4p".parse().expect("key"));
        assert_eq!((big.random_plies, big.temperature_plies), (9, 12));
        let mut bad = c.clone();
        bad.temperature = -1.0;
        let e = bad.validate().expect_err("negative").to_string();
        assert!(e.contains("--temperature"), "{e}");
    }

    /// A random model with a policy head and an n-tuple term, and positions from random
    /// games of `key`.
    fn policy_model_and_positions(key: &str, n: usize) -> (Arc<Model>, Vec<State>) {
        let key: ringrift_store::ConfigKey = key.parse().expect("key");
        let geo = Geometry::new(key);
        let mut m = Model::new_random(key, geo.cells(), 16, 5).with_ntuple();
        let mut rng = Rng::new(8);
        m.lut
            .iter_mut()
            .for_each(|x| *x = (rng.normal() * 0.1) as f32);
        m.wp.iter_mut().for_each(|x| *x *= 10.0);
        let mut out = Vec::new();
        while out.len() < n {
            let mut s = State::new(geo.clone());
            let plies = 4 + rng.below(12);
            while !s.done && s.moves.len() < plies {
                let c = HeuristicPlayer.choose(&s, &mut rng);
                s.play(c).expect("legal");
            }
            if !s.done {
                out.push(s);
            }
        }
        (Arc::new(m), out)
    }

    #[test]
    fn ordering_and_root_windows_keep_the_best_exact() {
        let (m, positions) = policy_model_and_positions("hex8_2p", 12);
        let mut exact = SearchConfig::greedy(3);
        exact.exact_scores = true;
        exact.policy_ordering = false;
        let mut full = ModelPlayer::new("e", m.clone(), exact);
        let mut fast = ModelPlayer::new("f", m, SearchConfig::greedy(3));
        // Accumulators are updated incrementally in a different order per search, so
        // equal scores agree to float rounding (~1e-4), not bit for bit.
        for s in &positions {
            let e = full.analyse(s);
            let f = fast.analyse(s);
            assert!((e.value() - f.value()).abs() < 1e-3, "{e:?} {f:?}");
            let margin = fast.margin(s.moves.len());
            for (&c, &v) in f.moves.iter().zip(&f.scores) {
                let want = score_of(&e, c);
                if want >= e.value() - margin + 1e-3 {
                    assert!((v - want).abs() < 1e-3, "move {c}: {v} vs {want}");
                } else {
                    assert!(v >= want - 1e-3, "move {c}: bound {v} below {want}");
                }
            }
        }
        assert!(
            fast.nodes * 2 < full.nodes,
            "nodes with ordering and windows {} vs exact {}",
            fast.nodes,
            full.nodes
        );
    }

    /// Nodes and time per move at depth 2 and 3 on 40 positions, old (every root move
    /// exact, board order) against new; `RINGRIFT_BENCH_MODEL` names a model file
    /// (default: a random one). `cargo test --release -p ringrift-engine -- --ignored
    /// --nocapture search_cost`.
    #[test]
    #[ignore]
    fn search_cost() {
        let (random, positions) = policy_model_and_positions("hex8_2p", 40);
        let m = match std::env::var_os("RINGRIFT_BENCH_MODEL") {
            Some(p) => Arc::new(Model::load(std::path::Path::new(&p)).expect("model").0),
            None => random,
        };
        for depth in [2, 3] {
            for (label, exact, ordering) in [
                ("old: exact, board order", true, false),
                ("windows, board order", false, false),
                ("windows, policy order", false, true),
            ] {
                let mut c = SearchConfig::greedy(depth);
                c.exact_scores = exact;
                c.policy_ordering = ordering;
                // Nodes are deterministic; time is the best of 5 runs (a shared machine).
                let mut nodes = 0;
                let mut best = f64::INFINITY;
                for _ in 0..5 {
                    let mut p = ModelPlayer::new("m", m.clone(), c.clone());
                    let t = std::time::Instant::now();
                    for s in &positions {
                        p.analyse(s);
                    }
                    best = best.min(t.elapsed().as_secs_f64());
                    nodes = p.nodes;
                }
                let n = positions.len() as f64;
                println!(
                    "depth {depth} {label:>24}: {:>9.0} nodes/move {:>8.3} ms/move",
                    nodes as f64 / n,
                    best * 1e3 / n
                );
            }
        }
    }
}
