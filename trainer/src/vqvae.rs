//! The frozen image tokenizer of the MPFC task: a VQ-VAE with an EMA codebook
//! (the paper's: 1024 codes of 256 dimensions, a 7×7 grid of codes at 224 px),
//! trained on the catalog's photos by `vitrine-train vqvae`.
//!
//! The encoder halves the resolution five times (224 → 7), so each code covers
//! the same 32×32 patch as one visual token of the image encoder; MPFC predicts
//! the codes of masked patches.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

pub const WEIGHTS_FILE: &str = "vqvae.safetensors";
pub const CONFIG_FILE: &str = "vqvae.json";

/// A tokenizer file that cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[error("image tokenizer {}: {reason} (train one with `vitrine-train vqvae`)", path.display())]
pub struct VqVaeError {
    pub path: PathBuf,
    pub reason: String,
}

impl VqVaeError {
    fn new(path: &Path, reason: impl std::fmt::Display) -> Self {
        VqVaeError { path: path.to_path_buf(), reason: reason.to_string() }
    }
}

/// Shape and training constants of the tokenizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VqVaeConfig {
    /// Channels after each stride-2 stage of the encoder (5 stages: 224 → 7).
    pub channels: Vec<i64>,
    pub code_dim: i64,
    pub codebook_size: i64,
    /// EMA decay of the codebook statistics.
    pub decay: f64,
    /// Weight of the commitment loss.
    pub commitment: f64,
    /// A code no vector chose for about this many steps is restarted.
    #[serde(default = "default_dead_after_steps")]
    pub dead_after_steps: u32,
}

fn default_dead_after_steps() -> u32 {
    20
}

impl Default for VqVaeConfig {
    fn default() -> Self {
        VqVaeConfig {
            channels: vec![32, 64, 128, 256, 256],
            code_dim: 256,
            codebook_size: 1024,
            decay: 0.99,
            commitment: 0.25,
            dead_after_steps: default_dead_after_steps(),
        }
    }
}

/// Stride-2 convolutions down to the code grid.
#[derive(Debug)]
struct Encoder {
    convs: Vec<nn::Conv2D>,
    to_code: nn::Conv2D,
}

impl Encoder {
    fn new(vs: nn::Path, config: &VqVaeConfig) -> Self {
        let down = nn::ConvConfig { stride: 2, padding: 1, ..Default::default() };
        let mut convs = Vec::new();
        let mut in_channels = 3;
        for (i, &c) in config.channels.iter().enumerate() {
            convs.push(nn::conv2d(&vs / "convs" / i, in_channels, c, 4, down));
            in_channels = c;
        }
        let to_code = nn::conv2d(&vs / "to_code", in_channels, config.code_dim, 1, Default::default());
        Encoder { convs, to_code }
    }
}

impl Module for Encoder {
    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.convs.iter().fold(x.shallow_clone(), |h, conv| conv.forward(&h).leaky_relu());
        self.to_code.forward(&h)
    }
}

/// Transposed convolutions back to the image.
#[derive(Debug)]
struct Decoder {
    from_code: nn::Conv2D,
    deconvs: Vec<nn::ConvTranspose2D>,
}

impl Decoder {
    fn new(vs: nn::Path, config: &VqVaeConfig) -> Self {
        let up = nn::ConvTransposeConfig { stride: 2, padding: 1, ..Default::default() };
        let reversed: Vec<i64> = config.channels.iter().rev().copied().collect();
        let from_code = nn::conv2d(&vs / "from_code", config.code_dim, reversed[0], 1, Default::default());
        let mut deconvs = Vec::new();
        for i in 0..reversed.len() {
            let out = reversed.get(i + 1).copied().unwrap_or(3);
            deconvs.push(nn::conv_transpose2d(&vs / "deconvs" / i, reversed[i], out, 4, up));
        }
        Decoder { from_code, deconvs }
    }
}

impl Module for Decoder {
    fn forward(&self, z: &Tensor) -> Tensor {
        let last = self.deconvs.len() - 1;
        self.deconvs.iter().enumerate().fold(self.from_code.forward(z).leaky_relu(), |h, (i, deconv)| {
            let h = deconv.forward(&h);
            if i == last {
                h
            } else {
                h.leaky_relu()
            }
        })
    }
}

/// The codebook, updated by exponential moving averages rather than gradients.
#[derive(Debug)]
struct EmaCodebook {
    embeddings: Tensor,
    cluster_size: Tensor,
    embedding_sum: Tensor,
    /// 0 until the first update has placed the codes on encoder outputs.
    initialised: Tensor,
    decay: f64,
    /// Codes whose usage average falls below this are dead: one use decays
    /// to it after `dead_after_steps` steps without another.
    dead_below: f64,
}

