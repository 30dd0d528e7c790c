//! Random clustered unit vectors, the stand-in for real embeddings in the
//! index's tests and benchmarks: product embeddings bunch around categories
//! and styles, which uniform random vectors would not show.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Clusters around random unit centres in `dim` dimensions.
#[derive(Debug, Clone)]
pub struct Clusters {
    dim: usize,
    centres: Vec<Vec<f32>>,
    spread: f32,
}

impl Clusters {
    /// `count` centres drawn with `seed`; a sample is its centre plus Gaussian
    /// noise of norm about `spread`, normalised.
    pub fn new(dim: usize, count: usize, spread: f32, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let centres = (0..count.max(1)).map(|_| unit(gaussian(&mut rng, dim, 1.0))).collect();
        Clusters { dim, centres, spread }
    }

    /// `n` samples (row after row) from clusters chosen uniformly, and the
    /// cluster of each.
    pub fn sample(&self, n: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut vectors = Vec::with_capacity(n * self.dim);
        let mut labels = Vec::with_capacity(n);
        let sigma = self.spread / (self.dim as f32).sqrt();
        for _ in 0..n {
            let cluster = rng.gen_range(0..self.centres.len());
            let noise = gaussian(&mut rng, self.dim, sigma);
            vectors.extend(unit(self.centres[cluster].iter().zip(noise).map(|(c, e)| c + e).collect()));
            labels.push(cluster);
        }
        (vectors, labels)
    }
}

/// `dim` normal values of standard deviation `sigma` (Box–Muller).
fn gaussian(rng: &mut ChaCha8Rng, dim: usize, sigma: f32) -> Vec<f32> {
    (0..dim)
        .map(|_| {
            let u: f32 = rng.gen_range(f32::EPSILON..1.0);
            let v: f32 = rng.gen();
            sigma * (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect()
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}
