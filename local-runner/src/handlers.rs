//! The handlers compiled into this binary. [`each`] is the one place that names them:
//! the names the configuration may use, the adapter's [`Registry`] and the dispatch of
//! a command to the handler a projection names all come from it.

use std::future::Future;
use std::pin::Pin;

use anyhow::{bail, Context, Result};
use projector::config::Config;
use projector::upcast::{Upcaster, Upcasters};
use projector::ProjectionHandler;
use projector_local::{Connector, Registry};

/// Something done with every compiled-in handler in turn.
trait Visitor {
    fn visit<H: ProjectionHandler>(&mut self, handler: H);
}

/// Shows `visitor` every handler this binary carries. A new handler is one line here.
fn each(visitor: &mut impl Visitor) {
    visitor.visit(projection_user_profile::UserProfile);
    visitor.visit(projection_daily_activity::DailyActivity);
}

/// The upcasters registered next to the handlers: each handler crate lists the steps for
/// the event types it reads. A new handler crate adds its list here too.
const UPCASTERS: &[&[Upcaster]] = &[projection_user_profile::UPCASTERS, projection_daily_activity::UPCASTERS];

/// Every upcaster this binary carries, in one registry (two crates registering a step for
/// the same type and version is refused).
pub fn upcasters() -> Result<Upcasters> {
    Upcasters::from_steps(UPCASTERS.iter().flat_map(|steps| steps.iter().copied()))
        .context("the upcasters registered next to the handlers")
}

/// The chains `config` enables, out of [`upcasters`] (the configuration was validated
/// against the same registry).
pub fn enabled_upcasters(config: &Config) -> Result<Upcasters> {
    Ok(upcasters()?.enable_only(&config.upcasting.event_types)?)
}

/// The handler names a `projections.yaml` may use, in the order [`each`] lists them.
pub fn names() -> Vec<&'static str> {
    struct Names(Vec<&'static str>);
    impl Visitor for Names {
        fn visit<H: ProjectionHandler>(&mut self, handler: H) {
            self.0.push(handler.name());
        }
    }
    let mut names = Names(Vec::new());
    each(&mut names);
    names.0
}

/// The handlers whose rows are fed by many aggregates (they cannot keep snapshots).
pub fn unversioned() -> Vec<&'static str> {
    struct Names(Vec<&'static str>);
    impl Visitor for Names {
        fn visit<H: ProjectionHandler>(&mut self, handler: H) {
            if handler.ordering() != projector::Ordering::AggregateVersion {
                self.0.push(handler.name());
            }
        }
    }
    let mut names = Names(Vec::new());
    each(&mut names);
    names.0
}

/// Every compiled-in handler, for the [`projector_local::LocalAdapter`].
pub fn registry<C: Connector>() -> Registry<C> {
    struct Add<C: Connector>(Registry<C>);
    impl<C: Connector> Visitor for Add<C> {
        fn visit<H: ProjectionHandler>(&mut self, handler: H) {
            self.0 = std::mem::take(&mut self.0).with(handler);
        }
    }
    let mut add = Add(Registry::default());
    each(&mut add);
    // Refused at start-up already (the configuration is checked against them).
    add.0.with_upcasters(upcasters().unwrap_or_default())
}

/// Work that needs a handler's concrete type (folding events, rebuilding, repairing).
#[allow(async_fn_in_trait)]
pub trait WithHandler {
    type Output;

    async fn run<H: ProjectionHandler>(self, handler: H) -> Self::Output;
}

/// Runs `work` with the compiled-in handler called `name`.
pub async fn dispatch<'w, T, W>(name: &str, work: W) -> Result<T>
where
    W: WithHandler<Output = Result<T>> + 'w,
{
    type Chosen<'w, T> = Pin<Box<dyn Future<Output = Result<T>> + 'w>>;
    struct Pick<'n, 'w, T, W> {
        name: &'n str,
        work: Option<W>,
        chosen: Option<Chosen<'w, T>>,
    }
    impl<'w, T, W: WithHandler<Output = Result<T>> + 'w> Visitor for Pick<'_, 'w, T, W> {
        fn visit<H: ProjectionHandler>(&mut self, handler: H) {
            if handler.name() == self.name {
                if let Some(work) = self.work.take() {
                    self.chosen = Some(Box::pin(work.run(handler)));
                }
            }
        }
    }
    let mut pick = Pick { name, work: Some(work), chosen: None };
    each(&mut pick);
    match pick.chosen {
        Some(chosen) => chosen.await,
        None => bail!("unknown handler {name:?}; known handlers: {}", names().join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_registry_and_dispatch_agree() {
        let names = names();
        assert_eq!(names, ["user-profile", "daily-activity"]);
        let mut registered = registry::<projector_local::PgConnector>().names();
        registered.sort_unstable();
        let mut expected = names.clone();
        expected.sort_unstable();
        assert_eq!(registered, expected);

        struct Name;
        impl WithHandler for Name {
            type Output = Result<&'static str>;
            async fn run<H: ProjectionHandler>(self, handler: H) -> Result<&'static str> {
                Ok(handler.name())
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for name in names {
            assert_eq!(rt.block_on(dispatch(name, Name)).unwrap(), name);
        }
        let unknown = rt.block_on(dispatch("nope", Name)).unwrap_err().to_string();
        assert_eq!(unknown, r#"unknown handler "nope"; known handlers: user-profile, daily-activity"#);
    }

    #[test]
    fn the_registered_upcasters_form_one_registry() {
        let all = upcasters().expect("one step per type and version");
        let registry = registry::<projector_local::PgConnector>();
        assert_eq!(registry.upcasters().event_types(), all.event_types());
    }
}
