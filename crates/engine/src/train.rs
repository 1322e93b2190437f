//! Training the policy/value network from NPZ files, and distilling one into a smaller one.
//!
//! Plain minibatch Adam on `value_weight · (v − z)² + cross-entropy(policy target,
//! softmax over empty cells)`, its learning rate decayed to 0 along half a cosine over
//! the run (`cosine_lr`). Inputs are sparse (one active feature per stone), so a
//! step costs about `stones · hidden + cells · hidden`. Each epoch applies a random board
//! symmetry to every row (the game is invariant under them), and whole games holding about
//! 10 % of the rows are held out to report validation losses (positions of one game are
//! near-duplicates, so a split by position would score the model on what it trained on).

use crate::WorkloadError;
use crate::dataset::Dataset;
use crate::game::Geometry;
use crate::model::Model;
use crate::progress::Progress;
use crate::rng::Rng;
pub use ringrift_contracts::TrainReport;
use ringrift_store::ConfigKey;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct TrainArgs {
    pub config: ConfigKey,
    pub data: Vec<PathBuf>,
    /// Start from this model (fine-tune); else a fresh random network.
    pub init: Option<PathBuf>,
    pub output: PathBuf,
    pub hidden: usize,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub value_weight: f32,
    pub augment: bool,
    /// Fresh networks get the n-tuple term ([`crate::model::ARCH_NTUPLE`]).
    pub ntuple: bool,
    pub seed: u64,
    /// Generation to stamp; default: the init model's + 1 (1 when training from scratch).
    pub generation: Option<u32>,
    pub quiet: bool,
}

impl TrainArgs {
    pub fn new(config: ConfigKey, data: Vec<PathBuf>, output: PathBuf) -> Self {
        TrainArgs {
            config,
            data,
            init: None,
            output,
            hidden: 64,
            epochs: 6,
            batch: 64,
            lr: 2e-3,
            value_weight: 1.0,
            augment: true,
            ntuple: true,
            seed: 1,
            generation: None,
            quiet: true,
        }
    }
}

/// One training row in sparse form.
#[derive(Debug, Clone)]
struct Row {
    /// (plane, cell) of each stone.
    stones: Vec<(u16, u16)>,
    value: f32,
    policy: Vec<(u16, f32)>,
}

fn rows_of(ds: &Dataset) -> Vec<Row> {
    let (p, c, k) = (ds.planes, ds.cells, ds.k);
    (0..ds.rows())
        .map(|r| {
            let f = &ds.features[r * p * c..(r + 1) * p * c];
            let stones = f
                .iter()
                .enumerate()
                .filter(|(_, v)| **v != 0.0)
                .map(|(i, _)| ((i / c) as u16, (i % c) as u16))
                .collect();
            let mut policy: Vec<(u16, f32)> = (0..k)
                .filter_map(|j| {
                    let idx = ds.policy_indices[r * k + j];
                    let val = ds.policy_values[r * k + j];
                    (idx >= 0 && val > 0.0).then_some((idx as u16, val))
                })
                .collect();
            let sum: f32 = policy.iter().map(|x| x.1).sum();
            if sum > 0.0 {
                policy.iter_mut().for_each(|x| x.1 /= sum);
            }
            Row {
                stones,
                value: ds.values[r],
                policy,
            }
        })
        .collect()
}

