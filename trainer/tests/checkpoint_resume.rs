//! A run killed mid-way and resumed from its latest checkpoint ends exactly
//! where the uninterrupted run ends; damaged checkpoint files are reported by
//! name.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};
use vitrine_trainer::checkpoint::{self, Checkpointer, TrainerState};
use vitrine_trainer::optim::{AdamW, AdamWConfig, LrRule, LrSchedule, ParamGroups};

/// libtorch's RNG and thread count are global: one test at a time.
static TORCH: Mutex<()> = Mutex::new(());

const EXAMPLES: usize = 24;
const BATCH: usize = 4;
const STEPS: u64 = 20;
const EVERY: u64 = 5;
const SEED: u64 = 7;

struct Mlp {
    l1: nn::Linear,
    norm: nn::LayerNorm,
    head: nn::Linear,
}

impl Mlp {
    fn new(root: &nn::Path) -> Self {
        Mlp {
            l1: nn::linear(root / "l1", 6, 16, Default::default()),
            norm: nn::layer_norm(root / "l1" / "LayerNorm", vec![16], Default::default()),
            head: nn::linear(root / "heads" / "out", 16, 3, Default::default()),
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self.norm.forward(&self.l1.forward(x)).relu().dropout(0.2, train);
        self.head.forward(&h)
    }
}

/// Fixed synthetic data: 24 examples of 6 features, 3 classes.
fn data() -> (Tensor, Tensor) {
    let x = (Tensor::arange((EXAMPLES * 6) as i64, (Kind::Float, Device::Cpu)) * 0.37).sin().reshape([EXAMPLES as i64, 6]);
    let y = Tensor::arange(EXAMPLES as i64, (Kind::Int64, Device::Cpu)).remainder(3);
    (x, y)
}

/// The data order of an epoch, reproducible from the seed and the epoch.
fn order(epoch: u64) -> Vec<i64> {
    let mut idx: Vec<i64> = (0..EXAMPLES as i64).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(SEED.wrapping_mul(1_000_003).wrapping_add(epoch)));
    idx
}

fn config() -> AdamWConfig {
    AdamWConfig {
        lr: 0.02,
        weight_decay: 0.01,
        schedule: LrSchedule { warmup_steps: 4, decay_steps: vec![10, 15], decay_factor: 0.5 },
        groups: ParamGroups { lr_rules: vec![LrRule::new("heads.", 2.0)] },
        ..AdamWConfig::default()
    }
}

struct Run {
    vs: nn::VarStore,
    model: Mlp,
    opt: AdamW,
    state: TrainerState,
}

