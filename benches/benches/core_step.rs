//! The decision step: one observation of a 7-member cluster in, actions out.
//! Target (issue 7): under 1 µs per observation.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use lifeboat::{Agent, Member, MemberHealth, MemberId, Millis, Observation, Policy, StoreObservation};
use std::hint::black_box;

fn members(count: u64) -> Vec<Member> {
    (1..=count)
        .map(|id| Member {
            id: MemberId(id),
            name: format!("etcd{id}"),
            peer_urls: vec![format!("http://10.0.0.{id}:2380")],
            client_urls: vec![format!("http://10.0.0.{id}:2379")],
            is_learner: false,
        })
        .collect()
}

fn observation(members: &[Member], failing: Option<MemberId>) -> Observation {
    Observation {
        // The member list is unchanged between checks: the driver passes `None` then.
        members: None,
        health: members.iter().map(|member| MemberHealth::new(member.id, Some(member.id) != failing)).collect(),
        leader: Some(MemberId(1)),
        store: StoreObservation { reachable: true, ..StoreObservation::default() },
    }
}

fn bench(criterion: &mut Criterion) {
    let members = members(7);
    let mut agent = Agent::new(Policy::default(), members.clone(), Millis(0)).with_local_member(MemberId(1));
    let now = std::cell::Cell::new(0u64);
    criterion.bench_function("core step: observation of 7 members", |bencher| {
        bencher.iter_batched(
            || observation(&members, if now.get() % 10_000 < 5_000 { None } else { Some(MemberId(7)) }),
            |observation| {
                now.set(now.get() + 1_000);
                agent.handle_observation(Millis(now.get()), observation);
                while let Some(action) = agent.poll_action() {
                    black_box(action);
                }
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