/// Holds out whole games, in random order, until about a tenth of the rows (none below 20
/// rows); returns `(validation, training)`. `games[i]` is row `i`'s game.
fn split_by_game(rows: Vec<Row>, games: &[u32], rng: &mut Rng) -> (Vec<Row>, Vec<Row>) {
    let own: Vec<u32>;
    let games = if games.len() == rows.len() {
        games
    } else {
        own = (0..rows.len() as u32).collect();
        &own
    };
    let want = if rows.len() >= 20 { rows.len() / 10 } else { 0 };
    let mut count = std::collections::BTreeMap::<u32, usize>::new();
    games
        .iter()
        .for_each(|&g| *count.entry(g).or_default() += 1);
    // The distinct games in ascending order, then shuffled.
    let mut ids: Vec<u32> = count.keys().copied().collect();
    rng.shuffle(&mut ids);
    let mut held = std::collections::HashSet::new();
    let mut n = 0;
    for g in ids {
        if n >= want {
            break;
        }
        n += count[&g];
        held.insert(g);
    }
    let (val, train): (Vec<_>, Vec<_>) = rows
        .into_iter()
        .zip(games)
        .partition(|(_, g)| held.contains(*g));
    (
        val.into_iter().map(|(r, _)| r).collect(),
        train.into_iter().map(|(r, _)| r).collect(),
    )
}

/// Gradients / Adam moments, laid out like the model.
#[derive(Debug, Clone)]
struct Params {
    w1t: Vec<f32>,
    b1: Vec<f32>,
    wp: Vec<f32>,
    bp: Vec<f32>,
    wv: Vec<f32>,
    bv: f32,
    lut: Vec<f32>,
}

impl Params {
    fn zeros_like(m: &Model) -> Self {
        Params {
            w1t: vec![0.0; m.w1t.len()],
            b1: vec![0.0; m.b1.len()],
            wp: vec![0.0; m.wp.len()],
            bp: vec![0.0; m.bp.len()],
            wv: vec![0.0; m.wv.len()],
            bv: 0.0,
            lut: vec![0.0; m.lut.len()],
        }
    }

    fn clear(&mut self) {
        for v in [
            &mut self.w1t,
            &mut self.b1,
            &mut self.wp,
            &mut self.bp,
            &mut self.wv,
            &mut self.lut,
        ] {
            v.iter_mut().for_each(|x| *x = 0.0);
        }
        self.bv = 0.0;
    }
}

struct Adam {
    m: Params,
    v: Params,
    t: i32,
    lr: f32,
}

impl Adam {
    fn step(&mut self, model: &mut Model, g: &Params, scale: f32) {
        const B1: f32 = 0.9;
        const B2: f32 = 0.999;
        const EPS: f32 = 1e-8;
        self.t += 1;
        let c1 = 1.0 - B1.powi(self.t);
        let c2 = 1.0 - B2.powi(self.t);
        let lr = self.lr;
        let upd = |w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
            for i in 0..w.len() {
                let gi = g[i] * scale;
                m[i] = B1 * m[i] + (1.0 - B1) * gi;
                v[i] = B2 * v[i] + (1.0 - B2) * gi * gi;
                w[i] -= lr * (m[i] / c1) / ((v[i] / c2).sqrt() + EPS);
            }
        };
        upd(&mut model.w1t, &g.w1t, &mut self.m.w1t, &mut self.v.w1t);
        upd(&mut model.b1, &g.b1, &mut self.m.b1, &mut self.v.b1);
        upd(&mut model.wp, &g.wp, &mut self.m.wp, &mut self.v.wp);
        upd(&mut model.bp, &g.bp, &mut self.m.bp, &mut self.v.bp);
        upd(&mut model.wv, &g.wv, &mut self.m.wv, &mut self.v.wv);
        upd(&mut model.lut, &g.lut, &mut self.m.lut, &mut self.v.lut);
        let mut bv = [model.bv];
        let (mut mb, mut vb) = ([self.m.bv], [self.v.bv]);
        upd(&mut bv, &[g.bv], &mut mb, &mut vb);
        model.bv = bv[0];
        self.m.bv = mb[0];
        self.v.bv = vb[0];
    }
}

/// Losses of one row: (value squared error, policy cross-entropy, top-1 hit).
struct RowLoss {
    value_se: f64,
    policy_ce: f64,
    top1: bool,
}

/// Scratch buffers for one forward/backward pass.
struct Scratch {
    z1: Vec<f32>,
    a1: Vec<f32>,
    da1: Vec<f32>,
    logits: Vec<f32>,
    legal: Vec<bool>,
    /// Board (plane of each stone, -1 empty) under the current symmetry, for patterns.
    board: Vec<i8>,
}

