//! Turning a dataset location (URL or local path) into an object store and a prefix.
//!
//! Every backend goes through `object_store`. Configuration comes from the standard environment
//! (`AWS_*`, `GOOGLE_*`, `AZURE_*`) overlaid with explicit `storage_options` (object_store's own
//! config keys, e.g. `aws_endpoint`, `allow_http`).
//!
//! A dataset spread over many buckets needs different options per bucket (endpoint, region,
//! credentials): [`StorageConfig`] maps source URLs, URL prefixes or globs to options, read from
//! a JSON file because flags do not scale to thousands of buckets.
//!
//! One deliberate difference from object_store's defaults: when no credentials are configured
//! for a cloud store we fail at once with [`Error::MissingCredentials`] instead of letting the
//! client probe the cloud's instance-metadata endpoint. Off the cloud that probe hangs for
//! minutes; on the cloud, set `AWS_EC2_METADATA_DISABLED=false` (or the storage option
//! `use_instance_metadata=true`) to opt in to instance roles.

use crate::error::{Error, Result};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ClientConfigKey, ClientOptions, ObjectStore, RetryConfig};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Key/value options forwarded to the object_store builder (its config keys).
pub type StorageOptions = BTreeMap<String, String>;

/// Our own option (not an object_store key): allow cloud instance-metadata credentials.
const USE_INSTANCE_METADATA: &str = "use_instance_metadata";
/// Our own options bounding object_store's retries: attempts, and total seconds.
const MAX_RETRIES: &str = "max_retries";
const RETRY_TIMEOUT_SECS: &str = "retry_timeout_secs";
const OWN_KEYS: [&str; 3] = [USE_INSTANCE_METADATA, MAX_RETRIES, RETRY_TIMEOUT_SECS];

/// Options meant for object_store's builders (ours filtered out).
fn builder_options(options: &StorageOptions) -> impl Iterator<Item = (&String, &String)> {
    options
        .iter()
        .filter(|(k, _)| !OWN_KEYS.contains(&k.as_str()))
}

/// A dataset root: the store holding it, the prefix inside that store, and its canonical URL.
#[derive(Debug, Clone)]
pub struct Location {
    /// The store all objects of the dataset are read from.
    pub store: Arc<dyn ObjectStore>,
    /// Prefix of the dataset inside `store` (no trailing slash; empty for a bucket root).
    pub prefix: StorePath,
    /// Canonical URL of the root, as written into manifests (`file:///abs/dir`, `s3://b/p`).
    pub url: String,
}

