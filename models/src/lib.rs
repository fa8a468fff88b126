//! tubelet-models: the video-transformer zoo, composed from tubelet's ops, one file per paper.
//! Configs follow the papers; parameters carry the official checkpoints' key names.

pub mod blocks;
pub mod synthetic;
pub mod vivit;
