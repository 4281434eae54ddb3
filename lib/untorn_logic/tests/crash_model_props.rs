// SPDX-License-Identifier: GPL-2.0

//! Property tests of the crash model: a simulated device that drives the planner as the kernel
//! module does always produces images the checker allows; images mutated in ways the model
//! forbids are rejected; and on small histories the checker allows exactly the images that a
//! brute-force enumeration of the model's definition yields.

use std::collections::HashSet;

use proptest::prelude::*;
use proptest::sample::Index;
use untorn_logic::crash_model::{
    check_image, AfterWrite, CheckError, CrashPolicy, CrashReport, Event, Fate, Planner,
    PowerError, PowerState, Shown, Violation, WriteMeta,
};

/// A device as the kernel module keeps it, with each sector holding the identity of its version.
struct Device {
    current: Vec<Shown>,
    durable: Vec<Shown>,
    /// The pending list: event index and record of each write since the last flush.
    pending: Vec<(usize, WriteMeta)>,
    history: Vec<Event>,
    power: PowerState,
}

impl Device {
    fn new(sectors: u64) -> Self {
        let image = vec![Shown::Initial; sectors as usize];
        Self {
            current: image.clone(),
            durable: image,
            pending: Vec::new(),
            history: Vec::new(),
            power: PowerState::Running,
        }
    }

    fn submit(&mut self, event: Event) -> Result<AfterWrite, PowerError> {
        self.power.admit_io()?;
        let j = self.history.len();
        self.history.push(event);
        match event {
            Event::Flush => {
                // Everything completed is durable: the durable image is the current one.
                self.durable.clone_from(&self.current);
                self.pending.clear();
                Ok(AfterWrite::Continue)
            }
            Event::Write(m) => {
                for s in m.first_sector()..m.end_sector() {
                    self.current[s as usize] = Shown::Write(j);
                }
                self.pending.push((j, m));
                self.power.write_completed()
            }
        }
    }

    /// Builds the crash image from the durable image and the planner's decisions, as the module
    /// does, and makes it the device's content.
    fn crash(&mut self, planner: &Planner) -> CrashReport {
        let metas: Vec<WriteMeta> = self.pending.iter().map(|&(_, m)| m).collect();
        let mut keys = vec![0; metas.len()];
        planner.order_keys(&metas, &mut keys).expect("keys");
        let mut image = self.durable.clone();
        for m in &metas {
            for s in m.first_sector()..m.end_sector() {
                if let Some(i) = planner.sector_winner(s, &metas, &keys).expect("winner") {
                    image[s as usize] = Shown::Write(self.pending[i].0);
                }
            }
        }
        let report = planner.report(&metas);
        self.pending.clear();
        self.durable.clone_from(&image);
        self.current = image;
        report
    }
}

fn event(sectors: u64, max_len: u32) -> impl Strategy<Value = Event> {
    let write = (
        0..sectors,
        1..=max_len,
        any::<bool>(),
        prop::bool::weighted(0.2),
    )
        .prop_map(move |(first, len, atomic, fua)| {
            let len = len.min((sectors - first) as u32);
            Event::Write(WriteMeta::new(first, len, atomic, fua).expect("valid write"))
        });
    prop_oneof![1 => Just(Event::Flush), 6 => write]
}

fn policy() -> impl Strategy<Value = CrashPolicy> {
    (0u16..=4, 0u16..=4, 0u16..=4, any::<bool>(), any::<bool>()).prop_filter_map(
        "some outcome",
        |(keep, lose, tear, reorder, plain)| {
            CrashPolicy::new(keep, lose, tear)
                .ok()
                .map(|p| p.with_reorder(reorder).with_atomic_as_plain(plain))
        },
    )
}

/// Histories rich in overlapping multi-sector writes, few flushes and mostly kept writes: the
/// material of the mutation tests, which need a kept atomic write still showing on two sectors.
fn dense_history() -> impl Strategy<Value = Vec<Event>> {
    let write = (
        0..SECTORS,
        2u32..=8,
        any::<bool>(),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(first, len, atomic, fua)| {
            let len = len.min((SECTORS - first) as u32);
            Event::Write(WriteMeta::new(first, len, atomic, fua).expect("valid write"))
        });
    prop::collection::vec(prop_oneof![1 => Just(Event::Flush), 12 => write], 1..40)
}

