//! Properties of the planned tree for any node count (1..2000) and degree (1..64): every
//! compute node has exactly one parent, a child's level is its parent's plus one, every
//! node reaches the origin, and the parents are the original scripts' (`parent=$(( (i-2) /
//! degree + 1 ))` with the origin as node 1), which is breadth-first filling: each parent in
//! turn takes `degree` children, in spec order.

use std::collections::HashMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::{plan, Plan, Role};
use crate::spec::{cache_needed, validate, ClusterSpec};

/// A host-mode spec of `nodes` compute nodes over `image`.
fn spec(image: &std::path::Path, nodes: usize, degree: usize) -> ClusterSpec {
    let mut text = format!(
        "[cluster]\nname = \"prop\"\nstate_dir = \"/nonexistent/state\"\nmode = \"host\"\n\
         degree = {degree}\n[image]\nname = \"base\"\nsource = {image:?}\n\
         [origin]\naddress = \"10.0.0.1\"\n[cache]\nsize = {cache}\n[snapshots]\nper_node = 1\n",
        cache = cache_needed(1 << 20),
    );
    for i in 0..nodes {
        text += &format!(
            "[[nodes]]\nname = \"n{i}\"\naddress = \"10.{}.{}.{}\"\n",
            1 + i / 65536,
            (i / 256) % 256,
            i % 256
        );
    }
    ClusterSpec::from_toml(&text).unwrap()
}

/// The original scripts' parents as breadth-first filling, written apart from the planner:
/// a queue of parents, each taking up to `degree` children in spec order.
fn breadth_first_parents(nodes: &[String], origin: &str, degree: usize) -> Vec<String> {
    let mut queue = std::collections::VecDeque::from([(origin.to_string(), 0)]);
    let mut parents = Vec::new();
    for node in nodes {
        let (parent, taken) = queue.front_mut().expect("a parent with room");
        parents.push(parent.clone());
        *taken += 1;
        if *taken == degree {
            queue.pop_front();
        }
        queue.push_back((node.clone(), 0));
    }
    parents
}

fn check(plan: &Plan, nodes: usize, degree: usize) -> Result<(), TestCaseError> {
    prop_assert_eq!(plan.nodes.len(), nodes + 1);
    let by_name: HashMap<&str, usize> = plan
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    prop_assert_eq!(by_name.len(), plan.nodes.len(), "names are unique");
    let origin = &plan.nodes[0];
    prop_assert_eq!(origin.role, Role::Origin);
    prop_assert_eq!(origin.parent.as_deref(), None);
    prop_assert_eq!(origin.level, 0);
    let compute: Vec<String> = plan.nodes[1..].iter().map(|n| n.name.clone()).collect();
    let expected = breadth_first_parents(&compute, &origin.name, degree);
    let mut children: HashMap<&str, usize> = HashMap::new();
    for (k, node) in plan.nodes[1..].iter().enumerate() {
        prop_assert_eq!(node.role, Role::Node);
        let i = k + 2; // the scripts' numbering: the origin is 1
        let parent = node.parent.as_deref();
        prop_assert!(parent.is_some(), "{} has no parent", node.name);
        let parent = parent.unwrap();
        let p = by_name[parent];
        prop_assert_eq!(
            p + 1,
            (i - 2) / degree + 1,
            "the scripts' formula for node {}",
            i
        );
        prop_assert_eq!(parent, expected[k].as_str(), "breadth-first filling");
        prop_assert_eq!(node.level, plan.nodes[p].level + 1);
        *children.entry(parent).or_default() += 1;
        // Connected: the parent chain ends at the origin within `level` steps.
        let mut at = by_name[node.name.as_str()];
        for _ in 0..node.level {
            at = by_name[plan.nodes[at].parent.as_deref().unwrap()];
        }
        prop_assert_eq!(at, 0, "{} reaches the origin", node.name);
    }
    prop_assert!(children.values().all(|&c| c <= degree));
    // Setup order: every node once, each after its parent.
    let order = plan.setup_order();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (level, names) in order.iter().enumerate() {
        for name in names {
            prop_assert!(seen.insert(name.clone(), level).is_none(), "{} twice", name);
            if let Some(parent) = plan.node(name).unwrap().parent.as_deref() {
                prop_assert!(seen[parent] < level, "{} before its parent", name);
            }
        }
    }
    prop_assert_eq!(seen.len(), nodes + 1);
    Ok(())
}

#[test]
fn any_node_count_and_degree_plans_the_scripts_tree() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("base.raw");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 128,
        ..Config::default()
    });
    runner
        .run(&(1usize..2000, 1usize..64), |(nodes, degree)| {
            let validated = validate(spec(&image, nodes, degree)).unwrap();
            check(&plan(&validated), nodes, degree)
        })
        .unwrap();
    // The edges of the ranges, which random cases may miss.
    for (nodes, degree) in [(1, 1), (1, 63), (1999, 1), (1999, 63), (64, 63), (63, 63)] {
        let validated = validate(spec(&image, nodes, degree)).unwrap();
        check(&plan(&validated), nodes, degree).unwrap();
    }
}