impl Scratch {
    fn new(m: &Model) -> Self {
        Scratch {
            z1: vec![0.0; m.hidden],
            a1: vec![0.0; m.hidden],
            da1: vec![0.0; m.hidden],
            logits: vec![0.0; m.cells],
            legal: vec![true; m.cells],
            board: vec![-1; m.cells],
        }
    }
}

/// Forward (and, with `grad`, backward) on one row under cell permutation `perm`.
fn pass(
    m: &Model,
    geo: &Geometry,
    row: &Row,
    perm: &[u16],
    value_weight: f32,
    s: &mut Scratch,
    grad: Option<&mut Params>,
) -> RowLoss {
    let (h, cells) = (m.hidden, m.cells);
    s.z1.copy_from_slice(&m.b1);
    s.legal.iter_mut().for_each(|x| *x = true);
    for &(plane, c) in &row.stones {
        let c = usize::from(perm[usize::from(c)]);
        s.legal[c] = false;
        let f = usize::from(plane) * cells + c;
        for (z, w) in s.z1.iter_mut().zip(&m.w1t[f * h..(f + 1) * h]) {
            *z += w;
        }
    }
    for (a, z) in s.a1.iter_mut().zip(&s.z1) {
        *a = z.max(0.0);
    }
    let patterns = if m.lut.is_empty() {
        Vec::new()
    } else {
        s.board.iter_mut().for_each(|b| *b = -1);
        for &(plane, c) in &row.stones {
            s.board[usize::from(perm[usize::from(c)])] = plane as i8;
        }
        // Planes are relative to the player to move, so they read as seats seen by seat 0.
        geo.patterns(&s.board, 0)
    };
    let v = (m.bv + m.lut_sum(&patterns) + s.a1.iter().zip(&m.wv).map(|(a, w)| a * w).sum::<f32>())
        .tanh();
    let mut max = f32::NEG_INFINITY;
    for c in 0..cells {
        s.logits[c] = if s.legal[c] {
            let l = m.bp[c]
                + m.wp[c * h..(c + 1) * h]
                    .iter()
                    .zip(&s.a1)
                    .map(|(w, a)| w * a)
                    .sum::<f32>();
            max = max.max(l);
            l
        } else {
            f32::NEG_INFINITY
        };
    }
    let mut sum = 0.0f32;
    for c in 0..cells {
        if s.legal[c] {
            s.logits[c] = (s.logits[c] - max).exp();
            sum += s.logits[c];
        } else {
            s.logits[c] = 0.0;
        }
    }
    let sum = sum.max(1e-30);
    s.logits.iter_mut().for_each(|p| *p /= sum);
    // s.logits now holds the softmax probabilities.
    let mut ce = 0.0f64;
    let mut best_target = (0usize, f32::NEG_INFINITY);
    for &(c, t) in &row.policy {
        let c = usize::from(perm[usize::from(c)]);
        ce -= f64::from(t) * f64::from(s.logits[c].max(1e-12)).ln();
        if t > best_target.1 {
            best_target = (c, t);
        }
    }
    let argmax = (0..cells)
        .max_by(|&a, &b| s.logits[a].total_cmp(&s.logits[b]))
        .unwrap_or(0);
    let loss = RowLoss {
        value_se: f64::from((v - row.value) * (v - row.value)),
        policy_ce: ce,
        top1: !row.policy.is_empty() && argmax == best_target.0,
    };
    let Some(g) = grad else { return loss };

    let dv = value_weight * 2.0 * (v - row.value) * (1.0 - v * v);
    g.bv += dv;
    for &p in &patterns {
        g.lut[p as usize] += dv;
    }
    for i in 0..h {
        s.da1[i] = dv * m.wv[i];
        g.wv[i] += dv * s.a1[i];
    }
    // dlogit = p - target on legal cells.
    for &(c, t) in &row.policy {
        let c = usize::from(perm[usize::from(c)]);
        s.logits[c] -= t;
    }
    for c in 0..cells {
        let d = s.logits[c];
        if d == 0.0 || !s.legal[c] {
            continue;
        }
        g.bp[c] += d;
        let row_w = &m.wp[c * h..(c + 1) * h];
        let row_g = &mut g.wp[c * h..(c + 1) * h];
        for i in 0..h {
            row_g[i] += d * s.a1[i];
            s.da1[i] += d * row_w[i];
        }
    }
    for i in 0..h {
        if s.z1[i] <= 0.0 {
            s.da1[i] = 0.0;
        }
        g.b1[i] += s.da1[i];
    }
    for &(plane, c) in &row.stones {
        let c = usize::from(perm[usize::from(c)]);
        let f = usize::from(plane) * cells + c;
        for (gw, d) in g.w1t[f * h..(f + 1) * h].iter_mut().zip(&s.da1) {
            *gw += d;
        }
    }
    loss
}

