//! Platform primitives on the request path: parsing an amount from JSON, formatting money,
//! making and parsing ids. The ledger's throughput benchmark joins this directory with the
//! ledger module.
#![allow(clippy::unwrap_used, reason = "benchmark set-up on constants")]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
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

criterion_group!(benches, money, ids);
criterion_main!(benches);
