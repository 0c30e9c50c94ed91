//! The whole job end to end on an embedded default: start the in-process S3 server
//! with a sample "model" (one large shard, one medium file, a dozen small JSON
//! files), sync it to a local directory with progress shown, then sync again to
//! show that an unchanged tree copies nothing.
//!
//! Run: `cargo run --release --example demo [DEST_DIR]`

use std::path::PathBuf;

use s3load::config::{Command, Config, SyncOptions};
use s3load::plan::diff::Compare;
use s3load::store::s3::S3Settings;
use s3load::url::Location;
use s3load_testserver::{ACCESS_KEY, SECRET_KEY, TestServer, generate_bytes};

const BUCKET: &str = "my-ml-bucket";
const PREFIX: &str = "model-artifacts/my-model-1.2.3/";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let dest = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("s3load-demo"));
    let server = TestServer::start().await?;
    let store = server.store();
    store.create_bucket(BUCKET);
    eprintln!("generating a sample model in s3://{BUCKET}/{PREFIX} on {} ...", server.endpoint_url());
    store.put(BUCKET, &format!("{PREFIX}model-00001-of-00002.safetensors"), generate_bytes(512 << 20, 1));
    store.put(BUCKET, &format!("{PREFIX}model-00002-of-00002.safetensors"), generate_bytes(96 << 20, 2));
    for i in 0..12 {
        store.put(BUCKET, &format!("{PREFIX}config/part-{i:02}.json"), format!("{{\"layer\": {i}}}").into_bytes());
    }

    let config = Config {
        s3: S3Settings {
            endpoint_url: Some(server.endpoint_url()),
            region: Some("us-east-1".into()),
            static_credentials: Some((ACCESS_KEY.into(), SECRET_KEY.into())),
            retry_count: 3,
            ..Default::default()
        },
        ..Default::default()
    };
    let src = format!("s3://{BUCKET}/{PREFIX}*");
    for round in ["first sync", "second sync (nothing changed)"] {
        eprintln!("\n== {round}: s3load sync {src} {}", dest.display());
        let command = Command::Sync {
            src: Location::parse(&src).expect("valid URL"),
            dst: Location::Local(dest.clone()),
            filters: Default::default(),
            opts: SyncOptions { compare: Compare::default(), ..Default::default() },
        };
        let code = s3load::run(command, config.clone()).await;
        if code != 0 {
            eprintln!("sync failed with exit code {code}");
            std::process::exit(i32::from(code));
        }
    }
    eprintln!("\nfiles are in {}", dest.display());
    Ok(())
}
