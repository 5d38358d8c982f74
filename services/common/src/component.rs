//! The platform's services: the one list of them and of what each one is —
//! name, binary, default port, database, inbound queue — and of the settings
//! every one reads from its environment. The operator (its Deployments),
//! `sagactl up` (its child processes) and the test harness build from this;
//! a new service is one more variant here.

use crate::topology::{Destination, TopologySpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Order,
    Payment,
    Inventory,
    Notification,
}

impl Component {
    pub const ALL: [Component; 4] =
        [Component::Order, Component::Payment, Component::Inventory, Component::Notification];

    /// `order`, `payment`, `inventory` or `notification`: labels, metrics, Secret keys.
    pub fn name(self) -> &'static str {
        match self {
            Component::Order => "order",
            Component::Payment => "payment",
            Component::Inventory => "inventory",
            Component::Notification => "notification",
        }
    }

    /// The executable (and container) name.
    pub fn binary(self) -> &'static str {
        match self {
            Component::Order => "order-service",
            Component::Payment => "payment-service",
            Component::Inventory => "inventory-service",
            Component::Notification => "notification-service",
        }
    }

    /// The default listen port (contract §2).
    pub fn port(self) -> u16 {
        match self {
            Component::Order => 8080,
            Component::Payment => 8081,
            Component::Inventory => 8082,
            Component::Notification => 8083,
        }
    }

    /// Its own database's name: `{prefix}_{database}`.
    pub fn database(self, prefix: &str) -> String {
        format!("{prefix}_{}", self.name())
    }

    /// The queue it consumes.
    pub fn destination(self) -> Destination {
        match self {
            Component::Order => Destination::Order,
            Component::Payment => Destination::Payment,
            Component::Inventory => Destination::Inventory,
            Component::Notification => Destination::Notification,
        }
    }
}

/// The secret settings, read from the environment (or a `_FILE`), never logged.
pub const SECRET_SETTINGS: [&str; 3] = ["DATABASE_URL", "AMQP_URL", "AUTH_JWT_SECRET"];

/// The non-secret settings every service reads from its environment, as
/// variables: the platform's topology (which the services verify) and the
/// listen address. The secrets are [`SECRET_SETTINGS`].
pub fn settings_env(spec: &TopologySpec, http_addr: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SAGA_PLATFORM", spec.platform.clone()),
        ("QUEUE_TYPE", spec.queue_type.as_str().to_owned()),
        ("RETRY_MAX_ATTEMPTS", spec.retry.max_attempts.to_string()),
        ("RETRY_INITIAL_DELAY", format!("{}ms", spec.retry.initial_delay.as_millis())),
        ("RETRY_MULTIPLIER", spec.retry.multiplier.to_string()),
        ("HTTP_ADDR", http_addr.to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TopologyArgs;
    use crate::topology::{QueueType, RetryPolicy};
    use clap::{CommandFactory, Parser};
    use std::time::Duration;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        topology: TopologyArgs,
    }

    /// What the operator, `sagactl up` and the tests write is what a service
    /// reads back (HTTP_ADDR is each binary's own argument).
    #[test]
    fn a_service_reads_back_the_settings_written_for_it() {
        let spec = TopologySpec {
            platform: "shop".into(),
            queue_type: QueueType::Classic,
            retry: RetryPolicy { max_attempts: 7, initial_delay: Duration::from_millis(1500), multiplier: 3 },
        };
        let command = Args::command();
        let mut argv = vec!["service".to_owned()];
        for (name, value) in settings_env(&spec, "127.0.0.1:9000") {
            if name == "HTTP_ADDR" {
                continue;
            }
            let arg = command
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|env| env == name))
                .unwrap_or_else(|| panic!("no setting reads {name}"));
            argv.push(format!("--{}={value}", arg.get_long().unwrap()));
        }
        let parsed = Args::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        assert_eq!(parsed.topology.spec(), spec);
    }

    #[test]
    fn every_component_has_its_own_port_binary_and_queue() {
        let distinct = |values: Vec<String>| values.iter().collect::<std::collections::BTreeSet<_>>().len();
        let all = Component::ALL;
        assert_eq!(distinct(all.iter().map(|c| c.port().to_string()).collect()), all.len());
        assert_eq!(distinct(all.iter().map(|c| c.binary().to_owned()).collect()), all.len());
        assert_eq!(distinct(all.iter().map(|c| c.destination().queue().to_owned()).collect()), all.len());
    }
}
