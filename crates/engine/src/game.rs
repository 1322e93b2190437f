//! The embedded game: k-in-a-row for 2–4 players on the four board kinds.
//!
//! Players take turns placing one stone on an empty cell; the first to own `k` cells in a
//! line along one of the board's axes wins; a full board is a draw.
//!
//! | board | cells | axes | k |
//! |---|---|---|---|
//! | `square8` | 8×8 square | 4 (rows, columns, both diagonals) | 4 |
//! | `square19` | 19×19 square | 4 | 5 (gomoku) |
//! | `hex8` | 8×8 hex rhombus (axial coordinates) | 3 | 4 |
//! | `hexagonal` | hexagon of side 5 (61 cells) | 3 | 4 |
//!
//! [`Geometry`] precomputes neighbours, every k-cell window (for the heuristic) and the
//! board's symmetries (cell permutations, for training augmentation).

use ringrift_store::{Board, ConfigKey};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Sentinel for "no neighbour" in the neighbour table.
const NONE: u16 = u16::MAX;

/// A board's shape and rules, shared by every state of a config.
#[derive(Debug)]
pub struct Geometry {
    pub config: ConfigKey,
    pub k: usize,
    pub coords: Vec<(i32, i32)>,
    pub dirs: Vec<(i32, i32)>,
    /// `neighbors[(c * dirs + d) * 2 + s]`: the cell one step from `c` along `dirs[d]`
    /// (s = 0) or against it (s = 1), or `NONE`.
    neighbors: Vec<u16>,
    /// Every line of `k` cells.
    pub windows: Vec<Vec<u16>>,
    /// For each cell, the windows containing it.
    pub cell_windows: Vec<Vec<u32>>,
    /// For each cell, `(window, position of the cell in that window)`.
    pub cell_window_pos: Vec<Vec<(u32, u8)>>,
    /// Cell permutations that map the board (and its lines) onto itself; `[0]` is the
    /// identity.
    pub symmetries: Vec<Vec<u16>>,
}

type CoordMap = fn(i32, (i32, i32)) -> (i32, i32);

