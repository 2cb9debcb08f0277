//! The fleet component's configurations (`packaging/kubernetes/fleet`) and the sidecar example's,
//! read by tokend's own parser: valid, with the roles they are meant to have, and meeting on the
//! same Redis keys. A follower finds a client's token under a key made from the namespace, the
//! client's name and its request's fingerprint: a difference there, however small, would leave
//! every node without tokens. `packaging/kubernetes/test-fleet-pods.sh` shows the same with
//! real pods, on the test's configurations; this test holds the shipped ones to it.

use std::path::Path;

use serde::Deserialize as _;
use tokend::config::{self, Config, Credentials, FleetRole};
use tokend::fleet::Keys;
use tokend::refresh::fingerprint::Fingerprint;

use super::here;

fn parse(name: &str, text: &str) -> Config {
    config::parse_str(text, Path::new(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn shipped(file: &str) -> Config {
    let path = here().join("packaging/kubernetes").join(file);
    parse(file, &std::fs::read_to_string(path).unwrap())
}

/// The sidecar's configuration: the ConfigMap in `examples/sidecar.yaml`.
fn sidecar() -> Config {
    let text = std::fs::read_to_string(here().join("packaging/kubernetes/examples/sidecar.yaml")).unwrap();
    let map = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::Value::deserialize(doc).unwrap())
        .find(|doc| doc["kind"] == "ConfigMap")
        .expect("a ConfigMap in the sidecar example");
    parse("sidecar's config.yaml", map["data"]["config.yaml"].as_str().unwrap())
}

/// Each client's Redis key (the token's), by client name.
fn keys(config: &Config) -> Vec<(String, String)> {
    let fleet = config.fleet.as_ref().expect("a fleet section");
    config
        .clients
        .iter()
        .map(|c| {
            assert!(c.spec.fleet.is_some(), "{} is shared with the fleet", c.name);
            // The key id is the same where the key is (one file for the fleet): left out here.
            let keys = Keys::new(&fleet.namespace, &c.name, Fingerprint::of(&c.spec).as_str(), "KEY");
            (c.name.to_string(), keys.token)
        })
        .collect()
}

#[test]
fn the_fleet_components_followers_refreshers_and_the_sidecar_meet_on_the_same_redis_keys() {
    let refresher = shipped("fleet/refresher.yaml");
    let follower = shipped("fleet/follower.yaml");
    let sidecar = sidecar();
    let role = |c: &Config| c.fleet.as_ref().unwrap().role;
    assert_eq!(role(&refresher), FleetRole::Refresher);
    assert_eq!(role(&follower), FleetRole::Follower);
    assert_eq!(role(&sidecar), FleetRole::Follower);
    for c in &refresher.clients {
        assert!(
            matches!(
                c.spec.credentials,
                Credentials::SecretPost(_) | Credentials::SecretBasic { .. }
            ),
            "the refreshers' {} has its secret",
            c.name
        );
    }
    for (which, config) in [("follower", &follower), ("sidecar", &sidecar)] {
        for c in &config.clients {
            assert!(
                matches!(c.spec.credentials, Credentials::Follower),
                "the {which}'s {} has no credentials",
                c.name
            );
        }
        assert_eq!(keys(config), keys(&refresher), "the {which}'s keys are the refreshers'");
        let (ours, theirs) = (config.fleet.as_ref().unwrap(), refresher.fleet.as_ref().unwrap());
        assert_eq!(ours.redis.endpoint, theirs.redis.endpoint, "one Redis for the {which}");
        assert_eq!(ours.key, theirs.key, "one fleet key file for the {which}");
        assert_ne!(
            ours.redis.username, theirs.redis.username,
            "the {which} logs in as a user of its own"
        );
    }
    // The sidecar is a follower as the DaemonSet's are, in the same Redis as the same user.
    assert_eq!(sidecar.fleet, follower.fleet);
    assert!(!keys(&refresher).is_empty());
}