impl EmaCodebook {
    fn new(vs: nn::Path, config: &VqVaeConfig) -> Self {
        let (k, d) = (config.codebook_size, config.code_dim);
        let embeddings = vs.var("embeddings", &[k, d], nn::Init::Randn { mean: 0.0, stdev: 1.0 });
        let embeddings = embeddings.set_requires_grad(false);
        // Each code starts as if chosen once (an EMA weight of 1 - decay), so a
        // code nobody chooses is dead after `dead_after_steps`.
        let fresh_weight = 1.0 - config.decay;
        let mut cluster_size = vs.zeros_no_train("cluster_size", &[k]);
        let mut embedding_sum = vs.zeros_no_train("embedding_sum", &[k, d]);
        tch::no_grad(|| {
            let _ = cluster_size.fill_(fresh_weight);
            embedding_sum.copy_(&(&embeddings * fresh_weight));
        });
        let initialised = vs.zeros_no_train("initialised", &[]);
        let dead_below = config.decay.powi(config.dead_after_steps as i32) * (1.0 - config.decay);
        EmaCodebook { embeddings, cluster_size, embedding_sum, initialised, decay: config.decay, dead_below }
    }

    /// Squared distance of each row of `z` to each code: [N, D] → [N, K].
    fn distances(&self, z: &Tensor) -> Tensor {
        z.pow_tensor_scalar(2).sum_dim_intlist(1, true, Kind::Float) - z.matmul(&self.embeddings.tr()) * 2.0
            + self.embeddings.pow_tensor_scalar(2).sum_dim_intlist(1, false, Kind::Float).unsqueeze(0)
    }

    /// Index of the nearest code for each row of `z` ([N, D] → [N]).
    fn nearest(&self, z: &Tensor) -> Tensor {
        self.distances(z).argmin(1, false)
    }

    /// Places `codes` (indices) on the distinct vectors of `z` that the
    /// codebook fits worst: deterministic, unlike a random restart, and
    /// distinct, so flat regions such as a white background do not put many
    /// codes on one vector.
    fn restart(&mut self, codes: &Tensor, z: &Tensor) {
        let candidates = z.unique_dim(0, false, false, false).0;
        let worst_fit = self.distances(&candidates).min_dim(1, false).0;
        let (_, picks) = worst_fit.topk(codes.size()[0].min(candidates.size()[0]), 0, true, false);
        let codes = codes.narrow(0, 0, picks.size()[0]);
        let fresh = candidates.index_select(0, &picks);
        let weight = 1.0 - self.decay;
        let _ = self.embeddings.index_copy_(0, &codes, &fresh);
        let _ = self.embedding_sum.index_copy_(0, &codes, &(&fresh * weight));
        let _ = self.cluster_size.index_fill_(0, &codes, weight);
    }

    /// Moves the used codes towards the mean of the vectors assigned to them;
    /// codes no vector chose for a long time restart (see [`Self::restart`]).
    /// The first update places every code on the data, since random codes far
    /// from the encoder's outputs would all lose to one.
    fn update(&mut self, z: &Tensor, codes: &Tensor) {
        tch::no_grad(|| {
            if self.initialised.double_value(&[]) == 0.0 {
                let all = Tensor::arange(self.embeddings.size()[0], (Kind::Int64, z.device()));
                self.restart(&all, z);
                let _ = self.initialised.fill_(1.0);
                return;
            }
            let k = self.embeddings.size()[0];
            let one_hot = codes.one_hot(k).to_kind(Kind::Float);
            let counts = one_hot.sum_dim_intlist(0, false, Kind::Float);
            let sums = one_hot.tr().matmul(z);
            let d = self.decay;
            let _ = self.cluster_size.g_mul_scalar_(d).g_add_(&(counts * (1.0 - d)));
            let _ = self.embedding_sum.g_mul_scalar_(d).g_add_(&(sums * (1.0 - d)));
            let n = self.cluster_size.sum(Kind::Float);
            let eps = 1e-5;
            let smoothed = (&self.cluster_size + eps) / (&n + k as f64 * eps) * &n;
            self.embeddings.copy_(&(&self.embedding_sum / smoothed.unsqueeze(1)));
            let dead = self.cluster_size.lt(self.dead_below).nonzero().squeeze_dim(1);
            if dead.size()[0] > 0 {
                self.restart(&dead, z);
            }
        });
    }
}