impl Geometry {
    pub fn new(config: ConfigKey) -> Arc<Geometry> {
        let square_dirs = vec![(1, 0), (0, 1), (1, 1), (1, -1)];
        let hex_dirs = vec![(1, 0), (0, 1), (1, -1)];
        let (coords, dirs, k, size, gens): (Vec<(i32, i32)>, _, _, i32, Vec<CoordMap>) =
            match config.board() {
                Board::Square8 | Board::Square19 => {
                    let n = if config.board() == Board::Square8 {
                        8
                    } else {
                        19
                    };
                    let k = if n == 8 { 4 } else { 5 };
                    let coords = (0..n).flat_map(|y| (0..n).map(move |x| (x, y))).collect();
                    let rot: CoordMap = |n, (x, y)| (n - 1 - y, x);
                    let refl: CoordMap = |_, (x, y)| (y, x);
                    (coords, square_dirs, k, n, vec![rot, refl])
                }
                Board::Hex8 => {
                    let n = 8;
                    let coords = (0..n).flat_map(|r| (0..n).map(move |q| (q, r))).collect();
                    let half: CoordMap = |n, (q, r)| (n - 1 - q, n - 1 - r);
                    let refl: CoordMap = |_, (q, r)| (r, q);
                    (coords, hex_dirs, 4, n, vec![half, refl])
                }
                Board::Hexagonal => {
                    let rad = 4;
                    let coords = (-rad..=rad)
                        .flat_map(|r| (-rad..=rad).map(move |q| (q, r)))
                        .filter(|&(q, r): &(i32, i32)| (q + r).abs() <= rad)
                        .collect();
                    let rot: CoordMap = |_, (q, r)| (-r, q + r);
                    let refl: CoordMap = |_, (q, r)| (r, q);
                    (coords, hex_dirs, 4, rad, vec![rot, refl])
                }
            };
        let index: HashMap<(i32, i32), u16> = coords
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u16))
            .collect();
        let nd = dirs.len();
        let mut neighbors = vec![NONE; coords.len() * nd * 2];
        for (c, &(x, y)) in coords.iter().enumerate() {
            for (d, &(dx, dy)) in dirs.iter().enumerate() {
                for (s, sign) in [1, -1].into_iter().enumerate() {
                    if let Some(&n) = index.get(&(x + sign * dx, y + sign * dy)) {
                        neighbors[(c * nd + d) * 2 + s] = n;
                    }
                }
            }
        }
        let mut windows = Vec::new();
        for &(x, y) in &coords {
            for &(dx, dy) in &dirs {
                let w: Option<Vec<u16>> = (0..k as i32)
                    .map(|i| index.get(&(x + i * dx, y + i * dy)).copied())
                    .collect();
                if let Some(w) = w {
                    windows.push(w);
                }
            }
        }
        let mut cell_windows = vec![Vec::new(); coords.len()];
        let mut cell_window_pos = vec![Vec::new(); coords.len()];
        for (wi, w) in windows.iter().enumerate() {
            for (i, &c) in w.iter().enumerate() {
                cell_windows[usize::from(c)].push(wi as u32);
                cell_window_pos[usize::from(c)].push((wi as u32, i as u8));
            }
        }
        let symmetries = symmetry_group(&coords, &index, size, &gens);
        Arc::new(Geometry {
            config,
            k,
            coords,
            dirs,
            neighbors,
            windows,
            cell_windows,
            cell_window_pos,
            symmetries,
        })
    }

    /// Number of distinct window patterns: each of the `k` cells is empty or one of the
    /// seats, seen from one seat's perspective.
    pub fn pattern_count(&self) -> usize {
        (self.players() + 1).pow(self.k as u32)
    }

    /// Entries of a positional n-tuple table: one [`Self::pattern_count`] block per
    /// window, so the same pattern may be worth more in the centre than on the edge.
    pub fn lut_len(&self) -> usize {
        self.windows.len() * self.pattern_count()
    }

    /// Table index of every window of `cells` seen by `perspective`: window `w`'s block
    /// starts at `w · pattern_count`, and the cell at position `i` adds
    /// `(players + 1)^i · code`, code 0 for empty, 1 for the perspective's stone, 2.. for
    /// the following seats.
    pub fn patterns(&self, cells: &[i8], perspective: u8) -> Vec<u32> {
        let n = self.players() as u32;
        let block = self.pattern_count() as u32;
        self.windows
            .iter()
            .enumerate()
            .map(|(wi, w)| {
                let mut idx = wi as u32 * block;
                let mut mult = 1u32;
                for &c in w {
                    let v = cells[usize::from(c)];
                    if v >= 0 {
                        idx += mult * stone_code(v as u8, perspective, n);
                    }
                    mult *= n + 1;
                }
                idx
            })
            .collect()
    }

    pub fn cells(&self) -> usize {
        self.coords.len()
    }

    pub fn players(&self) -> usize {
        usize::from(self.config.players())
    }

    fn neighbor(&self, c: usize, d: usize, s: usize) -> Option<usize> {
        let n = self.neighbors[(c * self.dirs.len() + d) * 2 + s];
        (n != NONE).then_some(usize::from(n))
    }
}

/// Pattern digit of a stone of `owner` seen by `perspective` (1 = own, 2.. = the
/// following seats in turn order).
pub fn stone_code(owner: u8, perspective: u8, players: u32) -> u32 {
    1 + (u32::from(owner) + players - u32::from(perspective)) % players
}

/// Closes the generators into a group of cell permutations (identity first).
fn symmetry_group(
    coords: &[(i32, i32)],
    index: &HashMap<(i32, i32), u16>,
    size: i32,
    gens: &[CoordMap],
) -> Vec<Vec<u16>> {
    let gen_perms: Vec<Vec<u16>> = gens
        .iter()
        .filter_map(|g| {
            coords
                .iter()
                .map(|&c| index.get(&g(size, c)).copied())
                .collect()
        })
        .collect();
    let identity: Vec<u16> = (0..coords.len() as u16).collect();
    let mut seen: HashSet<Vec<u16>> = HashSet::from([identity.clone()]);
    let mut group = vec![identity];
    let mut i = 0;
    while i < group.len() {
        for g in &gen_perms {
            let composed: Vec<u16> = group[i].iter().map(|&c| g[usize::from(c)]).collect();
            if seen.insert(composed.clone()) {
                group.push(composed);
            }
        }
        i += 1;
    }
    group
}

/// Why a move was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoveError {
    #[error("cell {0} is off the board")]
    OffBoard(usize),
    #[error("cell {0} is occupied")]
    Occupied(usize),
    #[error("the game is over")]
    GameOver,
}