fn keeping_policy() -> impl Strategy<Value = CrashPolicy> {
    (1u16..=4, 0u16..=2, 0u16..=2, any::<bool>()).prop_map(|(keep, lose, tear, reorder)| {
        CrashPolicy::new(keep, lose, tear)
            .expect("keep weight")
            .with_reorder(reorder)
    })
}

fn check(events: &[Event], policy: &CrashPolicy, image: &[Shown]) -> Result<(), CheckError> {
    let mut scratch = vec![0u8; events.len()];
    check_image(events, policy, image, &mut scratch)
}

const SECTORS: u64 = 24;

/// Runs `events` to the end and cuts the power: returns the history and the crash image.
fn run(events: &[Event], planner: &Planner) -> (Vec<Event>, Vec<Shown>) {
    let mut device = Device::new(SECTORS);
    for &e in events {
        device.submit(e).expect("powered");
    }
    device.power.cut_now().expect("cut");
    device.crash(planner);
    (device.history, device.current)
}

/// The index of the first event after the last flush.
fn pending_start(events: &[Event]) -> usize {
    events
        .iter()
        .rposition(|e| *e == Event::Flush)
        .map_or(0, |i| i + 1)
}

fn meta(events: &[Event], j: usize) -> Option<WriteMeta> {
    match events.get(j) {
        Some(Event::Write(m)) => Some(*m),
        _ => None,
    }
}

/// The durable version of `sector`: the last flushed write or pending FUA write covering it.
fn base(events: &[Event], sector: u64) -> Shown {
    let pending = pending_start(events);
    let mut base = Shown::Initial;
    for j in 0..events.len() {
        if let Some(m) = meta(events, j) {
            if m.covers(sector) && (j < pending || m.fua()) {
                base = Shown::Write(j);
            }
        }
    }
    base
}

/// The versions of `sector` older than its base.
fn older_than_base(events: &[Event], sector: u64) -> Vec<Shown> {
    match base(events, sector) {
        Shown::Write(b) => std::iter::once(Shown::Initial)
            .chain(
                (0..b)
                    .filter(|&j| meta(events, j).is_some_and(|m| m.covers(sector)))
                    .map(Shown::Write),
            )
            .collect(),
        _ => Vec::new(),
    }
}

fn shown_count(image: &[Shown], j: usize) -> usize {
    image.iter().filter(|&&v| v == Shown::Write(j)).count()
}

