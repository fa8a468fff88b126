//! `tubelet parity`: runs a building block or a whole model on a test vector and writes the
//! result, so a port can be checked against the official code.
//!
//! Input file (safetensors): `input`; optionally `cotangent` (the output's shape); and
//! `param.<official key>` for every parameter and buffer. Output file: `output` and, when a
//! cotangent is given, `grad.input` and `grad.<official key>` for every parameter: the gradients
//! of sum(output × cotangent).
//!
//! Modules are named as in the official code (`vivit.ViViT`) and configured by a JSON object
//! whose keys are the official constructor's argument names; nested config objects may be
//! written nested (`{"patches": {"size": [16, 16, 2]}}`) or dotted (`{"patches.size": …}`).
//! Runtime arguments of the official call go in the same object, with the training flag
//! (`train` for Flax modules). A missing field takes the official default or is an error that
//! names it; an unknown field is an error that lists the accepted ones. Arrays keep the official
//! layouts (Flax: channels-last inputs, Dense kernels (in, out)).
//!
//! Adding a module: a `fn modules() -> Vec<Module>` in `parity/<paper>.rs` that maps the
//! official config onto the port's config, and one line in [`modules`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde_json::Value;
use tubelet::io::HostTensor;
use tubelet::{no_grad, Error, Result, Tensor};
use tubelet_models::VideoModel;

use crate::outln;
use crate::output::Output;

pub mod mvit;
pub mod mvit_model;
pub mod timesformer;
pub mod tsm;
pub mod uniformer;
pub mod video_swin;
pub mod vivit;

/// A module the parity tool can run: one input tensor in its official layout, one output.
pub trait Block {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor>;
    /// Trainable parameters under their official keys.
    fn named_params(&self) -> Vec<(String, Tensor)>;
    /// Non-trainable state under its official keys (read from the input file, no gradient).
    fn named_buffers(&self) -> Vec<(String, Tensor)>;
}

/// A whole model of the zoo as a [`Block`]: its input layout is the official one.
pub struct Whole(pub Box<dyn VideoModel>);

impl Block for Whole {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.0.forward(x, train)
    }
    fn named_params(&self) -> Vec<(String, Tensor)> {
        self.0.named_params()
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        self.0.named_buffers()
    }
}

/// A building block of the port as a parity module (no buffers, train and eval alike): its
/// forward and its parameters' keys, so a port can be bisected block by block.
pub struct Part<T> {
    pub part: T,
    /// The forward, input and output in the official layouts.
    pub forward: fn(&T, &Tensor) -> Result<Tensor>,
    /// The parameters under `prefix` (called with ""; a leading '.' is dropped).
    pub params: fn(&T, &str, &mut Vec<(String, Tensor)>),
}

impl<T> Block for Part<T> {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        (self.forward)(&self.part, x)
    }
    fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        (self.params)(&self.part, "", &mut out);
        out.into_iter()
            .map(|(k, t)| (k.trim_start_matches('.').to_string(), t))
            .collect()
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// Builds a port from the official config, the input's shape and the training flag.
pub type BuildFn =
    fn(config: &mut ConfigReader, input_shape: &[usize], train: bool) -> Result<Box<dyn Block>>;

/// Named tensors on the host as the output file holds them: (key, shape, values).
pub type HostTensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// One entry of the registry.
pub struct Module {
    /// The official name, e.g. `vivit.ViViT`.
    pub name: &'static str,
    /// What it is and which official configurations the port covers.
    pub summary: &'static str,
    /// The training flag's default; `None` where the official call requires it (Flax `train`).
    pub train_default: Option<bool>,
    /// Builds the port from the official config and the input's shape.
    pub build: BuildFn,
}

/// Every module the parity tool knows.
pub fn modules() -> Vec<Module> {
    let mut all = Vec::new();
    all.extend(mvit::modules());
    all.extend(timesformer::modules());
    all.extend(mvit_model::modules());
    all.extend(tsm::modules());
    all.extend(uniformer::modules());
    all.extend(video_swin::modules());
    all.extend(vivit::modules());
    all
}

/// The module called `name`, or an error listing the names that exist.
pub fn find_module(name: &str) -> Result<Module> {
    let all = modules();
    let names: Vec<&str> = all.iter().map(|m| m.name).collect();
    let list = names.join(", ");
    all.into_iter()
        .find(|m| m.name == name)
        .ok_or_else(|| Error::Config(format!("unknown parity module {name:?}; available: {list}")))
}