/// A position. Cells hold `-1` (empty) or the seat index of the stone's owner.
#[derive(Debug, Clone)]
pub struct State {
    pub geo: Arc<Geometry>,
    pub cells: Vec<i8>,
    pub to_move: u8,
    pub moves: Vec<u16>,
    pub winner: Option<u8>,
    pub done: bool,
}

/// A window holding `k − 2` of one player's stones and two empty cells: a stone at
/// `play` makes `win` a winning cell.
#[derive(Debug, Clone, Copy)]
struct Threat {
    play: u16,
    win: u16,
    window: u32,
}

/// A cell that plays two threats with different winning cells: a double threat (an open
/// three, or two crossing lines of `k − 1`), which one stone of the next player cannot
/// block. A new winning cell `e` for a stone at `c` means a window holding `k − 2` of the
/// player's stones, `c` and `e`, and nothing else, so the player's threats pair up every
/// candidate.
fn double_threat(threats: &[Threat]) -> Option<u16> {
    threats.iter().enumerate().find_map(|(i, a)| {
        threats[..i]
            .iter()
            .any(|b| b.play == a.play && b.win != a.win)
            .then_some(a.play)
    })
}

impl State {
    pub fn new(geo: Arc<Geometry>) -> Self {
        let cells = vec![-1; geo.cells()];
        State {
            geo,
            cells,
            to_move: 0,
            moves: Vec::new(),
            winner: None,
            done: false,
        }
    }

    pub fn players(&self) -> u8 {
        self.geo.config.players()
    }

    pub fn next_player(&self, p: u8) -> u8 {
        (p + 1) % self.players()
    }

    pub fn legal_moves(&self) -> Vec<u16> {
        if self.done {
            return Vec::new();
        }
        (0..self.cells.len() as u16)
            .filter(|&c| self.cells[usize::from(c)] < 0)
            .collect()
    }

    /// Stones of `p` in a row through empty-or-own cell `c` along direction `d`, counting
    /// `c` itself as `p`'s.
    fn run_through(&self, c: usize, d: usize, p: i8) -> usize {
        let mut total = 1;
        for s in 0..2 {
            let mut cur = c;
            while let Some(n) = self.geo.neighbor(cur, d, s) {
                if self.cells[n] != p {
                    break;
                }
                total += 1;
                cur = n;
            }
        }
        total
    }

    /// Whether `p` placing at empty cell `c` would complete a line.
    pub fn wins_at(&self, c: usize, p: u8) -> bool {
        self.cells[c] < 0
            && (0..self.geo.dirs.len()).any(|d| self.run_through(c, d, p as i8) >= self.geo.k)
    }

    /// Cells where `p` would win at once.
    pub fn winning_cells(&self, p: u8) -> Vec<u16> {
        (0..self.cells.len())
            .filter(|&c| self.wins_at(c, p))
            .map(|c| c as u16)
            .collect()
    }

