//! `tubelet models`: every model preset with its parameters and GFLOPs (multiply-adds of conv,
//! linear and the two attention matmuls, the papers' convention) at its default input.

use tubelet::Result;
use tubelet_models::synthetic::NUM_CLASSES;
use tubelet_models::vivit;

pub fn run() -> Result<()> {
    println!("{:<22} {:<28} {:>14} {:>10}", "model", "input", "parameters", "GFLOPs");
    let rows: Vec<(&str, vivit::Config)> = vec![
        ("vivit-b-16x2", vivit::Config::vivit_b_16x2()),
        ("vivit-tiny", vivit::Config::tiny(NUM_CLASSES)),
    ];
    for (name, c) in rows {
        let input = format!("{}×{}×{}×3 (T, H, W, C)", c.frames, c.height, c.width);
        println!("{:<22} {:<28} {:>14} {:>10.1}", name, input, c.num_params(), c.macs() / 1e9);
    }
    Ok(())
}