/// Loads and concatenates NPZ files, checking they fit `config`.
pub fn load_data(config: ConfigKey, files: &[PathBuf]) -> Result<Dataset, WorkloadError> {
    if files.is_empty() {
        return Err(WorkloadError::Invalid(
            "no training data given (--data)".into(),
        ));
    }
    let geo = Geometry::new(config);
    let mut ds = Dataset::default();
    for f in files {
        let part = Dataset::read_npz(f)?;
        if part.planes != geo.players() || part.cells != geo.cells() {
            return Err(WorkloadError::BadData {
                path: f.clone(),
                reason: format!(
                    "shape {} planes x {} cells does not fit {config} ({} x {})",
                    part.planes,
                    part.cells,
                    geo.players(),
                    geo.cells()
                ),
            });
        }
        ds.extend(part)?;
    }
    if ds.rows() == 0 {
        return Err(WorkloadError::Invalid("training data has no rows".into()));
    }
    Ok(ds)
}

/// The learning rate at fraction `t` (0..1) of training: `lr` decayed to 0 along half a
/// cosine. A constant rate leaves the weights wherever the last minibatches pushed them:
/// on hex8_2p, candidates trained so scored 0.41–0.46 against their own canonical model
/// at depth 1, the same data with this schedule 0.48–0.50 (docs/measurements.md).
fn cosine_lr(lr: f32, t: f32) -> f32 {
    lr * 0.5 * (1.0 + (std::f32::consts::PI * t.clamp(0.0, 1.0)).cos())
}

