//! The optimiser of every training run: AdamW over the trainable variables of a
//! [`nn::VarStore`], with the paper's parameter groups (a learning-rate
//! multiplier per name prefix, no weight decay on biases and LayerNorm weights),
//! a warm-up then step-decay schedule and clipping by global gradient norm.
//!
//! Its whole state (per-variable moments and step counts, the global step) is
//! exposed as named tensors, so that a checkpoint restores it and a resumed run
//! continues exactly where the interrupted one stopped (see
//! [`crate::checkpoint`]).
//!
//! A training step:
//!
//! ```no_run
//! # fn f(vs: &tch::nn::VarStore, loss: tch::Tensor) -> Result<(), vitrine_trainer::optim::OptimError> {
//! use vitrine_trainer::optim::{AdamW, AdamWConfig};
//! let mut opt = AdamW::new(AdamWConfig::default())?;
//! opt.zero_grad(vs);
//! loss.backward();
//! let norm = opt.clip_grad_norm(vs, 1.0)?;
//! if norm.is_finite() {
//!     opt.step(vs)?;
//! }
//! # Ok(()) }
//! ```
//!
//! Variables must be `f32` (or `f64`): they are the master weights; bf16
//! autocast only changes the kind of activations. Gradients of another kind are
//! converted to the variable's kind.
//!
//! Skipped variables: one pretext task is sampled per step, so the heads of the
//! other tasks take no part in a step's backward pass. As in PyTorch (whose
//! `zero_grad` sets gradients to `None`), such variables are not updated (no
//! moment decay, no weight decay, their step count stays). libtorch keeps a
//! zeroed gradient tensor instead of `None`, so [`AdamW::zero_grad`] remembers
//! each gradient's storage and version counter; a gradient that backward did
//! not write to since then counts as absent. Gradients must therefore be
//! cleared with [`AdamW::zero_grad`] and clipped with
//! [`AdamW::clip_grad_norm`]; other in-place changes to a gradient count as a
//! backward pass.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use tch::{nn, Kind, TchError, Tensor};

/// Errors of the optimiser; those about saved state name the tensor.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error("invalid optimiser config: {0}")]
    Config(String),
    #[error("the optimiser state has no tensor `{0}`")]
    MissingKey(String),
    #[error("the optimiser state tensor `{0}` belongs to no trainable variable of the model")]
    UnexpectedKey(String),
    #[error("the optimiser state tensor `{key}` has shape {found:?}, the variable has {expected:?}")]
    Shape { key: String, expected: Vec<i64>, found: Vec<i64> },
    #[error("the optimiser state tensor `{key}` is invalid: {reason}")]
    Invalid { key: String, reason: String },
    #[error("optimiser update of `{name}`: {source}")]
    Tensor {
        name: String,
        #[source]
        source: TchError,
    },
}

/// The learning rate over training: linear warm-up over `warmup_steps`, then
/// the base rate multiplied by `decay_factor` once for each entry of
/// `decay_steps` already reached (the paper's "warm-up then step decay").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LrSchedule {
    /// Number of warm-up updates; 0 disables warm-up.
    pub warmup_steps: u64,
    /// Update indices (0-based) from which the rate is multiplied by `decay_factor` once more.
    pub decay_steps: Vec<u64>,
    pub decay_factor: f64,
}

impl Default for LrSchedule {
    fn default() -> Self {
        LrSchedule { warmup_steps: 0, decay_steps: Vec::new(), decay_factor: 0.1 }
    }
}

impl LrSchedule {
    /// The rate of the update with 0-based index `step` (the number of updates
    /// already applied). During warm-up it is `base · (step + 1) / warmup_steps`,
    /// so the first update is not wasted and update `warmup_steps - 1` reaches
    /// `base`; afterwards `base · decay_factor^k`, with `k` the number of
    /// `decay_steps` entries `≤ step`.
    pub fn lr_at(&self, base: f64, step: u64) -> f64 {
        let warm = if step < self.warmup_steps { (step + 1) as f64 / self.warmup_steps as f64 } else { 1.0 };
        let decays = self.decay_steps.iter().filter(|&&d| step >= d).count();
        base * warm * self.decay_factor.powi(decays as i32)
    }

