//! Weights files as the official projects publish them, and how they load into a model.
//!
//! [`read_weights`] reads, by content rather than by extension:
//! - safetensors (what tubelet writes; `engine/src/io.rs`);
//! - PyTorch files, through `pytorch-reader`: the zip container of torch ≥ 1.6, the legacy
//!   pickle stream of torch 0.1.10–1.5 (`_use_new_zipfile_serialization=False`), and older tar
//!   files; f32, f64, f16 and bf16 storages (converted to f32 with `half`) and integer buffers
//!   (`num_batches_tracked`, `relative_position_index`) carried as f32.
//!
//! The state dict is found where each project puts it (seed-models.md, ecosystem-notes.md):
//! mmaction2 and TSM under `'state_dict'` (with `'meta'`, `'optimizer'` beside it), SlowFast,
//! MViT and TimeSformer `.pyth` under `'model_state'`, DeiT-style files under `'model'`, and
//! UniFormer's flat dict at the root. Key prefixes (`backbone.`, `module.`, `model.`,
//! `base_model.`) are matched by `tubelet::io::match_keys`, and the classification heads,
//! which every project names its own way, are paired by [`HEADS`].
//!
//! Safety: nothing in a pickle is executed. `pytorch-reader` interprets only the calls torch
//! uses to rebuild tensors and `OrderedDict`; every other global the pickle names stays an
//! inert name, and [`read_weights`] refuses a file holding any global outside [`ALLOWED`]
//! (tensors, storages, dtypes, and the numpy scalars mmcv stores in `meta`), naming it. A
//! global whose result the pickle itself throws away never reaches the reader's tree, so it
//! is neither run nor reported. A file that is neither safetensors nor a PyTorch container,
//! or holds no state dict, is an error that says what was found.
//!
//! [`load_finetune`] has mmaction2's `load_from` semantics: the tensors whose shapes fit are
//! loaded; a head of another class count (or none in the file) keeps the model's fresh
//! initialisation; a file supplying fewer than half of the other tensors is refused; the [`LoadReport`] lists what was loaded, re-initialised, left at its
//! initialisation and unused. [`load_exact`] is for inference (`run`, `eval`, `parity`):
//! every tensor of the model must come from the file. A whole training state
//! (`checkpoint.rs`) handed to either is an error pointing at `--resume`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pytorch_reader::{DType, PickleValue, PytorchReader};
use tubelet::io::{match_keys, strip_prefix, HostTensor};
use tubelet::{Error, Result, Tensor};
use tubelet_models::VideoModel;

use crate::checkpoint;

/// The containers a file's state dict can sit in, by top-level key, in the order they are
/// looked for.
pub const CONTAINERS: [&str; 4] = ["state_dict", "model_state", "model", "module"];

/// The classification heads' key prefixes, one per family, longest first so that
/// `head.projection` is not read as `head`: mmaction2's recognisers (Video Swin and every
/// mmaction2 file), MViT (SlowFast's `TransformerBasicHead`), TSM's `new_fc`, TimeSformer and
/// UniFormer's `head`, and scenic's ViViT `output_projection`. A head's tensors are
/// `<prefix>.weight` and `<prefix>.bias`, or in scenic's (flax) names `<prefix>/kernel` and
/// `<prefix>/bias` (without it, a ViViT head of another class count was reported as a body
/// tensor whose shape differs, not as the re-initialised head).
pub const HEADS: [&str; 5] = [
    "cls_head.fc_cls",
    "output_projection",
    "head.projection",
    "new_fc",
    "head",
];

/// Python types a weights pickle may hold: tensors and their storages, dtypes and devices,
/// the numpy scalars and dtypes mmcv's hooks store in `meta` (e.g. a best score), and ints
/// too wide for an i64. Anything else (`os.system`, `builtins.eval`, a user's class) is
/// refused.
pub const ALLOWED: [&str; 12] = [
    "torch.Tensor",
    "torch.TypedStorage",
    "torch.UntypedStorage",
    "torch.device",
    "torch.Size",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.ndarray",
    "int",
];

