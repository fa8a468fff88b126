//! `cargo xtask test` and `cargo xtask train [ARGS]`: the README's two commands. `test` runs
//! `cargo fmt --check` and `cargo clippy -- -D warnings` before the suite; clippy and the suite
//! are built with the feature `mpi` (off in a default build), whose tests launch `mpirun -np 2
//! tubelet train` (tools/tests/mpi.rs).
//!
//! Each first makes sure the machine has what tubelet needs, installing what is missing through
//! the system's package manager and saying what and why, then runs cargo:
//!
//! | need | Debian/Ubuntu packages | why |
//! |---|---|---|
//! | build video support | pkg-config libclang-dev libavformat-dev libavcodec-dev libavutil-dev libswscale-dev | `ffmpeg-next` links FFmpeg's libraries; bindgen needs libclang |
//! | a Vulkan adapter | mesa-vulkan-drivers (Mesa ≥ 25, from backports on Debian 12) | lavapipe, when no GPU driver is installed |
//! | tests | ffmpeg | the CLI encodes test clips with B-frames, odd sizes, start offsets |
//! | tests of feature `mpi` | libopenmpi-dev openmpi-bin | data-parallel training over MPI: rsmpi links OpenMPI, the tests launch `mpirun -np 2` |
//!
//! On other systems (macOS, Windows, non-apt Linux) nothing is installed: the README says what to
//! install by hand, and cargo's own error names anything still missing.
//!
//! `TUBELET_NO_SETUP=1` skips the set-up (for machines managed by hand).

use std::path::Path;
use std::process::{exit, Command};

const BUILD_PKGS: [&str; 6] = [
    "pkg-config",
    "libclang-dev",
    "libavformat-dev",
    "libavcodec-dev",
    "libavutil-dev",
    "libswscale-dev",
];
const TEST_PKGS: [&str; 3] = ["ffmpeg", "libopenmpi-dev", "openmpi-bin"];

/// The suite is built with the feature `mpi` (off in a default build), so that its lints and
/// tests (tools/tests/mpi.rs, which launch `mpirun -np 2 tubelet train`) come with the rest
/// without compiling the workspace a second time.
const MPI_FEATURE: [&str; 2] = ["--features", "tubelet-cli/mpi"];

fn main() {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let (need, cargo_args): (Vec<&str>, Vec<String>) = match task.as_str() {
        "test" => (
            BUILD_PKGS.iter().chain(&TEST_PKGS).copied().collect(),
            ["test", "--workspace"]
                .iter()
                .chain(&MPI_FEATURE)
                .map(|s| s.to_string())
                .chain(rest)
                .collect(),
        ),
        "train" => (
            BUILD_PKGS.to_vec(),
            ["run", "--release", "-p", "tubelet-cli", "--", "train"]
                .iter()
                .map(|s| s.to_string())
                .chain(rest)
                .collect(),
        ),
        "setup" => (
            BUILD_PKGS.iter().chain(&TEST_PKGS).copied().collect(),
            Vec::new(),
        ),
        _ => {
            eprintln!(
                "usage: cargo xtask test [CARGO TEST ARGS] | cargo xtask train [TRAIN ARGS] | cargo xtask setup\n\
                 (the README's commands: set up the machine, then run the tests or train)"
            );
            exit(2);
        }
    };
    if std::env::var("TUBELET_NO_SETUP").as_deref() != Ok("1") {
        if let Err(e) = setup(&need) {
            eprintln!("xtask: set-up failed: {e}");
            exit(1);
        }
    }
    if cargo_args.is_empty() {
        return;
    }
    if task == "test" {
        // rustup's default profile has rustfmt and clippy; a minimal one does not.
        let have = |tool: &str| {
            Command::new(&cargo)
                .args([tool, "--version"])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !(have("fmt") && have("clippy")) {
            eprintln!("xtask: installing rustfmt and clippy (rustup components) for the checks");
            let _ = Command::new("rustup")
                .args(["component", "add", "rustfmt", "clippy"])
                .status();
        }
        // Formatting and lints first: they fail in seconds, the suite takes minutes.
        let checks: [&[&str]; 2] = [
            &["fmt", "--all", "--check"],
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                MPI_FEATURE[0],
                MPI_FEATURE[1],
                "--",
                "-D",
                "warnings",
            ],
        ];
        for check in checks {
            let status = Command::new(&cargo)
                .args(check)
                .status()
                .unwrap_or_else(|e| {
                    eprintln!("xtask: could not run cargo: {e}");
                    exit(1)
                });
            if !status.success() {
                eprintln!("xtask: `cargo {}` failed", check.join(" "));
                exit(status.code().unwrap_or(1));
            }
        }
    }
    let status = Command::new(&cargo)
        .args(&cargo_args)
        .status()
        .unwrap_or_else(|e| {
            eprintln!("xtask: could not run cargo: {e}");
            exit(1)
        });
    exit(status.code().unwrap_or(1));
}

