//! Loading mc-launcher.yml (README "Configuration reference"): find the file, render it with
//! minijinja, parse it with positions, decode and validate it, and report
//! every error as `file:line:col` at once.

pub mod circus;
pub mod decode;
pub mod decoder;
pub mod inputs;
pub mod jobs;
pub mod model;

pub use model::*;

use crate::error::Diag;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the command line and environment say about the configuration.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `-c FILE` or `MC_LAUNCHER_CONFIG`: must exist.
    pub config: Option<PathBuf>,
    /// `--root` or `MC_ROOT`; default `/srv`.
    pub root: Option<PathBuf>,
    /// `--project`, `MC_PROJECT` or `name=`.
    pub project: Option<String>,
    /// `--profile` (repeatable) or `MC_PROFILES=a,b`: the active profiles.
    pub profiles: Vec<String>,
}

/// A loaded configuration, with the rendered text (for `render`) and warnings.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The file after templating; `None` when no file was found.
    pub rendered: Option<String>,
    pub warnings: Vec<Diag>,
}

pub const DEFAULT_ROOT: &str = "/srv";
pub use crate::error::DEFAULT_TERMINATION_LOG;
/// Overrides `shutdown.timeout` (for `terminationGracePeriodSeconds`).
pub const SHUTDOWN_TIMEOUT_ENV: &str = "MC_SHUTDOWN_TIMEOUT";
pub const SYSTEM_CONFIG: &str = "/etc/mc-launcher.yml";
/// The main circus config of makina images, read when there is no config file.
pub const CIRCUS_MAIN: &str = "/etc/circus/circusd.ini";

