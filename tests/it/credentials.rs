//! Credentials as pods get them, end to end: the real binary, the AWS default
//! chain, and the test server checking every SigV4 signature. The STS and Pod
//! Identity stand-ins hand out the server's key pair with a session token, so
//! the tests can check that the token obtained is the one the S3 requests carry.
//! Every run logs at `--log trace`, and no secret may appear in its output.

use s3load_testserver::{ACCESS_KEY, CredentialCall, CredentialServer, REGION, SECRET_KEY};

use crate::harness::{Harness, Run};

/// Runs a sync with only `env` (plus the harness's hermetic basics) at trace level.
async fn sync_with(h: &Harness, env: &[(&str, String)], extra: &[&str]) -> Run {
    h.put("m/config.json", &b"{}"[..]);
    let endpoint = h.server.endpoint_url();
    let dest = h.path("out");
    let mut args = vec!["--endpoint-url", endpoint.as_str(), "--log", "trace"];
    args.extend_from_slice(extra);
    args.extend(["sync", "s3://bucket/m/*", dest.to_str().unwrap()]);
    h.run_env(&args, env).await
}

/// None of `secrets` appears anywhere in what the run printed, nor a signature.
#[track_caller]
fn assert_no_secrets(run: &Run, secrets: &[&str]) {
    let all = format!("{}\n{}", run.stdout, run.stderr);
    assert!(all.len() > 2000, "trace logging produced output to search ({} bytes)", all.len());
    for s in secrets.iter().chain([&SECRET_KEY]) {
        assert!(!all.contains(s), "a secret ({}...) appears in the output", &s[..6.min(s.len())]);
    }
    for line in all.lines().filter(|l| l.contains("Signature=")) {
        let sig = line.split("Signature=").nth(1).unwrap_or_default();
        let shown: String = sig.chars().take_while(char::is_ascii_hexdigit).collect();
        assert!(shown.len() < 16, "a request signature appears in the output: {line}");
    }
}

