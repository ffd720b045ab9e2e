//! CPU work on the request path: parsing an amount from JSON, formatting money, making and
//! parsing ids, and screening a name against a sanctions list the size of OFAC's SDN list.
//! The ledger's throughput has its own benchmark (`benches/ledger.rs`).
#![allow(clippy::unwrap_used, reason = "benchmark set-up on constants")]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use flowlet::kyc::{ListEntry, ScreeningIndex, ScreeningSettings, Subject};
use flowlet::platform::ids::define_id;
use flowlet::platform::money::{Amount, Currency, Money};

define_id!(BenchId, BenchIdKind, "bench");

#[derive(serde::Deserialize)]
struct Body {
    #[allow(dead_code, reason = "only parsing is measured")]
    amount: Amount,
}

fn money(c: &mut Criterion) {
    let usd = Currency::parse("USD").unwrap();
    c.bench_function("amount_from_json_string", |b| {
        b.iter(|| serde_json::from_str::<Body>(black_box(r#"{"amount":"12345.67"}"#)))
    });
    c.bench_function("amount_from_json_number", |b| {
        b.iter(|| serde_json::from_str::<Body>(black_box(r#"{"amount":12345.67}"#)))
    });
    let m = Money::from_minor(1_234_567, usd);
    c.bench_function("money_format", |b| b.iter(|| black_box(m).format_amount()));
}

fn ids(c: &mut Criterion) {
    c.bench_function("id_new_and_display", |b| {
        b.iter(|| BenchId::new().to_string())
    });
    let text = BenchId::new().to_string();
    c.bench_function("id_parse", |b| b.iter(|| BenchId::parse(black_box(&text))));
}

/// A deterministic list of `n` people with one alias each, names built from syllables (about
/// the size and shape of OFAC's SDN list: ~18k entries, most with aliases).
fn synthetic_list(n: usize) -> Vec<ListEntry> {
    const SYLLABLES: [&str; 24] = [
        "ka", "ro", "mi", "tal", "ven", "sha", "dor", "lin", "ab", "du", "el", "fa", "gor", "hi",
        "is", "jum", "ko", "lu", "mar", "nes", "or", "pa", "qui", "rus",
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut word = move || {
        let mut w = String::new();
        for _ in 0..2 + next() % 2 {
            w.push_str(SYLLABLES[usize::try_from(next() % 24).unwrap()]);
        }
        w
    };
    (0..n)
        .map(|i| ListEntry {
            reference: i.to_string(),
            name: format!("{}, {} {}", word().to_uppercase(), word(), word()),
            aliases: vec![format!("{} {}", word(), word())],
            date_of_birth: None,
            country: None,
            program: None,
            kind: "individual".into(),
        })
        .collect()
}

fn screening(c: &mut Criterion) {
    let settings = ScreeningSettings::default();
    let entries = synthetic_list(20_000);
    c.bench_function("screening_index_build_20k", |b| {
        b.iter(|| ScreeningIndex::new(black_box(entries.clone())))
    });
    let index = ScreeningIndex::new(entries);
    let subject = Subject {
        full_name: "Emma Louise Johnson",
        date_of_birth: chrono::NaiveDate::from_ymd_opt(1990, 5, 17),
        country: Some("DE"),
    };
    c.bench_function("screening_one_name_20k", |b| {
        b.iter(|| index.screen(black_box(&subject), &settings, 5))
    });
}

criterion_group!(benches, money, ids, screening);
criterion_main!(benches);
