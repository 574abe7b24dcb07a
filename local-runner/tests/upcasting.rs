//! The `upcasting:` section of `projections.yaml` as the `projector` binary reads it.

mod support;

use std::time::Duration;

use support::Workspace;

const QUICK: Duration = Duration::from_secs(30);

#[test]
fn an_upcasting_event_type_without_upcasters_is_named_at_its_place() {
    let ws = Workspace::with_config(
        None,
        "projections:
  user-profile:
    handler: user-profile
    provider: local
    config: { memory: 128MB, timeout: 30s, concurrency: 1 }
    batch_size: 0
upcasting:
  event_types:
    - UserSignedUp
",
    );
    let out = ws.run(&["status"], QUICK);
    out.assert_failure_mentioning("unknown upcasting event type", "upcasting is enabled for event type `UserSignedUp`");
    let needle = "projections.yaml:9:7: upcasting is enabled for event type `UserSignedUp`, \
                  but no upcaster is registered for it";
    assert!(out.stderr.contains(needle), "the error names the type at file:line:col\n{}", out.describe());
    assert!(
        out.stderr.contains("projections.yaml:6:17: "),
        "reported together with the other errors of the file\n{}",
        out.describe()
    );
    assert!(!ws.path().join(".projector").exists(), "a bad configuration must not create a store");
}