impl Location {
    /// Opens `location` (a URL or a local path) with the given options.
    pub fn open(location: &str, options: &StorageOptions) -> Result<Self> {
        let url = to_url(location)?;
        let (store, prefix): (Arc<dyn ObjectStore>, StorePath) = match url.scheme() {
            "file" => {
                let path = url.to_file_path().map_err(|()| Error::InvalidLocation {
                    location: location.into(),
                    reason: "not a valid local path".into(),
                })?;
                let prefix = StorePath::from_absolute_path(&path).map_err(invalid(location))?;
                (Arc::new(LocalFileSystem::new()), prefix)
            }
            "s3" | "s3a" => {
                require_credentials(location, options, &aws_credential_sources())?;
                let mut builder = AmazonS3Builder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry_config(location, options)?);
                // Bounded timeouts so a stalled connection cannot hang a job; as config keys,
                // so they do not replace client settings taken from the environment.
                builder = builder
                    .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout), "10s")
                    .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "120s");
                builder = configure(builder, location, options, |b, k, v| b.with_config(k, v))?;
                let store = builder.build().map_err(invalid(location))?;
                (Arc::new(store), url_prefix(&url, location)?)
            }
            "gs" => {
                require_credentials(location, options, &gcs_credential_sources())?;
                let builder = GoogleCloudStorageBuilder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry_config(location, options)?);
                let builder = configure(builder, location, options, |b, k, v| b.with_config(k, v))?;
                let store = builder.build().map_err(invalid(location))?;
                (Arc::new(store), url_prefix(&url, location)?)
            }
            "az" | "azure" | "abfs" | "abfss" => {
                require_credentials(location, options, &azure_credential_sources())?;
                let builder = MicrosoftAzureBuilder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry_config(location, options)?);
                let builder = configure(builder, location, options, |b, k, v| b.with_config(k, v))?;
                let store = builder.build().map_err(invalid(location))?;
                (Arc::new(store), url_prefix(&url, location)?)
            }
            "http" | "https" => {
                let base = &url[..url::Position::BeforePath];
                let store = HttpBuilder::new()
                    .with_url(base)
                    .with_retry(retry_config(location, options)?)
                    .with_client_options(client_options(options))
                    .build()
                    .map_err(invalid(location))?;
                let prefix =
                    StorePath::parse(url.path().trim_matches('/')).map_err(invalid(location))?;
                (Arc::new(store), prefix)
            }
            other => {
                return Err(Error::InvalidLocation {
                    location: location.into(),
                    reason: format!(
                        "unsupported scheme {other:?}: use s3://, gs://, az://, http(s)://, file:// or a local path"
                    ),
                })
            }
        };
        let url = canonical_url(&url);
        Ok(Self { store, prefix, url })
    }

    /// The path of an object relative to the dataset root (what manifests store).
    pub fn relative<'a>(&self, key: &'a StorePath) -> &'a str {
        let key = key.as_ref();
        let prefix = self.prefix.as_ref();
        if prefix.is_empty() {
            return key;
        }
        key.strip_prefix(prefix)
            .map(|rest| rest.trim_start_matches('/'))
            .unwrap_or(key)
    }

    /// The store key of a path relative to the root.
    pub fn key(&self, relative: &str) -> StorePath {
        if self.prefix.as_ref().is_empty() {
            StorePath::from(relative)
        } else if relative.is_empty() {
            self.prefix.clone()
        } else {
            StorePath::from(format!("{}/{}", self.prefix.as_ref(), relative))
        }
    }

    /// The location one level up: used when a source names a single object, whose manifest
    /// path is then its file name under its directory.
    pub fn parent(&self) -> Self {
        let parts: Vec<_> = self.prefix.parts().collect();
        let prefix = StorePath::from_iter(parts[..parts.len().saturating_sub(1)].iter().cloned());
        let url = match self.url.rfind('/') {
            Some(i) if !self.url[..i].ends_with('/') => self.url[..i].to_string(),
            _ => self.url.clone(),
        };
        Self {
            store: self.store.clone(),
            prefix,
            url,
        }
    }

    /// A printable URL for an object relative to the root (for error messages).
    pub fn display(&self, relative: &str) -> String {
        if relative.is_empty() {
            self.url.clone()
        } else {
            format!("{}/{}", self.url.trim_end_matches('/'), relative)
        }
    }
}

/// The canonical URL of a source as manifests record it (`file:///abs/dir`, `s3://b/p`, no
/// trailing slash), without opening a store.
pub fn canonical_source(location: &str) -> Result<String> {
    Ok(canonical_url(&to_url(location)?))
}

/// Per-source storage options, from a JSON file (`--storage-config`):
///
/// ```json
/// {
///   "defaults": {"aws_region": "us-east-1"},
///   "sources": [
///     {"match": "s3://eu-*", "options": {"aws_region": "eu-west-1"}},
///     {"match": "s3://lab-bucket/raw", "options": {"aws_endpoint": "https://s3.lab.example"}}
///   ]
/// }
/// ```
///
/// A source's options are the `--storage-option`s, overlaid with `defaults`, overlaid with every
/// entry of `sources` that matches its canonical URL, in file order (later entries win). A
/// `match` with a glob character (`*?[{`) is a glob over the whole URL (`*` also crosses `/`);
/// otherwise it is a URL prefix that matches whole path segments (`s3://b/raw` matches
/// `s3://b/raw` and `s3://b/raw/x`, not `s3://b/raw2`). Local paths are made absolute `file://`
/// URLs first. File order rather than "most specific wins" so that what applies is obvious
/// from reading the file top to bottom.
#[derive(Debug, Clone, Default)]
pub struct StorageConfig {
    pub defaults: StorageOptions,
    pub rules: Vec<SourceRule>,
}

/// One entry of [`StorageConfig`]: options for sources matching `pattern`.
#[derive(Debug, Clone)]
pub struct SourceRule {
    pub pattern: String,
    pub options: StorageOptions,
    matcher: RuleMatcher,
}