proptest! {
    #[test]
    fn planned_images_are_allowed(
        events in prop::collection::vec(event(SECTORS, 8), 0..40),
        seed: u64,
        cut_seed: u64,
        arm: bool,
        policy in policy(),
    ) {
        let planner = Planner::new(seed, policy);
        let mut device = Device::new(SECTORS);
        if arm {
            let max = u32::try_from(events.len().max(1)).expect("small");
            let n = device.power.arm_random(cut_seed, max).expect("armed");
            prop_assert!(n >= 1 && n <= u64::from(max));
        }
        for &e in &events {
            if device.submit(e).expect("powered") == AfterWrite::Cut {
                break;
            }
        }
        if device.power.is_on() {
            device.power.cut_now().expect("cut");
        }
        prop_assert_eq!(device.power.admit_io().map_err(PowerError::errno), Err(5));
        let pending: Vec<WriteMeta> = device.pending.iter().map(|&(_, m)| m).collect();
        let report = device.crash(&planner);

        // The report counts every non-FUA pending write once.
        let undecided = pending.iter().filter(|m| !m.fua()).count() as u64;
        prop_assert_eq!(report.writes_kept + report.writes_lost + report.writes_torn, undecided);
        prop_assert!(report.sectors_torn >= report.writes_torn);

        // The image is one the model allows.
        let verdict = check(&device.history, &policy, &device.current);
        prop_assert_eq!(verdict, Ok(()), "history {:?} image {:?}", device.history, device.current);

        // And it is what a reader sees once the power is back.
        device.power.power_on().expect("on");
        prop_assert_eq!(&device.current, &device.durable);
    }

    #[test]
    fn in_order_cuts_apply_the_kept_sectors_in_completion_order(
        events in prop::collection::vec(event(SECTORS, 8), 0..40),
        seed: u64,
        policy in policy(),
    ) {
        // The shortcut the device may take without reordering gives the same image.
        let planner = Planner::new(seed, policy.with_reorder(false));
        let mut device = Device::new(SECTORS);
        for &e in &events {
            device.submit(e).expect("powered");
        }
        let mut sequential = device.durable.clone();
        for (i, &(j, m)) in device.pending.iter().enumerate() {
            for k in 0..m.sectors() {
                if planner.sector_kept(i, &m, k) {
                    sequential[(m.first_sector() + u64::from(k)) as usize] = Shown::Write(j);
                }
            }
        }
        device.crash(&planner);
        prop_assert_eq!(device.current, sequential);
    }

    #[test]
    fn fua_and_flushed_sectors_show_their_durable_version_or_newer(
        events in prop::collection::vec(event(SECTORS, 8), 0..40),
        seed: u64,
        policy in policy(),
    ) {
        let (history, image) = run(&events, &Planner::new(seed, policy));
        for (s, &v) in image.iter().enumerate() {
            match (base(&history, s as u64), v) {
                (Shown::Initial, _) => {}
                (Shown::Write(b), Shown::Write(j)) => prop_assert!(j >= b),
                (b, v) => prop_assert!(false, "sector {} shows {:?} under {:?}", s, v, b),
            }
        }
    }

    #[test]
    fn reverting_a_durable_sector_is_rejected(
        events in prop::collection::vec(event(SECTORS, 8), 1..40),
        seed: u64,
        policy in policy(),
        pick: Index,
        version: Index,
    ) {
        let (history, mut image) = run(&events, &Planner::new(seed, policy));
        let durable: Vec<u64> =
            (0..SECTORS).filter(|&s| base(&history, s) != Shown::Initial).collect();
        prop_assume!(!durable.is_empty());
        let s = durable[pick.index(durable.len())];
        let older = older_than_base(&history, s);
        image[s as usize] = older[version.index(older.len())];
        let verdict = check(&history, &policy, &image);
        prop_assert_eq!(verdict, Err(CheckError::Forbidden(Violation::Stale { sector: s })));
    }

    #[test]
    fn foreign_content_is_rejected(
        events in prop::collection::vec(event(SECTORS, 8), 0..40),
        seed: u64,
        policy in policy(),
        sector in 0..SECTORS,
        other: Index,
    ) {
        let (history, mut image) = run(&events, &Planner::new(seed, policy));
        let mut foreign: Vec<Shown> = (0..history.len() + 2)
            .filter(|&j| !meta(&history, j).is_some_and(|m| m.covers(sector)))
            .map(Shown::Write)
            .collect();
        foreign.push(Shown::Unknown);
        image[sector as usize] = foreign[other.index(foreign.len())];
        let verdict = check(&history, &policy, &image);
        prop_assert_eq!(verdict, Err(CheckError::Forbidden(Violation::Foreign { sector })));
    }

    #[test]
    fn torn_writes_show_exactly_their_kept_sectors(
        writes in prop::collection::vec((0..SECTORS, 1u32..=8, any::<bool>()), 1..20),
        seed: u64,
        policy in policy(),
    ) {
        // Disjoint writes without FUA and flush: nothing hides what the cut kept.
        let mut next = 0;
        let mut metas = Vec::new();
        for (gap, len, atomic) in writes {
            let first = next + gap % 3;
            metas.push(WriteMeta::new(first, len, atomic, false).expect("valid"));
            next = first + u64::from(len);
        }
        let planner = Planner::new(seed, policy);
        let keys = {
            let mut keys = vec![0; metas.len()];
            planner.order_keys(&metas, &mut keys).expect("keys");
            keys
        };
        for (i, m) in metas.iter().enumerate() {
            let mut kept = 0;
            for k in 0..m.sectors() {
                let s = m.first_sector() + u64::from(k);
                let shows = planner.sector_winner(s, &metas, &keys).expect("winner") == Some(i);
                prop_assert_eq!(shows, planner.sector_kept(i, m, k));
                kept += u32::from(shows);
            }
            let expected = match planner.fate(i, m) {
                Fate::Kept => m.sectors(),
                Fate::Lost => 0,
                Fate::Torn { sectors_kept } => sectors_kept,
                Fate::Durable => unreachable!("no FUA writes"),
            };
            prop_assert_eq!(kept, expected);
            if policy.is_atomic(m) {
                prop_assert!(kept == 0 || kept == m.sectors());
            }
        }
    }
}