/// torch dtype classes, which may stand as values (e.g. in a tensor subclass's state).
const TORCH_DTYPES: [&str; 14] = [
    "float32", "float", "float64", "double", "float16", "half", "bfloat16", "int64", "long",
    "int32", "int", "int16", "int8", "uint8",
];

/// The container a weights file came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Safetensors,
    /// torch ≥ 1.6 (`.pth`, `.pyth`, `.pt`).
    TorchZip,
    /// torch 0.1.10–1.5, or `_use_new_zipfile_serialization=False`.
    TorchLegacy,
    /// torch before 0.1.10.
    TorchTar,
    /// A bare pickle.
    Pickle,
}

/// A weights file's state dict, as f32.
#[derive(Debug)]
pub struct WeightsFile {
    pub path: PathBuf,
    pub format: FileFormat,
    /// The top-level key the state dict was under (one of [`CONTAINERS`]); `None` for a flat
    /// state dict.
    pub container: Option<String>,
    /// Tensors by their key inside the container.
    pub tensors: BTreeMap<String, HostTensor>,
    /// How each tensor was stored (`f32`, `f16`, `bf16`, `i64`, ...).
    pub dtypes: BTreeMap<String, String>,
}

impl WeightsFile {
    /// "a PyTorch zip file, state dict under 'state_dict'", for messages.
    pub fn describe(&self) -> String {
        let format = match self.format {
            FileFormat::Safetensors => "a safetensors file",
            FileFormat::TorchZip => "a PyTorch zip file",
            FileFormat::TorchLegacy => "a legacy (pre-1.6) PyTorch file",
            FileFormat::TorchTar => "a PyTorch tar file",
            FileFormat::Pickle => "a pickle",
        };
        match &self.container {
            Some(c) => format!("{format}, state dict under '{c}'"),
            None => format!("{format}, flat state dict"),
        }
    }
}

fn io_err(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Io(format!("{}: {what}", path.display()))
}

/// Whether `bytes` open like safetensors: a little-endian u64 header length, then `{`.
fn looks_like_safetensors(bytes: &[u8]) -> bool {
    bytes.len() >= 9
        && bytes[8] == b'{'
        && u64::from_le_bytes(bytes[..8].try_into().unwrap()) < 100_000_000
}

/// Reads the state dict of a weights file (see the module docs for what is read and what is
/// refused). NaN or ±Inf in any tensor is an error naming it.
pub fn read_weights(path: &Path) -> Result<WeightsFile> {
    let mut head = [0u8; 16];
    let n = {
        use std::io::Read;
        let mut f =
            std::fs::File::open(path).map_err(|e| io_err(path, format!("cannot open: {e}")))?;
        f.read(&mut head)
            .map_err(|e| io_err(path, format!("cannot read: {e}")))?
    };
    if looks_like_safetensors(&head[..n]) {
        let (tensors, meta) = tubelet::io::read_with_metadata(path)?;
        if checkpoint::is_train_state(&meta) {
            return Err(io_err(path, checkpoint::whole_state_message(path)));
        }
        let dtypes = tensors
            .keys()
            .map(|k| (k.clone(), "safetensors".to_string()))
            .collect();
        return Ok(WeightsFile {
            path: path.to_path_buf(),
            format: FileFormat::Safetensors,
            container: None,
            tensors,
            dtypes,
        });
    }
    read_torch(path)
}

/// The Python types in `v` that [`ALLOWED`] does not admit, with where they sit.
fn forbidden(v: &PickleValue, at: &str, out: &mut Vec<String>) {
    match v {
        PickleValue::Dict(d) => {
            for (k, v) in d {
                forbidden(
                    v,
                    &if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    },
                    out,
                )
            }
        }
        PickleValue::List(l) => {
            for (i, v) in l.iter().enumerate() {
                forbidden(v, &format!("{at}[{i}]"), out)
            }
        }
        PickleValue::Unsupported(name) => {
            let dtype = name
                .strip_prefix("torch.")
                .is_some_and(|d| TORCH_DTYPES.contains(&d));
            if !dtype && !ALLOWED.contains(&name.as_str()) {
                out.push(format!(
                    "{name} (at {})",
                    if at.is_empty() { "the root" } else { at }
                ));
            }
        }
        _ => {}
    }
}

