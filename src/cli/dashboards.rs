//! `rcfd dashboards export` and `rcfd dashboards install`: the saved objects for the
//! configured index prefix, written out or imported into OpenSearch Dashboards.

use anyhow::Context;

use super::command::{DashboardObjectsArgs, DashboardsCommand};
use crate::dashboards::install::{import_request, install, BasicAuth};
use crate::dashboards::objects::{ndjson, DashboardSettings};
use crate::sink::opensearch::config::OpenSearchConfig;

pub fn run(command: DashboardsCommand) -> anyhow::Result<()> {
    match command {
        DashboardsCommand::Export { objects, output } => {
            let text = ndjson(&settings(&objects)?);
            match output {
                Some(path) => std::fs::write(&path, text).with_context(|| format!("writing {}", path.display())),
                None => {
                    use std::io::Write;
                    std::io::stdout().lock().write_all(text.as_bytes()).context("writing standard output")
                }
            }
        }
        DashboardsCommand::Install(args) => {
            let user = args.user.or_else(|| std::env::var("RCFD_DASHBOARDS_USER").ok());
            let password = args.password.or_else(|| std::env::var("RCFD_DASHBOARDS_PASSWORD").ok());
            let auth = match (user, password) {
                (Some(user), Some(password)) => Some(BasicAuth { user, password }),
                (None, None) => None,
                (Some(_), None) => anyhow::bail!("--user needs --password (or RCFD_DASHBOARDS_PASSWORD)"),
                (None, Some(_)) => anyhow::bail!("--password needs --user (or RCFD_DASHBOARDS_USER)"),
            };
            let settings = settings(&args.objects)?;
            let request = import_request(&args.url, &ndjson(&settings), auth.as_ref(), args.tenant.as_deref())?;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let summary = runtime.block_on(install(&request))?;
            println!(
                "imported {} saved objects for {} into {}",
                summary.success_count,
                settings.index_pattern(),
                args.url
            );
            Ok(())
        }
    }
}

/// The prefix from --index-prefix, else the config file's, else the default; checked
/// with the OpenSearch sink's own rules.
fn settings(args: &DashboardObjectsArgs) -> anyhow::Result<DashboardSettings> {
    let mut settings = DashboardSettings::default();
    if let Some(file) = &args.config {
        settings.index_prefix = crate::service::run::load_config(Some(file))?.config.opensearch.index_prefix;
    }
    if let Some(prefix) = &args.index_prefix {
        let check = OpenSearchConfig { index_prefix: prefix.clone(), ..OpenSearchConfig::default() };
        if let Err((_, value, allowed)) = check.validate() {
            anyhow::bail!("--index-prefix {value}: {allowed}");
        }
        settings.index_prefix = prefix.clone();
    }
    if let Some(features) = &args.features {
        if let Some(bad) = features.iter().find(|f| f.is_empty() || f.contains(['"', '\\', ' '])) {
            anyhow::bail!("--features {bad:?}: a feature name, without spaces or quotes");
        }
        settings.features = features.clone();
    }
    Ok(settings)
}