    /// Appends `p`'s [`Threat`]s among `windows`.
    fn threats_in(&self, p: u8, windows: impl Iterator<Item = u32>, out: &mut Vec<Threat>) {
        let k = self.geo.k;
        'windows: for wi in windows {
            let (mut own, mut empty, mut ne) = (0, [0u16; 2], 0);
            for &c in &self.geo.windows[wi as usize] {
                match self.cells[usize::from(c)] {
                    -1 if ne < 2 => {
                        empty[ne] = c;
                        ne += 1;
                    }
                    v if v == p as i8 => own += 1,
                    _ => continue 'windows,
                }
            }
            if ne == 2 && own + 2 == k {
                out.push(Threat {
                    play: empty[0],
                    win: empty[1],
                    window: wi,
                });
                out.push(Threat {
                    play: empty[1],
                    win: empty[0],
                    window: wi,
                });
            }
        }
    }

    /// Plies to a win that `p`, to move, forces by continuous threats: stones that each
    /// make one winning cell, which the opponent must block, until one makes two
    /// (a double threat, 2 plies). At most `limit` single threats are
    /// chained (each 2 plies); a line where a forced block makes a winning cell for the
    /// opponent is given up. Needs a position where neither side has a winning cell (a
    /// quiet leaf); `self` is restored. Every line it reports is a forced win; a `None`
    /// proves nothing.
    pub fn threat_win(&mut self, p: u8, limit: u32) -> Option<u32> {
        self.threat_line(p, limit, &mut Vec::new())
    }

    /// [`Self::threat_win`] for `p` whether or not `p` is to move (as if it were), and
    /// the cells of the line it found appended to `line`: every threat and its block, the
    /// double threat and its two winning cells (where a defender has to play).
    pub fn threat_line(&mut self, p: u8, limit: u32, line: &mut Vec<u16>) -> Option<u32> {
        let mut threats = Vec::new();
        self.threats_in(p, 0..self.geo.windows.len() as u32, &mut threats);
        let to_move = std::mem::replace(&mut self.to_move, p);
        let found = self.threat_sequence(p, &threats, limit, line);
        self.to_move = to_move;
        found
    }

    fn threat_sequence(
        &mut self,
        p: u8,
        threats: &[Threat],
        limit: u32,
        line: &mut Vec<u16>,
    ) -> Option<u32> {
        if let Some(c) = double_threat(threats) {
            line.push(c);
            line.extend(threats.iter().filter(|t| t.play == c).map(|t| t.win));
            return Some(2);
        }
        if limit == 0 {
            return None;
        }
        let opponent = self.next_player(p);
        for t in threats {
            // `p` plays `t.play`, whose only winning cell is `t.win`; the opponent blocks.
            self.play_unchecked(usize::from(t.play));
            self.play_unchecked(usize::from(t.win));
            let mut found = None;
            let mut counter = false;
            self.new_wins_through(usize::from(t.win), opponent, |_| counter = true);
            if !self.done && !counter {
                let touched = |u: &Threat| {
                    let w = &self.geo.windows[u.window as usize];
                    w.contains(&t.play) || w.contains(&t.win)
                };
                let mut next: Vec<Threat> =
                    threats.iter().filter(|u| !touched(u)).copied().collect();
                self.threats_in(
                    p,
                    self.geo.cell_windows[usize::from(t.play)].iter().copied(),
                    &mut next,
                );
                found = self
                    .threat_sequence(p, &next, limit - 1, line)
                    .map(|d| d + 2);
            }
            self.undo();
            self.undo();
            if found.is_some() {
                line.extend([t.play, t.win]);
                return found;
            }
        }
        None
    }

    /// After `p` has a stone at `c`: the empty cells that became winning for `p` through
    /// it. A new winning cell must extend a run of `p`'s stones through `c`, so only the
    /// first empty cell past the run on each side of each axis can qualify.
    pub fn new_wins_through(&self, c: usize, p: u8, mut found: impl FnMut(u16)) {
        for d in 0..self.geo.dirs.len() {
            for side in 0..2 {
                let mut cur = c;
                while let Some(n) = self.geo.neighbor(cur, d, side) {
                    if self.cells[n] == p as i8 {
                        cur = n;
                        continue;
                    }
                    if self.cells[n] < 0 && self.wins_at(n, p) {
                        found(n as u16);
                    }
                    break;
                }
            }
        }
    }

    /// Plays a validated move.
    pub fn play(&mut self, c: usize) -> Result<(), MoveError> {
        if self.done {
            return Err(MoveError::GameOver);
        }
        match self.cells.get(c) {
            None => Err(MoveError::OffBoard(c)),
            Some(&v) if v >= 0 => Err(MoveError::Occupied(c)),
            Some(_) => {
                self.play_unchecked(c);
                Ok(())
            }
        }
    }

    /// Plays a move known to be legal (search hot path).
    pub fn play_unchecked(&mut self, c: usize) {
        let p = self.to_move;
        let wins = self.wins_at(c, p);
        self.cells[c] = p as i8;
        self.moves.push(c as u16);
        if wins {
            self.winner = Some(p);
            self.done = true;
        } else if self.moves.len() == self.cells.len() {
            self.done = true;
        }
        self.to_move = self.next_player(p);
    }

    /// Takes back the last move.
    pub fn undo(&mut self) {
        if let Some(c) = self.moves.pop() {
            let p = self.cells[usize::from(c)];
            self.cells[usize::from(c)] = -1;
            self.to_move = p as u8;
            self.winner = None;
            self.done = false;
        }
    }

    /// The outcome for seat `p`: +1 win, -1 loss, 0 draw (finished games only).
    pub fn outcome_for(&self, p: u8) -> f32 {
        match self.winner {
            Some(w) if w == p => 1.0,
            Some(_) => -1.0,
            None => 0.0,
        }
    }

    /// Replays a move list from the start, validating every move.
    pub fn replay(geo: Arc<Geometry>, moves: &[u16]) -> Result<State, MoveError> {
        let mut s = State::new(geo);
        for &m in moves {
            s.play(usize::from(m))?;
        }
        Ok(s)
    }
}

