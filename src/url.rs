//! Command-line locations: `s3://bucket/key` URLs (with s5cmd's wildcards) and local paths.
//!
//! Wildcards follow s5cmd: `*` matches any run of characters, `/` included, and `?`
//! matches one character. The listing prefix is the part of the key before the first
//! wildcard. Where a matched key lands under the destination is decided by
//! [`S3Url::relative`]:
//!
//! | source                      | key                     | relative path        |
//! |-----------------------------|-------------------------|----------------------|
//! | `s3://b/models/m-1/*`       | `models/m-1/sub/w.bin`  | `sub/w.bin`          |
//! | `s3://b/models/m-*/c.json`  | `models/m-1/c.json`     | `m-1/c.json`         |
//! | `s3://b/models/m-1/` (prefix) | `models/m-1/sub/w.bin` | `sub/w.bin`         |
//! | `s3://b` (bucket)           | `models/m-1/c.json`     | `models/m-1/c.json`  |
//! | `s3://b/models/m-1/c.json`  | (that object)           | `c.json`             |
//!
//! A prefix (key ending in `/`) or a bare bucket selects every object under it, as
//! `prefix/*` would.

use std::path::PathBuf;

use regex::Regex;

use crate::error::Error;

const GLOB_CHARS: &[char] = &['*', '?'];

/// An anchored regex for an s5cmd wildcard: `*` matches any run of characters,
/// `/` included, `?` exactly one; everything else is literal.
pub fn wildcard_regex(pattern: &str) -> Result<Regex, regex::Error> {
    glob_regex(pattern, true)
}

