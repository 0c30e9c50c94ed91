//! Stand-ins for the services that hand out credentials in a pod, on loopback:
//!
//! - STS `AssumeRoleWithWebIdentity` (IRSA): the SDK posts the token read from
//!   `AWS_WEB_IDENTITY_TOKEN_FILE` and the role from `AWS_ROLE_ARN` to
//!   `AWS_ENDPOINT_URL_STS`; the answer is XML.
//! - The EKS Pod Identity agent: the SDK GETs `AWS_CONTAINER_CREDENTIALS_FULL_URI`
//!   with the token from `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` in the
//!   `Authorization` header; the answer is JSON.
//!
//! Both hand out the S3 test server's key pair (the only one it accepts) with a
//! fresh session token, and only to a caller that presents the expected token,
//! so a test can check that the token reached the S3 requests
//! ([`crate::RequestLog::session_tokens`]) and that nothing else was accepted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{ACCESS_KEY, SECRET_KEY};

/// One call the stand-in answered (or refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialCall {
    /// AssumeRoleWithWebIdentity with this role and token; whether it was granted.
    WebIdentity { role_arn: String, token: String, granted: bool },
    /// Pod Identity with this Authorization header; whether it was granted.
    PodIdentity { authorization: String, granted: bool },
}

#[derive(Debug)]
struct State {
    /// The token a caller must present (web identity token or pod identity token).
    expect_token: String,
    /// The session token handed out.
    session_token: String,
    calls: Mutex<Vec<CredentialCall>>,
    /// Calls still granted before every later one is refused (`None`: no limit).
    grants_left: Mutex<Option<usize>>,
}

/// A running credentials stand-in; stops when dropped.
pub struct CredentialServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for CredentialServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl CredentialServer {
    /// Starts on a random loopback port; grants credentials to callers presenting
    /// `expect_token`, with `session_token` as the session token.
    pub async fn start(expect_token: &str, session_token: &str) -> std::io::Result<CredentialServer> {
        let state = Arc::new(State {
            expect_token: expect_token.to_string(),
            session_token: session_token.to_string(),
            calls: Mutex::default(),
            grants_left: Mutex::default(),
        });
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { continue };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(st.clone(), req));
                    let _ = ConnBuilder::new(TokioExecutor::new()).serve_connection(TokioIo::new(socket), svc).await;
                });
            }
        });
        Ok(CredentialServer { addr, state, task })
    }

    /// Base URL for `AWS_ENDPOINT_URL_STS`.
    pub fn sts_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// URL for `AWS_CONTAINER_CREDENTIALS_FULL_URI`.
    pub fn pod_identity_url(&self) -> String {
        format!("http://{}/v1/credentials", self.addr)
    }

    pub fn calls(&self) -> Vec<CredentialCall> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Grants the next `n` calls only, then refuses every call, even with the
    /// right token (a role whose trust was revoked mid-run).
    pub fn refuse_after(&self, n: usize) {
        *self.state.grants_left.lock().unwrap() = Some(n);
    }
}

impl Drop for CredentialServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Form field `name` of an `application/x-www-form-urlencoded` body.
fn form_field(body: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(body.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// An hour from now, as the services write expirations.
fn expiration() -> String {
    let t = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Whether one more call may be granted (and counts it).
fn take_grant(st: &State) -> bool {
    match st.grants_left.lock().unwrap().as_mut() {
        None => true,
        Some(0) => false,
        Some(n) => {
            *n -= 1;
            true
        }
    }
}

async fn answer(st: Arc<State>, req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, ctype: &str, body: String| {
        Ok(Response::builder().status(status).header("content-type", ctype).body(Full::new(Bytes::from(body))).unwrap())
    };
    if req.method() == hyper::Method::GET {
        let authorization =
            req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let granted = authorization == st.expect_token && take_grant(&st);
        st.calls.lock().unwrap().push(CredentialCall::PodIdentity { authorization, granted });
        if !granted {
            return reply(StatusCode::FORBIDDEN, "application/json", r#"{"message":"invalid token"}"#.into());
        }
        let body = format!(
            r#"{{"AccessKeyId":"{ACCESS_KEY}","SecretAccessKey":"{SECRET_KEY}","Token":"{}","AccountId":"123456789012","Expiration":"{}"}}"#,
            st.session_token,
            expiration()
        );
        return reply(StatusCode::OK, "application/json", body);
    }
    let body = req.into_body().collect().await.map(http_body_util::Collected::to_bytes).unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    let role_arn = form_field(&body, "RoleArn").unwrap_or_default();
    let token = form_field(&body, "WebIdentityToken").unwrap_or_default();
    let granted = form_field(&body, "Action").as_deref() == Some("AssumeRoleWithWebIdentity")
        && token == st.expect_token
        && take_grant(&st);
    st.calls.lock().unwrap().push(CredentialCall::WebIdentity { role_arn: role_arn.clone(), token, granted });
    if !granted {
        let xml = r#"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>invalid token</Message></Error><RequestId>r</RequestId></ErrorResponse>"#;
        return reply(StatusCode::BAD_REQUEST, "text/xml", xml.into());
    }
    let xml = format!(
        r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>{ACCESS_KEY}</AccessKeyId><SecretAccessKey>{SECRET_KEY}</SecretAccessKey><SessionToken>{}</SessionToken><Expiration>{}</Expiration></Credentials><AssumedRoleUser><Arn>{role_arn}/s3load</Arn><AssumedRoleId>AROATEST:s3load</AssumedRoleId></AssumedRoleUser><SubjectFromWebIdentityToken>system:serviceaccount:models:loader</SubjectFromWebIdentityToken></AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>"#,
        st.session_token,
        expiration()
    );
    reply(StatusCode::OK, "text/xml", xml)
}
