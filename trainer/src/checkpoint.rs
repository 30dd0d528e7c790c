//! Run checkpoints that survive a kill at any moment and resume exactly.
//!
//! A run folder holds checkpoint folders `step-000123/` (the step zero-padded
//! to six digits, more when larger), each with:
//!
//! - `model.safetensors`: every variable of the store (trainable or not, such
//!   as batch-norm statistics) under its name in the store (HF-style names);
//! - `optimizer.safetensors`: the [`AdamW`] state ([`AdamW::state_tensors`]);
//! - `config.json`: the model config the caller passes;
//! - `tokenizer.json`: a copy of the tokenizer, when the caller passes one;
//! - `trainer_state.json`: the caller's payload (step, epoch, position in the
//!   data order, seeds, loss history — e.g. a [`TrainerState`]);
//! - `manifest.json`: size and SHA-256 of each file above, written last.
//!
//! and a file `latest` naming the newest complete checkpoint (`step-000123`).
//!
//! Saving writes everything into `step-000123.tmp-<pid>/`, fsyncs each file and
//! the folder, then renames the folder into place and fsyncs the run folder; a
//! checkpoint folder without `.tmp-` in its name is therefore always complete.
//! `latest` is then replaced through a temporary file and a rename, and only
//! then are older checkpoints pruned to the last `keep`. Leftovers of a killed
//! save (`*.tmp-*`) are ignored by [`latest`] and removed by the next save. One
//! process at a time writes to a run folder.
//!
//! Loading checks the manifest (a truncated or altered file is reported by
//! name), reads and checks every tensor and the trainer state, and only then
//! changes the model and the optimiser.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{nn, Device, TchError, Tensor};

use crate::optim::{AdamW, OptimError};

pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TRAINER_STATE_FILE: &str = "trainer_state.json";
pub const MANIFEST_FILE: &str = "manifest.json";
/// The file of a run folder that names its newest complete checkpoint.
pub const LATEST_FILE: &str = "latest";

const MANIFEST_FORMAT: &str = "vitrine-checkpoint/1";

/// Errors of saving and loading checkpoints; each names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: {source}", path.display())]
    Tensors {
        path: PathBuf,
        #[source]
        source: TchError,
    },
    #[error("{} has no tensor `{key}` for the model", path.display())]
    MissingTensor { path: PathBuf, key: String },
    #[error("{} has a tensor `{key}` that the model does not have", path.display())]
    UnexpectedTensor { path: PathBuf, key: String },
    #[error("tensor `{key}` in {} has shape {found:?}, the model expects {expected:?}", path.display())]
    Shape { path: PathBuf, key: String, expected: Vec<i64>, found: Vec<i64> },
    #[error("{}: {source}", path.display())]
    Optimizer {
        path: PathBuf,
        #[source]
        source: OptimError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.to_path_buf(), source }
}

/// A common shape for `trainer_state.json`; [`Checkpointer::save`] takes any
/// serialisable payload and [`load`] returns it as JSON.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainerState {
    /// Optimiser updates done.
    pub step: u64,
    pub epoch: u64,
    /// Position in the epoch's data order (batches already consumed).
    pub position: u64,
    /// Seeds and RNG positions, by name (e.g. `data_order`, `task_sampler`).
    pub rng: BTreeMap<String, u64>,
    /// The most recent `(step, loss)` pairs.
    pub loss_history: Vec<(u64, f64)>,
    /// Anything else the trainer needs.
    pub extra: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    step: u64,
    files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileEntry {
    bytes: u64,
    sha256: String,
}

/// The folder name of the checkpoint of `step`.
pub fn checkpoint_name(step: u64) -> String {
    format!("step-{step:06}")
}

/// The step of a complete checkpoint's folder name (`step-000123` → 123);
/// `None` for other names, temporary folders included.
pub fn step_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Saves checkpoints into a run folder.
#[derive(Debug, Clone)]
pub struct Checkpointer {
    run_dir: PathBuf,
    keep: usize,
}