fn token_file(h: &Harness, name: &str, token: &str) -> String {
    let p = h.path(name);
    std::fs::write(&p, token).unwrap();
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn static_keys_from_the_environment() {
    let h = Harness::new().await;
    let run = sync_with(&h, &h.server.client_env(), &[]).await;
    run.assert_ok();
    assert!(h.server.log().session_tokens().is_empty());
    assert_no_secrets(&run, &[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_named_profile_from_the_shared_files() {
    let h = Harness::new().await;
    let home = h.dir.path().join(".home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join("credentials"),
        format!(
            "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[models]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\naws_session_token = profile-session-token-0123456789\n"
        ),
    )
    .unwrap();
    std::fs::write(home.join("config"), format!("[profile models]\nregion = {REGION}\n")).unwrap();
    let run = sync_with(&h, &[], &["--profile", "models"]).await;
    run.assert_ok();
    assert!(!h.server.log().session_tokens().is_empty());
    assert!(h.server.log().session_tokens().iter().all(|t| t == "profile-session-token-0123456789"));
    assert_no_secrets(&run, &["profile-session-token-0123456789"]);
    // The same profile through AWS_PROFILE.
    std::fs::remove_dir_all(h.path("out")).unwrap();
    let run = sync_with(&h, &[("AWS_PROFILE", "models".to_string())], &[]).await;
    run.assert_ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn irsa_web_identity_through_a_local_sts() {
    let h = Harness::new().await;
    let jwt = "eyJhbGciOiJSUzI1NiJ9.service-account-token.signature-part";
    let session = "irsa-session-token-abcdef0123456789";
    let sts = CredentialServer::start(jwt, session).await.unwrap();
    let env = [
        ("AWS_REGION", REGION.to_string()),
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/model-loader".to_string()),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file(&h, "irsa-token", jwt)),
        ("AWS_ENDPOINT_URL_STS", sts.sts_url()),
    ];
    let run = sync_with(&h, &env, &[]).await;
    run.assert_ok();
    let calls = sts.calls();
    assert!(!calls.is_empty(), "STS was asked");
    assert!(
        calls.iter().all(|c| matches!(c, CredentialCall::WebIdentity { role_arn, token, granted: true }
        if role_arn == "arn:aws:iam::123456789012:role/model-loader" && token == jwt)),
        "{calls:?}"
    );
    let tokens = h.server.log().session_tokens();
    assert!(!tokens.is_empty() && tokens.iter().all(|t| t == session), "{tokens:?}");
    assert_no_secrets(&run, &[jwt, session]);
}

#[tokio::test(flavor = "multi_thread")]
async fn eks_pod_identity_through_a_local_agent() {
    let h = Harness::new().await;
    let agent_token = "pod-identity-agent-token-0123456789";
    let session = "pod-identity-session-token-9876543210";
    let agent = CredentialServer::start(agent_token, session).await.unwrap();
    let env = [
        ("AWS_REGION", REGION.to_string()),
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", agent.pod_identity_url()),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file(&h, "pod-token", agent_token)),
    ];
    let run = sync_with(&h, &env, &[]).await;
    run.assert_ok();
    let calls = agent.calls();
    assert!(
        !calls.is_empty()
            && calls.iter().all(|c| matches!(c, CredentialCall::PodIdentity { authorization, granted: true } if authorization == agent_token)),
        "{calls:?}"
    );
    let tokens = h.server.log().session_tokens();
    assert!(!tokens.is_empty() && tokens.iter().all(|t| t == session), "{tokens:?}");
    assert_no_secrets(&run, &[agent_token, session]);
}

// Credentials that work when the run starts and are refused later (trust
// revoked, agent broken): the SDK's own error types say so, and the run fails
// with the credentials exit code, not as a network error to retry.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_refused_after_the_start_fail_as_credentials_not_as_a_network_error() {
    let h = Harness::new().await;
    let agent_token = "pod-identity-agent-token-0123456789";
    let agent = CredentialServer::start(agent_token, "a-session").await.unwrap();
    // The start-up check gets credentials; the requests' own resolution does not.
    agent.refuse_after(1);
    let env = [
        ("AWS_REGION", REGION.to_string()),
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", agent.pod_identity_url()),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file(&h, "pod-token", agent_token)),
    ];
    let run = sync_with(&h, &env, &[]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    let error = run.stderr.lines().find(|l| l.starts_with("ERROR")).unwrap_or_default();
    assert!(error.contains("loading credentials"), "{}", run.stderr);
    assert!(error.contains("IRSA/Pod Identity"), "told what to set, not to check the network: {error}");
    let calls = agent.calls();
    assert!(
        calls.len() >= 2
            && calls.iter().skip(1).all(|c| matches!(c, CredentialCall::PodIdentity { granted: false, .. })),
        "{calls:?}"
    );
    assert_eq!(h.server.log().records().len(), 0, "nothing sent to S3 without credentials");
    assert_no_secrets(&run, &[agent_token]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_web_identity_token_fails_fast_and_names_the_cause() {
    let h = Harness::new().await;
    let sts = CredentialServer::start("the-right-token", "unused").await.unwrap();
    let env = [
        ("AWS_REGION", REGION.to_string()),
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/model-loader".to_string()),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file(&h, "irsa-token", "an-expired-token")),
        ("AWS_ENDPOINT_URL_STS", sts.sts_url()),
    ];
    let started = std::time::Instant::now();
    let run = sync_with(&h, &env, &[]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("InvalidIdentityToken"), "the STS error is shown: {}", run.stderr);
    assert!(started.elapsed().as_secs() < 15, "took {:?}", started.elapsed());
    assert_eq!(h.server.log().records().len(), 0, "nothing sent to S3 without credentials");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_credentials_fail_within_seconds_even_with_a_silent_instance_metadata_endpoint() {
    let h = Harness::new().await;
    // Accepts connections and never answers, as a blocked IMDS hop can.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let imds = format!("http://{}", silent.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            held.push(s);
        }
    });
    let env = [
        ("AWS_REGION", REGION.to_string()),
        ("AWS_EC2_METADATA_DISABLED", "false".to_string()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds),
    ];
    let started = std::time::Instant::now();
    let run = sync_with(&h, &env, &[]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    // The SDK's instance-metadata client gives up after its 1 s timeouts; the
    // region is never asked of instance metadata (s3load asks the bucket).
    assert!(started.elapsed().as_secs() < 5, "took {:?}", started.elapsed());
    assert!(accepted.load(std::sync::atomic::Ordering::Relaxed) > 0, "instance metadata was tried (and hung)");
    for named in [
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "instance metadata",
    ] {
        assert!(run.stderr.contains(named), "the message names {named}: {}", run.stderr);
    }
}