    fn validate(&self) -> Result<(), OptimError> {
        if !(self.decay_factor.is_finite() && self.decay_factor > 0.0) {
            return Err(OptimError::Config(format!("schedule.decay_factor must be positive, not {}", self.decay_factor)));
        }
        Ok(())
    }
}

/// A learning-rate multiplier for the variables whose names start with `prefix`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrRule {
    pub prefix: String,
    pub multiplier: f64,
}

impl LrRule {
    pub fn new(prefix: impl Into<String>, multiplier: f64) -> Self {
        LrRule { prefix: prefix.into(), multiplier }
    }
}

/// How each trainable variable is optimised, decided by its name in the
/// variable store: the learning-rate multiplier of the first rule whose prefix
/// starts the name (1 when none does); weight decay on all variables except
/// biases and LayerNorm weights (names ending in `.bias` or containing
/// `LayerNorm` or `layer_norm`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParamGroups {
    pub lr_rules: Vec<LrRule>,
}

impl Default for ParamGroups {
    fn default() -> Self {
        ParamGroups::paper()
    }
}

impl ParamGroups {
    /// No multipliers: every variable at the base rate.
    pub fn uniform() -> Self {
        ParamGroups { lr_rules: Vec::new() }
    }

    /// The paper's: ×20 for the image encoder, the visual projection and the
    /// task heads, ×1 for BERT (and the embedding scale), with the names of
    /// `model::fashionvil::FashionVil` built at the store's root.
    pub fn paper() -> Self {
        ParamGroups {
            lr_rules: vec![LrRule::new("image_encoder.", 20.0), LrRule::new("visual_projection.", 20.0), LrRule::new("heads.", 20.0)],
        }
    }

    /// The learning-rate multiplier of the variable `name`.
    pub fn lr_multiplier(&self, name: &str) -> f64 {
        self.lr_rules.iter().find(|r| name.starts_with(&r.prefix)).map_or(1.0, |r| r.multiplier)
    }

    /// Whether weight decay applies to the variable `name`.
    pub fn applies_weight_decay(name: &str) -> bool {
        !(name.ends_with(".bias") || name == "bias" || name.contains("LayerNorm") || name.contains("layer_norm"))
    }

    /// The weight decay of the variable `name` given the optimiser's.
    pub fn weight_decay(&self, name: &str, weight_decay: f64) -> f64 {
        if Self::applies_weight_decay(name) {
            weight_decay
        } else {
            0.0
        }
    }

    fn validate(&self) -> Result<(), OptimError> {
        for r in &self.lr_rules {
            if !(r.multiplier.is_finite() && r.multiplier >= 0.0) {
                return Err(OptimError::Config(format!("lr multiplier of `{}` must be finite and ≥ 0, not {}", r.prefix, r.multiplier)));
            }
        }
        Ok(())
    }
}

/// AdamW's settings (PyTorch's defaults but the paper's weight decay and base
/// rate), its schedule and parameter groups: the `optimizer` section of a
/// training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// Base learning rate (before schedule and group multipliers).
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    /// Decoupled weight decay: each update first scales a variable by `1 - lr·wd`.
    pub weight_decay: f64,
    pub schedule: LrSchedule,
    pub groups: ParamGroups,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-5,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-4,
            schedule: LrSchedule::default(),
            groups: ParamGroups::paper(),
        }
    }
}

impl AdamWConfig {
    pub fn validate(&self) -> Result<(), OptimError> {
        let (b1, b2) = self.betas;
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return Err(OptimError::Config(format!("lr must be finite and ≥ 0, not {}", self.lr)));
        }
        if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
            return Err(OptimError::Config(format!("betas must lie in [0, 1), not ({b1}, {b2})")));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(OptimError::Config(format!("eps must be positive, not {}", self.eps)));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(OptimError::Config(format!("weight_decay must be finite and ≥ 0, not {}", self.weight_decay)));
        }
        self.schedule.validate()?;
        self.groups.validate()
    }
}

