//! The distribution tree, computed as sftsan computed it: the origin is node 1 and
//! compute node i (i >= 2, in spec order) has parent (i - 2) / degree + 1.

use serde::Serialize;

/// Position of a node in the tree; 1 is the origin.
pub type NodeIndex = usize;

/// The distribution tree: every node's parent and level, by position (origin 1, then the
/// nodes in spec order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tree {
    degree: usize,
    /// parents[i] is the parent of node i; entries 0 and 1 are unused.
    parents: Vec<NodeIndex>,
    levels: Vec<usize>,
}

impl Tree {
    /// A tree over the origin plus `compute_nodes` nodes. `degree` must be at least 1.
    pub fn new(compute_nodes: usize, degree: usize) -> Tree {
        assert!(degree >= 1, "degree is validated to be >= 1");
        let total = compute_nodes + 1;
        let mut parents = vec![0; total + 1];
        let mut levels = vec![0; total + 1];
        for i in 2..=total {
            parents[i] = (i - 2) / degree + 1;
            levels[i] = levels[parents[i]] + 1;
        }
        Tree {
            degree,
            parents,
            levels,
        }
    }

    /// Most children a node has (`cluster.degree`).
    pub fn degree(&self) -> usize {
        self.degree
    }

    /// Number of nodes, origin included.
    pub fn len(&self) -> usize {
        self.parents.len() - 1
    }

    /// Whether the tree has no nodes; never true, as the origin is always in it.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The parent of `node`, or None for the origin.
    pub fn parent(&self, node: NodeIndex) -> Option<NodeIndex> {
        (node >= 2).then(|| self.parents[node])
    }

    /// Depth below the origin (the origin is level 0).
    pub fn level(&self, node: NodeIndex) -> usize {
        self.levels[node]
    }

    /// The nodes whose parent is `node`, in spec order.
    pub fn children(&self, node: NodeIndex) -> Vec<NodeIndex> {
        (2..=self.len())
            .filter(|&c| self.parents[c] == node)
            .collect()
    }

    /// Nodes grouped by level, parents before children: the order in which they are set up.
    /// Nodes within one level do not depend on each other and may be set up in parallel.
    pub fn setup_order(&self) -> Vec<Vec<NodeIndex>> {
        let depth = (1..=self.len()).map(|n| self.levels[n]).max().unwrap_or(0);
        (0..=depth)
            .map(|l| (1..=self.len()).filter(|&n| self.levels[n] == l).collect())
            .collect()
    }

    /// The reverse: children before their parents.
    pub fn teardown_order(&self) -> Vec<Vec<NodeIndex>> {
        let mut order = self.setup_order();
        order.reverse();
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degree_one_is_a_chain() {
        let t = Tree::new(5, 1);
        for i in 2..=6 {
            assert_eq!(t.parent(i), Some(i - 1));
            assert_eq!(t.level(i), i - 1);
        }
        assert_eq!(
            t.setup_order(),
            vec![vec![1], vec![2], vec![3], vec![4], vec![5], vec![6]]
        );
        assert_eq!(t.children(3), vec![4]);
    }

    #[test]
    fn degree_two_is_the_binary_tree_sftsan_built() {
        let t = Tree::new(6, 2);
        // node:   2 3 4 5 6 7
        // parent: 1 1 2 2 3 3
        let parents: Vec<_> = (2..=7).map(|i| t.parent(i).unwrap()).collect();
        assert_eq!(parents, vec![1, 1, 2, 2, 3, 3]);
        assert_eq!(t.setup_order(), vec![vec![1], vec![2, 3], vec![4, 5, 6, 7]]);
        assert_eq!(
            t.teardown_order(),
            vec![vec![4, 5, 6, 7], vec![2, 3], vec![1]]
        );
        assert_eq!(t.children(2), vec![4, 5]);
        assert_eq!(t.parent(1), None);
    }

    #[test]
    fn degree_at_least_node_count_is_a_star() {
        for degree in [6, 7, 100] {
            let t = Tree::new(6, degree);
            assert!((2..=7).all(|i| t.parent(i) == Some(1) && t.level(i) == 1));
            assert_eq!(t.setup_order(), vec![vec![1], vec![2, 3, 4, 5, 6, 7]]);
            assert_eq!(t.children(1).len(), 6);
        }
    }

    #[test]
    fn every_parent_comes_before_its_children() {
        for degree in 1..5 {
            let t = Tree::new(20, degree);
            let order: Vec<_> = t.setup_order().concat();
            for n in 2..=t.len() {
                let pos = |x| order.iter().position(|&o| o == x).unwrap();
                assert!(pos(t.parent(n).unwrap()) < pos(n));
            }
        }
    }

    #[test]
    fn origin_alone() {
        let t = Tree::new(0, 2);
        assert_eq!(t.len(), 1);
        assert_eq!(t.setup_order(), vec![vec![1]]);
    }
}
