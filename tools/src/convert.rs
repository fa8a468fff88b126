//! `tubelet convert FILE OUT [--model NAME]`: writes the tensors of an official checkpoint
//! (`.pth`, `.pyth`, legacy or zip, f16/bf16 widened to f32) or of a tubelet training state
//! as a safetensors weights file, atomically.
//!
//! With `--model`, the keys are the preset's own (official) keys: wrapper prefixes matched
//! and another family's head renamed as `tubelet_train::weights` loads them; the file's
//! tensors keep their shapes (a head of another class count is kept as it is, for
//! `train --weights` to re-initialise), and keys the model lacks are left out and listed.
//! Without it, the state dict's keys are written as the file has them (loading matches
//! prefixes anyway). A training state gives its parameters and buffers.

use std::path::PathBuf;

use tubelet::io::HostTensor;
use tubelet::{Error, Result};
use tubelet_train::{checkpoint, weights};

use crate::outln;
use crate::output::Output;

#[derive(clap::Parser, Debug)]
#[command(name = "convert")]
pub struct Args {
    /// An official checkpoint (.pth, .pyth, .pt, legacy or zip) or a tubelet training state.
    pub input: PathBuf,
    /// The safetensors file to write.
    pub output: PathBuf,
    /// Write under this preset's keys (see `tubelet models`).
    #[arg(long)]
    pub model: Option<String>,
}

/// What [`convert`] wrote.
#[derive(Debug)]
pub struct Converted {
    /// "a PyTorch zip file, state dict under 'state_dict'", or "a tubelet training state".
    pub source: String,
    pub tensors: usize,
    /// How the tensors were stored in the input: dtype → count.
    pub stored: std::collections::BTreeMap<String, usize>,
    /// Input keys not written (with `--model`: keys the model lacks).
    pub left_out: Vec<String>,
}

pub fn convert(args: &Args) -> Result<Converted> {
    tubelet::io::check_writable(&args.output)?;
    // (what the input is, tensors under the keys to write, their stored dtypes, keys left out)
    type Gathered = (String, Vec<(String, HostTensor)>, Vec<String>, Vec<String>);
    let (source, tensors, dtypes, left_out): Gathered = match checkpoint::load(&args.input) {
        Ok(state) => {
            let t: Vec<_> = state.params.into_iter().chain(state.buffers).collect();
            let d = vec!["f32".to_string(); t.len()];
            (
                format!("a tubelet training state at step {}", state.progress.step),
                t,
                d,
                Vec::new(),
            )
        }
        Err(_) => {
            let mut file = weights::read_weights(&args.input)?;
            let source = file.describe();
            match &args.model {
                None => {
                    let d = file.dtypes.values().cloned().collect();
                    (
                        source,
                        std::mem::take(&mut file.tensors).into_iter().collect(),
                        d,
                        Vec::new(),
                    )
                }
                Some(name) => {
                    let model = (tubelet_models::preset(name)?.build)(
                        &tubelet_models::BuildOptions::seed(0),
                    )?;
                    let keys: Vec<String> = weights::model_state(model.as_ref())
                        .into_iter()
                        .map(|(k, _)| k)
                        .collect();
                    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                    let (pairs, unused) = weights::official_keys(&file, &key_refs)?;
                    if pairs.is_empty() {
                        return Err(Error::Io(format!(
                            "{}: no key of the file names a tensor of {name}",
                            args.input.display()
                        )));
                    }
                    let d = pairs
                        .iter()
                        .map(|(_, fk)| file.dtypes[fk].clone())
                        .collect();
                    let t = pairs
                        .into_iter()
                        .map(|(mk, fk)| (mk, file.tensors.remove(&fk).expect("a file key")))
                        .collect();
                    (source, t, d, unused)
                }
            }
        }
    };
    let mut stored = std::collections::BTreeMap::new();
    for d in dtypes {
        *stored.entry(d).or_insert(0) += 1;
    }
    let host: Vec<(String, Vec<usize>, Vec<f32>)> = tensors
        .into_iter()
        .map(|(k, t)| (k, t.shape, t.data))
        .collect();
    let meta = std::collections::HashMap::from([(
        "converted_from".to_string(),
        args.input.display().to_string(),
    )]);
    tubelet::io::save_host(&args.output, &host, Some(meta))?;
    Ok(Converted {
        source,
        tensors: host.len(),
        stored,
        left_out,
    })
}

pub fn run(args: Args) -> Result<()> {
    let out = &mut Output::stdout();
    let c = convert(&args)?;
    let stored: Vec<String> = c.stored.iter().map(|(d, n)| format!("{n} {d}")).collect();
    outln!(
        out,
        "tubelet convert: {} ({}) -> {}: {} tensors ({}), f32",
        args.input.display(),
        c.source,
        args.output.display(),
        c.tensors,
        stored.join(", ")
    )?;
    if !c.left_out.is_empty() {
        outln!(
            out,
            "left out ({}, not in {}): {}",
            c.left_out.len(),
            args.model.as_deref().unwrap_or("the model"),
            c.left_out.join(", ")
        )?;
    }
    Ok(())
}