/// The moments of one variable and the number of updates it has received.
#[derive(Debug)]
struct ParamState {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: u64,
}

/// AdamW (decoupled weight decay, bias-corrected moments) over the trainable
/// variables of a variable store, identified by name.
#[derive(Debug)]
pub struct AdamW {
    config: AdamWConfig,
    /// Number of updates applied (drives the schedule).
    step: u64,
    state: BTreeMap<String, ParamState>,
    /// Storage and version of each gradient right after `zero_grad`.
    cleared: HashMap<String, (usize, i64)>,
}

/// The trainable variables of `vs` (those that require grad), sorted by name.
pub fn trainable_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

fn grad_id(grad: &Tensor) -> Result<(usize, i64), TchError> {
    Ok((grad.data_ptr() as usize, grad.f_internal_version()?))
}

fn tensor_err(name: &str) -> impl FnOnce(TchError) -> OptimError + '_ {
    move |source| OptimError::Tensor { name: name.to_string(), source }
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Result<Self, OptimError> {
        config.validate()?;
        Ok(AdamW { config, step: 0, state: BTreeMap::new(), cleared: HashMap::new() })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Number of updates applied so far (restored by [`AdamW::load_state`]).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The scheduled base rate of the next update (before group multipliers).
    pub fn lr(&self) -> f64 {
        self.config.schedule.lr_at(self.config.lr, self.step)
    }

    /// Zeroes the gradients of the trainable variables and remembers them, so
    /// that [`AdamW::step`] skips those the next backward pass does not reach.
    pub fn zero_grad(&mut self, vs: &nn::VarStore) {
        self.cleared.clear();
        for (name, var) in trainable_variables(vs) {
            let mut grad = var.grad();
            if grad.defined() {
                let _ = grad.detach_().zero_();
                if let Ok(id) = grad_id(&grad) {
                    self.cleared.insert(name, id);
                }
            }
        }
    }

    /// The gradient of `var` if backward wrote one since the last `zero_grad`.
    fn fresh_grad(&self, name: &str, var: &Tensor) -> Option<Tensor> {
        let grad = var.grad();
        if !grad.defined() {
            return None;
        }
        match (self.cleared.get(name), grad_id(&grad)) {
            (Some(cleared), Ok(now)) if *cleared == now => None,
            _ => Some(grad),
        }
    }

    /// Scales the gradients so that their global L2 norm is at most
    /// `max_norm` (as PyTorch's `clip_grad_norm_`: by `max_norm / (norm + 1e-6)`
    /// when the norm exceeds `max_norm`) and returns the norm before clipping.
    /// A non-finite norm is returned as is and nothing is scaled: the caller
    /// should then skip the update.
    pub fn clip_grad_norm(&mut self, vs: &nn::VarStore, max_norm: f64) -> Result<f64, OptimError> {
        let grads: Vec<(String, Tensor)> =
            trainable_variables(vs).into_iter().filter_map(|(name, var)| self.fresh_grad(&name, &var).map(|g| (name, g))).collect();
        if grads.is_empty() {
            return Ok(0.0);
        }
        let total = tch::no_grad(|| -> Result<f64, OptimError> {
            let mut squares = Vec::with_capacity(grads.len());
            for (name, g) in &grads {
                let n =
                    g.f_to_kind(Kind::Double).and_then(|g| g.f_square()).and_then(|s| s.f_sum(Kind::Double)).map_err(tensor_err(name))?;
                // Kept on the gradients' device: one transfer for the total, not one per variable.
                let n = if n.device() == grads[0].1.device() { n } else { n.f_to_device(grads[0].1.device()).map_err(tensor_err(name))? };
                squares.push(n);
            }
            let total = Tensor::f_stack(&squares, 0).and_then(|s| s.f_sum(Kind::Double)).map_err(tensor_err("gradient norm"))?;
            Ok(total.f_double_value(&[]).map_err(tensor_err("gradient norm"))?.sqrt())
        })?;
        if total.is_finite() && total > max_norm {
            let coef = max_norm / (total + 1e-6);
            tch::no_grad(|| -> Result<(), OptimError> {
                for (name, g) in &grads {
                    let _ = g.shallow_clone().f_mul_scalar_(coef).map_err(tensor_err(name))?;
                }
                Ok(())
            })?;
        }
        Ok(total)
    }

    /// Applies one AdamW update to every trainable variable that has a
    /// gradient (see the module's notes on skipped variables), at the
    /// scheduled rate times the variable's group multiplier.
    pub fn step(&mut self, vs: &nn::VarStore) -> Result<(), OptimError> {
        let lr = self.lr();
        let (b1, b2) = self.config.betas;
        let eps = self.config.eps;
        let vars = trainable_variables(vs);
        let updates: Vec<(String, Tensor, Tensor)> =
            vars.into_iter().filter_map(|(name, var)| self.fresh_grad(&name, &var).map(|g| (name, var, g))).collect();
        tch::no_grad(|| -> Result<(), OptimError> {
            for (name, var, grad) in updates {
                let lr_v = lr * self.config.groups.lr_multiplier(&name);
                let wd_v = self.config.groups.weight_decay(&name, self.config.weight_decay);
                let err = tensor_err(&name);
                let result = (|| -> Result<(), TchError> {
                    let grad = if grad.kind() == var.kind() { grad } else { grad.f_to_kind(var.kind())? };
                    let st = match self.state.get_mut(&name) {
                        Some(st) => st,
                        None => {
                            let st = ParamState { exp_avg: var.f_zeros_like()?, exp_avg_sq: var.f_zeros_like()?, step: 0 };
                            self.state.entry(name.clone()).or_insert(st)
                        }
                    };
                    if st.exp_avg.device() != var.device() {
                        st.exp_avg = st.exp_avg.f_to_device(var.device())?;
                        st.exp_avg_sq = st.exp_avg_sq.f_to_device(var.device())?;
                    }
                    st.step += 1;
                    let t = st.step as f64;
                    let mut p = var.shallow_clone();
                    if wd_v != 0.0 && lr_v != 0.0 {
                        let _ = p.f_mul_scalar_(1.0 - lr_v * wd_v)?;
                    }
                    // m ← β1·m + (1-β1)·g ; v ← β2·v + (1-β2)·g²
                    let _ = st.exp_avg.f_mul_scalar_(b1)?;
                    let _ = st.exp_avg.f_add_(&grad.f_mul_scalar(1.0 - b1)?)?;
                    let _ = st.exp_avg_sq.f_mul_scalar_(b2)?;
                    let _ = st.exp_avg_sq.f_add_(&grad.f_square()?.f_mul_scalar_(1.0 - b2)?)?;
                    // p ← p - lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + ε)
                    let bc1 = 1.0 - b1.powf(t);
                    let bc2 = 1.0 - b2.powf(t);
                    let denom = st.exp_avg_sq.f_sqrt()?.f_div_scalar_(bc2.sqrt())?.f_add_scalar_(eps)?;
                    let update = st.exp_avg.f_div(&denom)?.f_mul_scalar_(lr_v / bc1)?;
                    let _ = p.f_sub_(&update)?;
                    Ok(())
                })();
                result.map_err(err)?;
            }
            Ok(())
        })?;
        self.step += 1;
        Ok(())
    }

    /// The whole state as named tensors (on the variables' device): `step`
    /// (the global update count, int64 `[1]`) and, for every variable updated
    /// at least once, `exp_avg.{var}`, `exp_avg_sq.{var}` and `step.{var}`
    /// (int64 `[1]`).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(1 + 3 * self.state.len());
        out.push(("step".to_string(), Tensor::from_slice(&[self.step as i64])));
        for (name, st) in &self.state {
            out.push((format!("exp_avg.{name}"), st.exp_avg.shallow_clone()));
            out.push((format!("exp_avg_sq.{name}"), st.exp_avg_sq.shallow_clone()));
            out.push((format!("step.{name}"), Tensor::from_slice(&[st.step as i64])));
        }
        out
    }

    /// Replaces the state by one from [`AdamW::state_tensors`], checked
    /// against the trainable variables of `vs` (names, shapes) and moved to
    /// their device and kind. On error the optimiser is unchanged.
    pub fn load_state(&mut self, vs: &nn::VarStore, tensors: impl IntoIterator<Item = (String, Tensor)>) -> Result<(), OptimError> {
        let mut tensors: HashMap<String, Tensor> = tensors.into_iter().collect();
        let vars: HashMap<String, Tensor> = trainable_variables(vs).into_iter().collect();
        let global = tensors.remove("step").ok_or_else(|| OptimError::MissingKey("step".to_string()))?;
        let global = count_value("step", &global)?;
        let names: Vec<String> = tensors.keys().filter_map(|k| k.strip_prefix("exp_avg.")).map(str::to_string).collect();
        let mut state = BTreeMap::new();
        let mut used = HashSet::new();
        for name in names {
            let var = vars.get(&name).ok_or_else(|| OptimError::UnexpectedKey(format!("exp_avg.{name}")))?;
            let mut moments = Vec::with_capacity(2);
            for key in [format!("exp_avg.{name}"), format!("exp_avg_sq.{name}")] {
                let t = tensors.get(&key).ok_or_else(|| OptimError::MissingKey(key.clone()))?;
                if t.size() != var.size() {
                    return Err(OptimError::Shape { key, expected: var.size(), found: t.size() });
                }
                let t = t
                    .f_to_device(var.device())
                    .and_then(|t| t.f_to_kind(var.kind()))
                    .and_then(|t| t.f_contiguous())
                    .map_err(|source| OptimError::Tensor { name: key.clone(), source })?;
                // A copy, never sharing memory with the caller's tensor.
                let mut own = t.f_zeros_like().map_err(|source| OptimError::Tensor { name: key.clone(), source })?;
                own.f_copy_(&t).map_err(|source| OptimError::Tensor { name: key.clone(), source })?;
                moments.push(own);
                used.insert(key);
            }
            let step_key = format!("step.{name}");
            let step = count_value(&step_key, tensors.get(&step_key).ok_or_else(|| OptimError::MissingKey(step_key.clone()))?)?;
            used.insert(step_key);
            let exp_avg_sq = moments.pop().expect("two moments");
            let exp_avg = moments.pop().expect("two moments");
            state.insert(name, ParamState { exp_avg, exp_avg_sq, step });
        }
        let mut extra: Vec<&String> = tensors.keys().filter(|k| !used.contains(*k)).collect();
        extra.sort();
        if let Some(key) = extra.first() {
            return Err(OptimError::UnexpectedKey((*key).clone()));
        }
        self.step = global;
        self.state = state;
        self.cleared.clear();
        Ok(())
    }
}

