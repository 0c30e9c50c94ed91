//! `s3load-testserver`: the test server as a standalone process, for trying s3load
//! (or any S3 client) by hand. Prints the endpoint and credentials, then serves
//! until interrupted.
//!
//! Usage: s3load-testserver [--port P] [--small N] [--tiny N] [--large N] [--large-mib M]
//!        [--latency-ms L] [--rate-mbps R] [--total-mbps T] [--straggler-every N --straggler-mbps S]
//!        [--legacy]
//!
//! `--rate-mbps` caps each GET body (MB/s); `--total-mbps` caps all of them
//! together, a link every connection shares.
//!
//! `--straggler-every N` serves every Nth GET body at `--straggler-mbps`
//! (MB/s, default 5) instead of `--rate-mbps`: a slow path among fast ones.
//!
//! `--legacy` stores the objects as s5cmd's upload leaves them: MD5 ETags, no
//! stored checksum, multipart in 50 MiB parts above 50 MiB.

use std::time::{Duration, SystemTime};

use s3load_testserver::{ACCESS_KEY, Options, SECRET_KEY, Shaping, Straggler, TestServer, Writer, generate_bytes};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let rate = arg("--rate-mbps", 0);
    let shaping = Shaping {
        first_byte_delay: Duration::from_millis(arg("--latency-ms", 0)),
        rate_per_connection: (rate > 0).then_some(rate * 1_000_000),
        straggler: (arg("--straggler-every", 0) > 0)
            .then(|| Straggler { every: arg("--straggler-every", 0), rate: arg("--straggler-mbps", 5) * 1_000_000 }),
        total_rate: (arg("--total-mbps", 0) > 0).then(|| arg("--total-mbps", 0) * 1_000_000),
    };
    let server = TestServer::start_with(Options { shaping, port: arg("--port", 0) as u16, tls: None }).await?;
    let store = server.store();
    store.create_bucket("bucket");
    let legacy = std::env::args().any(|a| a == "--legacy");
    let put = |key: String, data: bytes::Bytes| {
        if legacy {
            store.put_object("bucket", &key, Writer::S5cmd.legacy_object(data, SystemTime::now()));
        } else {
            store.put("bucket", &key, data);
        }
    };
    for i in 0..arg("--small", 0) {
        put(format!("small/d{:02}/f{i:05}.bin", i % 50), generate_bytes(64 << 10, 1000 + i));
    }
    // Tiny objects in 1000 directories, for listing and memory at scale.
    for i in 0..arg("--tiny", 0) {
        put(format!("tiny/d{:03}/f{i:07}.bin", i % 1000), bytes::Bytes::from(format!("{i:016}")));
    }
    for i in 0..arg("--large", 0) {
        put(format!("large/obj-{i}.bin"), generate_bytes((arg("--large-mib", 1024) << 20) as usize, 100 + i));
    }
    println!("endpoint {}", server.endpoint_url());
    println!("export AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={SECRET_KEY} AWS_REGION=us-east-1");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
