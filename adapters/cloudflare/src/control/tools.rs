//! The tools that build and deploy the Worker, run from the repository: `worker-build`
//! (the bundle in `adapters/cloudflare/build`) and `wrangler` from `node_modules/.bin`.
//! worker-build is pointed at the npm packages' `wasm-opt` and `esbuild`, as
//! `wrangler.toml`'s build command does, so it downloads nothing.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::ControlError;

/// The repository the Worker is built and deployed from.
#[derive(Debug, Clone)]
pub struct Toolchain {
    root: PathBuf,
}

impl Toolchain {
    /// Tools of the repository at `root` (the directory of `package.json`).
    pub fn new(root: impl Into<PathBuf>) -> Toolchain {
        Toolchain { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn wrangler(&self) -> PathBuf {
        self.root.join("node_modules/.bin/wrangler")
    }

    /// The Worker's crate, where worker-build runs.
    fn crate_dir(&self) -> PathBuf {
        self.root.join("adapters/cloudflare")
    }

    /// The bundle's entry module, which every rendered Worker names as `main`.
    pub fn entry(&self) -> PathBuf {
        self.crate_dir().join("build/index.js")
    }

    /// Why the tools cannot run here, if they cannot.
    pub fn missing(&self) -> Option<String> {
        let wrangler = self.wrangler();
        (!wrangler.exists())
            .then(|| format!("{} is missing: run `npm ci` in {}", wrangler.display(), self.root.display()))
    }

    /// Builds the bundle: `worker-build --release`, with `WORKER_BUILD_FLAGS` appended
    /// (`--no-opt` skips wasm-opt), as `wrangler.toml`'s build command runs it.
    pub async fn build(&self) -> Result<String, ControlError> {
        let bin = self.root.join("node_modules/.bin");
        let mut command = tokio::process::Command::new("worker-build");
        command
            .arg("--release")
            .args(std::env::var("WORKER_BUILD_FLAGS").unwrap_or_default().split_whitespace())
            .current_dir(self.crate_dir())
            .env("WASM_BINDGEN_BIN", "wasm-bindgen")
            .env("WASM_OPT_BIN", bin.join("wasm-opt"))
            .env("ESBUILD_BIN", bin.join("esbuild"));
        run("worker-build", command).await
    }

    /// `wrangler deploy -c config`; with `dry_run`, `--dry-run --outdir dry_run` (bundles
    /// offline, uploads nothing); with `secrets`, `--secrets-file secrets`.
    pub async fn deploy(
        &self,
        config: &Path,
        dry_run: Option<&Path>,
        secrets: Option<&Path>,
    ) -> Result<String, ControlError> {
        if let Some(missing) = self.missing() {
            return Err(ControlError::Missing(missing));
        }
        let mut command = tokio::process::Command::new(self.wrangler());
        command.arg("deploy").arg("--config").arg(config).current_dir(&self.root);
        if let Some(out) = dry_run {
            command.arg("--dry-run").arg("--outdir").arg(out);
        }
        if let Some(file) = secrets {
            command.arg("--secrets-file").arg(file);
        }
        command.env("WRANGLER_SEND_METRICS", "false").env("CLOUDFLARE_CF_FETCH_ENABLED", "false");
        run("wrangler deploy", command).await
    }
}

/// Runs `command` to the end; its output (stdout, then stderr), or an error that shows it.
async fn run(tool: &'static str, mut command: tokio::process::Command) -> Result<String, ControlError> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| ControlError::Missing(format!("cannot start {tool}: {e} (is it installed?)")))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    if output.status.success() {
        Ok(text)
    } else {
        Err(ControlError::Tool { tool, status: output.status.to_string(), output: tail(&text, 40) })
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `to` relative to the directory `from` (both absolute, canonical), with `/` separators,
/// as a rendered `wrangler.toml` names its `main`.
pub fn relative(from: &Path, to: &Path) -> String {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".to_owned(); from.len() - common];
    parts.extend(to[common..].iter().map(|c| c.as_os_str().to_string_lossy().into_owned()));
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_is_named_relative_to_the_rendered_file() {
        let main = Path::new("/repo/adapters/cloudflare/build/index.js");
        assert_eq!(
            relative(Path::new("/repo/.projector/deploy/user-profile"), main),
            "../../../adapters/cloudflare/build/index.js"
        );
        assert_eq!(relative(Path::new("/tmp/out/p"), main), "../../../repo/adapters/cloudflare/build/index.js");
        assert_eq!(relative(Path::new("/repo/adapters/cloudflare/build"), main), "index.js");
    }
}