/// Reads an official-style config object by key, tracking which keys were used.
pub struct ConfigReader {
    module: String,
    /// Dotted key → value; nested objects appear both as themselves and as their leaves.
    values: BTreeMap<String, Value>,
    used: BTreeSet<String>,
    asked: BTreeSet<String>,
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    if !prefix.is_empty() {
        out.insert(prefix.to_string(), v.clone());
    }
    if let Value::Object(map) = v {
        for (k, child) in map {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            flatten(&key, child, out);
        }
    }
}

impl ConfigReader {
    pub fn new(module: &str, config: &Value) -> Result<ConfigReader> {
        if !config.is_object() {
            return Err(Error::Config(format!(
                "{module} config: expected a JSON object, got {config}"
            )));
        }
        let mut values = BTreeMap::new();
        flatten("", config, &mut values);
        Ok(ConfigReader {
            module: module.to_string(),
            values,
            used: BTreeSet::new(),
            asked: BTreeSet::new(),
        })
    }

    fn err(&self, msg: String) -> Error {
        Error::Config(format!("{} config: {msg}", self.module))
    }

    /// The value at `key`, marking it used; `null` is an error that names the field, since the
    /// readers that call this stand for arguments whose official default is not `None`.
    fn take(&mut self, key: &str) -> Result<Option<Value>> {
        match self.take_nullable(key) {
            Some(Value::Null) => Err(self.err(format!(
                "field {key:?} is null, but the official constructor takes no None for it; leave it out for the default"
            ))),
            v => Ok(v),
        }
    }

    /// The value at `key`, `null` included, marking it used (an argument whose official value
    /// may be `None`: the caller decides what `null` means).
    fn take_nullable(&mut self, key: &str) -> Option<Value> {
        self.asked.insert(key.to_string());
        let v = self.values.get(key).cloned();
        if v.is_some() {
            self.used.insert(key.to_string());
        }
        v
    }

    /// A nullable value with `null` read as absent.
    fn take_opt(&mut self, key: &str) -> Option<Value> {
        self.take_nullable(key).filter(|v| !v.is_null())
    }

    fn missing(&self, key: &str) -> Error {
        self.err(format!(
            "missing required field {key:?} (the official constructor has no default for it)"
        ))
    }

    /// Whether the config object `key` is given (a required ConfigDict field, possibly empty).
    pub fn require_object(&mut self, key: &str) -> Result<()> {
        match self.take(key)? {
            Some(Value::Object(_)) => Ok(()),
            Some(v) => Err(self.err(format!("field {key:?} must be an object, got {v}"))),
            None => Err(self.missing(key)),
        }
    }

