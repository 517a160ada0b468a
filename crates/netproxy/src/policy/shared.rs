//! [`Policy`]: the live policy shared by every proxy connection.

use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use super::compiled::CompiledPolicy;
use super::decision::{Decision, Request};
use super::preset::Preset;
use super::rule::Rule;

/// The current policy, shared by all connections and updated in place.
///
/// Readers take a snapshot (an `Arc` clone under a read lock held for a few
/// nanoseconds); writers compile the new policy outside the lock and swap it
/// in, so rule changes apply to running sandboxes at once and a long compile
/// never blocks decisions. A connection that wants one consistent view for
/// several decisions keeps its [`Policy::snapshot`]; one that stays open
/// (a tunnel, a WebSocket) waits on [`Policy::changes`] and decides again.
#[derive(Debug)]
pub struct Policy {
    current: RwLock<Arc<CompiledPolicy>>,
    extension: Vec<Rule>,
    /// Counts updates; subscribers wake on each.
    generation: watch::Sender<u64>,
}

/// Wakes its holder on every [`Policy::update`] after it was made (see [`Policy::changes`]).
#[derive(Debug)]
pub struct PolicyChanges(watch::Receiver<u64>);

impl PolicyChanges {
    /// Waits for the next update; never returns if the policy is gone.
    pub async fn changed(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Policy {
    /// A policy built from a preset and user rules.
    pub fn new(preset: Preset, rules: &[Rule]) -> Policy {
        Self::extended(preset, Vec::new(), rules)
    }

    /// A policy whose `balanced` preset is extended by `extension` (see
    /// [`CompiledPolicy::compile_extended`]); kept across [`update`](Self::update)s.
    pub fn extended(preset: Preset, extension: Vec<Rule>, rules: &[Rule]) -> Policy {
        let current = RwLock::new(Arc::new(CompiledPolicy::compile_extended(preset, &extension, rules)));
        Policy { current, extension, generation: watch::Sender::new(0) }
    }

    /// The policy in force right now.
    pub fn snapshot(&self) -> Arc<CompiledPolicy> {
        // A poisoned lock still holds a complete Arc: the swap cannot panic midway.
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the preset and rules; later decisions see the new policy.
    pub fn update(&self, preset: Preset, rules: &[Rule]) {
        let next = Arc::new(CompiledPolicy::compile_extended(preset, &self.extension, rules));
        let old = std::mem::replace(&mut *self.current.write().unwrap_or_else(|e| e.into_inner()), next);
        drop(old); // Freed outside the lock unless a reader still holds it.
        self.generation.send_modify(|g| *g += 1);
    }

    /// A subscription to updates. Take it *before* the decision it is to
    /// re-check, so an update in between is not missed.
    pub fn changes(&self) -> PolicyChanges {
        PolicyChanges(self.generation.subscribe())
    }

    /// [`CompiledPolicy::decide`] on the current policy.
    pub fn decide(&self, req: &Request<'_>) -> Decision {
        self.snapshot().decide(req)
    }

    /// [`CompiledPolicy::decide_address`] on the current policy.
    pub fn decide_address(&self, req: &Request<'_>, ip: std::net::IpAddr) -> Decision {
        self.snapshot().decide_address(req, ip)
    }
}
