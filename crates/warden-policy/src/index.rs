//! The policy index: which policies can possibly apply to a request, found without evaluating them.
//!
//! Cedar evaluates every policy of a set for every request, so its cost grows with the set (measured
//! here: 3.5 µs with 2 policies, 816 µs with 1,000). Most policies of a real deployment are about one
//! agent or one upstream, and say so in their scope (`principal == Warden::Agent::"x"`,
//! `resource in Warden::Upstream::"y"`). Each policy is filed under exactly one key, the most selective
//! its scope offers:
//!
//! 1. its principal entity (`principal == E`, `principal in E`, `principal is T in E`), else
//! 2. its resource entity (the same forms), else
//! 3. each action of its action constraint (`action == A`, `action in [A, B]`), else
//! 4. the "always" bucket.
//!
//! Every entry also carries the set of request actions its action constraint admits — exactly: a
//! request's action is one of the schema's six, so whether `action == A` or `action in [A, B]` holds
//! is known per action at compile time (the action and its groups, from the schema) — so a bucket hit
//! only yields the policies about the request's action, and the evaluated condition can leave the
//! action scope out ([`crate::analysis::hot_condition`]). It can also leave out the principal or
//! resource scope a policy is filed under, which a bucket hit implies ([`Filed`]). Likewise each
//! entry carries the resource types its condition can hold for ([`crate::analysis::variants`]). The
//! "always" and by-action buckets do not depend on the request's entities, so they are merged per
//! action and resource type at compile time.
//!
//! A request's candidates are the "always" bucket plus the buckets of its principal and the
//! principal's ancestors, its resource and the resource's ancestors, and its action and the action's
//! groups. This is sound: a policy filed under entity E has a scope that is false unless the
//! request's principal (or resource) is E or a descendant of E — i.e. unless E is in the closure we
//! look up; likewise for actions. Policies not among the candidates therefore evaluate to false (and
//! never to an error: Cedar's scope is evaluated first and short-circuits), so leaving them out
//! changes neither the decision nor its reasons nor its errors. `tests/index_equivalence.rs` checks
//! this against unindexed Cedar on generated policy sets and requests.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use cedar_policy_core::ast::{
    ActionConstraint, Eid, EntityReference, EntityType, EntityUID, PrincipalOrResourceConstraint,
};
use smol_str::SmolStr;

use crate::compile::{CompiledPolicy, IndexStats};
use crate::request::RESOURCE_KINDS;

/// A policy in a bucket, with the set of request actions its action constraint admits (bit `a` for
/// `Action as usize == a`) and the resource types its condition can hold for (bit
/// `ResourceRef::kind`), so a bucket hit evaluates only the policies that can apply.
#[derive(Clone, Copy, Debug)]
struct Entry {
    policy: u32,
    actions: u8,
    kinds: u8,
    /// Filed by `principal == E` / `resource == E`: applies only when E is the request's entity
    /// itself, not one of its ancestors.
    self_only: bool,
}

/// Which scope the index files a policy under. The scope constraint a bucket hit implies is left
/// out of the evaluated condition ([`crate::analysis::hot_condition`]): `== E` and `in E` hold for
/// every policy the bucket of E yields (an `== E` policy is yielded only for E itself), and of
/// `is T in E` only `is T` remains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Filed {
    Principal,
    Resource,
    /// By action, or always: the principal and resource scopes stay in the condition.
    Elsewhere,
}

/// Where [`Index::build`] files `p`.
pub(crate) fn filed(p: &cedar_policy_core::ast::Policy) -> Filed {
    if scope_entity(p.principal_constraint().as_inner()).is_some() {
        Filed::Principal
    } else if scope_entity(p.resource_constraint().as_inner()).is_some() {
        Filed::Resource
    } else {
        Filed::Elsewhere
    }
}

/// A fast non-cryptographic hash (FxHash's mixing) for the index's maps. Their keys are the
/// entities policies name (the policy author's, not a requester's choice), so flooding is not a
/// concern; lookups hash a request's entities on every decision.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// An entity of a request's closure, by type and id.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Key<'a> {
    pub ty: &'a EntityType,
    pub eid: &'a str,
}

/// Buckets keyed by entity, laid out for lookups: per entity type of Warden's schema, a map from
/// the entity id (compared inline, no type names) to a range of one contiguous entry array.
#[derive(Debug, Default)]
struct Buckets {
    /// By the type's position in the index's type list.
    by_type: Vec<FxMap<SmolStr, (u32, u32)>>,
    /// Entities of other types (strict validation leaves none; kept exact anyway).
    other: FxMap<EntityUID, (u32, u32)>,
    entries: Vec<Entry>,
}