    pub fn usize(&mut self, key: &str, default: Option<usize>) -> Result<usize> {
        match self.take(key)? {
            None => default.ok_or_else(|| self.missing(key)),
            Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| {
                self.err(format!(
                    "field {key:?} must be a non-negative integer, got {v}"
                ))
            }),
        }
    }

    /// An optional integer: absent or null is `None`.
    pub fn opt_usize(&mut self, key: &str) -> Result<Option<usize>> {
        match self.take_opt(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                self.err(format!(
                    "field {key:?} must be a non-negative integer or null, got {v}"
                ))
            }),
        }
    }

    /// Whether `key` is given (not null); lists it as accepted without marking it used. A
    /// `null` left unread is refused by [`ConfigReader::finish`], as for a field whose official
    /// default is not `None`; use [`ConfigReader::has_opt`] where the official default is `None`.
    pub fn has(&mut self, key: &str) -> bool {
        self.asked.insert(key.to_string());
        self.values.get(key).is_some_and(|v| !v.is_null())
    }

    /// Whether `key` is given and not null, for an argument whose official default is `None`:
    /// an explicit `null` is accepted (marked used) and reads as absent.
    pub fn has_opt(&mut self, key: &str) -> bool {
        if self.values.get(key).is_some_and(Value::is_null) {
            self.take_nullable(key);
            return false;
        }
        self.has(key)
    }

    /// An optional number: absent or null is `None`.
    pub fn opt_f64(&mut self, key: &str) -> Result<Option<f64>> {
        match self.take_opt(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                self.err(format!("field {key:?} must be a number or null, got {v}"))
            }),
        }
    }

    pub fn f64(&mut self, key: &str, default: Option<f64>) -> Result<f64> {
        match self.take(key)? {
            None => default.ok_or_else(|| self.missing(key)),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(format!("field {key:?} must be a number, got {v}"))),
        }
    }

    pub fn bool(&mut self, key: &str, default: Option<bool>) -> Result<bool> {
        match self.take(key)? {
            None => default.ok_or_else(|| self.missing(key)),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(format!("field {key:?} must be true or false, got {v}"))),
        }
    }

    pub fn string(&mut self, key: &str, default: Option<&str>) -> Result<String> {
        match self.take(key)? {
            None => default.map(str::to_string).ok_or_else(|| self.missing(key)),
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(self.err(format!("field {key:?} must be a string, got {v}"))),
        }
    }

    /// A list of non-negative integers, of length `len` when given.
    pub fn usizes(&mut self, key: &str, len: Option<usize>) -> Result<Vec<usize>> {
        let v = self.take(key)?.ok_or_else(|| self.missing(key))?;
        let bad = || {
            let n = len.map_or(String::new(), |n| format!("{n} "));
            self.err(format!(
                "field {key:?} must be a list of {n}non-negative integers, got {v}"
            ))
        };
        let list = v.as_array().ok_or_else(bad)?;
        let out: Option<Vec<usize>> = list
            .iter()
            .map(|x| x.as_u64().map(|n| n as usize))
            .collect();
        let out = out.ok_or_else(bad)?;
        if len.is_some_and(|n| n != out.len()) {
            return Err(bad());
        }
        Ok(out)
    }

    /// The raw JSON value at `key` (null counts as absent, and is accepted), marking it used:
    /// for fields the typed readers don't cover (lists of lists, string-or-object).
    pub fn json(&mut self, key: &str) -> Option<Value> {
        self.take_opt(key)
    }

    /// A class-valued argument (a class, or a `partial(...)` of one) given by its name as the
    /// official code spells it, e.g. `"nn.LayerNorm"` or `"PatchMerging"`. `null` is `None`
    /// (where the official default is `None`, or where `None` is accepted); `true` / `false`
    /// stand for `true_class` / `None` where the port took booleans before. Returns the name,
    /// with a leading module path (`nn.`, `torch.nn.`) kept as written.
    pub fn class(
        &mut self,
        key: &str,
        default: Option<&str>,
        true_class: Option<&str>,
    ) -> Result<Option<String>> {
        if !self.values.contains_key(key) {
            self.asked.insert(key.to_string());
            return Ok(default.map(str::to_string));
        }
        match self.take_nullable(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(Value::Bool(b)) if true_class.is_some() => {
                Ok(b.then(|| true_class.unwrap().to_string()))
            }
            Some(v) => Err(self.err(format!(
                "field {key:?} must be a class name (a string) or null, got {v}"
            ))),
        }
    }

    /// `norm_layer` given by name: `nn.LayerNorm` (eps 1e-5), `partial(nn.LayerNorm,
    /// eps=1e-6)` (any eps), returning the eps. `torch.nn.` and a bare `LayerNorm` are the same
    /// class. Anything else, `null` included where the official code calls `norm_layer(dim)`
    /// unconditionally, is an error naming the field.
    pub fn layer_norm_eps(&mut self, key: &str, default_eps: f32) -> Result<f32> {
        let name = self.class(key, Some("nn.LayerNorm"), None)?;
        let Some(name) = name else {
            return Err(self.err(format!("field {key:?} is null, but the official code calls {key}(dim) (a norm layer is required here)")));
        };
        parse_layer_norm(&name, default_eps)
            .ok_or_else(|| self.err(format!(
                "field {key:?} {name:?} is not a LayerNorm; accepted: \"nn.LayerNorm\" or \"partial(nn.LayerNorm, eps=<number>)\""
            )))
    }

    /// `qk_scale` (default `None`): the attention logits' scale, `None` for head_dim^−0.5.
    /// NOTE: the official code writes `qk_scale or head_dim ** -0.5`, so 0 means the default
    /// too (Python's truthiness); so it does here.
    pub fn qk_scale(&mut self, key: &str) -> Result<Option<f32>> {
        Ok(self.opt_f64(key)?.filter(|s| *s != 0.0).map(|s| s as f32))
    }

    /// Accepts `key` without using it (settings that only affect initialisation, or that the
    /// official code reads only in configurations the port rejects anyway).
    pub fn ignore(&mut self, key: &str) {
        self.take_nullable(key);
    }

    /// Fails on any key the module did not read, listing the accepted ones.
    pub fn finish(self) -> Result<()> {
        let unknown: Vec<&String> = self
            .values
            .keys()
            .filter(|k| !self.used.contains(*k))
            .filter(|k| {
                // A nested object is known when one of its leaves was read.
                let dotted = format!("{k}.");
                !self.used.iter().any(|u| u.starts_with(&dotted))
                    && !self.asked.iter().any(|u| u.starts_with(&dotted))
            })
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        // A null the module asked for but did not accept: an argument with a non-None default.
        if let Some(k) = unknown
            .iter()
            .find(|k| self.asked.contains(**k) && self.values[**k].is_null())
        {
            return Err(self.err(format!(
                "field {k:?} is null, but the official constructor takes no None for it; leave it out for the default"
            )));
        }
        let names: Vec<String> = unknown.iter().map(|k| format!("{k:?}")).collect();
        let accepted: Vec<&str> = self.asked.iter().map(String::as_str).collect();
        Err(self.err(format!(
            "unknown field(s) {}; accepted: {}",
            names.join(", "),
            accepted.join(", ")
        )))
    }
}