/// Whether a value is a tensor, or a dict holding at least one (a state dict, maybe nested).
fn holds_tensors(v: &PickleValue) -> bool {
    match v {
        PickleValue::Unsupported(n) => n == "torch.Tensor",
        PickleValue::Dict(d) => d.values().any(holds_tensors),
        _ => false,
    }
}

fn read_torch(path: &Path) -> Result<WeightsFile> {
    let not_a_checkpoint = |e: &dyn std::fmt::Display| {
        io_err(
            path,
            format!(
                "not a checkpoint: not a valid safetensors file, nor a PyTorch file (zip, legacy, tar \
                 or pickle) ({e})"
            ),
        )
    };
    let tree = PytorchReader::read_pickle_data(path, None).map_err(|e| not_a_checkpoint(&e))?;
    let mut bad = Vec::new();
    forbidden(&tree, "", &mut bad);
    if !bad.is_empty() {
        return Err(io_err(
            path,
            format!(
                "the pickle asks for Python objects that are not tensors or plain containers: {}; \
                 tubelet never runs pickled code and refuses such a file (re-save its state dict with \
                 torch.save(model.state_dict(), ...))",
                bad.join(", ")
            ),
        ));
    }
    let PickleValue::Dict(root) = &tree else {
        return Err(io_err(
            path,
            "not a checkpoint: its pickle holds no dictionary of tensors",
        ));
    };
    let container = CONTAINERS
        .iter()
        .find(|k| root.get(**k).is_some_and(holds_tensors))
        .map(|k| k.to_string());
    if container.is_none() && !root.values().any(holds_tensors) {
        let mut keys: Vec<&str> = root.keys().map(String::as_str).collect();
        keys.sort();
        return Err(io_err(
            path,
            format!(
                "not a checkpoint: no state dict found (top-level keys: {}; looked for a flat state dict \
                 or one under {})",
                keys.join(", "),
                CONTAINERS.map(|c| format!("'{c}'")).join(", ")
            ),
        ));
    }
    let reader = match &container {
        Some(c) => PytorchReader::with_top_level_key(path, c),
        None => PytorchReader::new(path),
    }
    .map_err(|e| io_err(path, format!("reading the state dict: {e}")))?;
    let format = match reader.metadata().format_type {
        pytorch_reader::FileFormat::Zip => FileFormat::TorchZip,
        pytorch_reader::FileFormat::Legacy => FileFormat::TorchLegacy,
        pytorch_reader::FileFormat::Tar => FileFormat::TorchTar,
        _ => FileFormat::Pickle,
    };
    let mut tensors = BTreeMap::new();
    let mut dtypes = BTreeMap::new();
    for (name, t) in reader.tensors() {
        let bytes = t
            .read()
            .map_err(|e| io_err(path, format!("reading tensor {name}: {e}")))?;
        let data = to_f32(t.dtype(), &bytes);
        if data.len() != t.num_elements() {
            return Err(io_err(
                path,
                format!(
                    "tensor {name}: {} values for shape {:?}",
                    data.len(),
                    t.shape()
                ),
            ));
        }
        dtypes.insert(name.clone(), format!("{:?}", t.dtype()).to_lowercase());
        tensors.insert(
            name.clone(),
            HostTensor {
                shape: t.shape().to_vec(),
                data,
            },
        );
    }
    if let Some(bad) =
        tubelet::io::first_non_finite(tensors.iter().map(|(k, t)| (k.as_str(), t.data.as_slice())))
    {
        return Err(io_err(
            path,
            format!("tensor {bad}; a weights file must hold finite values"),
        ));
    }
    Ok(WeightsFile {
        path: path.to_path_buf(),
        format,
        container,
        tensors,
        dtypes,
    })
}