#[derive(Debug, Clone)]
enum RuleMatcher {
    Glob(globset::GlobMatcher),
    Prefix(String),
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    defaults: StorageOptions,
    #[serde(default)]
    sources: Vec<RuleFile>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(rename = "match")]
    pattern: String,
    #[serde(default)]
    options: StorageOptions,
}

impl StorageConfig {
    /// Reads a JSON configuration file (local path).
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Parses a JSON configuration; `display` names it in errors.
    pub fn from_json(text: &str, display: &str) -> Result<Self> {
        let bad = |reason: String| Error::StorageConfig {
            path: display.into(),
            reason,
        };
        let file: ConfigFile = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut config = Self {
            defaults: file.defaults,
            rules: Vec::with_capacity(file.sources.len()),
        };
        for (i, r) in file.sources.into_iter().enumerate() {
            config
                .add_rule(&r.pattern, r.options)
                .map_err(|e| bad(format!("sources[{i}]: {e}")))?;
        }
        Ok(config)
    }

    /// Appends a rule (later rules override earlier ones).
    pub fn add_rule(&mut self, pattern: &str, options: StorageOptions) -> Result<()> {
        let matcher = if pattern.contains(['*', '?', '[', '{']) {
            let glob = globset::GlobBuilder::new(pattern)
                .literal_separator(false)
                .build()
                .map_err(|e| Error::Config(format!("bad glob {pattern:?}: {e}")))?;
            RuleMatcher::Glob(glob.compile_matcher())
        } else {
            RuleMatcher::Prefix(canonical_source(pattern)?)
        };
        self.rules.push(SourceRule {
            pattern: pattern.into(),
            options,
            matcher,
        });
        Ok(())
    }

    /// The options for the source with canonical URL `url`, on top of `base`.
    pub fn options_for(&self, url: &str, base: &StorageOptions) -> StorageOptions {
        let mut out = base.clone();
        out.extend(self.defaults.iter().map(|(k, v)| (k.clone(), v.clone())));
        for rule in self.rules.iter().filter(|r| r.matches(url)) {
            out.extend(rule.options.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.defaults.is_empty() && self.rules.is_empty()
    }
}

impl SourceRule {
    fn matches(&self, url: &str) -> bool {
        match &self.matcher {
            RuleMatcher::Glob(g) => g.is_match(url),
            RuleMatcher::Prefix(p) => is_within(url, p),
        }
    }
}

/// Whether `url` is `root` or lies below it, by whole path segments.
pub fn is_within(url: &str, root: &str) -> bool {
    match url.strip_prefix(root) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || root.ends_with('/'),
        None => false,
    }
}

/// Accepts URLs and plain (absolute or relative) local paths.
pub fn to_url(location: &str) -> Result<Url> {
    if location.is_empty() {
        return Err(Error::InvalidLocation {
            location: location.into(),
            reason: "empty location".into(),
        });
    }
    if location.contains("://") {
        return Url::parse(location).map_err(|e| Error::InvalidLocation {
            location: location.into(),
            reason: e.to_string(),
        });
    }
    // object_store paths may not contain `..`: resolve it (canonically when the path exists,
    // lexically when it does not, e.g. an output file or a prefix yet to be created).
    let path = std::fs::canonicalize(location).or_else(|_| {
        std::path::absolute(location).map(|p| {
            let mut out = std::path::PathBuf::new();
            for c in p.components() {
                match c {
                    std::path::Component::ParentDir => {
                        out.pop();
                    }
                    std::path::Component::CurDir => {}
                    c => out.push(c),
                }
            }
            out
        })
    });
    let path = path.map_err(|e| Error::io(location, e))?;
    Url::from_file_path(&path).map_err(|()| Error::InvalidLocation {
        location: location.into(),
        reason: "not an absolute local path".into(),
    })
}

fn url_prefix(url: &Url, location: &str) -> Result<StorePath> {
    StorePath::from_url_path(url.path().trim_matches('/')).map_err(invalid(location))
}

fn canonical_url(url: &Url) -> String {
    let mut s = url.to_string();
    while s.ends_with('/') && !s.ends_with("://") && !s.ends_with(":///") {
        s.pop();
    }
    s
}

/// Applies the user's storage options to a builder through its own config-key type.
fn configure<B, K>(
    mut builder: B,
    location: &str,
    options: &StorageOptions,
    set: impl Fn(B, K, &String) -> B,
) -> Result<B>
where
    K: std::str::FromStr<Err = object_store::Error>,
{
    for (k, v) in builder_options(options) {
        let key = k.parse().map_err(|e| {
            Error::Config(format!(
                "storage option {k:?} is not a known config key for {location}: {e}"
            ))
        })?;
        builder = set(builder, key, v);
    }
    Ok(builder)
}

/// Maps any error about `location` to [`Error::InvalidLocation`].
fn invalid<E: std::fmt::Display>(location: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::InvalidLocation {
        location: location.into(),
        reason: e.to_string(),
    }
}

/// Retries with a bounded total time: a data loader should surface a dead store in seconds
/// to a minute, not after object_store's default three minutes.
fn retry_config(location: &str, options: &StorageOptions) -> Result<RetryConfig> {
    let number = |key: &str, default: u64| -> Result<u64> {
        options.get(key).map_or(Ok(default), |v| {
            v.parse().map_err(|_| {
                Error::Config(format!(
                    "storage option {key} for {location} must be a whole number, got {v:?}"
                ))
            })
        })
    };
    Ok(RetryConfig {
        max_retries: number(MAX_RETRIES, 8)? as usize,
        retry_timeout: Duration::from_secs(number(RETRY_TIMEOUT_SECS, 60)?),
        ..RetryConfig::default()
    })
}

fn client_options(options: &StorageOptions) -> ClientOptions {
    // A stalled connection must not hang a job: bound connecting and each request.
    let mut client = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(Duration::from_secs(120));
    for (k, v) in builder_options(options) {
        if let Ok(key) = k.parse() {
            client = client.with_config(key, v);
        }
    }
    client
}

struct CredentialSources {
    env: &'static [&'static str],
    options: &'static [&'static str],
    hint: &'static str,
}