/// Trains a model on a dataset already in memory; returns it with the report fields
/// that do not depend on where it is saved.
pub fn fit(
    mut model: Model,
    ds: &Dataset,
    args: &TrainArgs,
    progress: &mut Progress,
) -> Result<(Model, FitStats), WorkloadError> {
    let geo = Geometry::new(args.config);
    let mut rng = Rng::new(args.seed);
    let (val, train) = split_by_game(rows_of(ds), &ds.games, &mut rng);
    let (val, train) = (&val[..], &train[..]);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut s = Scratch::new(&model);
    let mut grad = Params::zeros_like(&model);
    let mut adam = Adam {
        m: Params::zeros_like(&model),
        v: Params::zeros_like(&model),
        t: 0,
        lr: args.lr,
    };
    let identity: Vec<u16> = (0..model.cells as u16).collect();
    let batch = args.batch.max(1);
    let mut last_loss = 0.0;
    let steps_total = (args.epochs * train.len().div_ceil(batch)).max(1) as f32;
    for epoch in 0..args.epochs {
        rng.shuffle(&mut order);
        let mut epoch_loss = 0.0;
        for chunk in order.chunks(batch) {
            grad.clear();
            for &i in chunk {
                let perm = if args.augment {
                    &geo.symmetries[rng.below(geo.symmetries.len())]
                } else {
                    &identity
                };
                let l = pass(
                    &model,
                    &geo,
                    &train[i],
                    perm,
                    args.value_weight,
                    &mut s,
                    Some(&mut grad),
                );
                epoch_loss += f64::from(args.value_weight) * l.value_se + l.policy_ce;
            }
            // `adam.t`: the steps taken so far.
            adam.lr = cosine_lr(args.lr, adam.t as f32 / steps_total);
            adam.step(&mut model, &grad, 1.0 / chunk.len() as f32);
            progress.inc(chunk.len() as u64);
        }
        last_loss = epoch_loss / train.len().max(1) as f64;
        progress.message(&format!(
            "epoch {}/{}: train loss {last_loss:.4}",
            epoch + 1,
            args.epochs
        ));
    }
    let mut stats = FitStats {
        train_rows: train.len(),
        val_rows: val.len(),
        train_loss: last_loss,
        ..FitStats::default()
    };
    for r in val {
        let l = pass(&model, &geo, r, &identity, args.value_weight, &mut s, None);
        stats.val_value_mse += l.value_se;
        stats.val_policy_ce += l.policy_ce;
        stats.val_policy_top1 += f64::from(u8::from(l.top1));
        stats.val_value_mse_baseline += f64::from(r.value * r.value);
    }
    let n = val.len().max(1) as f64;
    stats.val_value_mse /= n;
    stats.val_policy_ce /= n;
    stats.val_policy_top1 /= n;
    stats.val_value_mse_baseline /= n;
    if model
        .w1t
        .iter()
        .chain(&model.wp)
        .chain(&model.wv)
        .any(|v| !v.is_finite())
    {
        return Err(WorkloadError::Invalid(
            "training diverged (non-finite weights); lower --lr".into(),
        ));
    }
    Ok((model, stats))
}

/// Validation statistics of a fit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FitStats {
    pub train_rows: usize,
    pub val_rows: usize,
    pub train_loss: f64,
    pub val_value_mse: f64,
    pub val_policy_ce: f64,
    pub val_policy_top1: f64,
    pub val_value_mse_baseline: f64,
}

fn fresh_model(args: &TrainArgs, cells: usize) -> Model {
    let m = Model::new_random(args.config, cells, args.hidden, args.seed);
    if args.ntuple { m.with_ntuple() } else { m }
}

fn starting_model(
    args: &TrainArgs,
    cells: usize,
) -> Result<(Model, u32, Option<String>), WorkloadError> {
    match &args.init {
        Some(p) => {
            let (m, h) = Model::load(p)?;
            if m.config_key != args.config {
                return Err(WorkloadError::BadModel {
                    path: p.clone(),
                    reason: format!(
                        "init model is for {}, training {}",
                        m.config_key, args.config
                    ),
                });
            }
            let generation = m.generation + 1;
            Ok((m, generation, Some(h.payload_sha256)))
        }
        None => Ok((fresh_model(args, cells), 1, None)),
    }
}

fn finish(
    mut model: Model,
    stats: FitStats,
    samples: usize,
    generation: u32,
    parent: Option<String>,
    args: &TrainArgs,
    started: Instant,
) -> Result<TrainReport, WorkloadError> {
    model.generation = args.generation.unwrap_or(generation);
    model.parent_sha256 = parent;
    model.trained_samples += (stats.train_rows * args.epochs) as u64;
    let header = model.save(&args.output)?;
    let elapsed = started.elapsed().as_secs_f64();
    Ok(TrainReport {
        config_key: args.config,
        samples,
        train_rows: stats.train_rows,
        val_rows: stats.val_rows,
        epochs: args.epochs,
        hidden: model.hidden,
        params: model.param_count(),
        generation: model.generation,
        train_loss: stats.train_loss,
        val_value_mse: stats.val_value_mse,
        val_policy_ce: stats.val_policy_ce,
        val_policy_top1: stats.val_policy_top1,
        val_value_mse_baseline: stats.val_value_mse_baseline,
        elapsed_s: elapsed,
        samples_per_s: (stats.train_rows * args.epochs) as f64 / elapsed.max(1e-9),
        output: args.output.clone(),
        sha256: header.payload_sha256,
    })
}