/// Little-endian storage bytes as f32 (`pytorch-reader` hands them in native order, and
/// refuses big-endian files).
fn to_f32(dtype: DType, b: &[u8]) -> Vec<f32> {
    macro_rules! conv {
        ($n:expr, $f:expr) => {
            b.chunks_exact($n)
                .map(|c| $f(c.try_into().unwrap()))
                .collect()
        };
    }
    match dtype {
        DType::F32 => conv!(4, f32::from_le_bytes),
        DType::F64 => conv!(8, |c| f64::from_le_bytes(c) as f32),
        DType::F16 => conv!(2, |c| half::f16::from_le_bytes(c).to_f32()),
        DType::BF16 => conv!(2, |c| half::bf16::from_le_bytes(c).to_f32()),
        DType::I64 => conv!(8, |c| i64::from_le_bytes(c) as f32),
        DType::I32 => conv!(4, |c| i32::from_le_bytes(c) as f32),
        DType::I16 => conv!(2, |c| i16::from_le_bytes(c) as f32),
        DType::U64 => conv!(8, |c| u64::from_le_bytes(c) as f32),
        DType::U32 => conv!(4, |c| u32::from_le_bytes(c) as f32),
        DType::U16 => conv!(2, |c| u16::from_le_bytes(c) as f32),
        DType::I8 => b.iter().map(|&x| x as i8 as f32).collect(),
        DType::U8 | DType::Bool => b.iter().map(|&x| x as f32).collect(),
    }
}

/// `(head prefix, leaf)` when `key` (prefixes stripped) is a head's `weight` or `bias`.
fn head_of(key: &str) -> Option<(&'static str, &str)> {
    HEADS.iter().find_map(|p| {
        let rest = key.strip_prefix(p)?;
        // torch names `.weight`, flax names `/kernel`; the kernel is the weight transposed, so
        // the leaves stay apart and a head is only paired with one named the same way.
        let leaf = rest
            .strip_prefix('.')
            .filter(|l| matches!(*l, "weight" | "bias"));
        let leaf = leaf.or_else(|| {
            rest.strip_prefix('/')
                .filter(|l| matches!(*l, "kernel" | "bias"))
        })?;
        Some((*p, leaf))
    })
}

/// What a load did, by key (model keys unless said otherwise).
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// The file and its container, e.g. "x.pth (a PyTorch zip file, state dict under 'state_dict')".
    pub source: String,
    /// Tensors loaded from the file.
    pub loaded: Vec<String>,
    /// Head tensors left at the model's fresh initialisation: the file's head has another
    /// class count, or the file has none.
    pub reinitialised: Vec<String>,
    /// Other tensors whose shapes differ from the file's, left at their initialisation:
    /// "key: file [..], model [..]".
    pub mismatched: Vec<String>,
    /// Other tensors the file does not have, left at their initialisation.
    pub missing: Vec<String>,
    /// File keys no model tensor took (e.g. Video Swin's `relative_position_index`, which the
    /// model recomputes; mmaction2's `cls_head` when only a backbone is loaded).
    pub unused: Vec<String>,
    /// How the loaded tensors were stored: dtype → count (`f16` and `bf16` are widened).
    pub stored: BTreeMap<String, usize>,
}