impl Buckets {
    fn build(filed: Vec<(EntityUID, Vec<Entry>)>, types: &[EntityType]) -> Self {
        let mut b = Buckets {
            by_type: types.iter().map(|_| FxMap::default()).collect(),
            ..Buckets::default()
        };
        for (uid, entries) in filed {
            let start = b.entries.len() as u32;
            b.entries.extend(entries);
            let range = (start, b.entries.len() as u32 - start);
            match types.iter().position(|t| t == uid.entity_type()) {
                Some(at) => {
                    if let Some(map) = b.by_type.get_mut(at) {
                        map.insert(uid.eid().clone().into_smolstr(), range);
                    }
                }
                None => {
                    b.other.insert(uid, range);
                }
            }
        }
        b
    }

    fn get(&self, key: &Key<'_>, types: &[EntityType]) -> &[Entry] {
        let range = match types.iter().position(|t| t == key.ty) {
            Some(at) => self.by_type.get(at).and_then(|m| m.get(key.eid)),
            None if self.other.is_empty() => None,
            None => self.other.get(&EntityUID::from_components(
                key.ty.clone(),
                Eid::new(key.eid),
                None,
            )),
        };
        range
            .and_then(|&(start, len)| self.entries.get(start as usize..start as usize + len as usize))
            .unwrap_or_default()
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Per request action and resource type (`action * RESOURCE_KINDS + kind`): the "always" and
    /// by-action policies that can apply, ascending.
    per_action: Vec<Vec<u32>>,
    /// Warden's entity types (shared with the registry's uids, so comparing them is cheap).
    types: Vec<EntityType>,
    by_principal: Buckets,
    by_resource: Buckets,
    stats: (usize, usize, usize, usize),
}

/// The request actions (bits) an action constraint admits, and whether that is exact (the
/// constraint holds for exactly those actions). `closures[a]` lists request action `a` and its
/// groups (ancestors), the action first.
pub(crate) fn action_mask(c: &ActionConstraint, closures: &[Vec<EntityUID>]) -> (u8, bool) {
    let mut mask = 0u8;
    let mut exact = true;
    for (a, closure) in closures.iter().enumerate().take(8) {
        let admits = match c {
            ActionConstraint::Any => true,
            // `action == A`: the request's action is A.
            ActionConstraint::Eq(x) => closure.first() == Some(&**x),
            // `action in [A, B]`: the request's action is, or is a descendant of, one of them.
            ActionConstraint::In(list) => list.iter().any(|x| closure.contains(x)),
            // Anything this version of the index does not understand: admit every action, and keep
            // the constraint in the evaluated condition.
            #[allow(unreachable_patterns)]
            _ => {
                exact = false;
                true
            }
        };
        if admits {
            mask |= 1 << a;
        }
    }
    (mask, exact)
}

/// Whether an entry can apply to action `action` on a resource of type `kind`.
fn admits(e: &Entry, action: usize, kind: usize) -> bool {
    let bit = |i: usize| 1u8.checked_shl(i as u32).unwrap_or(0);
    e.actions & bit(action) != 0 && e.kinds & bit(kind) != 0
}

/// The entity a principal or resource scope names, and whether the scope is `==` (rather than
/// `in` or `is … in`).
fn scope_entity(c: &PrincipalOrResourceConstraint) -> Option<(&EntityUID, bool)> {
    match c {
        PrincipalOrResourceConstraint::Eq(EntityReference::EUID(e)) => Some((e, true)),
        PrincipalOrResourceConstraint::In(EntityReference::EUID(e))
        | PrincipalOrResourceConstraint::IsIn(_, EntityReference::EUID(e)) => Some((e, false)),
        _ => None,
    }
}

impl Index {
    /// `action_closures[a]` lists request action `a` (as `Action as usize`) and its groups.
    /// `types`: Warden's entity types, from which the registry's uids are built.
    pub fn build(
        policies: &[CompiledPolicy],
        action_closures: &[Vec<EntityUID>],
        types: &[EntityType],
    ) -> Self {
        let mut ix = Index {
            types: types.to_vec(),
            ..Index::default()
        };
        // Per entity, in order of first appearance (so the entries of a bucket stay together).
        let mut principal_keys: HashMap<EntityUID, usize> = HashMap::new();
        let mut principal_filed: Vec<(EntityUID, Vec<Entry>)> = Vec::new();
        let mut resource_keys: HashMap<EntityUID, usize> = HashMap::new();
        let mut resource_filed: Vec<(EntityUID, Vec<Entry>)> = Vec::new();
        let file = |keys: &mut HashMap<EntityUID, usize>,
                    filed: &mut Vec<(EntityUID, Vec<Entry>)>,
                    e: &EntityUID,
                    entry: Entry| {
            let at = *keys.entry(e.clone()).or_insert_with(|| {
                filed.push((e.clone(), Vec::new()));
                filed.len() - 1
            });
            if let Some((_, list)) = filed.get_mut(at) {
                list.push(entry);
            }
        };
        let mut always: Vec<Entry> = Vec::new();
        let mut by_action: HashMap<EntityUID, Vec<Entry>> = HashMap::new();
        for (i, p) in policies.iter().enumerate() {
            let i = i as u32;
            let entry = |self_only: bool| Entry {
                policy: i,
                actions: p.action_mask,
                kinds: p.kind_mask,
                self_only,
            };
            if let Some((e, eq)) = scope_entity(p.ast.principal_constraint().as_inner()) {
                file(&mut principal_keys, &mut principal_filed, e, entry(eq));
                ix.stats.1 += 1;
            } else if let Some((e, eq)) = scope_entity(p.ast.resource_constraint().as_inner()) {
                file(&mut resource_keys, &mut resource_filed, e, entry(eq));
                ix.stats.2 += 1;
            } else {
                match p.ast.action_constraint() {
                    ActionConstraint::Eq(a) => {
                        by_action.entry((**a).clone()).or_default().push(entry(false));
                        ix.stats.3 += 1;
                    }
                    ActionConstraint::In(list) if !list.is_empty() => {
                        for a in list {
                            let bucket = by_action.entry((**a).clone()).or_default();
                            if bucket.last().map(|e| e.policy) != Some(i) {
                                bucket.push(entry(false));
                            }
                        }
                        ix.stats.3 += 1;
                    }
                    _ => {
                        always.push(entry(false));
                        ix.stats.0 += 1;
                    }
                }
            }
        }
        ix.by_principal = Buckets::build(principal_filed, types);
        ix.by_resource = Buckets::build(resource_filed, types);
        for (a, closure) in action_closures.iter().enumerate() {
            for kind in 0..RESOURCE_KINDS {
                let applies = |e: &&Entry| admits(e, a, kind);
                let mut list: Vec<u32> = always.iter().filter(applies).map(|e| e.policy).collect();
                for uid in closure {
                    if let Some(b) = by_action.get(uid) {
                        list.extend(b.iter().filter(applies).map(|e| e.policy));
                    }
                }
                list.sort_unstable();
                list.dedup();
                ix.per_action.push(list);
            }
        }
        ix
    }

