//! [`CloudflareWorkerAdapter`]: the [`ProjectionAdapter`] for `provider: cloudflare`,
//! run on the operator's machine (native only).
//!
//! - `deploy` renders the projection's Worker ([`render`]) into `<out>/<projection>/
//!   wrangler.toml` and runs `wrangler deploy` on the bundle `worker-build` made
//!   ([`tools`]); a dry run bundles into `<out>/<projection>/dist` and uploads nothing.
//! - `scale` re-partitions the projection in the store ([`scale`]), then deploys the
//!   Worker again with the new count.
//! - `monitor` reads the Worker's `/health` and `/status` over HTTP ([`monitor`]).

pub mod monitor;
pub mod render;
pub mod scale;
pub mod tools;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use projector::adapter::{AdapterError, Deployment, ProjectionAdapter};
use projector::config::Config;
use projector::{EventStore, ProjectionState, ProjectionStore};

pub use self::monitor::{worker_url, Monitor, WorkerReport};
pub use self::render::RenderError;
pub use self::tools::Toolchain;

/// Something the operator's side of the Worker could not do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    #[error("unknown projection {0}")]
    UnknownProjection(String),
    #[error(transparent)]
    Render(#[from] RenderError),
    /// A tool or file the deployment needs is not there. Install or build it.
    #[error("{0}")]
    Missing(String),
    /// A tool ran and failed; `output` is the end of what it printed.
    #[error("{tool} failed ({status}):\n{output}")]
    Tool { tool: &'static str, status: String, output: String },
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
    /// The Worker could not be reached, or did not answer as a Worker does.
    #[error("{url}: {error}")]
    Http { url: String, error: String },
    #[error("{0}")]
    Store(String),
    /// No URL to reach the Worker at.
    #[error("no Worker URL: give one (e.g. https://{{worker}}.<subdomain>.workers.dev)")]
    NoUrl,
    /// `scale` needs the store the Worker works on.
    #[error("scaling a Worker's projection needs its store: none was given")]
    NoStore,
}

impl From<ControlError> for AdapterError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::UnknownProjection(name) => AdapterError::UnknownProjection(name),
            e => AdapterError::Provider(e.to_string()),
        }
    }
}

/// What one deployment did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorkerDeployment {
    pub projection: String,
    pub worker: String,
    pub partitions: u32,
    /// The rendered configuration.
    pub config: PathBuf,
    /// A dry run's bundle directory (`None`: deployed).
    pub bundle: Option<PathBuf>,
    /// The secrets uploaded with it, by name.
    pub secrets: Vec<String>,
    /// What wrangler printed.
    pub output: String,
}

/// Deploys, scales and monitors `provider: cloudflare` projections. See the module docs.
pub struct CloudflareWorkerAdapter<S> {
    config: Config,
    tools: Toolchain,
    out: PathBuf,
    dry_run: bool,
    secrets: Vec<(String, String)>,
    url: Option<String>,
    store: Option<S>,
    monitor: Monitor,
}

impl<S> CloudflareWorkerAdapter<S> {
    /// An adapter for the projections of `config`, deploying from the repository at
    /// `root`; renders into `<root>/.projector/deploy` unless told otherwise.
    pub fn new(config: Config, root: impl Into<PathBuf>) -> Result<Self, ControlError> {
        let tools = Toolchain::new(root);
        let out = tools.root().join(".projector/deploy");
        Ok(Self {
            config,
            tools,
            out,
            dry_run: false,
            secrets: Vec::new(),
            url: None,
            store: None,
            monitor: Monitor::new()?,
        })
    }

    /// Where the rendered configurations (and a dry run's bundles) go.
    pub fn out(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out = dir.into();
        self
    }

    /// Bundle only (`wrangler deploy --dry-run`): nothing is uploaded.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// A secret uploaded with every deployment (never with a dry run, never written to
    /// the output directory).
    pub fn secret(mut self, name: &str, value: String) -> Self {
        self.secrets.push((name.to_owned(), value));
        self
    }

    /// Where the Workers answer: a URL, or a template with `{worker}` or `{projection}`.
    pub fn url(mut self, template: impl Into<String>) -> Self {
        self.url = Some(template.into());
        self
    }

    /// The store the Workers work on (for `scale`).
    pub fn store(mut self, store: S) -> Self {
        self.store = Some(store);
        self
    }

    pub fn tools(&self) -> &Toolchain {
        &self.tools
    }

    /// Builds the Worker's bundle once, for every deployment that follows.
    pub async fn build(&self) -> Result<String, ControlError> {
        self.tools.build().await
    }

