//! `tokend check --connect` for a fleet: reach the store as the daemon would, and for each
//! shared client try what its role needs under the store's ACL — read its token key; for a
//! refresher also write (on a key of its own prefix, `…:check`, that expires in seconds), take
//! and release a lock, publish; subscribe to its channel — and open the token stored there, if
//! any, with the client's key. Nothing the daemon uses is written.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;

use super::redis::Redis;
use super::seal::SealError;
use super::source::Keys;
use super::store::Store;
use crate::config::{Client, Fleet, FleetRole};

/// How long the probe's scratch key lives.
const SCRATCH_TTL: Duration = Duration::from_secs(10);

/// What the probe found for one client: a line for the plan, or a problem.
pub struct Finding {
    pub client: String,
    pub result: Result<String, String>,
}

/// Probes the store for every client of `clients` that shares through `fleet`.
pub async fn probe(fleet: &Fleet, clients: &[Arc<Client>]) -> Result<Vec<Finding>, String> {
    let redis = Redis::new(&fleet.redis)?;
    let client = redis.client().await.map_err(|e| e.to_string())?;
    let mut findings = Vec::new();
    let mut subscriber = match tokio::time::timeout(fleet.redis.timeout, client.get_async_pubsub()).await {
        Ok(Ok(p)) => Some(p),
        Ok(Err(e)) => return Err(format!("cannot open a subscriber connection to the fleet store: {e}")),
        Err(_) => return Err("the fleet store did not accept a subscriber connection in time".into()),
    };
    let keys = super::keys_by_client(fleet, clients);
    for c in clients.iter().filter(|c| c.spec.fleet.is_some()) {
        let Some((_, keys)) = keys.iter().find(|(name, _)| *name == c.name) else {
            continue;
        };
        let result = probe_client(fleet, &redis, subscriber.as_mut(), c, keys).await;
        findings.push(Finding {
            client: c.name.to_string(),
            result,
        });
    }
    Ok(findings)
}

async fn probe_client(
    fleet: &Fleet,
    redis: &Redis,
    subscriber: Option<&mut redis::aio::PubSub>,
    client: &Client,
    keys: &Keys,
) -> Result<String, String> {
    let mut done = vec!["GET"];
    let stored = redis
        .get(&keys.token)
        .await
        .map_err(|e| format!("reading {}: {e}", keys.token))?;
    if fleet.role == FleetRole::Refresher {
        let scratch = format!("{}:check", keys.token);
        let owner = format!("{}/check", super::node_name());
        redis
            .put(&scratch, "tokend check", SCRATCH_TTL)
            .await
            .map_err(|e| format!("writing {scratch} (SET): {e}"))?;
        redis
            .unlock(&scratch, "tokend check")
            .await
            .map_err(|e| format!("releasing {scratch} (EVAL): {e}"))?;
        redis
            .lock(&scratch, &owner, SCRATCH_TTL)
            .await
            .map_err(|e| format!("locking {scratch} (SET NX): {e}"))?;
        redis
            .renew(&scratch, &owner, SCRATCH_TTL)
            .await
            .map_err(|e| format!("renewing the lock {scratch} (EVAL of PEXPIRE): {e}"))?;
        redis
            .unlock(&scratch, &owner)
            .await
            .map_err(|e| format!("releasing {scratch} (EVAL): {e}"))?;
        redis
            .publish(&format!("{scratch}:new"), "")
            .await
            .map_err(|e| format!("publishing on {scratch}:new: {e}"))?;
        done.extend(["SET", "SET NX", "EVAL", "PUBLISH"]);
    }
    if let Some(sub) = subscriber {
        tokio::time::timeout(fleet.redis.timeout, sub.subscribe(&keys.channel))
            .await
            .map_err(|_| format!("subscribing to {}: no answer", keys.channel))?
            .map_err(|e| format!("subscribing to {}: {e}", keys.channel))?;
        // Drains the confirmation; a message would do no harm.
        let _ = tokio::time::timeout(Duration::from_millis(10), sub.on_message().next()).await;
        let _ = tokio::time::timeout(fleet.redis.timeout, sub.unsubscribe(&keys.channel)).await;
        done.push("SUBSCRIBE");
    }
    let key = match client.spec.fleet.as_ref().and_then(|f| f.key.as_ref()) {
        Some(own) => super::read_key(own)?,
        None => super::read_key(&fleet.key)?,
    };
    let held = match stored {
        None => "no token stored yet".to_owned(),
        Some(value) => match key.open(&keys.token, &value) {
            Ok(opened) => format!(
                "a token from {} that opens with this host's key, valid until {}",
                opened.node,
                crate::token::rfc3339(opened.token.expires_at)
            ),
            Err(e @ SealError::OtherKey(_)) => return Err(format!("the token stored at {}: {e}", keys.token)),
            Err(e) => return Err(format!("the token stored at {} cannot be used: {e}", keys.token)),
        },
    };
    Ok(format!("{} allowed on {}; {held}", done.join(", "), keys.token))
}
