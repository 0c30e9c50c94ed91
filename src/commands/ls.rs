//! `ls`: buckets, or the objects and directories under a URL, laid out as s5cmd does.

use crate::store::ObjectStore;
use std::ops::ControlFlow;

use serde_json::json;

use crate::config::Config;
use crate::error::{Error, exit_code};
use crate::refusal::Refusal;
use crate::url::S3Url;
use crate::{output, plan};

pub(super) async fn ls(url: Option<S3Url>, cfg: &Config, session: &super::session::Session<'_>) -> Result<u8, Error> {
    let store = session.connect(cfg, url.as_ref().map(|u| u.bucket.as_str())).await?;
    let Some(url) = url else {
        for b in store.list_buckets().await.map_err(|e| Error::store("listing buckets", e))? {
            let line =
                if cfg.json { json!({"name": b, "url": format!("s3://{b}")}).to_string() } else { format!("s3://{b}") };
            output::stdout_line(&line)?;
        }
        return Ok(exit_code::SUCCESS);
    };
    let delimiter = (!url.is_wildcard()).then_some("/");
    // Names are shown relative to the directory the URL points into.
    let base = url.prefix.rfind('/').map_or(0, |i| i + 1);
    let mut any = false;
    let mut written: Result<(), Error> = Ok(());
    plan::list_all(store.as_ref(), &url.bucket, &url.prefix, delimiter, |page| {
        // As s5cmd prints them: text columns, or with --json one object a line.
        let dirs = page.common_prefixes.iter().map(|p| {
            if cfg.json {
                json!({"key": format!("s3://{}/{p}", url.bucket), "type": "directory"}).to_string()
            } else {
                format!("{:>19} {:>12}  {}", "", "DIR", &p[base.min(p.len())..])
            }
        });
        let objects = page.objects.iter().filter(|o| url.matches(&o.key)).map(|o| {
            if cfg.json {
                let when = o.last_modified.map(|t| humantime::format_rfc3339_seconds(t).to_string());
                json!({"key": format!("s3://{}/{}", url.bucket, o.key), "type": "file", "size": o.size,
                       "last_modified": when, "etag": o.etag})
                .to_string()
            } else {
                let when = o.last_modified.map(ls_time).unwrap_or_default();
                format!("{when:>19} {:>12}  {}", o.size, &o.key[base.min(o.key.len())..])
            }
        });
        for line in dirs.chain(objects) {
            any = true;
            written = output::stdout_line(&line);
            if written.is_err() {
                // The reader is gone (or stdout failed): no more pages.
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    })
    .await
    .map_err(|e| Error::store(format!("listing {url}"), e))?;
    written?;
    if !any {
        return Err(Refusal::NothingMatched { what: "objects", given: url.to_string(), hint: String::new() }.into());
    }
    Ok(exit_code::SUCCESS)
}

/// `2024/01/31 12:00:00` (UTC), as s5cmd shows times.
fn ls_time(t: std::time::SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.trim_end_matches('Z').replacen('-', "/", 2).replacen('T', " ", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_time_matches_s5cmd_layout() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(86400 * 365);
        assert_eq!(ls_time(t), "1971/01/01 00:00:00");
    }
}
