//! Integration tests: the real `s3load` binary against an in-process S3 server
//! that speaks HTTP and verifies SigV4.

mod ami;
mod atomic;
mod cat;
mod connections;
mod credentials;
mod docs;
mod download;
mod environment;
mod errors;
mod faults;
mod foldfs;
mod harness;
mod house;
mod image;
mod localfs;
mod manifests;
mod model;
mod output;
mod overlap;
mod profiles;
mod resume;
mod safety;
mod shard;
mod shell;
mod soak;
mod sync;
mod upload;