/// Adds a variable named with dots (`a.b.weight`) to `vs`: for tests.
#[cfg(test)]
pub(crate) fn var_at(vs: &nn::VarStore, name: &str, value: Tensor, trainable: bool) -> Tensor {
    let mut parts: Vec<&str> = name.split('.').collect();
    let last = parts.pop().expect("a name");
    let path = parts.into_iter().fold(vs.root(), |p, part| p / part);
    path.add(last, value, trainable)
}

/// The value of an int64 `[1]` counter tensor.
fn count_value(key: &str, t: &Tensor) -> Result<u64, OptimError> {
    let invalid = |reason: String| OptimError::Invalid { key: key.to_string(), reason };
    if t.numel() != 1 || !matches!(t.kind(), Kind::Int64 | Kind::Int) {
        return Err(invalid(format!("expected one int64, found {:?} of shape {:?}", t.kind(), t.size())));
    }
    let v = t.f_int64_value(&[0]).or_else(|_| t.f_int64_value(&[])).map_err(|e| invalid(e.to_string()))?;
    u64::try_from(v).map_err(|_| invalid(format!("negative count {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn approx(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
    }

    /// Sets the gradient of `var` to `g` by a backward pass of `sum(var · g)`.
    fn set_grad(var: &Tensor, g: &[f32]) {
        let g = Tensor::from_slice(g).reshape(var.size());
        (var * g).sum(Kind::Float).backward();
    }

    #[test]
    fn one_step_matches_a_hand_computed_update() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = var_at(&vs, "w", Tensor::from_slice(&[1.0f32, -2.0]), true);
        let config = AdamWConfig {
            lr: 0.1,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.01,
            schedule: LrSchedule::default(),
            groups: ParamGroups::uniform(),
        };
        let mut opt = AdamW::new(config).unwrap();
        opt.zero_grad(&vs);
        set_grad(&w, &[0.5, -0.25]);
        opt.step(&vs).unwrap();
        // By hand, step t = 1, lr = 0.1, wd = 0.01:
        //   p ← p·(1 - 0.1·0.01) = p·0.999        → [0.999, -1.998]
        //   m = 0.1·g = [0.05, -0.025]; v = 0.001·g² = [0.00025, 0.0000625]
        //   m̂ = m / 0.1 = g; v̂ = v / 0.001 = g²; m̂ / (sqrt(v̂) + ε) = sign(g)·|g|/(|g| + 1e-8)
        //   p ← p - 0.1·[0.5/(0.5+1e-8), -0.25/(0.25+1e-8)]
        let expected = [0.999 - 0.1 * 0.5 / (0.5 + 1e-8), -1.998 + 0.1 * 0.25 / (0.25 + 1e-8)];
        let got = values(&w);
        for (g, e) in got.iter().zip(expected) {
            assert!(approx(*g, e, 1e-6), "{got:?} vs {expected:?}");
        }
        // A second step with another gradient: the moments now mix both.
        opt.zero_grad(&vs);
        set_grad(&w, &[-1.0, 0.5]);
        opt.step(&vs).unwrap();
        let (g1, g2) = ([0.5f64, -0.25], [-1.0f64, 0.5]);
        let mut p = expected;
        for i in 0..2 {
            p[i] *= 1.0 - 0.1 * 0.01;
            let m = 0.9 * (0.1 * g1[i]) + 0.1 * g2[i];
            let v = 0.999 * (0.001 * g1[i] * g1[i]) + 0.001 * g2[i] * g2[i];
            let (bc1, bc2) = (1.0 - 0.9f64.powi(2), 1.0 - 0.999f64.powi(2));
            p[i] -= 0.1 / bc1 * m / (v.sqrt() / bc2.sqrt() + 1e-8);
        }
        let got = values(&w);
        for (g, e) in got.iter().zip(p) {
            assert!(approx(*g, e, 1e-6), "{got:?} vs {p:?}");
        }
        assert_eq!(opt.step_count(), 2);
    }

    #[test]
    fn group_multiplier_and_no_decay_in_the_update() {
        let vs = nn::VarStore::new(Device::Cpu);
        let head = var_at(&vs, "heads.itm.bias", Tensor::from_slice(&[1.0f32]), true);
        let bert = var_at(&vs, "bert.encoder.weight", Tensor::from_slice(&[1.0f32]), true);
        let config = AdamWConfig { lr: 0.01, weight_decay: 0.5, groups: ParamGroups::paper(), ..AdamWConfig::default() };
        let mut opt = AdamW::new(config).unwrap();
        set_grad(&head, &[1.0]);
        set_grad(&bert, &[1.0]);
        opt.step(&vs).unwrap();
        // First step: normalised update ≈ 1 (g / (|g| + ε)).
        // Head: ×20 rate, bias so no decay: 1 - 0.2·1.
        assert!(approx(values(&head)[0], 1.0 - 0.2, 1e-6), "{:?}", values(&head));
        // BERT weight: ×1 rate, decayed: 1·(1 - 0.01·0.5) - 0.01.
        assert!(approx(values(&bert)[0], 1.0 - 0.005 - 0.01, 1e-6), "{:?}", values(&bert));
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        let s = LrSchedule { warmup_steps: 4, decay_steps: vec![10, 20], decay_factor: 0.1 };
        let base = 2e-4;
        let cases = [(0, 0.5e-4), (1, 1e-4), (3, 2e-4), (4, 2e-4), (9, 2e-4), (10, 2e-5), (19, 2e-5), (20, 2e-6), (1000, 2e-6)];
        for (step, lr) in cases {
            assert!(approx(s.lr_at(base, step), lr, 1e-12), "step {step}: {} vs {lr}", s.lr_at(base, step));
        }
        let constant = LrSchedule::default();
        assert_eq!(constant.lr_at(1e-5, 0), 1e-5);
        assert_eq!(constant.lr_at(1e-5, 123_456), 1e-5);
    }

    #[test]
    fn groups_give_multipliers_and_weight_decay() {
        let g = ParamGroups::paper();
        assert_eq!(g.lr_multiplier("image_encoder._blocks.0._depthwise_conv.weight"), 20.0);
        assert_eq!(g.lr_multiplier("visual_projection.weight"), 20.0);
        assert_eq!(g.lr_multiplier("heads.mlm.transform.dense.weight"), 20.0);
        assert_eq!(g.lr_multiplier("bert.encoder.layer.0.attention.self.query.weight"), 1.0);
        assert_eq!(g.lr_multiplier("embedding_scale"), 1.0);
        // The first matching rule wins.
        let ordered = ParamGroups { lr_rules: vec![LrRule::new("heads.itm.", 5.0), LrRule::new("heads.", 20.0)] };
        assert_eq!(ordered.lr_multiplier("heads.itm.weight"), 5.0);
        assert_eq!(ordered.lr_multiplier("heads.mpfc.weight"), 20.0);
        let wd = 1e-4;
        assert_eq!(g.weight_decay("bert.encoder.layer.0.output.dense.weight", wd), wd);
        assert_eq!(g.weight_decay("bert.encoder.layer.0.output.dense.bias", wd), 0.0);
        assert_eq!(g.weight_decay("bert.embeddings.LayerNorm.weight", wd), 0.0);
        assert_eq!(g.weight_decay("heads.mlm.transform.layer_norm.weight", wd), 0.0);
        assert_eq!(g.weight_decay("visual_projection.weight", wd), wd);
        // Serde round trip of the whole config.
        let config = AdamWConfig::default();
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<AdamWConfig>(&json).unwrap(), config);
        let partial: AdamWConfig = serde_json::from_str(r#"{"lr": 2e-5, "schedule": {"warmup_steps": 100}}"#).unwrap();
        assert_eq!((partial.lr, partial.schedule.warmup_steps, partial.weight_decay), (2e-5, 100, 1e-4));
        assert!(AdamW::new(AdamWConfig { betas: (1.0, 0.999), ..AdamWConfig::default() }).is_err());
    }

    #[test]
    fn clipping_scales_the_global_norm() {
        let vs = nn::VarStore::new(Device::Cpu);
        let a = var_at(&vs, "a", Tensor::from_slice(&[0.0f32, 0.0]), true);
        let b = var_at(&vs, "b", Tensor::from_slice(&[0.0f32]), true);
        let mut opt = AdamW::new(AdamWConfig::default()).unwrap();
        set_grad(&a, &[3.0, 4.0]);
        set_grad(&b, &[12.0]);
        // Global norm sqrt(9 + 16 + 144) = 13.
        let norm = opt.clip_grad_norm(&vs, 6.5).unwrap();
        assert!(approx(norm, 13.0, 1e-7), "{norm}");
        let (ga, gb) = (values(&a.grad()), values(&b.grad()));
        let after = (ga.iter().chain(&gb).map(|x| x * x).sum::<f64>()).sqrt();
        assert!(approx(after, 6.5, 1e-6), "{after}");
        assert!(approx(ga[0], 1.5, 1e-6) && approx(ga[1], 2.0, 1e-6) && approx(gb[0], 6.0, 1e-6), "{ga:?} {gb:?}");
        // Under the limit nothing changes.
        let norm = opt.clip_grad_norm(&vs, 100.0).unwrap();
        assert!(approx(norm, 6.5, 1e-6));
        assert!(approx(values(&b.grad())[0], 6.0, 1e-6));
    }

    #[test]
    fn variables_without_a_fresh_gradient_are_skipped() {
        let vs = nn::VarStore::new(Device::Cpu);
        let used = var_at(&vs, "used.weight", Tensor::from_slice(&[1.0f32]), true);
        let unused = var_at(&vs, "unused.weight", Tensor::from_slice(&[1.0f32]), true);
        let never = var_at(&vs, "never.weight", Tensor::from_slice(&[1.0f32]), true);
        let frozen = var_at(&vs, "frozen", Tensor::from_slice(&[1.0f32]), false);
        let mut opt = AdamW::new(AdamWConfig { lr: 0.1, groups: ParamGroups::uniform(), ..AdamWConfig::default() }).unwrap();
        // Step 1: both get a gradient.
        opt.zero_grad(&vs);
        set_grad(&used, &[1.0]);
        set_grad(&unused, &[1.0]);
        opt.step(&vs).unwrap();
        let unused_after_1 = values(&unused)[0];
        // Step 2: only `used` takes part in backward; `unused` keeps a zeroed gradient tensor.
        opt.zero_grad(&vs);
        set_grad(&used, &[1.0]);
        assert!(unused.grad().defined());
        opt.clip_grad_norm(&vs, 0.5).unwrap();
        opt.step(&vs).unwrap();
        assert_eq!(values(&unused)[0], unused_after_1, "a variable outside backward must not move");
        assert_eq!(values(&never)[0], 1.0);
        assert_eq!(values(&frozen)[0], 1.0);
        let names: Vec<String> = opt.state_tensors().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "step",
                "exp_avg.unused.weight",
                "exp_avg_sq.unused.weight",
                "step.unused.weight",
                "exp_avg.used.weight",
                "exp_avg_sq.used.weight",
                "step.used.weight"
            ]
        );
        let steps: HashMap<String, i64> =
            opt.state_tensors().into_iter().filter(|(n, _)| n.starts_with("step")).map(|(n, t)| (n, t.int64_value(&[0]))).collect();
        assert_eq!((steps["step"], steps["step.used.weight"], steps["step.unused.weight"]), (2, 2, 1));
    }

    #[test]
    fn state_round_trips_and_errors_name_the_key() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = var_at(&vs, "layer.weight", Tensor::from_slice(&[1.0f32, 2.0, 3.0]), true);
        let mut opt = AdamW::new(AdamWConfig::default()).unwrap();
        for _ in 0..3 {
            opt.zero_grad(&vs);
            set_grad(&w, &[0.1, -0.2, 0.3]);
            opt.step(&vs).unwrap();
        }
        let saved = opt.state_tensors();
        let mut restored = AdamW::new(AdamWConfig::default()).unwrap();
        restored.load_state(&vs, saved.iter().map(|(n, t)| (n.clone(), t.copy()))).unwrap();
        assert_eq!(restored.step_count(), 3);
        for ((n1, t1), (n2, t2)) in saved.iter().zip(restored.state_tensors()) {
            assert_eq!(n1, &n2);
            assert!(t1.equal(&t2), "{n1}");
        }
        let without = |key: &str| saved.iter().filter(|(n, _)| n != key).map(|(n, t)| (n.clone(), t.copy())).collect::<Vec<_>>();
        let err = restored.load_state(&vs, without("exp_avg_sq.layer.weight")).unwrap_err();
        assert!(err.to_string().contains("exp_avg_sq.layer.weight"), "{err}");
        let err = restored.load_state(&vs, without("step")).unwrap_err();
        assert!(matches!(&err, OptimError::MissingKey(k) if k == "step"), "{err}");
        let mut wrong = without("");
        wrong.push(("exp_avg.other.weight".into(), Tensor::zeros([3], (Kind::Float, Device::Cpu))));
        let err = restored.load_state(&vs, wrong).unwrap_err();
        assert!(err.to_string().contains("exp_avg.other.weight"), "{err}");
        let mut shaped = without("exp_avg.layer.weight");
        shaped.push(("exp_avg.layer.weight".into(), Tensor::zeros([2], (Kind::Float, Device::Cpu))));
        let err = restored.load_state(&vs, shaped).unwrap_err();
        assert!(matches!(&err, OptimError::Shape { key, .. } if key == "exp_avg.layer.weight"), "{err}");
        // The failed loads left the good state in place.
        assert_eq!(restored.step_count(), 3);
    }
}