proptest! {
    // These need a kept atomic write that still shows on two sectors, which about half the
    // histories lack: allow for their rejection.
    #![proptest_config(ProptestConfig {
        max_global_rejects: 1 << 16,
        ..ProptestConfig::default()
    })]

    #[test]
    fn dropping_a_sector_of_an_applied_atomic_write_is_rejected(
        events in dense_history(),
        seed: u64,
        policy in keeping_policy(),
        pick: Index,
        sector: Index,
    ) {
        let honest = policy.with_atomic_as_plain(false);
        let (history, mut image) = run(&events, &Planner::new(seed, honest));
        let pending = pending_start(&history);
        // Atomic writes the cut kept that still show on two sectors or more.
        let applied: Vec<usize> = (pending..history.len())
            .filter(|&j| meta(&history, j).is_some_and(|m| m.atomic() && !m.fua()))
            .filter(|&j| shown_count(&image, j) >= 2)
            .collect();
        prop_assume!(!applied.is_empty());
        let a = applied[pick.index(applied.len())];
        let sectors: Vec<u64> =
            (0..SECTORS).filter(|&s| image[s as usize] == Shown::Write(a)).collect();
        let s = sectors[sector.index(sectors.len())];
        image[s as usize] = base(&history, s);
        let verdict = check(&history, &honest, &image);
        // The write torn, or another kept one that contends for the sector.
        prop_assert!(
            matches!(verdict, Err(CheckError::Forbidden(Violation::AtomicTorn { sector, .. })) if sector == s),
            "{:?}", verdict
        );
        // The same tear is fine for a plain write.
        let plain = honest.with_atomic_as_plain(true);
        prop_assert_eq!(check(&history, &plain, &image), Ok(()));
    }

    #[test]
    fn without_reordering_an_older_version_under_a_kept_atomic_write_is_rejected(
        events in dense_history(),
        seed: u64,
        policy in keeping_policy(),
        pick: Index,
    ) {
        let in_order = policy.with_atomic_as_plain(false).with_reorder(false);
        let (history, mut image) = run(&events, &Planner::new(seed, in_order));
        let pending = pending_start(&history);
        // (sector, kept atomic write shown there and elsewhere, earlier pending write that could
        // otherwise show there).
        let mut candidates = Vec::new();
        for s in 0..SECTORS {
            let Shown::Write(a) = image[s as usize] else { continue };
            let is_atomic = meta(&history, a).is_some_and(|m| m.atomic() && !m.fua());
            if a < pending || !is_atomic || shown_count(&image, a) < 2 {
                continue;
            }
            let last_fua = (pending..a)
                .filter(|&j| meta(&history, j).is_some_and(|m| m.fua() && m.covers(s)))
                .max();
            let from = last_fua.map_or(pending, |f| f + 1);
            for p in from..a {
                if meta(&history, p).is_some_and(|m| !m.fua() && m.covers(s)) {
                    candidates.push((s, a, p));
                }
            }
        }
        prop_assume!(!candidates.is_empty());
        let (s, a, p) = candidates[pick.index(candidates.len())];
        image[s as usize] = Shown::Write(p);
        // The write `a`, another kept one that contends for the sector, or `p` itself if it is
        // an atomic write that this makes visible without its other sectors.
        let verdict = check(&history, &in_order, &image);
        prop_assert!(
            matches!(verdict, Err(CheckError::Forbidden(Violation::AtomicTorn { write, sector }))
                if (sector == s && write <= a) || write == p),
            "{:?} for sector {} write {} under {}", verdict, s, p, a
        );
        // With reordering, a plain write may land last.
        if !meta(&history, p).is_some_and(|m| m.atomic()) {
            prop_assert_eq!(check(&history, &in_order.with_reorder(true), &image), Ok(()));
        }
    }
}

/// Every order of `units` (event indices in completion order) that keeps `before(a, b)` pairs
/// in completion order.
fn orders(units: &[usize], before: &dyn Fn(usize, usize) -> bool) -> Vec<Vec<usize>> {
    fn extend(
        units: &[usize],
        before: &dyn Fn(usize, usize) -> bool,
        order: &mut Vec<usize>,
        out: &mut Vec<Vec<usize>>,
    ) {
        if order.len() == units.len() {
            out.push(order.clone());
            return;
        }
        for &u in units {
            let ready = !order.contains(&u)
                && units
                    .iter()
                    .all(|&v| v >= u || !before(v, u) || order.contains(&v));
            if ready {
                order.push(u);
                extend(units, before, order, out);
                order.pop();
            }
        }
    }
    let mut out = Vec::new();
    extend(units, before, &mut Vec::new(), &mut out);
    out
}