impl Checkpointer {
    /// Checkpoints in `run_dir` (created on the first save), keeping the
    /// `keep` most recent (0 keeps all).
    pub fn new(run_dir: impl Into<PathBuf>, keep: usize) -> Self {
        Checkpointer { run_dir: run_dir.into(), keep }
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The newest complete checkpoint of this run folder; see [`latest`].
    pub fn latest(&self) -> Result<Option<PathBuf>, CheckpointError> {
        latest(&self.run_dir)
    }

    /// Writes the checkpoint of `step` atomically and returns its folder.
    /// A checkpoint of the same step is replaced. Afterwards the checkpoints
    /// of earlier steps beyond the `keep - 1` most recent are deleted (those of
    /// later steps, left by a run resumed from an older checkpoint, stay).
    pub fn save(
        &self,
        step: u64,
        vs: &nn::VarStore,
        optimizer: &AdamW,
        config: &serde_json::Value,
        tokenizer: Option<&Path>,
        trainer_state: &impl Serialize,
    ) -> Result<PathBuf, CheckpointError> {
        let run_dir = &self.run_dir;
        fs::create_dir_all(run_dir).map_err(io_err(run_dir))?;
        remove_leftovers(run_dir)?;
        let name = checkpoint_name(step);
        let pid = std::process::id();
        let tmp = run_dir.join(format!("{name}.tmp-{pid}"));
        fs::create_dir(&tmp).map_err(io_err(&tmp))?;

        let mut files = BTreeMap::new();
        let model_path = tmp.join(MODEL_FILE);
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        write_tensors(&model_path, vars)?;
        files.insert(MODEL_FILE.to_string(), file_entry(&model_path)?);

        let optim_path = tmp.join(OPTIMIZER_FILE);
        write_tensors(&optim_path, optimizer.state_tensors())?;
        files.insert(OPTIMIZER_FILE.to_string(), file_entry(&optim_path)?);

        let config_path = tmp.join(CONFIG_FILE);
        write_json(&config_path, config)?;
        files.insert(CONFIG_FILE.to_string(), file_entry(&config_path)?);

        if let Some(src) = tokenizer {
            let dst = tmp.join(TOKENIZER_FILE);
            fs::copy(src, &dst).map_err(io_err(src))?;
            sync_file(&dst)?;
            files.insert(TOKENIZER_FILE.to_string(), file_entry(&dst)?);
        }

        let state_path = tmp.join(TRAINER_STATE_FILE);
        write_json(&state_path, trainer_state)?;
        files.insert(TRAINER_STATE_FILE.to_string(), file_entry(&state_path)?);

        let manifest = Manifest { format: MANIFEST_FORMAT.to_string(), step, files };
        write_json(&tmp.join(MANIFEST_FILE), &manifest)?;
        sync_dir(&tmp)?;

        let dir = run_dir.join(&name);
        if dir.exists() {
            // Renaming onto a non-empty folder fails: move the old one aside
            // first (under a temporary name that the next save cleans).
            let aside = run_dir.join(format!("{name}.tmp-{pid}-replaced"));
            fs::rename(&dir, &aside).map_err(io_err(&dir))?;
            fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
            fs::remove_dir_all(&aside).map_err(io_err(&aside))?;
        } else {
            fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
        }
        sync_dir(run_dir)?;

        let latest_tmp = run_dir.join(format!("{LATEST_FILE}.tmp-{pid}"));
        write_synced(&latest_tmp, format!("{name}\n").as_bytes())?;
        let latest_path = run_dir.join(LATEST_FILE);
        fs::rename(&latest_tmp, &latest_path).map_err(io_err(&latest_path))?;
        sync_dir(run_dir)?;

        if self.keep > 0 {
            let mut older: Vec<(u64, PathBuf)> = complete_checkpoints(run_dir)?.into_iter().filter(|(s, _)| *s < step).collect();
            older.sort();
            let excess = older.len().saturating_sub(self.keep - 1);
            for (_, path) in older.into_iter().take(excess) {
                fs::remove_dir_all(&path).map_err(io_err(&path))?;
            }
        }
        Ok(dir)
    }
}

/// The newest complete checkpoint of `run_dir`: the one `latest` names when
/// it is there and complete, otherwise the complete `step-*` folder of the
/// highest step; `None` when there is none (or no run folder). Temporary
/// folders of interrupted saves are never returned.
pub fn latest(run_dir: &Path) -> Result<Option<PathBuf>, CheckpointError> {
    if !run_dir.exists() {
        return Ok(None);
    }
    let latest_path = run_dir.join(LATEST_FILE);
    match fs::read_to_string(&latest_path) {
        Ok(text) => {
            let name = text.trim();
            if step_of(name).is_some() {
                let dir = run_dir.join(name);
                if dir.join(MANIFEST_FILE).is_file() {
                    return Ok(Some(dir));
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(CheckpointError::Io { path: latest_path, source: e }),
    }
    Ok(complete_checkpoints(run_dir)?.into_iter().max().map(|(_, dir)| dir))
}

/// The step of the checkpoint folder `dir` from its manifest.
pub fn checkpoint_step(dir: &Path) -> Result<u64, CheckpointError> {
    Ok(read_manifest(dir)?.step)
}

/// Restores a checkpoint into `vs` (every variable, which must all be in the
/// file with the same shapes) and `optimizer`, and returns the trainer state
/// (`trainer_state.json`). Every file is checked before anything changes; on
/// error the model and optimiser are unchanged.
pub fn load(dir: &Path, vs: &nn::VarStore, optimizer: &mut AdamW) -> Result<serde_json::Value, CheckpointError> {
    let manifest = verify_files(dir)?;
    let model_path = dir.join(MODEL_FILE);
    let pairs = checked_model_tensors(&model_path, vs)?;
    let optim_path = dir.join(OPTIMIZER_FILE);
    if !manifest.files.contains_key(OPTIMIZER_FILE) {
        return Err(CheckpointError::Corrupt { path: dir.join(MANIFEST_FILE), reason: format!("lists no {OPTIMIZER_FILE}") });
    }
    let optim_tensors = read_tensors(&optim_path)?;
    let state = read_trainer_state(dir)?;
    optimizer.load_state(vs, optim_tensors).map_err(|source| CheckpointError::Optimizer { path: optim_path, source })?;
    copy_into(&model_path, pairs)?;
    Ok(state)
}

/// Restores only the weights of a checkpoint into `vs` (for evaluation and
/// export), with the same checks as [`load`].
pub fn load_model(dir: &Path, vs: &nn::VarStore) -> Result<(), CheckpointError> {
    verify(dir)?;
    let model_path = dir.join(MODEL_FILE);
    let pairs = checked_model_tensors(&model_path, vs)?;
    copy_into(&model_path, pairs)
}

/// Restores the weights of a checkpoint into `vs` except the variables whose
/// names start with one of `new_prefixes`, which the file must not hold (e.g.
/// downstream heads that a pretraining checkpoint has no copy of: they keep
/// their fresh initialisation). Returns the names left as initialised.
pub fn load_model_except(dir: &Path, vs: &nn::VarStore, new_prefixes: &[&str]) -> Result<Vec<String>, CheckpointError> {
    verify(dir)?;
    let model_path = dir.join(MODEL_FILE);
    let is_new = |name: &str| new_prefixes.iter().any(|p| name.starts_with(p));
    let pairs = checked_tensors(&model_path, vs, &is_new)?;
    let mut fresh: Vec<String> = vs.variables().into_keys().filter(|k| is_new(k)).collect();
    fresh.sort();
    copy_into(&model_path, pairs)?;
    Ok(fresh)
}

/// `path` when it is a checkpoint folder, else the newest complete
/// checkpoint of the run folder `path`.
pub fn resolve(path: &Path) -> Result<PathBuf, CheckpointError> {
    if path.join(MANIFEST_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    latest(path)?.ok_or_else(|| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: "neither a checkpoint nor a run folder with a complete checkpoint".into(),
    })
}

/// The tensor names in a checkpoint's model file, read from the safetensors
/// header only.
pub fn tensor_names(dir: &Path) -> Result<Vec<String>, CheckpointError> {
    let path = dir.join(MODEL_FILE);
    let corrupt = |reason: String| CheckpointError::Corrupt { path: path.clone(), reason };
    let mut file = File::open(&path).map_err(io_err(&path))?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length).map_err(|e| corrupt(format!("no safetensors header: {e}")))?;
    let length = u64::from_le_bytes(length);
    let size = file.metadata().map_err(io_err(&path))?.len();
    if length > size.saturating_sub(8) {
        return Err(corrupt(format!("header of {length} bytes in a file of {size}")));
    }
    let mut header = vec![0u8; length as usize];
    file.read_exact(&mut header).map_err(|e| corrupt(format!("truncated header: {e}")))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| corrupt(format!("invalid safetensors header: {e}")))?;
    Ok(header.into_iter().map(|(k, _)| k).filter(|k| k != "__metadata__").collect())
}

/// The trainer state (`trainer_state.json`) of a checkpoint, unverified.
pub fn read_trainer_state(dir: &Path) -> Result<serde_json::Value, CheckpointError> {
    read_json(&dir.join(TRAINER_STATE_FILE))
}

/// The key of a fine-tuned checkpoint's `config.json` that lists the
/// downstream tasks it was trained on.
pub const TRAINED_TASKS_KEY: &str = "downstream_tasks";

/// The model config (`config.json`) of a checkpoint, unverified.
pub fn read_config(dir: &Path) -> Result<serde_json::Value, CheckpointError> {
    read_json(&dir.join(CONFIG_FILE))
}

/// Checks every file of the manifest (size, then SHA-256).
pub fn verify(dir: &Path) -> Result<(), CheckpointError> {
    verify_files(dir).map(|_| ())
}

fn verify_files(dir: &Path) -> Result<Manifest, CheckpointError> {
    let manifest = read_manifest(dir)?;
    for (name, entry) in &manifest.files {
        let path = dir.join(name);
        let bytes = fs::metadata(&path).map_err(io_err(&path))?.len();
        if bytes != entry.bytes {
            let reason = format!("{bytes} bytes where the checkpoint wrote {} (truncated or overwritten)", entry.bytes);
            return Err(CheckpointError::Corrupt { path, reason });
        }
        let sha = sha256_file(&path).map_err(io_err(&path))?;
        if sha != entry.sha256 {
            return Err(CheckpointError::Corrupt {
                path,
                reason: "SHA-256 differs from the one written at save (corrupt file)".to_string(),
            });
        }
    }
    Ok(manifest)
}

fn read_manifest(dir: &Path) -> Result<Manifest, CheckpointError> {
    let path = dir.join(MANIFEST_FILE);
    let manifest: Manifest =
        serde_json::from_value(read_json(&path)?).map_err(|source| CheckpointError::Json { path: path.clone(), source })?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(CheckpointError::Corrupt {
            path,
            reason: format!("unknown format `{}`, expected `{MANIFEST_FORMAT}`", manifest.format),
        });
    }
    for required in [MODEL_FILE, TRAINER_STATE_FILE] {
        if !manifest.files.contains_key(required) {
            return Err(CheckpointError::Corrupt { path, reason: format!("lists no {required}") });
        }
    }
    Ok(manifest)
}

fn read_json(path: &Path) -> Result<serde_json::Value, CheckpointError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&bytes).map_err(|source| CheckpointError::Json { path: path.to_path_buf(), source })
}

fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>, CheckpointError> {
    if !path.is_file() {
        return Err(CheckpointError::Io { path: path.to_path_buf(), source: io::Error::new(io::ErrorKind::NotFound, "no such file") });
    }
    Tensor::read_safetensors(path).map_err(|e| match e {
        // The library's message already holds the path: keep only its reason.
        TchError::SafeTensorError { err, .. } => {
            CheckpointError::Corrupt { path: path.to_path_buf(), reason: format!("not a valid safetensors file: {err}") }
        }
        source => CheckpointError::Tensors { path: path.to_path_buf(), source },
    })
}

/// The file's tensors paired with the variables of `vs`, checked for names and shapes.
fn checked_model_tensors(path: &Path, vs: &nn::VarStore) -> Result<Vec<(String, Tensor, Tensor)>, CheckpointError> {
    checked_tensors(path, vs, &|_| false)
}

/// Pairs every variable of `vs` but those `skipped` with its tensor in the file,
/// checking that names and shapes match both ways.
fn checked_tensors(
    path: &Path,
    vs: &nn::VarStore,
    skipped: &dyn Fn(&str) -> bool,
) -> Result<Vec<(String, Tensor, Tensor)>, CheckpointError> {
    let mut tensors: HashMap<String, Tensor> = read_tensors(path)?.into_iter().collect();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(k, _)| !skipped(k)).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut pairs = Vec::with_capacity(vars.len());
    for (key, var) in vars {
        let src = tensors.remove(&key).ok_or_else(|| CheckpointError::MissingTensor { path: path.to_path_buf(), key: key.clone() })?;
        if src.size() != var.size() {
            return Err(CheckpointError::Shape { path: path.to_path_buf(), key, expected: var.size(), found: src.size() });
        }
        pairs.push((key, var, src));
    }
    let mut extra: Vec<String> = tensors.into_keys().collect();
    extra.sort();
    if let Some(key) = extra.into_iter().next() {
        return Err(CheckpointError::UnexpectedTensor { path: path.to_path_buf(), key });
    }
    Ok(pairs)
}

