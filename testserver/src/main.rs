//! `s3load-testserver`: the test server as a standalone process, for trying s3load
//! (or any S3 client) by hand. Prints the endpoint and credentials, then serves
//! until interrupted. `s3load-testserver --help` lists its options.

use std::time::{Duration, SystemTime};

use clap::Parser;
use s3load_testserver::{ACCESS_KEY, Options, SECRET_KEY, Shaping, Straggler, TestServer, Writer, generate_bytes};

/// An in-process S3 server on loopback, seeded with sample objects in the
/// bucket `bucket`, for trying s3load (or any S3 client) by hand and for
/// benchmarks. Prints the endpoint and the credentials to export, then serves
/// until interrupted (Ctrl-C). Objects are kept in memory.
#[derive(Debug, Parser)]
#[command(name = "s3load-testserver", version)]
struct Args {
    /// Port to listen on (127.0.0.1); 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Objects of 64 KiB under small/ (in 50 directories).
    #[arg(long, default_value_t = 0, value_name = "N")]
    small: u64,
    /// Objects of 16 bytes under tiny/ (in 1,000 directories), for listing and
    /// memory at scale.
    #[arg(long, default_value_t = 0, value_name = "N")]
    tiny: u64,
    /// Objects of --large-mib MiB under large/.
    #[arg(long, default_value_t = 0, value_name = "N")]
    large: u64,
    /// Size of each large object, in MiB.
    #[arg(long, default_value_t = 1024, value_name = "MiB")]
    large_mib: u64,
    /// Delay before each response's first byte, in milliseconds.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    latency_ms: u64,
    /// Cap on each GET body's rate, in MB/s (0: none).
    #[arg(long, default_value_t = 0, value_name = "MB/s")]
    rate_mbps: u64,
    /// Cap on all GET bodies together, a link every connection shares, in MB/s
    /// (0: none).
    #[arg(long, default_value_t = 0, value_name = "MB/s")]
    total_mbps: u64,
    /// Serve every Nth GET body at --straggler-mbps instead of --rate-mbps: a
    /// slow path among fast ones (0: none).
    #[arg(long, default_value_t = 0, value_name = "N")]
    straggler_every: u64,
    /// The straggler's rate, in MB/s.
    #[arg(long, default_value_t = 5, value_name = "MB/s", requires = "straggler_every")]
    straggler_mbps: u64,
    /// Store the objects as s5cmd's upload leaves them: MD5 ETags, no stored
    /// checksum, multipart in 50 MiB parts above 50 MiB.
    #[arg(long)]
    legacy: bool,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mb = |rate: u64| (rate > 0).then_some(rate * 1_000_000);
    let shaping = Shaping {
        first_byte_delay: Duration::from_millis(args.latency_ms),
        rate_per_connection: mb(args.rate_mbps),
        straggler: (args.straggler_every > 0)
            .then(|| Straggler { every: args.straggler_every, rate: args.straggler_mbps * 1_000_000 }),
        total_rate: mb(args.total_mbps),
    };
    let server = TestServer::start_with(Options { shaping, port: args.port, tls: None }).await?;
    let store = server.store();
    store.create_bucket("bucket");
    let put = |key: String, data: bytes::Bytes| {
        if args.legacy {
            store.put_object("bucket", &key, Writer::S5cmd.legacy_object(data, SystemTime::now()));
        } else {
            store.put("bucket", &key, data);
        }
    };
    for i in 0..args.small {
        put(format!("small/d{:02}/f{i:05}.bin", i % 50), generate_bytes(64 << 10, 1000 + i));
    }
    for i in 0..args.tiny {
        put(format!("tiny/d{:03}/f{i:07}.bin", i % 1000), bytes::Bytes::from(format!("{i:016}")));
    }
    let large = usize::try_from(args.large_mib << 20).expect("--large-mib fits in memory");
    for i in 0..args.large {
        put(format!("large/obj-{i}.bin"), generate_bytes(large, 100 + i));
    }
    println!("endpoint {}", server.endpoint_url());
    println!("export AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={SECRET_KEY} AWS_REGION=us-east-1");
    tokio::signal::ctrl_c().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Args::command().debug_assert();
    }
}