/// The images the model allows after a cut at the end of `events`, enumerated from its
/// definition: choose which all-or-nothing writes are kept, then an order of the units (FUA
/// writes and kept all-or-nothing writes) that keeps completion order between a FUA write and
/// any unit sharing a sector with it (every pair, without reordering); a sector shows the last
/// unit covering it, or a plain pending write that may land after that unit.
fn model_images(events: &[Event], policy: &CrashPolicy, sectors: u64) -> HashSet<Vec<Shown>> {
    let pending = pending_start(events);
    let durable = |s: u64| {
        (0..pending)
            .filter(|&j| meta(events, j).is_some_and(|m| m.covers(s)))
            .max()
            .map_or(Shown::Initial, Shown::Write)
    };
    let writes: Vec<usize> = (pending..events.len())
        .filter(|&j| meta(events, j).is_some())
        .collect();
    let m = |j: usize| meta(events, j).expect("write");
    let fuas: Vec<usize> = writes.iter().copied().filter(|&j| m(j).fua()).collect();
    let atomics: Vec<usize> = writes
        .iter()
        .copied()
        .filter(|&j| !m(j).fua() && policy.is_atomic(&m(j)))
        .collect();
    let plains: Vec<usize> = writes
        .iter()
        .copied()
        .filter(|&j| !m(j).fua() && !policy.is_atomic(&m(j)))
        .collect();
    let before = |a: usize, b: usize| {
        a < b && (!policy.reorder() || ((m(a).fua() || m(b).fua()) && m(a).overlaps(&m(b))))
    };
    let mut allowed = HashSet::new();
    for mask in 0u32..(1 << atomics.len()) {
        let mut units: Vec<usize> = fuas.clone();
        units.extend(
            atomics
                .iter()
                .enumerate()
                .filter(|&(k, _)| mask & (1 << k) != 0)
                .map(|(_, &j)| j),
        );
        units.sort_unstable();
        for order in orders(&units, &before) {
            let choices: Vec<Vec<Shown>> = (0..sectors)
                .map(|s| {
                    let last = order.iter().rev().find(|&&u| m(u).covers(s)).copied();
                    let mut values = vec![last.map_or(durable(s), Shown::Write)];
                    for &p in &plains {
                        let lands_last = if policy.reorder() {
                            !fuas.iter().any(|&f| f > p && m(f).covers(s))
                        } else {
                            last.is_none_or(|u| p > u)
                        };
                        if m(p).covers(s) && lands_last {
                            values.push(Shown::Write(p));
                        }
                    }
                    values
                })
                .collect();
            for image in product(&choices) {
                allowed.insert(image);
            }
        }
    }
    allowed
}

fn product(choices: &[Vec<Shown>]) -> Vec<Vec<Shown>> {
    let mut out = vec![Vec::new()];
    for values in choices {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                values.iter().map(move |&v| {
                    let mut image = prefix.clone();
                    image.push(v);
                    image
                })
            })
            .collect();
    }
    out
}

const TINY: u64 = 4;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn checker_allows_exactly_the_model_images(
        events in prop::collection::vec(event(TINY, 3), 0..7),
        seed: u64,
        policy in policy(),
    ) {
        let allowed = model_images(&events, &policy, TINY);
        // Every image whose sectors hold the initial content or a version written there.
        let candidates: Vec<Vec<Shown>> = (0..TINY)
            .map(|s| {
                std::iter::once(Shown::Initial)
                    .chain(
                        (0..events.len())
                            .filter(|&j| meta(&events, j).is_some_and(|m| m.covers(s)))
                            .map(Shown::Write),
                    )
                    .collect()
            })
            .collect();
        for image in product(&candidates) {
            let verdict = check(&events, &policy, &image);
            prop_assert_eq!(
                verdict.is_ok(),
                allowed.contains(&image),
                "image {:?} verdict {:?}",
                image,
                verdict
            );
            if let Err(e) = verdict {
                prop_assert!(matches!(e, CheckError::Forbidden(_)));
            }
        }
        // The planner's image is in the model's set.
        let mut device = Device::new(TINY);
        for &e in &events {
            device.submit(e).expect("powered");
        }
        device.crash(&Planner::new(seed, policy));
        prop_assert!(allowed.contains(&device.current), "{:?}", device.current);
    }
}