fn copy_into(path: &Path, pairs: Vec<(String, Tensor, Tensor)>) -> Result<(), CheckpointError> {
    tch::no_grad(|| {
        for (key, mut var, src) in pairs {
            var.f_copy_(&src).map_err(|e| CheckpointError::Tensors { path: path.to_path_buf(), source: e.path_context(&key) })?;
        }
        Ok(())
    })
}

/// Writes named tensors (copied to the CPU, contiguous) as safetensors and fsyncs the file.
fn write_tensors(path: &Path, tensors: Vec<(String, Tensor)>) -> Result<(), CheckpointError> {
    let cpu = tensors
        .into_iter()
        .map(|(name, t)| {
            let t = t.f_detach().and_then(|t| t.f_to_device(Device::Cpu)).and_then(|t| t.f_contiguous());
            t.map(|t| (name, t))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CheckpointError::Tensors { path: path.to_path_buf(), source })?;
    Tensor::write_safetensors(&cpu, path).map_err(|source| CheckpointError::Tensors { path: path.to_path_buf(), source })?;
    sync_file(path)
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), CheckpointError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| CheckpointError::Json { path: path.to_path_buf(), source })?;
    bytes.push(b'\n');
    write_synced(path, &bytes)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let mut file = File::create(path).map_err(io_err(path))?;
    file.write_all(bytes).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