/// The eps of a LayerNorm class spelt `nn.LayerNorm` / `torch.nn.LayerNorm` / `LayerNorm`
/// (`default_eps`: PyTorch's 1e-5), or `partial(<that>, eps=<number>)`; `None` for any other.
fn parse_layer_norm(name: &str, default_eps: f32) -> Option<f32> {
    let is_ln = |s: &str| {
        matches!(
            s.trim(),
            "nn.LayerNorm" | "torch.nn.LayerNorm" | "LayerNorm"
        )
    };
    if is_ln(name) {
        return Some(default_eps);
    }
    let inner = name.strip_prefix("partial(")?.strip_suffix(')')?;
    let (class, eps) = inner.split_once(',')?;
    let eps = eps
        .trim()
        .strip_prefix("eps")?
        .trim_start()
        .strip_prefix('=')?
        .trim();
    let eps: f32 = eps.parse().ok()?;
    (is_ln(class) && eps > 0.0).then_some(eps)
}

/// A config given on the command line: a JSON object, or the path of a file holding one.
pub fn parse_config(text: &str) -> Result<Value> {
    let (json, source) = if text.trim_start().starts_with('{') {
        (text.to_string(), "--config".to_string())
    } else {
        let s = std::fs::read_to_string(text).map_err(|e| {
            Error::Config(format!(
                "--config {text:?} is neither a JSON object nor a readable file: {e}"
            ))
        })?;
        (s, text.to_string())
    };
    serde_json::from_str(&json).map_err(|e| Error::Config(format!("{source}: invalid JSON: {e}")))
}

/// Runs `module` on the tensors of an input file; returns the output file's tensors.
pub fn run_tensors(
    module: &str,
    config: &Value,
    file: &BTreeMap<String, HostTensor>,
) -> Result<HostTensors> {
    Ok(run_tensors_with(module, config, file, None)?.0)
}

/// [`run_tensors`], with the parameters and buffers read from `weights` (an official
/// checkpoint or safetensors, see `tubelet_train::weights`) instead of `param.*` entries: when
/// the module is part of the checkpointed model (e.g. `video_swin.SwinTransformer3D` inside an
/// mmaction2 recogniser), the keys under its prefix are used and the rest reported as unused.
pub fn run_tensors_with(
    module: &str,
    config: &Value,
    file: &BTreeMap<String, HostTensor>,
    weights: Option<&Path>,
) -> Result<(HostTensors, Option<tubelet_train::weights::LoadReport>)> {
    let entry = find_module(module)?;
    let input = file.get("input").ok_or_else(|| {
        let mut some: Vec<&str> = file.keys().map(String::as_str).take(4).collect();
        if file.len() > 4 {
            some.push("…");
        }
        Error::Io(format!(
            "the input file has no tensor named \"input\" (it has {} tensors: {})",
            file.len(),
            some.join(", ")
        ))
    })?;
    let cotangent = file.get("cotangent");
    let stray: Vec<&str> = file
        .keys()
        .map(String::as_str)
        .filter(|k| {
            *k != "input" && *k != "cotangent" && (weights.is_some() || !k.starts_with("param."))
        })
        .collect();
    if weights.is_some() && !stray.is_empty() {
        return Err(Error::Io(format!(
            "with --weights the input file holds only input and cotangent; it also has: {}",
            stray.join(", ")
        )));
    }
    if !stray.is_empty() {
        return Err(Error::Io(format!(
            "the input file holds tensors that are neither input, cotangent nor param.<key>: {}",
            stray.join(", ")
        )));
    }

    let mut reader = ConfigReader::new(module, config)?;
    let train = reader.bool("train", entry.train_default)?;
    let block = (entry.build)(&mut reader, &input.shape, train)?;
    reader.finish()?;

    let params = block.named_params();
    let mut state = params.clone();
    state.extend(block.named_buffers());
    let report = match weights {
        Some(w) => Some(tubelet_train::weights::load_exact_into(&state, w)?),
        None => {
            let by_key: BTreeMap<&str, &HostTensor> = file
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("param.").map(|k| (k, v)))
                .collect();
            tubelet::io::assign_by_key(
                &format!("the input file's param.* tensors for {module}"),
                &by_key,
                &state,
                true,
            )?;
            None
        }
    };

    let x = Tensor::from_slice(&input.data, &input.shape)?;
    let mut out = Vec::new();
    let Some(cot) = cotangent else {
        let y = no_grad(|| block.forward(&x, train))?;
        out.push(("output".to_string(), y.shape().to_vec(), y.to_vec()?));
        return Ok((out, report));
    };
    let x = x.param();
    let y = block.forward(&x, train)?;
    if cot.shape != y.shape() {
        return Err(Error::Shape(format!(
            "cotangent has shape {:?}, but {module}'s output has shape {:?}",
            cot.shape,
            y.shape()
        )));
    }
    // d/dθ Σ(y ∘ c) is the vector-Jacobian product with upstream gradient c.
    let grads = y.backward_with(Tensor::from_slice(&cot.data, &cot.shape)?)?;
    out.push(("output".to_string(), y.shape().to_vec(), y.to_vec()?));
    let grad_of = |t: &Tensor| -> Result<Vec<f32>> {
        // A parameter the output does not depend on has a zero gradient.
        grads
            .get(t)
            .map_or(Ok(vec![0.0; t.numel()]), Tensor::to_vec)
    };
    out.push(("grad.input".to_string(), input.shape.clone(), grad_of(&x)?));
    for (key, p) in &params {
        out.push((format!("grad.{key}"), p.shape().to_vec(), grad_of(p)?));
    }
    Ok((out, report))
}

