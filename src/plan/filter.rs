//! `--exclude` and `--include`: which paths a run looks at, on both sides.
//!
//! Patterns are s5cmd wildcards (`*` any run of characters, `/` included; `?` one
//! character), anchored at both ends and matched against the path relative to
//! the source: the part of the key below the URL's prefix for S3, the path below
//! the directory for local files. That is the path the object or file has at
//! the destination, so one pattern means the same thing in both directions.
//!
//! A path is selected when it matches no `--exclude` and, if any `--include` is
//! given, at least one `--include`: exclude wins. Paths not selected are neither
//! copied nor deleted.

use regex::Regex;

use crate::error::Error;
use crate::url::wildcard_regex;

#[derive(Debug, Clone, Default)]
pub struct Filters {
    include: Vec<Regex>,
    exclude: Vec<Regex>,
    /// The flags as given (`--include "*.bin"`), for messages.
    given: Vec<String>,
}

impl Filters {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Filters, Error> {
        let compile = |flag: &str, pats: &[String]| -> Result<Vec<Regex>, Error> {
            pats.iter()
                .filter(|p| !p.is_empty())
                .map(|p| wildcard_regex(p).map_err(|e| Error::Usage(format!("{flag} {p:?}: bad pattern: {e}"))))
                .collect()
        };
        let given = [("--include", include), ("--exclude", exclude)]
            .into_iter()
            .flat_map(|(flag, pats)| {
                let mut pats: Vec<&String> = pats.iter().filter(|p| !p.is_empty()).collect();
                pats.sort();
                pats.dedup();
                pats.into_iter().map(move |p| format!("{flag} {p:?}"))
            })
            .collect();
        Ok(Filters { include: compile("--include", include)?, exclude: compile("--exclude", exclude)?, given })
    }

    /// The patterns as flags (`--include "*.bin" --exclude "tmp/*"`), sorted
    /// and each once within its kind: the same selection however the flags
    /// were ordered or repeated.
    pub fn given(&self) -> &[String] {
        &self.given
    }

    /// Whether `rel` (relative, `/`-separated) takes part in the run.
    pub fn selects(&self, rel: &str) -> bool {
        !self.exclude.iter().any(|r| r.is_match(rel))
            && (self.include.is_empty() || self.include.iter().any(|r| r.is_match(rel)))
    }

    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(include: &[&str], exclude: &[&str]) -> Filters {
        let v = |x: &[&str]| x.iter().map(std::string::ToString::to_string).collect::<Vec<_>>();
        Filters::new(&v(include), &v(exclude)).unwrap()
    }

    #[test]
    fn the_flags_given_read_the_same_whatever_their_order_or_repeats() {
        let a = f(&["*.bin", "*.json", "*.bin"], &["tmp/*", ""]);
        let b = f(&["*.json", "*.bin"], &["tmp/*"]);
        assert_eq!(a.given(), b.given());
        assert_eq!(a.given(), ["--include \"*.bin\"", "--include \"*.json\"", "--exclude \"tmp/*\""]);
        assert!(f(&[], &[]).given().is_empty());
    }

    #[test]
    fn no_patterns_select_everything() {
        assert!(f(&[], &[]).selects("a/b.bin"));
    }

    #[test]
    fn star_crosses_directories_and_patterns_are_anchored() {
        let x = f(&[], &["*.tmp"]);
        assert!(!x.selects("a.tmp"));
        assert!(!x.selects("logs/deep/a.tmp"));
        assert!(x.selects("a.tmp.bin"), "anchored at the end");
        let d = f(&[], &["logs/*"]);
        assert!(!d.selects("logs/x"));
        assert!(d.selects("sub/logs/x"), "anchored at the start");
    }

    #[test]
    fn include_narrows_and_exclude_wins() {
        let x = f(&["*.safetensors", "config.json"], &["draft-*"]);
        assert!(x.selects("model-00001.safetensors"));
        assert!(x.selects("config.json"));
        assert!(!x.selects("README.md"));
        assert!(!x.selects("draft-model.safetensors"));
    }

    #[test]
    fn question_mark_is_one_character() {
        let x = f(&["shard-?.bin"], &[]);
        assert!(x.selects("shard-1.bin"));
        assert!(!x.selects("shard-10.bin"));
    }
}