/// Installs the missing packages of `need`, and lavapipe when no Vulkan driver is installed, on
/// a system with apt-get and dpkg; elsewhere prints what to install.
fn setup(need: &[&str]) -> Result<(), String> {
    if !Path::new("/usr/bin/apt-get").exists() || !Path::new("/usr/bin/dpkg-query").exists() {
        if cfg!(target_os = "linux") {
            eprintln!(
                "xtask: no apt-get here; install FFmpeg's development libraries (libavformat, \
                 libavcodec, libavutil, libswscale), pkg-config, clang and a Vulkan driver with your \
                 package manager (see the README)"
            );
        }
        return Ok(());
    }
    let mut missing: Vec<&str> = need.iter().copied().filter(|p| !installed(p)).collect();
    let mut why: Vec<String> = Vec::new();
    if !missing.is_empty() {
        why.push(format!(
            "{} (FFmpeg's libraries for video support; the ffmpeg CLI for test clips; OpenMPI \
             for the data-parallel tests)",
            missing.join(" ")
        ));
    }
    let mesa = mesa_needed();
    if let Some(reason) = &mesa {
        why.push(format!("mesa-vulkan-drivers ({reason})"));
    }
    if missing.is_empty() && mesa.is_none() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", why.join("; "));
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
    run(sudo, &["apt-get", "update", "-qq"])?;
    if !missing.is_empty() {
        let mut cmd = vec!["apt-get", "install", "-y", "-qq", "--no-install-recommends"];
        cmd.append(&mut missing);
        run(sudo, &cmd)?;
    }
    if mesa.is_some() {
        install_mesa(sudo)?;
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn mesa_version() -> Option<String> {
    let o = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "mesa-vulkan-drivers"])
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (o.status.success() && !v.is_empty()).then_some(v)
}

/// Why lavapipe must be installed or upgraded, or None. A machine with a GPU driver of its own
/// (an ICD other than Mesa's software one) is left alone.
fn mesa_needed() -> Option<String> {
    if let Some(v) = mesa_version() {
        // Mesa 22's llvmpipe silently cuts loops at 65,535 iterations; the kernels keep under it,
        // but tubelet is tested on 25 (shared/spec/engine-notes.md).
        let upstream = v.split_once(':').map_or(v.as_str(), |(_epoch, rest)| rest);
        let major: u32 = upstream
            .split('.')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        return (major < 25).then(|| format!("Mesa {v} is older than 25"));
    }
    let icds = ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"];
    let has_icd = icds.iter().any(|d| {
        std::fs::read_dir(d)
            .map(|mut r| r.any(|e| e.is_ok()))
            .unwrap_or(false)
    });
    (!has_icd).then(|| {
        "no Vulkan driver found: lavapipe, Mesa's software Vulkan, runs tubelet on the CPU".into()
    })
}

/// mesa-vulkan-drivers, from the distribution's backports suite where it exists (Debian 12 has
/// Mesa 25 there), enabling that suite from the sources already configured.
fn install_mesa(sudo: &[&str]) -> Result<(), String> {
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let codename = os
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|s| s.trim_matches('"').to_string());
    let src = Path::new("/etc/apt/sources.list.d/debian.sources");
    let bp = Path::new("/etc/apt/sources.list.d/tubelet-backports.sources");
    if let Some(code) = &codename {
        let have_bp = std::fs::read_dir("/etc/apt/sources.list.d")
            .map(|r| {
                r.flatten().any(|e| {
                    std::fs::read_to_string(e.path())
                        .map(|s| s.contains(&format!("{code}-backports")))
                        .unwrap_or(false)
                })
            })
            .unwrap_or(false);
        if !have_bp && src.exists() && is_root() {
            // The first stanza of the existing sources, with its suites set to backports.
            let text = std::fs::read_to_string(src).map_err(|e| e.to_string())?;
            let first = text.split("\n\n").next().unwrap_or("");
            let stanza: String = first
                .lines()
                .map(|l| {
                    if l.starts_with("Suites:") {
                        format!("Suites: {code}-backports")
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            std::fs::write(bp, stanza + "\n")
                .map_err(|e| format!("writing {}: {e}", bp.display()))?;
            run(sudo, &["apt-get", "update", "-qq"])?;
        }
        let policy = Command::new("apt-cache")
            .args(["policy", "mesa-vulkan-drivers"])
            .output();
        if policy
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("backports"))
            .unwrap_or(false)
        {
            let suite = format!("{code}-backports");
            return run(
                sudo,
                &[
                    "apt-get",
                    "install",
                    "-y",
                    "-qq",
                    "-t",
                    &suite,
                    "mesa-vulkan-drivers",
                ],
            );
        }
    }
    run(
        sudo,
        &["apt-get", "install", "-y", "-qq", "mesa-vulkan-drivers"],
    )
}

fn run(prefix: &[&str], cmd: &[&str]) -> Result<(), String> {
    let all: Vec<&str> = prefix.iter().chain(cmd).copied().collect();
    let status = Command::new(all[0])
        .args(&all[1..])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| format!("{}: {e}", all.join(" ")))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", all.join(" ")))
    }
}