/// Why a recorded game is not a game of its config's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unplayable {
    #[error("ply {ply}: {error}")]
    Move { ply: usize, error: MoveError },
    #[error("recorded winner {recorded:?} but its moves give {replayed:?}")]
    Winner {
        recorded: Option<u8>,
        replayed: Option<u8>,
    },
    #[error("policy of ply {ply}: cell {cell} is off the board")]
    PolicyCell { ply: usize, cell: u16 },
}

/// Checks recorded games against the rules of their config (the geometry of each config
/// built once): every move legal in turn, the recorded winner the one the moves give,
/// every policy cell on the board. What ingest, serving, pushing and export run before a
/// game is stored, sent or trained on.
#[derive(Default)]
pub struct Referee {
    geos: HashMap<ConfigKey, Arc<Geometry>>,
}

impl Referee {
    pub fn check(&mut self, g: &ringrift_store::games::GameRecord) -> Result<(), Unplayable> {
        let geo = self
            .geos
            .entry(g.config_key)
            .or_insert_with(|| Geometry::new(g.config_key));
        let mut s = State::new(geo.clone());
        for (ply, &m) in g.moves.iter().enumerate() {
            s.play(usize::from(m))
                .map_err(|error| Unplayable::Move { ply, error })?;
        }
        if s.winner != g.winner {
            return Err(Unplayable::Winner {
                recorded: g.winner,
                replayed: s.winner,
            });
        }
        for (ply, dist) in g.policy.iter().flatten().enumerate() {
            if let Some(&(cell, _)) = dist.iter().find(|(c, _)| usize::from(*c) >= s.cells.len()) {
                return Err(Unplayable::PolicyCell { ply, cell });
            }
        }
        Ok(())
    }