fn validate(args: &TrainArgs) -> Result<(), WorkloadError> {
    if args.hidden == 0 || args.hidden > 4096 {
        return Err(WorkloadError::Invalid(format!(
            "--hidden must be 1..=4096, got {}",
            args.hidden
        )));
    }
    if !(args.lr > 0.0 && args.lr < 1.0) {
        return Err(WorkloadError::Invalid(format!(
            "--lr must be in (0, 1), got {}",
            args.lr
        )));
    }
    Ok(())
}

/// Trains from NPZ files and writes a versioned model file.
pub fn train(args: &TrainArgs) -> Result<TrainReport, WorkloadError> {
    let started = Instant::now();
    validate(args)?;
    let ds = load_data(args.config, &args.data)?;
    let cells = Geometry::new(args.config).cells();
    let (model, generation, parent) = starting_model(args, cells)?;
    let mut progress = Progress::new("train", (ds.rows() * args.epochs) as u64, args.quiet);
    let (model, stats) = fit(model, &ds, args, &mut progress)?;
    progress.finish();
    finish(model, stats, ds.rows(), generation, parent, args, started)
}

/// Distils `teacher` into a fresh network with `args.hidden` units: targets are the
/// teacher's own value and policy on the positions of the data files.
pub fn distill(
    teacher_path: &std::path::Path,
    args: &TrainArgs,
) -> Result<TrainReport, WorkloadError> {
    let started = Instant::now();
    let (teacher, th) = Model::load(teacher_path)?;
    if teacher.config_key != args.config {
        return Err(WorkloadError::BadModel {
            path: teacher_path.to_path_buf(),
            reason: format!(
                "teacher is for {}, distilling {}",
                teacher.config_key, args.config
            ),
        });
    }
    let mut ds = load_data(args.config, &args.data)?;
    let geo = Geometry::new(args.config);
    let (p, c, k) = (ds.planes, ds.cells, ds.k);
    let mut acc = vec![0.0; teacher.hidden];
    let mut logits = Vec::new();
    for r in 0..ds.rows() {
        let f = &ds.features[r * p * c..(r + 1) * p * c];
        acc.copy_from_slice(&teacher.b1);
        let mut legal = Vec::new();
        for cell in 0..c {
            let mut occupied = false;
            for plane in 0..p {
                if f[plane * c + cell] != 0.0 {
                    teacher.add_feature(&mut acc, plane * c + cell, 1.0);
                    occupied = true;
                }
            }
            if !occupied {
                legal.push(cell as u16);
            }
        }
        let board: Vec<i8> = (0..c)
            .map(|cell| {
                (0..p)
                    .find(|&plane| f[plane * c + cell] != 0.0)
                    .map_or(-1, |plane| plane as i8)
            })
            .collect();
        let lut = if teacher.lut.is_empty() {
            0.0
        } else {
            teacher.lut_sum(&geo.patterns(&board, 0))
        };
        ds.values[r] = teacher.value(&acc, lut);
        teacher.policy_logits(&acc, &legal, &mut logits);
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let probs: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f32 = probs.iter().sum::<f32>().max(1e-30);
        let mut pairs: Vec<(u16, f32)> = legal
            .iter()
            .copied()
            .zip(probs.iter().map(|x| x / sum))
            .collect();
        pairs.sort_by(|a, b| b.1.total_cmp(&a.1));
        for j in 0..k {
            let (idx, val) = pairs
                .get(j)
                .map_or((-1, 0.0), |&(cell, pr)| (i32::from(cell), pr));
            ds.policy_indices[r * k + j] = idx;
            ds.policy_values[r * k + j] = val;
        }
    }
    // The student keeps the teacher's kind of value term and must come out smaller (a
    // student as large as its teacher is only a worse copy).
    let student = fresh_model(
        &TrainArgs {
            ntuple: !teacher.lut.is_empty(),
            ..args.clone()
        },
        c,
    );
    if student.param_count() >= teacher.param_count() {
        return Err(WorkloadError::Invalid(format!(
            "a student of --hidden {} has {} parameters, not fewer than its teacher's {} (hidden {}): choose a smaller --hidden",
            args.hidden,
            student.param_count(),
            teacher.param_count(),
            teacher.hidden
        )));
    }
    let mut progress = Progress::new("distill", (ds.rows() * args.epochs) as u64, args.quiet);
    let (student, stats) = fit(student, &ds, args, &mut progress)?;
    progress.finish();
    finish(
        student,
        stats,
        ds.rows(),
        teacher.generation,
        Some(th.payload_sha256),
        args,
        started,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_learning_rate_decays_from_lr_to_zero() {
        assert_eq!(cosine_lr(2e-3, 0.0), 2e-3);
        assert!((cosine_lr(2e-3, 0.5) - 1e-3).abs() < 1e-9);
        assert!(cosine_lr(2e-3, 1.0).abs() < 1e-9);
        let steps: Vec<f32> = (0..=10).map(|i| cosine_lr(1.0, i as f32 / 10.0)).collect();
        assert!(steps.windows(2).all(|w| w[1] < w[0]), "{steps:?}");
    }

    /// Numerical gradient check of the hand-written backward pass.
    #[test]
    fn gradients_match_finite_differences() {
        let key: ConfigKey = "square8_2p".parse().expect("key");
        let geo = Geometry::new(key);
        let mut m = Model::new_random(key, 64, 6, 5).with_ntuple();
        m.b1.iter_mut().for_each(|b| *b = 0.3);
        m.lut
            .iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = (i % 7) as f32 * 0.01);
        let row = Row {
            stones: vec![(0, 3), (1, 10), (0, 20)],
            value: 1.0,
            policy: vec![(5, 0.7), (6, 0.3)],
        };
        let perm: Vec<u16> = (0..64).collect();
        let mut s = Scratch::new(&m);
        let mut g = Params::zeros_like(&m);
        pass(&m, &geo, &row, &perm, 1.0, &mut s, Some(&mut g));
        let loss = |m: &Model, s: &mut Scratch| {
            let l = pass(m, &geo, &row, &perm, 1.0, s, None);
            l.value_se + l.policy_ce
        };
        let eps = 1e-3f32;
        // One all-empty window's entry, and window 0's (own stone at position 3, cells
        // 0..=3): 27 in its block.
        let block = geo.pattern_count();
        let empty = (1..geo.windows.len())
            .find(|&w| geo.windows[w].iter().all(|&c| ![3, 10, 20].contains(&c)))
            .expect("an empty window");
        let checks: [(&str, usize); 6] = [
            ("w1t", 3 * 6 + 2),
            ("wp", 5 * 6 + 1),
            ("wv", 4),
            ("bp", 6),
            ("lut", empty * block),
            ("lut", 27),
        ];
        for (name, i) in checks {
            let analytic = match name {
                "w1t" => g.w1t[i],
                "wp" => g.wp[i],
                "wv" => g.wv[i],
                "lut" => g.lut[i],
                _ => g.bp[i],
            };
            let mut plus = m.clone();
            let bump = |m: &mut Model, d: f32| match name {
                "w1t" => m.w1t[i] += d,
                "wp" => m.wp[i] += d,
                "wv" => m.wv[i] += d,
                "lut" => m.lut[i] += d,
                _ => m.bp[i] += d,
            };
            bump(&mut plus, eps);
            let mut minus = m.clone();
            bump(&mut minus, -eps);
            let numeric = (loss(&plus, &mut s) - loss(&minus, &mut s)) / (2.0 * f64::from(eps));
            assert!(
                analytic != 0.0,
                "{name}[{i}] has no gradient: the check would be vacuous"
            );
            assert!(
                (numeric - f64::from(analytic)).abs() < 1e-2 * (1.0 + numeric.abs()),
                "{name}[{i}]: numeric {numeric} analytic {analytic}"
            );
        }
    }

    /// A small dataset of `games` selfplay games of the untrained model, written as an
    /// NPZ in `dir`.
    fn selfplay_npz(dir: &std::path::Path, key: ConfigKey, games: usize) -> PathBuf {
        use crate::game::State;
        use crate::players::{Player, RandomPlayer};
        let geo = Geometry::new(key);
        let mut ds = Dataset {
            planes: geo.players(),
            cells: geo.cells(),
            k: 4,
            ..Dataset::default()
        };
        let mut rng = Rng::new(9);
        for _ in 0..games {
            ds.start_game();
            let mut s = State::new(geo.clone());
            while !s.done {
                let c = RandomPlayer.choose(&s, &mut rng);
                ds.push_position(&s, 0.0, &[(c as u16, 1.0)]);
                s.play(c).expect("legal");
            }
        }
        let path = dir.join("d.npz");
        ds.write_npz(&path).expect("write");
        path
    }

    /// Validation holds out whole games: no game has rows on both sides, and the held
    /// out part is about a tenth of the rows. The game ids survive the NPZ round trip.
    #[test]
    fn validation_holds_out_whole_games() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key: ConfigKey = "hex8_2p".parse().expect("key");
        let ds = Dataset::read_npz(&selfplay_npz(dir.path(), key, 40)).expect("read");
        assert_eq!(ds.games.len(), ds.rows());
        assert_eq!(ds.games.iter().max(), Some(&39));
        let tagged: Vec<Row> = rows_of(&ds)
            .into_iter()
            .enumerate()
            .map(|(i, mut r)| {
                r.value = i as f32;
                r
            })
            .collect();
        let (val, train) = split_by_game(tagged, &ds.games, &mut Rng::new(4));
        let game_of = |r: &Row| ds.games[r.value as usize];
        let held: std::collections::HashSet<u32> = val.iter().map(game_of).collect();
        assert!(!held.is_empty());
        assert!(
            train.iter().all(|r| !held.contains(&game_of(r))),
            "a game on both sides"
        );
        assert_eq!(val.len() + train.len(), ds.rows());
        let share = val.len() as f64 / ds.rows() as f64;
        assert!((0.09..0.2).contains(&share), "held out {share}");
    }

    /// Training from scratch builds the n-tuple network (every generation of the loop
    /// was the plain MLP before), and `ntuple: false` the plain one; a distilled student
    /// must be smaller than its teacher.
    #[test]
    fn fresh_networks_get_the_ntuple_and_students_are_smaller() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key: ConfigKey = "hex8_2p".parse().expect("key");
        let data = selfplay_npz(dir.path(), key, 10);
        let mut args = TrainArgs::new(key, vec![data.clone()], dir.path().join("t.rrm"));
        args.epochs = 1;
        train(&args).expect("train");
        let (m, _) = Model::load(&args.output).expect("load");
        assert_eq!(m.arch(), crate::model::ARCH_NTUPLE);
        let plain = TrainArgs {
            ntuple: false,
            output: dir.path().join("p.rrm"),
            ..args.clone()
        };
        train(&plain).expect("train plain");
        assert_eq!(
            Model::load(&plain.output).expect("load").0.arch(),
            crate::model::ARCH
        );
        let student = TrainArgs {
            hidden: 16,
            output: dir.path().join("s.rrm"),
            ..args.clone()
        };
        let r = distill(&args.output, &student).expect("distill");
        assert!(
            r.params < m.param_count(),
            "{} vs {}",
            r.params,
            m.param_count()
        );
        let same = TrainArgs {
            hidden: 64,
            output: dir.path().join("s2.rrm"),
            ..args.clone()
        };
        let err = distill(&args.output, &same).expect_err("as large as the teacher");
        assert!(
            err.to_string().contains("not fewer than its teacher"),
            "{err}"
        );
        assert!(!same.output.exists());
    }
}
