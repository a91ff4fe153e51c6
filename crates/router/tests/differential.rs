//! The router against the naive reference (`support/reference.rs`) on a few thousand seeded
//! random tables: the same comparison the fuzz target runs, without nightly.

mod support {
    pub mod diff;
    pub mod generate;
    pub mod reference;
}

use support::generate::Rng;

#[test]
fn router_agrees_with_reference_on_random_tables() {
    for seed in 0..3000 {
        let mut rng = Rng(seed);
        support::diff::run(&mut rng);
    }
}