    /// Renders and deploys (or bundles, in a dry run) the Worker of projection `name`,
    /// with `partitions` instead of the configured count when given.
    pub async fn deploy_worker(&self, name: &str, partitions: Option<u32>) -> Result<WorkerDeployment, ControlError> {
        let entry = self.tools.entry();
        let dir = self.out.join(name);
        std::fs::create_dir_all(&dir).map_err(|error| io(format!("cannot create {}", dir.display()), error))?;
        let canonical = |p: &Path| p.canonicalize().map_err(|error| io(format!("{}", p.display()), error));
        // wrangler runs in the repository: every path it is given is absolute.
        let dir = canonical(&dir)?;
        if !entry.exists() {
            return Err(ControlError::Missing(format!(
                "the Worker bundle {} is missing: build it (worker-build --release in adapters/cloudflare, \
                 or `projector deploy` without --no-build)",
                entry.display()
            )));
        }
        let main = tools::relative(&dir, &canonical(&entry)?);
        let target = render::Target { main, partitions };
        let toml = render::wrangler_toml(&self.config, name, &target)?;
        let config = dir.join("wrangler.toml");
        std::fs::write(&config, toml).map_err(|error| io(format!("cannot write {}", config.display()), error))?;

        let bundle = self.dry_run.then(|| dir.join("dist"));
        let secrets =
            if self.dry_run || self.secrets.is_empty() { None } else { Some(SecretsFile::write(&self.secrets)?) };
        let output = self.tools.deploy(&config, bundle.as_deref(), secrets.as_ref().map(|s| s.path.as_path())).await?;
        let p = &self.config.projections[name];
        Ok(WorkerDeployment {
            projection: name.to_owned(),
            worker: projector::config::cloudflare::worker_name(name),
            partitions: partitions.unwrap_or(p.partitions),
            config,
            bundle,
            secrets: if secrets.is_some() { self.secrets.iter().map(|(n, _)| n.clone()).collect() } else { Vec::new() },
            output,
        })
    }

    /// What the Worker of projection `name` reports about itself.
    pub async fn report(&self, name: &str) -> Result<WorkerReport, ControlError> {
        let template = self.url.as_deref().ok_or(ControlError::NoUrl)?;
        self.monitor.read(&worker_url(template, name)).await
    }
}

fn io(what: String, error: std::io::Error) -> ControlError {
    ControlError::Io { what, error }
}

/// The secrets of one deployment in a private file (mode 0600) outside the output
/// directory, removed when dropped.
struct SecretsFile {
    path: PathBuf,
}

impl SecretsFile {
    fn write(secrets: &[(String, String)]) -> Result<SecretsFile, ControlError> {
        let map: serde_json::Map<String, serde_json::Value> =
            secrets.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        let path = std::env::temp_dir().join(format!(
            "projector-secrets-{}-{:x}.json",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
        ));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = SecretsFile { path };
        let mut handle =
            options.open(&file.path).map_err(|e| io(format!("cannot create {}", file.path.display()), e))?;
        handle
            .write_all(serde_json::Value::Object(map).to_string().as_bytes())
            .map_err(|e| io(format!("cannot write {}", file.path.display()), e))?;
        Ok(file)
    }
}

impl Drop for SecretsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl<S: EventStore + ProjectionStore> ProjectionAdapter for CloudflareWorkerAdapter<S> {
    fn provider(&self) -> &'static str {
        "cloudflare"
    }

    async fn deploy(&self, projection: &str) -> Result<Deployment, AdapterError> {
        let done = self.deploy_worker(projection, None).await?;
        Ok(Deployment { projection: done.projection, provider: "cloudflare", partitions: done.partitions })
    }

    async fn scale(&self, projection: &str, partitions: u32) -> Result<Deployment, AdapterError> {
        let store = self.store.as_ref().ok_or(ControlError::NoStore)?;
        let owner = format!("scale-{}", std::process::id());
        scale::repartition(store, &self.config, projection, partitions, &owner).await?;
        let done = self.deploy_worker(projection, Some(partitions)).await?;
        Ok(Deployment { projection: done.projection, provider: "cloudflare", partitions })
    }

    async fn monitor(&self, projection: &str) -> Result<Vec<ProjectionState>, AdapterError> {
        if !self.config.projections.contains_key(projection) {
            return Err(AdapterError::UnknownProjection(projection.to_owned()));
        }
        let report = self.report(projection).await?;
        Ok(report.projections.into_iter().filter(|s| s.projection == projection).collect())
    }
}
