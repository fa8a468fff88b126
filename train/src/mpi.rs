//! The MPI calls of data-parallel training (feature `mpi`): dist.rs's [`Comm`] on
//! `MPI_COMM_WORLD` through rsmpi, against the system's MPI (OpenMPI 4.1 on Debian 12).
//!
//! Threads: MPI is started with `MPI_THREAD_MULTIPLE` when the library has it: every collective
//! runs on dist.rs's communication thread, one at a time, but the watchdog thread may call
//! `MPI_Abort` while that thread waits in one. With a lesser level the watchdog still calls it
//! (OpenMPI's abort works from any thread in practice) and says so at start.
//!
//! Counts: MPI counts are `int`; buffers above 2^30 elements go in chunks (a bucket never is,
//! but a broadcast state file may be).

use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::environment::{Threading, Universe};
use mpi::topology::{Communicator, SimpleCommunicator};
use tubelet::{Error, Result};

use crate::dist::Comm;

/// Elements per MPI call (well below `i32::MAX`).
const CHUNK: usize = 1 << 30;

/// `MPI_COMM_WORLD`. The communicator is made where it is used: rsmpi's handle is not `Send`,
/// and the world handle needs no freeing.
pub struct MpiComm {
    rank: usize,
    world: usize,
    library: String,
}

fn world() -> SimpleCommunicator {
    SimpleCommunicator::world()
}

/// Starts MPI. The returned universe finalises MPI when dropped.
pub fn start() -> Result<(MpiComm, Box<dyn Send>)> {
    let (universe, threading): (Universe, Threading) =
        mpi::initialize_with_threading(Threading::Multiple)
            .ok_or_else(|| Error::Config("MPI was already started in this process".into()))?;
    let w = universe.world();
    let library = mpi::environment::library_version()
        // "Open MPI v4.1.4, package: …": the name and version, without a trailing NUL.
        .map(|v| {
            v.split([',', '\0', '\n'])
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|_| "MPI".into());
    let comm = MpiComm {
        rank: w.rank() as usize,
        world: w.size() as usize,
        library,
    };
    if threading != Threading::Multiple && comm.rank == 0 {
        eprintln!(
            "warning: {} gives thread level {threading:?}, not Multiple: the watchdog's abort \
             comes from a second thread",
            comm.library
        );
    }
    Ok((comm, Box::new(universe)))
}

impl Comm for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn all_reduce_f32(&self, buf: &mut [f32]) {
        let w = world();
        for chunk in buf.chunks_mut(CHUNK) {
            let send = chunk.to_vec();
            w.all_reduce_into(&send[..], chunk, SystemOperation::sum());
        }
    }

    fn all_reduce_f64(&self, buf: &mut [f64]) {
        let w = world();
        for chunk in buf.chunks_mut(CHUNK) {
            let send = chunk.to_vec();
            w.all_reduce_into(&send[..], chunk, SystemOperation::sum());
        }
    }

    fn broadcast(&self, buf: &mut Vec<u8>) {
        let w = world();
        let root = w.process_at_rank(0);
        let mut len = buf.len() as u64;
        root.broadcast_into(&mut len);
        buf.resize(len as usize, 0);
        for chunk in buf.chunks_mut(CHUNK) {
            root.broadcast_into(chunk);
        }
    }

    fn all_gather(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let w = world();
        let mut lens = vec![0u64; self.world];
        w.all_gather_into(&(bytes.len() as u64), &mut lens[..]);
        // Every rank sends the longest length (padded): fixed-size all-gather.
        let max = lens.iter().copied().max().unwrap_or(0) as usize;
        let mut mine = bytes.to_vec();
        mine.resize(max.max(1), 0);
        let mut all = vec![0u8; mine.len() * self.world];
        w.all_gather_into(&mine[..], &mut all[..]);
        all.chunks(mine.len())
            .zip(&lens)
            .map(|(c, &n)| c[..n as usize].to_vec())
            .collect()
    }

    fn abort(&self, code: i32) -> ! {
        world().abort(code)
    }

    fn library(&self) -> String {
        self.library.clone()
    }
}