impl LoadReport {
    /// A few lines for the console: counts, then the re-initialised, mismatched, missing and
    /// unused keys (lists of more than 8 shortened).
    pub fn summary(&self) -> String {
        let list = |v: &[String]| {
            if v.len() <= 8 {
                v.join(", ")
            } else {
                format!("{}, ... ({} more)", v[..8].join(", "), v.len() - 8)
            }
        };
        let stored: Vec<String> = self
            .stored
            .iter()
            .map(|(d, n)| format!("{n} {d}"))
            .collect();
        let mut s = format!(
            "weights: {}: loaded {} tensors ({})",
            self.source,
            self.loaded.len(),
            stored.join(", ")
        );
        for (what, v) in [
            (
                "re-initialised (head of another class count, or none in the file)",
                &self.reinitialised,
            ),
            (
                "left at their initialisation (shapes differ)",
                &self.mismatched,
            ),
            (
                "left at their initialisation (not in the file)",
                &self.missing,
            ),
            ("unused (in the file, not in the model)", &self.unused),
        ] {
            if !v.is_empty() {
                s += &format!("\n  {} {what}: {}", v.len(), list(v));
            }
        }
        s
    }
}

/// The file's keys as the model would name them: another family's head (`cls_head.fc_cls`
/// for a model whose head is `head`, say) becomes the model's; every other key stays. Maps
/// the new name to the file's key.
fn head_aliases<'a>(file: &'a WeightsFile, model_keys: &[&str]) -> BTreeMap<String, &'a str> {
    let model_head: BTreeMap<&str, &str> = model_keys
        .iter()
        .filter_map(|k| head_of(strip_prefix(k)).map(|(_, leaf)| (leaf, *k)))
        .collect();
    let model_prefix = model_keys
        .iter()
        .find_map(|k| head_of(strip_prefix(k)).map(|(p, _)| p));
    let mut alias = BTreeMap::new();
    for k in file.tensors.keys() {
        let renamed = match (head_of(strip_prefix(k)), model_prefix) {
            (Some((p, leaf)), Some(mp)) if p != mp => model_head.get(leaf).map(|m| m.to_string()),
            _ => None,
        };
        alias.insert(renamed.unwrap_or_else(|| k.clone()), k.as_str());
    }
    alias
}

/// (model key, file key) pairs, and the file keys left over.
pub type KeyPairs = (Vec<(String, String)>, Vec<String>);

/// The file's tensors under the model's keys (`tubelet convert --model`): (model key, file
/// key) for every model key the file has, whatever its shape, and the file keys left over.
pub fn official_keys(file: &WeightsFile, model_keys: &[&str]) -> Result<KeyPairs> {
    let alias = head_aliases(file, model_keys);
    let m = match_keys(
        &file.path.display().to_string(),
        alias.keys().map(String::as_str),
        model_keys.iter().copied(),
    )?;
    let pairs = model_keys
        .iter()
        .filter_map(|k| {
            m.matched
                .get(*k)
                .map(|a| (k.to_string(), alias[a].to_string()))
        })
        .collect();
    Ok((
        pairs,
        m.unexpected.iter().map(|a| alias[a].to_string()).collect(),
    ))
}

/// What [`plan`] found: the report, the (model tensor, file tensor) pairs to load, and for
/// each head tensor whose shape differs, "key: file [..], model [..]".
type Plan<'a> = (LoadReport, Vec<(Tensor, &'a HostTensor)>, Vec<String>);

/// Pairs a file with a model's parameters and buffers (prefixes and heads mapped) and sorts
/// every key into a report.
fn plan<'a>(file: &'a WeightsFile, model: &[(String, Tensor)]) -> Result<Plan<'a>> {
    let model_keys: Vec<&str> = model.iter().map(|(k, _)| k.as_str()).collect();
    let alias = head_aliases(file, &model_keys);
    let source = format!("{} ({})", file.path.display(), file.describe());
    let m = match_keys(
        &source,
        alias.keys().map(String::as_str),
        model.iter().map(|(k, _)| k.as_str()),
    )?;
    let mut r = LoadReport {
        source,
        ..LoadReport::default()
    };
    let mut pairs = Vec::new();
    let mut head_shapes = Vec::new();
    for (key, t) in model {
        let is_head = head_of(strip_prefix(key)).is_some();
        match m.matched.get(key) {
            Some(a) => {
                let fk = alias[a];
                let h = &file.tensors[fk];
                if h.shape == t.shape() {
                    r.loaded.push(key.clone());
                    *r.stored.entry(file.dtypes[fk].clone()).or_default() += 1;
                    pairs.push((t.clone(), h));
                } else if is_head {
                    r.reinitialised.push(key.clone());
                    head_shapes.push(format!("{key}: file {:?}, model {:?}", h.shape, t.shape()));
                } else {
                    r.mismatched
                        .push(format!("{key}: file {:?}, model {:?}", h.shape, t.shape()));
                }
            }
            None if is_head => r.reinitialised.push(key.clone()),
            None => r.missing.push(key.clone()),
        }
    }
    r.unused = m.unexpected.iter().map(|a| alias[a].to_string()).collect();
    Ok((r, pairs, head_shapes))
}