    /// Leaves out of `games` (read from `store`) those that are unplayable and quarantines
    /// them in `store` with the reason ([`GameStore::quarantine`]); returns them as
    /// `(game_id, reason)`. What serving, pushing and export run on what they read, so a
    /// game stored unplayable (before games were checked, or by a producer that does not
    /// check) goes no further. Blocking.
    ///
    /// [`GameStore::quarantine`]: ringrift_store::games::GameStore::quarantine
    pub fn quarantine_unplayable(
        &mut self,
        store: &ringrift_store::games::GameStore,
        games: &mut Vec<ringrift_store::games::StoredGame>,
    ) -> Result<Vec<(String, String)>, ringrift_store::StoreError> {
        let mut bad: Vec<(String, String)> = Vec::new();
        games.retain(|g| match self.check(&g.game) {
            Ok(()) => true,
            Err(e) => {
                bad.push((g.game.game_id.clone(), e.to_string()));
                false
            }
        });
        if !bad.is_empty() {
            store.quarantine(&bad)?;
        }
        Ok(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(moves: Vec<u16>, winner: Option<u8>) -> ringrift_store::games::GameRecord {
        ringrift_store::games::GameRecord {
            game_id: "g".into(),
            config_key: "hex8_2p".parse().expect("key"),
            players: vec!["a".into(), "b".into()],
            winner,
            moves,
            source_node: "n".into(),
            quality_score: 1.0,
            created_at: 1,
            policy: None,
            search_values: None,
        }
    }

    #[test]
    fn the_referee_names_an_illegal_move_a_wrong_winner_and_an_off_board_policy() {
        let mut r = Referee::default();
        // Seat 0 plays 0, 1, 2, 3 along row 0 and wins at ply 6.
        let won = record(vec![0, 8, 1, 9, 2, 10, 3], Some(0));
        assert_eq!(r.check(&won), Ok(()));
        let unfinished = record(vec![0, 8, 1], None);
        assert_eq!(r.check(&unfinished), Ok(()));
        let occupied = record(vec![0, 8, 0], None);
        assert_eq!(
            r.check(&occupied).map_err(|e| e.to_string()),
            Err("ply 2: cell 0 is occupied".into())
        );
        let off = record(vec![0, 64], None);
        assert_eq!(
            r.check(&off),
            Err(Unplayable::Move {
                ply: 1,
                error: MoveError::OffBoard(64)
            })
        );
        let after_the_end = record(vec![0, 8, 1, 9, 2, 10, 3, 11], Some(0));
        assert_eq!(
            r.check(&after_the_end),
            Err(Unplayable::Move {
                ply: 7,
                error: MoveError::GameOver
            })
        );
        let wrong_winner = record(vec![0, 8, 1, 9, 2, 10, 3], Some(1));
        assert_eq!(
            r.check(&wrong_winner).map_err(|e| e.to_string()),
            Err("recorded winner Some(1) but its moves give Some(0)".into())
        );
        let no_winner = record(vec![0, 8, 1, 9, 2, 10, 3], None);
        assert!(matches!(
            r.check(&no_winner),
            Err(Unplayable::Winner { .. })
        ));
        let mut policy = record(vec![0, 8], None);
        policy.policy = Some(vec![vec![(0, 0.5), (5, 0.5)], vec![(8, 0.9), (70, 0.1)]]);
        assert_eq!(
            r.check(&policy),
            Err(Unplayable::PolicyCell { ply: 1, cell: 70 })
        );
    }

    #[test]
    fn geometries_have_expected_sizes_and_symmetries() {
        let cases = [
            ("square8_2p", 64, 8),
            ("square19_2p", 361, 8),
            ("hex8_2p", 64, 4),
            ("hexagonal_2p", 61, 12),
        ];
        for (key, cells, syms) in cases {
            let g = Geometry::new(key.parse().expect("key"));
            assert_eq!(g.cells(), cells, "{key}");
            assert_eq!(g.symmetries.len(), syms, "{key}");
            // Every symmetry maps windows onto windows.
            let set: HashSet<Vec<u16>> = g
                .windows
                .iter()
                .map(|w| {
                    let mut w = w.clone();
                    w.sort();
                    w
                })
                .collect();
            for perm in &g.symmetries {
                for w in &g.windows {
                    let mut m: Vec<u16> = w.iter().map(|&c| perm[usize::from(c)]).collect();
                    m.sort();
                    assert!(set.contains(&m), "{key}: symmetry breaks a line");
                }
            }
        }
    }

    #[test]
    fn four_in_a_row_wins_and_undo_restores() {
        let g = Geometry::new("square8_2p".parse().expect("key"));
        // Player 0 plays 0,1,2,3 on the first row; player 1 plays on row 3.
        let mut s = State::new(g);
        for m in [0, 24, 1, 25, 2, 26] {
            s.play(m).expect("legal");
        }
        assert_eq!(s.winning_cells(0), vec![3]);
        assert_eq!(s.winning_cells(1), vec![27]);
        s.play(3).expect("winning move");
        assert!(s.done);
        assert_eq!(s.winner, Some(0));
        assert_eq!(s.play(4), Err(MoveError::GameOver));
        s.undo();
        assert!(!s.done && s.winner.is_none() && s.to_move == 0);
        assert_eq!(s.play(24), Err(MoveError::Occupied(24)));
        assert_eq!(s.play(64), Err(MoveError::OffBoard(64)));
    }

    #[test]
    fn new_wins_through_matches_full_scan() {
        let g = Geometry::new("square8_2p".parse().expect("key"));
        let mut rng = crate::rng::Rng::new(5);
        for _ in 0..200 {
            let mut s = State::new(g.clone());
            while !s.done {
                let moves = s.legal_moves();
                let c = usize::from(moves[rng.below(moves.len())]);
                let p = s.to_move;
                let before = s.winning_cells(p);
                s.play_unchecked(c);
                if s.done {
                    break;
                }
                let mut after: Vec<u16> = before
                    .into_iter()
                    .filter(|&x| usize::from(x) != c)
                    .collect();
                s.new_wins_through(c, p, |x| after.push(x));
                after.sort();
                after.dedup();
                assert_eq!(after, s.winning_cells(p));
            }
        }
    }

    #[test]
    fn double_threat_cells_match_a_full_scan() {
        let mut rng = crate::rng::Rng::new(9);
        let mut found = 0;
        for key in ["square8_2p", "hex8_2p", "hexagonal_2p"] {
            let g = Geometry::new(key.parse().expect("key"));
            for _ in 0..100 {
                let mut s = State::new(g.clone());
                while !s.done {
                    let p = s.to_move;
                    if s.winning_cells(p).is_empty() {
                        // Cells where a stone of p makes two or more winning cells.
                        let doubles: Vec<u16> = s
                            .legal_moves()
                            .into_iter()
                            .filter(|&c| {
                                let mut t = s.clone();
                                t.cells[usize::from(c)] = p as i8;
                                t.winning_cells(p).len() >= 2
                            })
                            .collect();
                        let mut line = Vec::new();
                        match s.threat_line(p, 0, &mut line).map(|_| line[0]) {
                            Some(c) => {
                                assert!(doubles.contains(&c), "{key} {:?}: {c}", s.moves);
                                found += 1;
                            }
                            None => assert!(doubles.is_empty(), "{key} {:?}", s.moves),
                        }
                    }
                    let moves = s.legal_moves();
                    s.play_unchecked(usize::from(moves[rng.below(moves.len())]));
                }
            }
        }
        assert!(found > 100, "the scan found only {found} double threats");
    }

    /// Every move of `p` that makes a winning cell, every forced block: the threat
    /// sequences [`State::threat_win`] looks for, found without its threat lists.
    fn threat_win_by_scan(s: &mut State, p: u8, limit: u32) -> bool {
        let q = s.next_player(p);
        for m in s.legal_moves() {
            s.play_unchecked(usize::from(m));
            let wins = s.winning_cells(p);
            let won = wins.len() >= 2
                || (wins.len() == 1 && limit > 0 && {
                    s.play_unchecked(usize::from(wins[0]));
                    let w = !s.done
                        && s.winning_cells(q).is_empty()
                        && threat_win_by_scan(s, p, limit - 1);
                    s.undo();
                    w
                });
            s.undo();
            if won {
                return true;
            }
        }
        false
    }

    #[test]
    fn threat_sequences_match_a_full_scan() {
        let mut rng = crate::rng::Rng::new(11);
        let (mut quiet, mut chains) = (0, 0);
        for key in ["square8_2p", "hex8_2p"] {
            let g = Geometry::new(key.parse().expect("key"));
            for _ in 0..40 {
                let mut s = State::new(g.clone());
                while !s.done {
                    let p = s.to_move;
                    let q = s.next_player(p);
                    if s.winning_cells(p).is_empty() && s.winning_cells(q).is_empty() {
                        quiet += 1;
                        let before = s.cells.clone();
                        let double = s.threat_win(p, 0).is_some();
                        let chain = s.threat_win(p, 2);
                        assert_eq!(s.cells, before, "{key} {:?}: not restored", s.moves);
                        assert_eq!(
                            double,
                            threat_win_by_scan(&mut s, p, 0),
                            "{key} {:?}",
                            s.moves
                        );
                        assert_eq!(
                            chain.is_some(),
                            threat_win_by_scan(&mut s, p, 2),
                            "{key} {:?}",
                            s.moves
                        );
                        if chain.is_some_and(|d| d > 2) {
                            chains += 1;
                        }
                    }
                    let moves = s.legal_moves();
                    s.play_unchecked(usize::from(moves[rng.below(moves.len())]));
                }
            }
        }
        assert!(
            quiet > 500 && chains > 20,
            "{quiet} quiet positions, {chains} chains"
        );
    }

    #[test]
    fn hex_lines_follow_three_axes() {
        let g = Geometry::new("hex8_2p".parse().expect("key"));
        // (q, r) = (3,0),(2,1),(1,2),(0,3): the (-1, +1) axis. Cells are r * 8 + q.
        let mut s = State::new(g.clone());
        for m in [3, 63, 10, 62, 17, 60] {
            s.play(m).expect("legal");
        }
        assert!(s.wins_at(24, 0));
        // The other diagonal (1,1) is not a hex axis.
        let mut s = State::new(g);
        for m in [0, 63, 9, 62, 18, 60] {
            s.play(m).expect("legal");
        }
        assert!(!s.wins_at(27, 0));
    }

    #[test]
    fn three_players_rotate_and_draws_are_draws() {
        let g = Geometry::new("square8_3p".parse().expect("key"));
        let mut s = State::new(g);
        s.play(0).expect("p0");
        s.play(1).expect("p1");
        assert_eq!(s.to_move, 2);
        assert_eq!(s.outcome_for(0), 0.0);
    }
}
