//! The whole job end to end on an embedded default: start the in-process S3
//! server with a sample model laid out as training frameworks publish one (two
//! well-formed `*.safetensors` shards, the `model.safetensors.index.json` that
//! maps every tensor to its shard, config, generation config and tokenizer
//! files), sync it to a local directory with the model checks on (as by
//! default), then sync again to show that an unchanged tree copies nothing.
//!
//! The demo checks itself: it exits non-zero if either sync fails (the model
//! checks are on, as by default) or if the second sync copies anything.
//!
//! Run: `cargo run --release --example demo [DEST_DIR]`

use std::path::PathBuf;

use s3load::config::{Command, Config, SyncOptions};
use s3load::plan::diff::Compare;
use s3load::store::s3::S3Settings;
use s3load::url::Location;
use s3load_testserver::{ACCESS_KEY, SECRET_KEY, TestServer, safetensors_with};

const BUCKET: &str = "my-ml-bucket";
const PREFIX: &str = "model-artifacts/my-model-1.2.3/";

/// A small decoder-only transformer (the shapes of a ~300M-parameter model
/// in BF16): hidden size, MLP size, layers, attention heads, key/value heads,
/// vocabulary.
const HIDDEN: u64 = 2048;
const MLP: u64 = 5632;
const LAYERS: u64 = 4;
const HEADS: u64 = 32;
const KV_HEADS: u64 = 4;
const VOCAB: u64 = 32000;

/// Every tensor of the model, in the order the shards hold them.
fn tensors() -> Vec<(String, &'static str, Vec<u64>)> {
    let kv = HIDDEN / HEADS * KV_HEADS;
    let mut t = vec![("model.embed_tokens.weight".to_string(), "BF16", vec![VOCAB, HIDDEN])];
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        t.extend([
            (format!("{p}.input_layernorm.weight"), "BF16", vec![HIDDEN]),
            (format!("{p}.self_attn.q_proj.weight"), "BF16", vec![HIDDEN, HIDDEN]),
            (format!("{p}.self_attn.k_proj.weight"), "BF16", vec![kv, HIDDEN]),
            (format!("{p}.self_attn.v_proj.weight"), "BF16", vec![kv, HIDDEN]),
            (format!("{p}.self_attn.o_proj.weight"), "BF16", vec![HIDDEN, HIDDEN]),
            (format!("{p}.post_attention_layernorm.weight"), "BF16", vec![HIDDEN]),
            (format!("{p}.mlp.gate_proj.weight"), "BF16", vec![MLP, HIDDEN]),
            (format!("{p}.mlp.up_proj.weight"), "BF16", vec![MLP, HIDDEN]),
            (format!("{p}.mlp.down_proj.weight"), "BF16", vec![HIDDEN, MLP]),
        ]);
    }
    t.push(("model.norm.weight".to_string(), "BF16", vec![HIDDEN]));
    t.push(("lm_head.weight".to_string(), "BF16", vec![VOCAB, HIDDEN]));
    t
}

/// The sample model: (path below the prefix, bytes).
fn sample_model() -> Vec<(String, Vec<u8>)> {
    let all = tensors();
    // The first shard ends after layer 2; the second holds the rest.
    let cut = all.iter().position(|(n, _, _)| n.starts_with("model.layers.3.")).expect("layer 3");
    let shards = [&all[..cut], &all[cut..]];
    let mut files = Vec::new();
    let mut weight_map = serde_json::Map::new();
    let mut total = 0usize;
    for (i, tensors) in shards.iter().enumerate() {
        let name = format!("model-{:05}-of-{:05}.safetensors", i + 1, shards.len());
        let spec: Vec<(&str, &str, &[u64])> = tensors.iter().map(|(n, d, s)| (n.as_str(), *d, s.as_slice())).collect();
        let bytes = safetensors_with(&spec, i as u64 + 1);
        for (tensor, _, _) in *tensors {
            weight_map.insert(tensor.clone(), name.clone().into());
        }
        total += bytes.len();
        files.push((name, bytes.to_vec()));
    }
    let json = |v: serde_json::Value| serde_json::to_vec_pretty(&v).expect("JSON");
    let index = serde_json::json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
    files.push(("model.safetensors.index.json".into(), json(index)));
    files.push((
        "config.json".into(),
        json(serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16",
            "hidden_size": HIDDEN, "intermediate_size": MLP, "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "vocab_size": VOCAB,
            "bos_token_id": 1, "eos_token_id": 2,
        })),
    ));
    files.push((
        "generation_config.json".into(),
        json(serde_json::json!({ "bos_token_id": 1, "eos_token_id": 2, "max_length": 2048 })),
    ));
    let vocab: serde_json::Map<String, serde_json::Value> =
        ["<unk>", "<s>", "</s>", "▁the", "▁model"].iter().enumerate().map(|(i, t)| (t.to_string(), i.into())).collect();
    files.push((
        "tokenizer.json".into(),
        json(serde_json::json!({ "version": "1.0", "model": { "type": "BPE", "vocab": vocab, "merges": [] } })),
    ));
    files.push((
        "tokenizer_config.json".into(),
        json(serde_json::json!({ "bos_token": "<s>", "eos_token": "</s>", "model_max_length": 2048 })),
    ));
    files.push((
        "special_tokens_map.json".into(),
        json(serde_json::json!({ "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>" })),
    ));
    files
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let dest = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("s3load-demo"));
    let server = TestServer::start().await?;
    let store = server.store();
    store.create_bucket(BUCKET);
    eprintln!("generating a sample model in s3://{BUCKET}/{PREFIX} on {} ...", server.endpoint_url());
    for (path, bytes) in sample_model() {
        eprintln!("  {path} ({} bytes)", bytes.len());
        store.put(BUCKET, &format!("{PREFIX}{path}"), bytes);
    }

    let summary = tempfile_path("s3load-demo-summary");
    let config = Config {
        s3: S3Settings {
            endpoint_url: Some(server.endpoint_url()),
            region: Some("us-east-1".into()),
            static_credentials: Some((ACCESS_KEY.into(), SECRET_KEY.into())),
            ..Default::default()
        },
        summary_file: Some(summary.clone()),
        ..Default::default()
    };
    let src = format!("s3://{BUCKET}/{PREFIX}*");
    for (round, name) in ["first sync", "second sync (nothing changed)"].iter().enumerate() {
        eprintln!("\n== {name}: s3load sync {src} {}", dest.display());
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
        let written = std::fs::read(&summary).expect("the run wrote its summary");
        let written: serde_json::Value = serde_json::from_slice(&written).expect("the summary is JSON");
        let copied = written["objects"]["copied"].as_u64().unwrap_or(u64::MAX);
        if round == 1 && copied != 0 {
            eprintln!("the second sync copied {copied} objects of an unchanged tree: it should copy none");
            std::process::exit(1);
        }
        // The model checks ran: both shards' headers as they were written,
        // and the weight index after each sync.
        let checks = &written["model_checks"];
        let want = if round == 0 { (2, 1) } else { (0, 1) };
        if (checks["safetensors_headers"].as_u64(), checks["weight_indexes"].as_u64()) != (Some(want.0), Some(want.1)) {
            eprintln!("the model checks did not run as they should: {checks}");
            std::process::exit(1);
        }
    }
    let _ = std::fs::remove_file(&summary);
    eprintln!("\nfiles are in {}", dest.display());
    Ok(())
}

/// A path for the runs' summary file, unique to this process.
fn tempfile_path(stem: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{stem}-{}.json", std::process::id()))
}