/// A model's parameters, then its buffers, by official key: what a weights file holds.
pub fn model_state(model: &dyn VideoModel) -> Vec<(String, Tensor)> {
    let mut all = model.named_params();
    all.extend(model.named_buffers());
    all
}

/// Fine-tuning load (`train --weights`): see the module docs. Fails, writing nothing, when
/// fewer than half of the model's tensors besides its head load: a file of another model
/// (whose few norms may happen to share a key and a shape) rather than a starting point.
pub fn load_finetune(model: &dyn VideoModel, path: &Path) -> Result<LoadReport> {
    let file = read_weights(path)?;
    let state = model_state(model);
    let (report, pairs, _) = plan(&file, &state)?;
    let body = state.len() - report.reinitialised.len();
    if pairs.len() * 2 < body {
        let some: Vec<&str> = file.tensors.keys().take(4).map(String::as_str).collect();
        let model_keys: Vec<&str> = state.iter().take(4).map(|(k, _)| k.as_str()).collect();
        return Err(Error::Io(format!(
            "{}: only {} of {body} tensors of the model (besides its head) are in the file; is it a \
             checkpoint of another model? (the file's keys look like {}; the model's like {})",
            report.source,
            pairs.len(),
            some.join(", "),
            model_keys.join(", ")
        )));
    }
    for (t, h) in pairs {
        t.write(&h.data)?;
    }
    Ok(report)
}

/// Inference load (`run`, `eval`, `parity --weights`): every parameter and buffer of the
/// model must come from the file with its shape; the file may hold more (listed as unused).
/// The error lists every missing and wrongly shaped key; nothing is written unless all fit.
pub fn load_exact(model: &dyn VideoModel, path: &Path) -> Result<LoadReport> {
    load_exact_into(&model_state(model), path)
}

/// [`load_exact`] for any named tensors (a module of the zoo rather than a whole model).
pub fn load_exact_into(state: &[(String, Tensor)], path: &Path) -> Result<LoadReport> {
    let file = read_weights(path)?;
    let (report, pairs, head_shapes) = plan(&file, state)?;
    let mut missing = report.missing.clone();
    let mut wrong = report.mismatched.clone();
    wrong.extend(head_shapes);
    // A head absent from the file is missing like any other tensor.
    missing.extend(
        report
            .reinitialised
            .iter()
            .filter(|k| !wrong.iter().any(|w| w.starts_with(&format!("{k}:"))))
            .cloned(),
    );
    if !missing.is_empty() || !wrong.is_empty() {
        let mut msg = format!("{} does not fit the model:", report.source);
        if !missing.is_empty() {
            msg += &format!(
                "\n  missing keys ({}): {}",
                missing.len(),
                missing.join(", ")
            );
        }
        if !wrong.is_empty() {
            msg += &format!(
                "\n  wrongly shaped keys ({}): {}",
                wrong.len(),
                wrong.join("; ")
            );
        }
        if !report.unused.is_empty() {
            msg += &format!(
                "\n  unused keys ({}): {}",
                report.unused.len(),
                report.unused.join(", ")
            );
        }
        return Err(Error::Io(msg));
    }
    for (t, h) in pairs {
        t.write(&h.data)?;
    }
    Ok(report)
}