/// The same with `crosses_slash` false: `*` and `?` stay within one path
/// component (local wildcards, as shells and s5cmd glob them).
pub fn glob_regex(pattern: &str, crosses_slash: bool) -> Result<Regex, regex::Error> {
    let (star, one) = if crosses_slash { (".*", ".") } else { ("[^/]*", "[^/]") };
    // (?s): keys may hold newlines, which `*` and `?` match like any character.
    let mut re = String::from("(?s)^");
    for c in pattern.chars() {
        match c {
            '*' => re.push_str(star),
            '?' => re.push_str(one),
            c => re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    re.push('$');
    Regex::new(&re)
}

/// A parsed `s3://` URL.
#[derive(Debug, Clone)]
pub struct S3Url {
    pub bucket: String,
    /// The key part as given (may contain wildcards, may be empty).
    pub key: String,
    /// The key up to the first wildcard: what is listed.
    pub prefix: String,
    /// Anchored matcher for wildcard URLs.
    glob: Option<Regex>,
}

/// Where data comes from or goes to.
#[derive(Debug, Clone)]
pub enum Location {
    Remote(S3Url),
    Local(PathBuf),
}

impl Location {
    pub fn parse(s: &str) -> Result<Location, Error> {
        if s.starts_with("s3://") || s.starts_with("S3://") {
            S3Url::parse(s).map(Location::Remote)
        } else if s.contains("://") {
            Err(Error::Usage(format!("{s:?}: unsupported URL scheme; use s3://bucket/key or a local path")))
        } else if s.is_empty() {
            Err(Error::Usage("empty path".into()))
        } else {
            Ok(Location::Local(PathBuf::from(s)))
        }
    }
}

impl S3Url {
    pub fn parse(s: &str) -> Result<S3Url, Error> {
        let rest = &s[5..];
        let (bucket, key) = match rest.split_once('/') {
            Some((b, k)) => (b, k.trim_start_matches('/')),
            None => (rest, ""),
        };
        if bucket.is_empty() {
            return Err(Error::Usage(format!("{s:?}: the URL has no bucket; expected s3://bucket/key")));
        }
        if bucket.contains(GLOB_CHARS) {
            return Err(Error::Usage(format!("{s:?}: bucket names cannot contain wildcards")));
        }
        let (prefix, glob) = match key.find(GLOB_CHARS) {
            None => (key.to_string(), None),
            Some(i) => {
                let re = wildcard_regex(key).map_err(|e| Error::Usage(format!("{s:?}: bad wildcard: {e}")))?;
                (key[..i].to_string(), Some(re))
            }
        };
        Ok(S3Url { bucket: bucket.to_string(), key: key.to_string(), prefix, glob })
    }

    pub fn is_wildcard(&self) -> bool {
        self.glob.is_some()
    }

    /// A bare bucket or a key ending in `/`: every object below it.
    pub fn is_prefix(&self) -> bool {
        !self.is_wildcard() && (self.key.is_empty() || self.key.ends_with('/'))
    }

    /// Whether this URL names many objects (wildcard, prefix or bucket) rather than one.
    pub fn is_batch(&self) -> bool {
        self.is_wildcard() || self.is_prefix()
    }

    /// Whether a listed key is selected by this URL.
    pub fn matches(&self, key: &str) -> bool {
        match &self.glob {
            Some(re) => re.is_match(key),
            None => key.starts_with(&self.prefix),
        }
    }

    /// The path of `key` below the destination directory (see the module table).
    pub fn relative<'k>(&self, key: &'k str) -> &'k str {
        if self.is_wildcard() {
            // Cut at the last '/' before the first wildcard.
            let cut = self.prefix.rfind('/').map_or(0, |i| i + 1);
            key.get(cut..).unwrap_or(key)
        } else if self.is_prefix() {
            key.strip_prefix(self.prefix.as_str()).unwrap_or(key)
        } else {
            key.rsplit('/').next().unwrap_or(key)
        }
    }

    /// `s3://bucket/key` for messages.
    pub fn object_url(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, key)
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.key)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> S3Url {
        S3Url::parse(s).unwrap()
    }

    #[test]
    fn seed_design_wildcard_keeps_structure_below_the_prefix() {
        let u = url("s3://my-ml-bucket/model-artifacts/my-model-1.2.3/*");
        assert_eq!(u.bucket, "my-ml-bucket");
        assert_eq!(u.prefix, "model-artifacts/my-model-1.2.3/");
        assert!(u.matches("model-artifacts/my-model-1.2.3/config.json"));
        assert!(u.matches("model-artifacts/my-model-1.2.3/sub/dir/w.bin"), "* crosses '/' as in s5cmd");
        assert!(!u.matches("model-artifacts/my-model-1.2.30/config.json"));
        assert_eq!(u.relative("model-artifacts/my-model-1.2.3/sub/w.bin"), "sub/w.bin");
    }

    #[test]
    fn wildcard_in_the_middle_cuts_at_the_last_slash_before_it() {
        let u = url("s3://b/models/m-*/config.json");
        assert_eq!(u.prefix, "models/m-");
        assert!(u.matches("models/m-1/config.json"));
        assert!(!u.matches("models/m-1/weights.bin"));
        assert_eq!(u.relative("models/m-1/config.json"), "m-1/config.json");
    }

    #[test]
    fn question_mark_matches_one_character_and_dots_are_literal() {
        let u = url("s3://b/a?.txt");
        assert!(u.matches("ab.txt"));
        assert!(!u.matches("abc.txt"));
        assert!(!u.matches("abXtxt"));
    }

    #[test]
    fn prefix_and_bucket_select_everything_below() {
        let p = url("s3://b/models/m-1/");
        assert!(p.is_prefix() && p.is_batch());
        assert!(p.matches("models/m-1/x/y"));
        assert_eq!(p.relative("models/m-1/x/y"), "x/y");
        let b = url("s3://b");
        assert!(b.is_prefix());
        assert_eq!(b.relative("models/m-1/x"), "models/m-1/x");
    }

    #[test]
    fn single_object_lands_under_its_base_name() {
        let u = url("s3://b/models/m-1/config.json");
        assert!(!u.is_batch());
        assert_eq!(u.relative("models/m-1/config.json"), "config.json");
    }

    #[test]
    fn bad_urls_are_refused_with_a_message() {
        for bad in ["s3://", "s3:///key", "s3://b*/k", "gs://b/k"] {
            let err = Location::parse(bad).unwrap_err().to_string();
            assert!(!err.is_empty(), "{bad}");
        }
        assert!(matches!(Location::parse("./dir").unwrap(), Location::Local(_)));
    }
}