fn aws_credential_sources() -> CredentialSources {
    CredentialSources {
        env: &[
            "AWS_ACCESS_KEY_ID",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_SKIP_SIGNATURE",
        ],
        options: &[
            "aws_access_key_id",
            "access_key_id",
            "skip_signature",
            "aws_skip_signature",
        ],
        hint: "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the storage options \
               aws_access_key_id/aws_secret_access_key), AWS_SKIP_SIGNATURE=true for a public \
               bucket, or AWS_EC2_METADATA_DISABLED=false to use an EC2 instance role",
    }
}

fn gcs_credential_sources() -> CredentialSources {
    CredentialSources {
        env: &[
            "GOOGLE_SERVICE_ACCOUNT",
            "GOOGLE_SERVICE_ACCOUNT_PATH",
            "GOOGLE_SERVICE_ACCOUNT_KEY",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "GOOGLE_SKIP_SIGNATURE",
        ],
        options: &[
            "google_service_account",
            "service_account",
            "google_service_account_key",
            "service_account_key",
            "google_application_credentials",
            "google_skip_signature",
            "skip_signature",
        ],
        hint: "set GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT (or storage options), \
               or AWS_EC2_METADATA_DISABLED=false / use_instance_metadata=true on a GCE VM",
    }
}

fn azure_credential_sources() -> CredentialSources {
    CredentialSources {
        env: &[
            "AZURE_STORAGE_ACCOUNT_KEY",
            "AZURE_STORAGE_ACCESS_KEY",
            "AZURE_STORAGE_SAS_KEY",
            "AZURE_STORAGE_TOKEN",
            "AZURE_CLIENT_SECRET",
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_STORAGE_USE_EMULATOR",
            "AZURE_SKIP_SIGNATURE",
        ],
        options: &[
            "azure_storage_account_key",
            "account_key",
            "access_key",
            "azure_storage_sas_key",
            "sas_key",
            "azure_storage_token",
            "bearer_token",
            "azure_client_secret",
            "client_secret",
            "azure_skip_signature",
            "skip_signature",
            "use_emulator",
        ],
        hint: "set AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_KEY or a client secret (or \
               storage options), or use_instance_metadata=true for a managed identity",
    }
}