impl Run {
    fn new(init_seed: i64) -> Self {
        tch::manual_seed(init_seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Mlp::new(&vs.root());
        let mut state = TrainerState::default();
        state.rng.insert("data_order".into(), SEED);
        Run { vs, model, opt: AdamW::new(config()).unwrap(), state }
    }

    /// Trains until `until` updates are done, saving every `EVERY` steps.
    fn train(&mut self, ck: &Checkpointer, tokenizer: &Path, until: u64) {
        let (x, y) = data();
        let model_config = serde_json::json!({"layers": [6, 16, 3]});
        while self.state.step < until {
            let start = self.state.position as usize * BATCH;
            let idx = Tensor::from_slice(&order(self.state.epoch)[start..start + BATCH]);
            // Dropout masks reproducible per step.
            tch::manual_seed((SEED + self.state.step) as i64);
            self.opt.zero_grad(&self.vs);
            let logits = self.model.forward(&x.index_select(0, &idx), true);
            let loss = logits.cross_entropy_for_logits(&y.index_select(0, &idx));
            loss.backward();
            let norm = self.opt.clip_grad_norm(&self.vs, 1.5).unwrap();
            assert!(norm.is_finite());
            self.opt.step(&self.vs).unwrap();

            self.state.step += 1;
            self.state.position += 1;
            if self.state.position as usize * BATCH >= EXAMPLES {
                self.state.epoch += 1;
                self.state.position = 0;
            }
            self.state.loss_history.push((self.state.step, loss.double_value(&[])));
            if self.state.loss_history.len() > 8 {
                self.state.loss_history.remove(0);
            }
            if self.state.step.checked_rem(EVERY) == Some(0) {
                ck.save(self.state.step, &self.vs, &self.opt, &model_config, Some(tokenizer), &self.state).unwrap();
            }
        }
    }
}

fn tokenizer(dir: &Path) -> PathBuf {
    let path = dir.join("tokenizer.json");
    fs::write(&path, r#"{"version": "1.0", "model": {"type": "WordPiece"}}"#).unwrap();
    path
}

#[test]
fn resumed_run_matches_the_uninterrupted_one() {
    let _guard = TORCH.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let tok = tokenizer(tmp.path());

    // Uninterrupted.
    let dir_a = tmp.path().join("a");
    let mut a = Run::new(1);
    a.train(&Checkpointer::new(&dir_a, 2), &tok, STEPS);

    // Killed after step 12 (everything dropped, as kill -9 would), with a
    // half-written save of step 15 left behind.
    let dir_b = tmp.path().join("b");
    let ck_b = Checkpointer::new(&dir_b, 2);
    {
        let mut b = Run::new(1);
        b.train(&ck_b, &tok, 12);
    }
    let leftover = dir_b.join("step-000015.tmp-999");
    fs::create_dir(&leftover).unwrap();
    fs::write(leftover.join("model.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00{\"l1.weight\":").unwrap();

    // Resumed from `latest` in a fresh process state (another init, which the checkpoint overwrites).
    let latest = checkpoint::latest(&dir_b).unwrap().expect("a checkpoint");
    assert_eq!(latest, dir_b.join("step-000010"));
    let mut b = Run::new(12345);
    let state = checkpoint::load(&latest, &b.vs, &mut b.opt).unwrap();
    b.state = serde_json::from_value(state).unwrap();
    assert_eq!((b.state.step, b.state.epoch, b.state.position, b.opt.step_count()), (10, 1, 4, 10));
    b.train(&ck_b, &tok, STEPS);

    assert!(!leftover.exists(), "the next save removes a killed save's leftovers");
    let mut names: Vec<String> = fs::read_dir(&dir_b).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["latest", "step-000015", "step-000020"]);

    let (va, vb) = (a.vs.variables(), b.vs.variables());
    assert_eq!(va.len(), vb.len());
    for (name, ta) in &va {
        let tb = &vb[name];
        let diff = (ta - tb).abs().max().double_value(&[]);
        assert!(ta.equal(tb), "{name} differs after resuming (max |Δ| = {diff:e})");
    }
    assert_eq!(a.state, b.state, "trainer state (data position, loss history) after resuming");
    for (na, ta) in a.opt.state_tensors() {
        let tb = b.opt.state_tensors().into_iter().find(|(n, _)| *n == na).expect("same optimiser state").1;
        assert!(ta.equal(&tb), "optimiser state {na} differs after resuming");
    }
    // Both runs wrote the same final checkpoint, byte for byte.
    for file in ["model.safetensors", "optimizer.safetensors", "trainer_state.json", "config.json", "tokenizer.json"] {
        let (fa, fb) = (fs::read(dir_a.join("step-000020").join(file)).unwrap(), fs::read(dir_b.join("step-000020").join(file)).unwrap());
        assert!(fa == fb, "{file} differs between the runs");
    }
}

#[test]
fn truncated_model_file_is_reported_by_name() {
    let _guard = TORCH.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let tok = tokenizer(tmp.path());
    let run_dir = tmp.path().join("run");
    let mut run = Run::new(1);
    run.train(&Checkpointer::new(&run_dir, 0), &tok, EVERY);
    let dir = checkpoint::latest(&run_dir).unwrap().unwrap();
    let model = dir.join("model.safetensors");
    let full = fs::read(&model).unwrap();
    fs::write(&model, &full[..full.len() / 2]).unwrap();

    let mut fresh = Run::new(2);
    let before: Vec<f32> = Vec::try_from(&fresh.vs.variables()["l1.weight"].flatten(0, -1)).unwrap();
    let err = checkpoint::load(&dir, &fresh.vs, &mut fresh.opt).unwrap_err().to_string();
    assert!(err.contains(&model.display().to_string()) && err.contains("truncated"), "{err}");
    let after: Vec<f32> = Vec::try_from(&fresh.vs.variables()["l1.weight"].flatten(0, -1)).unwrap();
    assert_eq!(before, after, "a failed load changes nothing");
    assert_eq!(fresh.opt.step_count(), 0);

    // Even with a manifest that agrees with the truncated file, the
    // safetensors reader reports the file instead of panicking.
    let manifest_path = dir.join("manifest.json");
    let mut manifest: serde_json::Value = serde_json::from_slice(&fs::read(&manifest_path).unwrap()).unwrap();
    let half = &full[..full.len() / 2];
    let sha: String = Sha256::digest(half).iter().map(|b| format!("{b:02x}")).collect();
    manifest["files"]["model.safetensors"] = serde_json::json!({"bytes": half.len(), "sha256": sha});
    fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let err = checkpoint::load(&dir, &fresh.vs, &mut fresh.opt).unwrap_err().to_string();
    assert!(err.contains(&model.display().to_string()) && err.contains("safetensors"), "{err}");
    eprintln!("{err}");
}