fn sync_file(path: &Path) -> Result<(), CheckpointError> {
    File::open(path).and_then(|f| f.sync_all()).map_err(io_err(path))
}

/// Makes a folder's entries (creations, renames) durable.
fn sync_dir(path: &Path) -> Result<(), CheckpointError> {
    #[cfg(unix)]
    {
        File::open(path).and_then(|f| f.sync_all()).map_err(io_err(path))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

fn file_entry(path: &Path) -> Result<FileEntry, CheckpointError> {
    let bytes = fs::metadata(path).map_err(io_err(path))?.len();
    Ok(FileEntry { bytes, sha256: sha256_file(path).map_err(io_err(path))? })
}

/// SHA-256 of a file's bytes, as lowercase hex, read in pieces.
pub(crate) fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The complete checkpoint folders of `run_dir` with their steps.
fn complete_checkpoints(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(run_dir).map_err(io_err(run_dir))? {
        let entry = entry.map_err(io_err(run_dir))?;
        let Some(step) = entry.file_name().to_str().and_then(step_of) else { continue };
        let path = entry.path();
        if path.join(MANIFEST_FILE).is_file() {
            out.push((step, path));
        }
    }
    Ok(out)
}

/// Removes what interrupted saves left: `step-*.tmp-*` folders and `latest.tmp-*` files.
fn remove_leftovers(run_dir: &Path) -> Result<(), CheckpointError> {
    for entry in fs::read_dir(run_dir).map_err(io_err(run_dir))? {
        let entry = entry.map_err(io_err(run_dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !((name.starts_with("step-") || name.starts_with(LATEST_FILE)) && name.contains(".tmp-")) {
            continue;
        }
        let path = entry.path();
        let result = if entry.file_type().map_err(io_err(&path))?.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        result.map_err(io_err(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{var_at, AdamWConfig};
    use tch::Kind;

    fn tiny() -> (nn::VarStore, AdamW) {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = var_at(&vs, "layer.weight", Tensor::from_slice(&[1.0f32, 2.0]), true);
        let _ = var_at(&vs, "norm.running_mean", Tensor::from_slice(&[0.5f32]), false);
        let mut opt = AdamW::new(AdamWConfig::default()).unwrap();
        (&w * Tensor::from_slice(&[1.0f32, -1.0])).sum(Kind::Float).backward();
        opt.step(&vs).unwrap();
        (vs, opt)
    }

    fn save(ck: &Checkpointer, step: u64, vs: &nn::VarStore, opt: &AdamW) -> PathBuf {
        let state = TrainerState { step, ..TrainerState::default() };
        ck.save(step, vs, opt, &serde_json::json!({"hidden_size": 2}), None, &state).unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn saves_prunes_and_finds_the_latest() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        assert_eq!(latest(&run).unwrap(), None);
        let (vs, opt) = tiny();
        let ck = Checkpointer::new(&run, 2);
        let tokenizer = tmp.path().join("tok.json");
        fs::write(&tokenizer, "{\"model\": {}}").unwrap();
        let first = ck.save(5, &vs, &opt, &serde_json::json!({}), Some(&tokenizer), &TrainerState::default()).unwrap();
        assert_eq!(first, run.join("step-000005"));
        assert_eq!(
            names(&first),
            ["config.json", "manifest.json", "model.safetensors", "optimizer.safetensors", "tokenizer.json", "trainer_state.json"]
        );
        save(&ck, 10, &vs, &opt);
        save(&ck, 15, &vs, &opt);
        assert_eq!(names(&run), ["latest", "step-000010", "step-000015"]);
        assert_eq!(fs::read_to_string(run.join("latest")).unwrap(), "step-000015\n");
        assert_eq!(ck.latest().unwrap(), Some(run.join("step-000015")));
        assert_eq!(checkpoint_step(&run.join("step-000015")).unwrap(), 15);

        // Leftovers of a killed save are ignored, then removed by the next save.
        let leftover = run.join("step-000020.tmp-999");
        fs::create_dir(&leftover).unwrap();
        fs::write(leftover.join(MODEL_FILE), b"half").unwrap();
        fs::write(run.join("latest.tmp-999"), b"step-0000").unwrap();
        assert_eq!(latest(&run).unwrap(), Some(run.join("step-000015")));
        // A stale or garbled `latest` falls back to the highest complete step.
        fs::write(run.join("latest"), b"../elsewhere").unwrap();
        assert_eq!(latest(&run).unwrap(), Some(run.join("step-000015")));
        fs::write(run.join("latest"), b"step-000010\n").unwrap();
        assert_eq!(latest(&run).unwrap(), Some(run.join("step-000010")));
        save(&ck, 20, &vs, &opt);
        assert_eq!(names(&run), ["latest", "step-000015", "step-000020"]);
        // Saving a step again replaces it.
        save(&ck, 20, &vs, &opt);
        assert_eq!(names(&run), ["latest", "step-000015", "step-000020"]);
    }

    #[test]
    fn round_trip_restores_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let (vs, opt) = tiny();
        let ck = Checkpointer::new(tmp.path(), 0);
        let mut state = TrainerState { step: 7, epoch: 1, position: 3, ..TrainerState::default() };
        state.rng.insert("data_order".into(), u64::MAX - 1);
        state.loss_history.push((7, 0.25));
        let dir = ck.save(7, &vs, &opt, &serde_json::json!({"hidden_size": 2}), None, &state).unwrap();

        let vs2 = nn::VarStore::new(Device::Cpu);
        let _ = var_at(&vs2, "layer.weight", Tensor::from_slice(&[0.0f32, 0.0]), true);
        let _ = var_at(&vs2, "norm.running_mean", Tensor::from_slice(&[0.0f32]), false);
        let mut opt2 = AdamW::new(AdamWConfig::default()).unwrap();
        let json = load(&dir, &vs2, &mut opt2).unwrap();
        assert_eq!(serde_json::from_value::<TrainerState>(json).unwrap(), state);
        assert_eq!(read_config(&dir).unwrap()["hidden_size"], 2);
        for (name, t) in vs.variables() {
            assert!(t.equal(&vs2.variables()[&name]), "{name}");
        }
        assert_eq!(opt2.step_count(), 1);
        for ((n1, t1), (n2, t2)) in opt.state_tensors().into_iter().zip(opt2.state_tensors()) {
            assert_eq!(n1, n2);
            assert!(t1.equal(&t2), "{n1}");
        }
    }

    #[test]
    fn damaged_files_are_named_and_nothing_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let (vs, opt) = tiny();
        let dir = save(&Checkpointer::new(tmp.path(), 0), 1, &vs, &opt);
        let fresh = || {
            let vs = nn::VarStore::new(Device::Cpu);
            let _ = var_at(&vs, "layer.weight", Tensor::from_slice(&[9.0f32, 9.0]), true);
            let _ = var_at(&vs, "norm.running_mean", Tensor::from_slice(&[9.0f32]), false);
            vs
        };
        let copy = |name: &str| {
            let d = tmp.path().join(name);
            fs::create_dir(&d).unwrap();
            for f in fs::read_dir(&dir).unwrap() {
                let f = f.unwrap();
                fs::copy(f.path(), d.join(f.file_name())).unwrap();
            }
            d
        };

        // A flipped byte in the optimiser state.
        let d = copy("flipped");
        let mut bytes = fs::read(d.join(OPTIMIZER_FILE)).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        fs::write(d.join(OPTIMIZER_FILE), bytes).unwrap();
        let (vs2, mut opt2) = (fresh(), AdamW::new(AdamWConfig::default()).unwrap());
        let err = load(&d, &vs2, &mut opt2).unwrap_err().to_string();
        assert!(err.contains("flipped/optimizer.safetensors") && err.contains("SHA-256"), "{err}");
        assert_eq!(Vec::<f32>::try_from(&vs2.variables()["layer.weight"]).unwrap(), [9.0, 9.0]);
        assert_eq!(opt2.step_count(), 0);

        // Invalid JSON whose manifest entry matches (the manifest itself garbled).
        let d = copy("badjson");
        fs::write(d.join(MANIFEST_FILE), b"{\"format\": ").unwrap();
        let err = load(&d, &fresh(), &mut AdamW::new(AdamWConfig::default()).unwrap()).unwrap_err().to_string();
        assert!(err.contains("badjson/manifest.json") && err.contains("invalid JSON"), "{err}");

        // A model with a variable the checkpoint lacks.
        let vs3 = fresh();
        let _ = var_at(&vs3, "extra.weight", Tensor::from_slice(&[1.0f32]), true);
        let err = load(&dir, &vs3, &mut AdamW::new(AdamWConfig::default()).unwrap()).unwrap_err().to_string();
        assert!(err.contains("model.safetensors") && err.contains("extra.weight"), "{err}");

        // A model whose variable has another shape.
        let vs4 = nn::VarStore::new(Device::Cpu);
        let _ = var_at(&vs4, "layer.weight", Tensor::from_slice(&[9.0f32, 9.0, 9.0]), true);
        let _ = var_at(&vs4, "norm.running_mean", Tensor::from_slice(&[9.0f32]), false);
        let err = load(&dir, &vs4, &mut AdamW::new(AdamWConfig::default()).unwrap()).unwrap_err().to_string();
        assert!(err.contains("layer.weight") && err.contains("shape"), "{err}");

        // No manifest at all.
        let d = copy("nomanifest");
        fs::remove_file(d.join(MANIFEST_FILE)).unwrap();
        let err = load(&d, &fresh(), &mut AdamW::new(AdamWConfig::default()).unwrap()).unwrap_err().to_string();
        assert!(err.contains("nomanifest/manifest.json"), "{err}");
    }
}