fn require_credentials(
    location: &str,
    options: &StorageOptions,
    sources: &CredentialSources,
) -> Result<()> {
    let env_set = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty());
    let metadata_allowed = std::env::var("AWS_EC2_METADATA_DISABLED")
        .is_ok_and(|v| v.eq_ignore_ascii_case("false"))
        || options
            .get(USE_INSTANCE_METADATA)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let configured = sources.env.iter().any(|k| env_set(k))
        || sources.options.iter().any(|k| options.contains_key(*k));
    if configured || metadata_allowed {
        Ok(())
    } else {
        Err(Error::MissingCredentials {
            location: location.into(),
            hint: sources.hint.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_become_file_urls() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::open(dir.path().to_str().unwrap(), &StorageOptions::new()).unwrap();
        assert!(loc.url.starts_with("file:///"), "{}", loc.url);
        assert!(!loc.url.ends_with('/'));
        let key = loc.key("a/b.parquet");
        assert_eq!(loc.relative(&key), "a/b.parquet");
    }

    #[test]
    fn unknown_scheme_is_a_clear_error() {
        let err = Location::open("ftp://host/x", &StorageOptions::new()).unwrap_err();
        assert!(err.to_string().contains("unsupported scheme"), "{err}");
    }

    #[test]
    fn s3_without_credentials_fails_fast() {
        if std::env::var("AWS_ACCESS_KEY_ID").is_ok() {
            return; // the developer's environment has credentials; nothing to check here
        }
        let err = Location::open("s3://bucket/prefix", &StorageOptions::new()).unwrap_err();
        assert!(matches!(err, Error::MissingCredentials { .. }), "{err}");
        assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"));
    }

    #[test]
    fn storage_config_layers_defaults_and_rules_in_file_order() {
        let config = StorageConfig::from_json(
            r#"{"defaults": {"aws_region": "us-east-1", "max_retries": "3"},
                "sources": [
                  {"match": "s3://eu-*", "options": {"aws_region": "eu-west-1"}},
                  {"match": "s3://eu-special/raw", "options": {"aws_endpoint": "http://x"}},
                  {"match": "s3://eu-special/raw", "options": {"aws_region": "eu-north-1"}}
                ]}"#,
            "cfg.json",
        )
        .unwrap();
        let mut base = StorageOptions::new();
        base.insert("aws_region".into(), "ap-south-1".into());
        base.insert("allow_http".into(), "true".into());
        let o = config.options_for("s3://us-bucket/data", &base);
        assert_eq!(o["aws_region"], "us-east-1");
        assert_eq!(o["allow_http"], "true");
        let o = config.options_for("s3://eu-1/data", &base);
        assert_eq!(o["aws_region"], "eu-west-1");
        assert!(!o.contains_key("aws_endpoint"));
        let o = config.options_for("s3://eu-special/raw/part", &base);
        assert_eq!(o["aws_region"], "eu-north-1");
        assert_eq!(o["aws_endpoint"], "http://x");
        // Prefixes match whole segments only.
        let o = config.options_for("s3://eu-special/raw2", &base);
        assert!(!o.contains_key("aws_endpoint"));
    }

    #[test]
    fn storage_config_errors_name_the_file() {
        let err = StorageConfig::from_json(r#"{"source": []}"#, "bad.json").unwrap_err();
        assert!(matches!(err, Error::StorageConfig { .. }), "{err}");
        assert!(err.to_string().contains("bad.json"), "{err}");
        let err = StorageConfig::from_json(
            r#"{"sources": [{"match": "s3://a/[", "options": {}}]}"#,
            "g",
        )
        .unwrap_err();
        assert!(err.to_string().contains("sources[0]"), "{err}");
    }

    #[test]
    fn within_is_by_segment() {
        assert!(is_within("s3://b/a", "s3://b/a"));
        assert!(is_within("s3://b/a/c", "s3://b/a"));
        assert!(!is_within("s3://b/ab", "s3://b/a"));
        assert!(is_within("s3://b/x", "s3://b"));
        assert!(!is_within("s3://bc/x", "s3://b"));
    }

    #[test]
    fn unknown_storage_option_is_rejected() {
        let mut opts = StorageOptions::new();
        opts.insert("aws_access_key_id".into(), "x".into());
        opts.insert("no_such_key".into(), "1".into());
        let err = Location::open("s3://bucket/prefix", &opts).unwrap_err();
        assert!(err.to_string().contains("no_such_key"), "{err}");
    }
}