/// What [`run_files`] wrote.
#[derive(Debug)]
pub struct Written {
    pub tensors: usize,
    pub output_shape: Vec<usize>,
    pub with_gradients: bool,
}

/// `tubelet parity`: reads `input`, runs `module` configured by `config` (JSON text or a file
/// path) and writes `output` atomically.
pub fn run_files(module: &str, config: &str, input: &Path, output: &Path) -> Result<Written> {
    run_files_with(module, config, input, output, None)
}

/// [`run_files`] with the parameters from `weights` (see [`run_tensors_with`]).
pub fn run_files_with(
    module: &str,
    config: &str,
    input: &Path,
    output: &Path,
    weights: Option<&Path>,
) -> Result<Written> {
    let config_value = parse_config(config)?;
    let file = tubelet::io::read(input)?;
    let (tensors, report) = run_tensors_with(module, &config_value, &file, weights)?;
    if let Some(r) = &report {
        outln!(Output::stdout(), "{}", r.summary())?;
    }
    let meta = HashMap::from([
        ("module".to_string(), module.to_string()),
        ("config".to_string(), config_value.to_string()),
    ]);
    tubelet::io::save_host(output, &tensors, Some(meta))?;
    Ok(Written {
        tensors: tensors.len(),
        output_shape: tensors[0].1.clone(),
        with_gradients: tensors.len() > 1,
    })
}

#[derive(clap::Parser, Debug)]
#[command(name = "parity")]
pub struct Args {
    /// The module, named as in the official code (e.g. `vivit.ViViT`).
    #[arg(long)]
    pub module: String,
    /// The official constructor's arguments as a JSON object (or a file holding one), plus the
    /// runtime arguments and the training flag (`train`).
    #[arg(long)]
    pub config: String,
    /// safetensors with `input`, optionally `cotangent`, and `param.<official key>` for every
    /// parameter and buffer.
    #[arg(long)]
    pub input: std::path::PathBuf,
    /// Where to write `output` (and `grad.input`, `grad.<official key>` with a cotangent).
    #[arg(long)]
    pub output: std::path::PathBuf,
    /// Read the parameters and buffers from this checkpoint (official .pth/.pyth or
    /// safetensors) instead of the input's `param.*` entries.
    #[arg(long)]
    pub weights: Option<std::path::PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let mut out = Output::stdout();
    let w = run_files_with(
        &args.module,
        &args.config,
        &args.input,
        &args.output,
        args.weights.as_deref(),
    )?;
    outln!(
        out,
        "{}: output {:?}{}; wrote {} tensors to {}",
        args.module,
        w.output_shape,
        if w.with_gradients {
            " with gradients of sum(output × cotangent)"
        } else {
            ""
        },
        w.tensors,
        args.output.display()
    )?;
    Ok(())
}