/// Output of one training forward pass.
pub struct VqVaeStep {
    pub loss: Tensor,
    pub reconstruction_loss: Tensor,
    /// Fraction of the codebook used in this batch.
    pub code_usage: f64,
}

/// The image tokenizer.
#[derive(Debug)]
pub struct VqVae {
    pub config: VqVaeConfig,
    /// FNV-1a of the weights file it was loaded from (0 when freshly built):
    /// names the caches of codes computed with it.
    fingerprint: u64,
    encoder: Encoder,
    codebook: EmaCodebook,
    decoder: Decoder,
}

impl VqVae {
    pub fn new(vs: &nn::Path, config: VqVaeConfig) -> Self {
        VqVae {
            encoder: Encoder::new(vs / "encoder", &config),
            codebook: EmaCodebook::new(vs / "codebook", &config),
            decoder: Decoder::new(vs / "decoder", &config),
            config,
            fingerprint: 0,
        }
    }

    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Loads a tokenizer saved by [`VqVae::save`] from `dir` into `vs`.
    pub fn load(vs: &mut nn::VarStore, dir: &Path) -> Result<VqVae, VqVaeError> {
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path).map_err(|e| VqVaeError::new(&config_path, e))?;
        let config: VqVaeConfig = serde_json::from_str(&text).map_err(|e| VqVaeError::new(&config_path, e))?;
        let mut model = VqVae::new(&vs.root(), config);
        let weights = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&weights).map_err(|e| VqVaeError::new(&weights, e))?;
        vs.load(&weights).map_err(|e| VqVaeError::new(&weights, e))?;
        model.fingerprint = vitrine_core::hash::fnv1a64(&bytes);
        Ok(model)
    }

    /// Saves the config and the weights into `dir`, each through a temporary
    /// file, the weights last: their file is what tells a finished tokenizer
    /// (the main job skips the stage when it is there), so a crash between the
    /// two leaves no half-saved tokenizer that looks done.
    pub fn save(&self, vs: &nn::VarStore, dir: &Path) -> Result<(), VqVaeError> {
        std::fs::create_dir_all(dir).map_err(|e| VqVaeError::new(dir, e))?;
        let config = dir.join(CONFIG_FILE);
        let tmp = dir.join("vqvae.json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&self.config).expect("config serialises"))
            .map_err(|e| VqVaeError::new(&config, e))?;
        std::fs::rename(&tmp, &config).map_err(|e| VqVaeError::new(&config, e))?;
        let weights = dir.join(WEIGHTS_FILE);
        let tmp = dir.join("vqvae.tmp.safetensors");
        vs.save(&tmp).map_err(|e| VqVaeError::new(&weights, e))?;
        std::fs::rename(&tmp, &weights).map_err(|e| VqVaeError::new(&weights, e))
    }

    /// Encoder output as rows: [B, D, h, w] → ([B·h·w, D], grid shape).
    fn encode_rows(&self, images: &Tensor) -> (Tensor, [i64; 4]) {
        let z = self.encoder.forward(images);
        let [b, d, h, w] = z.size4().expect("encoder output is 4-d").into();
        (z.permute([0, 2, 3, 1]).reshape([b * h * w, d]), [b, d, h, w])
    }

    /// The code of every patch: [B, 3, 224, 224] → [B, 49] (row-major 7×7 grid).
    pub fn encode(&self, images: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let (rows, [b, _, h, w]) = self.encode_rows(images);
            self.codebook.nearest(&rows).reshape([b, h * w])
        })
    }

    /// Reconstruction, commitment loss and the EMA codebook update.
    pub fn train_step(&mut self, images: &Tensor) -> VqVaeStep {
        let (rows, [b, d, h, w]) = self.encode_rows(images);
        let codes = tch::no_grad(|| self.codebook.nearest(&rows));
        let quantised = self.codebook.embeddings.index_select(0, &codes);
        let commitment = rows.mse_loss(&quantised, tch::Reduction::Mean);
        // Straight-through: the decoder's gradient flows into the encoder.
        let straight = &rows + (&quantised - &rows).detach();
        let grid = straight.reshape([b, h, w, d]).permute([0, 3, 1, 2]);
        let reconstruction_loss = self.decoder.forward(&grid).mse_loss(images, tch::Reduction::Mean);
        self.codebook.update(&rows.detach(), &codes);
        let used = codes.unique_dim(0, false, false, false).0.size()[0];
        VqVaeStep {
            loss: &reconstruction_loss + commitment * self.config.commitment,
            reconstruction_loss,
            code_usage: used as f64 / self.config.codebook_size as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> VqVaeConfig {
        VqVaeConfig { channels: vec![8, 8, 16, 16, 16], code_dim: 8, codebook_size: 16, decay: 0.9, commitment: 0.25, dead_after_steps: 20 }
    }

    #[test]
    fn codes_form_a_7x7_grid_at_224_px() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let vq = VqVae::new(&vs.root(), small());
        let codes = vq.encode(&Tensor::randn([2, 3, 224, 224], (Kind::Float, tch::Device::Cpu)));
        assert_eq!(codes.size(), [2, 49]);
        assert!(codes.min().int64_value(&[]) >= 0 && codes.max().int64_value(&[]) < 16);
    }

    /// Four fixed two-colour images: left half one colour, right half another
    /// (flat regions, like a product photo's background).
    fn two_colour_images() -> Tensor {
        let images = Tensor::zeros([4, 3, 224, 224], (Kind::Float, tch::Device::Cpu));
        for i in 0..4 {
            let _ = images.get(i).narrow(2, 0, 112).fill_(i as f64 * 0.5 - 0.75);
            let _ = images.get(i).narrow(2, 112, 112).fill_(0.75 - i as f64 * 0.4);
        }
        images
    }

    /// Fills every variable from a seeded RNG of this thread (uniform in
    /// ±1/√fan-in), so the test does not depend on libtorch's global generator,
    /// which tests running in parallel share.
    fn deterministic_init(vs: &nn::VarStore, seed: u64) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, mut var) in variables {
            let size = var.size();
            let fan_in = size.iter().skip(1).product::<i64>().max(1);
            let bound = 1.0 / (fan_in as f64).sqrt();
            let values: Vec<f32> = (0..var.numel()).map(|_| rng.gen_range(-bound..bound) as f32).collect();
            tch::no_grad(|| var.copy_(&Tensor::from_slice(&values).view(size.as_slice())));
        }
    }

    /// Trains 60 steps from the initialisation of `seed`; returns the first and
    /// last reconstruction losses.
    fn train_60_steps(seed: u64, vs: &nn::VarStore, vq: &mut VqVae, images: &Tensor) -> (f64, f64) {
        deterministic_init(vs, seed);
        let mut opt = nn::OptimizerConfig::build(nn::Adam::default(), vs, 3e-3).unwrap();
        let first = vq.train_step(images).reconstruction_loss.double_value(&[]);
        let mut last = first;
        for _ in 0..60 {
            let step = vq.train_step(images);
            opt.backward_step(&step.loss);
            last = step.reconstruction_loss.double_value(&[]);
        }
        (first, last)
    }

    #[test]
    fn training_lowers_the_reconstruction_loss() {
        let images = two_colour_images();
        // Several initialisations: none may get stuck at the mean image.
        for seed in 1..4 {
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let mut vq = VqVae::new(&vs.root(), small());
            let (first, last) = train_60_steps(seed, &vs, &mut vq, &images);
            assert!(last < first * 0.5, "seed {seed}: reconstruction loss {first} → {last}");
        }
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let mut vq = VqVae::new(&vs.root(), small());
        let (first, last) = train_60_steps(0, &vs, &mut vq, &images);
        assert!(last < first * 0.5, "reconstruction loss {first} → {last}");
        // Codes are deterministic for a given image, and survive save and load.
        let codes = vq.encode(&images);
        assert!(codes.equal(&vq.encode(&images)));
        let dir = tempfile::tempdir().unwrap();
        vq.save(&vs, dir.path()).unwrap();
        let mut loaded_vs = nn::VarStore::new(tch::Device::Cpu);
        let loaded = VqVae::load(&mut loaded_vs, dir.path()).unwrap();
        assert!(loaded.encode(&images).equal(&codes));
        assert_ne!(loaded.fingerprint(), 0);
        let weights = dir.path().join(WEIGHTS_FILE);
        let bytes = std::fs::read(&weights).unwrap();
        std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
        let message = VqVae::load(&mut nn::VarStore::new(tch::Device::Cpu), dir.path()).unwrap_err().to_string();
        assert!(message.contains("vqvae.safetensors"), "{message}");

        // A save that fails part-way leaves no weights file, the mark of a finished tokenizer.
        let failing = tempfile::tempdir().unwrap();
        std::fs::create_dir(failing.path().join("vqvae.json.tmp")).unwrap();
        assert!(vq.save(&vs, failing.path()).is_err());
        assert!(!failing.path().join(WEIGHTS_FILE).exists(), "weights saved before the config");
    }
}
