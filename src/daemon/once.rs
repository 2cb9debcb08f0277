//! `tokend once`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tracing::error;

use super::AppError;
use super::cleanup;
use super::sources::Upstream;
use super::tasks::runner;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::refresh::Group;
use crate::store::Store;

/// `tokend once`: fetch what is missing or due (everything with `force`), write the outputs, and
/// report whether every client now has a valid token and every output was written.
pub async fn once(config: Config, force: bool) -> Result<bool, AppError> {
    let store = Store::new();
    store.retain_clients(config.clients.iter().map(|c| &c.name));
    let metrics = Arc::new(Metrics::new());
    let sources = Upstream::new(&config, &metrics, &store);
    let mut jobs = Vec::new();
    let groups: Vec<Arc<Group>> = Group::from_clients(&config.clients).into_iter().map(Arc::new).collect();
    let batch: Vec<(Arc<Group>, Vec<PathBuf>)> = groups.into_iter().map(|g| (g, Vec::new())).collect();
    cleanup::before_start(&batch, &config.state_dir);
    for (group, _) in batch {
        let mut runner = runner(&group, &config.state_dir, &store, &metrics, &sources).single_attempt();
        jobs.push(async move {
            if !force {
                runner.seed().await;
            }
            if force || runner.is_due(SystemTime::now()) {
                // Failures are logged by `refresh`; a still-valid seeded token remains published.
                let _ = runner.refresh().await;
            }
            runner.failed_outputs()
        });
    }
    let failed_outputs: usize = futures_util::future::join_all(jobs).await.into_iter().sum();
    let now = SystemTime::now();
    let mut all_valid = failed_outputs == 0;
    for (name, snapshot) in store.all() {
        if snapshot.valid_token(now).is_none() {
            error!(client = %name, "no valid token");
            all_valid = false;
        }
    }
    Ok(all_valid)
}
