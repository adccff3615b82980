//! Reading the running system into the model's inputs. Every reader takes the
//! root it reads from, so tests can point it at a captured tree.

pub mod memcg;
pub mod proc;
pub mod zoneinfo;