/// The project when none is named: the single directory under `{root}/projects`.
pub fn discover_project(root: &Path) -> Option<String> {
    let dirs: Vec<String> = std::fs::read_dir(root.join("projects"))
        .ok()?
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    match dirs.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// Find, render, parse and validate the configuration. With no file found
/// (and none named), the plain-init configuration is returned.
pub fn load(opts: &LoadOptions) -> Result<Loaded, Vec<Diag>> {
    let root = opts
        .root
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
    let project = opts.project.clone().or_else(|| discover_project(&root));
    if let Some(file) = &opts.config {
        return load_file(file, opts);
    }
    let mut candidates = Vec::new();
    if let Some(p) = &project {
        candidates.push(
            Paths::defaults(&root, p)
                .project
                .join(".salt/mc-launcher.yml"),
        );
    }
    candidates.push(PathBuf::from(SYSTEM_CONFIG));
    match candidates.into_iter().find(|c| c.is_file()) {
        Some(file) => load_file(&file, opts),
        None => {
            // No config: a plain init, which still runs an image's circus
            // watchers when it has them (drop-in for circusd).
            let mut config = Config::plain(root, project);
            shutdown_from_env(&mut config).map_err(|d| vec![d])?;
            if Path::new(CIRCUS_MAIN).is_file() {
                config.circus.config = Some(PathBuf::from(CIRCUS_MAIN));
            }
            with_circus(config, None, &opts.profiles)
        }
    }
}

/// Load one file. The command line's root and project win over the file's;
/// the file's own `root:` / `project:` are used when the command line is
/// silent (the text is then rendered again with them).
pub fn load_file(file: &Path, opts: &LoadOptions) -> Result<Loaded, Vec<Diag>> {
    let text = read_config(file).map_err(|d| vec![d])?;
    load_text(file, &text, opts)
}

/// The largest config file read: a config is a few KiB, and a bigger one
/// (a mistake, `-c /dev/zero`) must not be read whole before it is refused.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Read the config file, at most [`MAX_CONFIG_BYTES`] of it.
fn read_config(file: &Path) -> Result<String, Diag> {
    use std::io::Read;
    let cannot = |e: std::io::Error| Diag::file(file, format!("cannot read config: {e}"));
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .map_err(cannot)?
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(Diag::file(
            file,
            format!(
                "config: larger than the limit of {} MiB",
                MAX_CONFIG_BYTES >> 20
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        Diag::file(
            file,
            format!(
                "cannot read config: not UTF-8 (byte {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Load the config `text` as if read from `file` (the fuzzer's entry).
pub fn load_text(file: &Path, text: &str, opts: &LoadOptions) -> Result<Loaded, Vec<Diag>> {
    let mut root = opts
        .root
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
    let mut project = opts.project.clone().or_else(|| discover_project(&root));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (rendered, doc, paths) = render_and_parse(file, text, &root, project.as_deref())
            .map_err(|diags| after_template_error(file, text, &root, project.as_deref(), diags))?;
        // The file may name its own project and root.
        let mut d = decoder::Decoder::new(file);
        let file_root = doc.get("root").and_then(|n| d.path(n, "root"));
        let file_project = doc.get("project").and_then(|n| d.string(n, "project"));
        let new_root = opts
            .root
            .clone()
            .or(file_root)
            .unwrap_or_else(|| root.clone());
        let new_project = opts
            .project
            .clone()
            .or(file_project)
            .or_else(|| project.clone());
        if attempt == 1 && (new_root != root || new_project != project) {
            root = new_root;
            project = new_project.or_else(|| discover_project(&root));
            continue;
        }
        let base = base_config(file, &root, project.clone(), paths);
        let mut config = decode::config(&mut d, &doc, base);
        if let Err(e) = shutdown_from_env(&mut config) {
            d.errors.push(e);
        }
        if !d.errors.is_empty() {
            return Err(d.errors);
        }
        return with_circus(config, Some(rendered), &opts.profiles);
    }
}

/// The defaults a config file is decoded over, for its root, project and
/// `paths:`.
fn base_config(file: &Path, root: &Path, project: Option<String>, paths: Paths) -> Config {
    let mut base = Config::plain(root.to_path_buf(), project);
    base.paths = paths;
    base.pillar.source = base.paths.volume.join("configuration/pillar.sls");
    base.pillar.target = base.paths.pillar.join("init.sls");
    base.ssh.keys_dirs = vec![
        base.paths.volume.join("ssh"),
        base.paths.volume.join("ms_ssh"),
    ];
    base.ssh.host_keys_dir = base.paths.volume.join("configuration/ssh_host_keys");
    base.file = Some(file.to_path_buf());
    base
}

/// The config's errors after a template error, all at once: the template
/// is rendered again past each undefined value (its `{{ … }}` blanked, see
/// [`crate::template::render_all`]), and what then renders is parsed and
/// decoded. An error on a blanked line is left out: it follows from the
/// template error already said.
fn after_template_error(
    file: &Path,
    text: &str,
    root: &Path,
    project: Option<&str>,
    diags: Vec<Diag>,
) -> Vec<Diag> {
    let first_is_template = diags
        .first()
        .is_some_and(|d| d.msg.starts_with("template error:"));
    if !first_is_template {
        return diags;
    }
    let name = project.unwrap_or_default();
    let defaults = Paths::defaults(root, name);
    let (mut errors, out) =
        crate::template::render_all(file, text, context(root, name, &defaults), true);
    let Some((rendered, blanked)) = out else {
        return if errors.is_empty() { diags } else { errors };
    };
    let keep = |d: &Diag| !blanked.contains(&d.pos.line);
    match crate::yaml::parse(&rendered, file) {
        Err(d) => errors.extend(Some(d).filter(keep)),
        Ok(doc) => {
            let mut d = decoder::Decoder::new(file);
            let paths = decode::paths(&mut d, doc.get("paths"), root, name);
            let base = base_config(file, root, project.map(str::to_string), paths);
            let _ = decode::config(&mut d, &doc, base);
            errors.extend(d.errors.into_iter().filter(keep));
        }
    }
    errors.sort_by_key(|d| d.pos.line);
    errors
}

/// `MC_SHUTDOWN_TIMEOUT` (a duration such as `25s`; a bare number is
/// seconds) wins over `shutdown.timeout`.
pub fn shutdown_from_env(cfg: &mut Config) -> Result<(), Diag> {
    let Ok(text) = std::env::var(SHUTDOWN_TIMEOUT_ENV) else {
        return Ok(());
    };
    let t = text.trim();
    let parsed = match t.parse::<f64>() {
        Ok(secs) => crate::units::duration_from_secs(secs),
        Err(_) => humantime::parse_duration(t)
            .ok()
            .filter(|d| *d <= crate::units::MAX_DURATION),
    };
    match parsed {
        Some(d) => {
            cfg.shutdown.timeout = d;
            cfg.shutdown.from_env = true;
            Ok(())
        }
        None => Err(Diag::file(
            Path::new(SHUTDOWN_TIMEOUT_ENV),
            format!("`{t}` is not a duration; write e.g. 25s, or a number of seconds"),
        )),
    }
}

/// Add the services of the circus files the config names. A circus watcher
/// may not reuse the name of a configured service.
fn with_circus(
    mut config: Config,
    rendered: Option<String>,
    profiles: &[String],
) -> Result<Loaded, Vec<Diag>> {
    if config.circus.config.is_none() && config.circus.include.is_empty() {
        let errors = inputs::apply_profiles(&mut config, profiles);
        if !errors.is_empty() {
            return Err(errors);
        }
        return Ok(Loaded {
            config,
            rendered,
            warnings: Vec::new(),
        });
    }
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let mut c = circus::load(&config.circus, &env);
    for s in &c.services {
        if config.services.iter().any(|o| o.name == s.name) {
            c.errors.push(Diag::new(
                &s.origin.file,
                s.origin.pos,
                format!(
                    "[watcher:{}] has the name of a service of the config",
                    s.name
                ),
            ));
        }
    }
    let mut d = decoder::Decoder::new(config.file.as_deref().unwrap_or(Path::new("circus")));
    config.services.extend(c.services);
    decode::validate_services(&mut d, &config.services);
    c.errors.extend(d.errors);
    if c.errors.is_empty() {
        c.errors = inputs::apply_profiles(&mut config, profiles);
    }
    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    Ok(Loaded {
        config,
        rendered,
        warnings: c.unsupported,
    })
}

/// Render the text with the context for `root`/`project`, parse it, and
/// decode its `paths:` (which the rest of the defaults derive from).
fn render_and_parse(
    file: &Path,
    text: &str,
    root: &Path,
    project: Option<&str>,
) -> Result<(String, crate::yaml::Node, Paths), Vec<Diag>> {
    let name = project.unwrap_or_default();
    let defaults = Paths::defaults(root, name);
    let rendered = render(file, text, root, name, &defaults).map_err(|d| vec![d])?;
    let doc = crate::yaml::parse(&rendered, file).map_err(|d| vec![d])?;
    if !doc.is_null() && doc.as_map().is_none() {
        return Err(vec![Diag::new(
            file,
            doc.pos,
            format!(
                "config: expected a mapping at the top level, found {}",
                doc.kind()
            ),
        )]);
    }
    let mut d = decoder::Decoder::new(file);
    let paths = decode::paths(&mut d, doc.get("paths"), root, name);
    if !d.errors.is_empty() {
        return Err(d.errors);
    }
    Ok((rendered, doc, paths))
}

/// The template context every config sees.
pub fn context(root: &Path, project: &str, paths: &Paths) -> minijinja::Value {
    model::template_context(root, project, paths, crate::proc::cgroup::size())
}

/// Render with strict undefined variables; line numbers stay the source's.
fn render(
    file: &Path,
    text: &str,
    root: &Path,
    project: &str,
    paths: &Paths,
) -> Result<String, Diag> {
    crate::template::render(file, text, context(root, project, paths), true)
}

#[cfg(test)]
mod tests;