    pub fn stats(&self) -> IndexStats {
        IndexStats {
            always: self.stats.0,
            by_principal: self.stats.1,
            by_resource: self.stats.2,
            by_action: self.stats.3,
        }
    }

    /// The policies that can apply to a request for action number `action` on a resource of type
    /// `kind`, ascending, without duplicates. Each closure lists an entity and then its ancestors.
    pub fn candidates<'a, 'k: 'a>(
        &self,
        principal: impl Iterator<Item = &'a Key<'k>>,
        resource: impl Iterator<Item = &'a Key<'k>>,
        action: usize,
        kind: usize,
    ) -> Vec<u32> {
        let base: &[u32] = self
            .per_action
            .get(action * RESOURCE_KINDS + kind)
            .map_or(&[], Vec::as_slice);
        let mut out: Vec<u32> = Vec::with_capacity(base.len() + 8);
        out.extend_from_slice(base);
        let before = out.len();
        self.add(&mut out, &self.by_principal, principal, action, kind);
        self.add(&mut out, &self.by_resource, resource, action, kind);
        if out.len() > before {
            out.sort_unstable();
            out.dedup();
        }
        out
    }

    /// Adds the entries of the buckets of `closure` that apply.
    fn add<'a, 'k: 'a>(
        &self,
        out: &mut Vec<u32>,
        buckets: &Buckets,
        closure: impl Iterator<Item = &'a Key<'k>>,
        action: usize,
        kind: usize,
    ) {
        if buckets.is_empty() {
            return;
        }
        for (at, k) in closure.enumerate() {
            out.extend(
                buckets
                    .get(k, &self.types)
                    .iter()
                    .filter(|e| admits(e, action, kind) && (at == 0 || !e.self_only))
                    .map(|e| e.policy),
            );
        }
    }
}
