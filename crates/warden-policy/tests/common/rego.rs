//! The same rules in Rego, run by regorus (its RVM bytecode VM, falling back to the interpreter if the
//! VM cannot compile the module), for the equality gate and the benchmarks.
#![allow(dead_code)]

use std::sync::Arc;

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::RegoVM;
use regorus::{Engine, Value};
use serde_json::Value as Json;
use warden_core::Outcome;

use super::generate::{Generated, rego_data, rego_module};

pub enum RegoEngine {
    Vm(Box<RegoVM>),
    Interpreter(Box<Engine>),
}

impl std::fmt::Debug for RegoEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RegoEngine::Vm(_) => "RegoEngine::Vm",
            RegoEngine::Interpreter(_) => "RegoEngine::Interpreter",
        })
    }
}

/// A Rego decision: outcome, quorum (for needs_approval), and the deciding policy ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegoDecision {
    pub outcome: Outcome,
    pub quorum: Option<u8>,
    pub ids: Vec<String>,
}

const ENTRY: &str = "data.warden.result";

impl RegoEngine {
    pub fn new(generated: &Generated) -> Self {
        let mut engine = Engine::new();
        // regorus limits one policy file to 1 MiB: the generated rules go in files of 2,000 rules.
        engine
            .add_policy("warden.rego".into(), rego_module(&Generated::default()))
            .expect("rego parses");
        let rules: Vec<&str> = generated
            .rego
            .split("\n\n")
            .filter(|r| !r.trim().is_empty())
            .collect();
        for (i, chunk) in rules.chunks(2_000).enumerate() {
            let text = format!("package warden\n\nimport rego.v1\n\n{}\n", chunk.join("\n\n"));
            engine
                .add_policy(format!("generated-{i}.rego"), text)
                .expect("rego parses");
        }
        engine
            .add_data(Value::from(rego_data(generated)))
            .expect("rego data");
        let entry: regorus::Rc<str> = ENTRY.into();
        let vm = engine
            .compile_with_entrypoint(&entry)
            .ok()
            .and_then(|compiled| Compiler::compile_from_policy(&compiled, &[ENTRY]).ok());
        match vm {
            Some(program) => {
                let mut vm = RegoVM::new();
                vm.load_program(program as Arc<_>);
                vm.set_data(Value::from(rego_data(generated))).expect("vm data");
                RegoEngine::Vm(Box::new(vm))
            }
            None => RegoEngine::Interpreter(Box::new(engine)),
        }
    }

    pub fn is_vm(&self) -> bool {
        matches!(self, RegoEngine::Vm(_))
    }

    /// Evaluates, returning the raw result value.
    pub fn eval(&mut self, input: Value) -> Value {
        match self {
            RegoEngine::Vm(vm) => {
                vm.set_input(input);
                vm.execute().expect("rego vm")
            }
            RegoEngine::Interpreter(engine) => {
                engine.set_input(input);
                engine.eval_rule(ENTRY.into()).expect("rego")
            }
        }
    }

    pub fn decide(&mut self, input: &Json) -> RegoDecision {
        let v = self.eval(Value::from(input.clone()));
        let json: Json = serde_json::from_str(&v.to_json_str().expect("json")).expect("json");
        let outcome = match json["decision"].as_str() {
            Some("allow") => Outcome::Allow,
            Some("needs_approval") => Outcome::NeedsApproval,
            _ => Outcome::Deny,
        };
        let ids_of = |k: &str| -> Vec<String> {
            let mut v: Vec<String> = json[k]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            v.sort();
            v
        };
        let quorum = json["quorum"].as_u64().map(|q| q as u8);
        match outcome {
            Outcome::Allow => {
                // The counted permits: the plain ones and the approval ones whose quorum is met.
                let granted = input["context"]["approval"]["granted"].as_bool().unwrap_or(false);
                let approvers = input["context"]["approval"]["approvers"].as_u64().unwrap_or(0);
                let data = rego_quorum_of(&json);
                let ids = ids_of("permits")
                    .into_iter()
                    .filter(|id| match data.get(id) {
                        None => true,
                        Some(q) => granted && approvers >= u64::from(*q),
                    })
                    .collect();
                RegoDecision {
                    outcome,
                    quorum: None,
                    ids,
                }
            }
            Outcome::NeedsApproval => RegoDecision {
                outcome,
                quorum,
                ids: ids_of("permits"),
            },
            Outcome::Deny => RegoDecision {
                outcome,
                quorum: None,
                ids: ids_of("forbids"),
            },
        }
    }
}

thread_local! {
    static QUORUM: std::cell::RefCell<std::collections::BTreeMap<String, u8>> = Default::default();
}

/// Sets the quorum table `decide` uses to list counted permits (the gate's generated set).
pub fn set_quorum(q: std::collections::BTreeMap<String, u8>) {
    QUORUM.with(|c| *c.borrow_mut() = q);
}

fn rego_quorum_of(_: &Json) -> std::collections::BTreeMap<String, u8> {
    QUORUM.with(|c| c.borrow().clone())
}

/// Warden's decision in the same terms.
pub fn warden_terms(d: &warden_core::Decision) -> RegoDecision {
    let mut ids: Vec<String> = d
        .reasons
        .iter()
        .filter(|r| !r.starts_with("default-deny"))
        .map(|r| r.split(" (").next().unwrap_or(r).to_owned())
        .collect();
    ids.sort();
    RegoDecision {
        outcome: d.outcome,
        quorum: d.quorum,
        ids,
    }
}
